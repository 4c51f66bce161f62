"""The probe grid: probes for every (hook, timestep) of a cache, with baselines, table and pictures.

Kinds: "linear" (logistic regression on mean-pooled features), "diff-c" (the paper's conv head on
spatial maps), "sae-linear" (logistic regression on SAE codes, given ``saes``; the codes stay
sparse, k values and indices per image, never a dense [N, d_sae] matrix). Baselines in the
same table: logistic regression on raw pixels, and the same probes on a random-weights copy of
the backbone (``random_cache``). Without ``test_cache`` a seeded fraction of the images is held
out. Writes probes/<hook>/t<t>/<kind>/, metrics/probe_grid.json and .csv, and
plots/probe_accuracy_<features>_<kind>.png.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from revelio.cache import ActivationCache
from revelio.cache.labels import CacheLabels
from revelio.config import option, to_json
from revelio.data.datasets import load_image_dataset
from revelio.data.images import to_pixels
from revelio.errors import DatasetError
from revelio.formats.cache import CacheDataset
from revelio.formats.metrics import ProbeGrid
from revelio.grid import Cell
from revelio.layout import DATASET_FILE, PROBE_GRID, GridPlot, metrics_file, probe_subfolder
from revelio.plots import grid_heatmap
from revelio.probes import DiffCProbe, LinearProbe, SparseFeatures, split_train_validation
from revelio.sae import KSparseAutoencoder
from revelio.storage.files import write_text

log = logging.getLogger(__name__)

ProbeKind = Literal["linear", "diff-c", "sae-linear"]


@dataclass
class ProbeGridConfig:
    """Which caches to probe with which kinds, and how."""

    cache: Path = option(help="cache root of the training images")
    out: Path = option(help="release folder: probes/, metrics/ and plots/ go here")
    test_cache: Path | None = option(None, "cache root of the test images (same cells)")
    test_fraction: float = option(0.2, "held out when there is no --test-cache")
    random_cache: Path | None = option(None, "training cache from a random-weights backbone")
    random_test_cache: Path | None = option(None, "test cache from the random-weights backbone")
    saes: Path | None = option(None, "SAE folder (train_sae.py --out) for sae-linear probes")
    kinds: list[ProbeKind] = option(["linear", "diff-c", "sae-linear"], "probe kinds")
    pixels: bool = option(True, "the raw-pixel logistic-regression baseline")
    max_train: int | None = option(None, "cap on training images per probe")
    epochs: int = option(20, "Diff-C epochs")
    diffc_precision: Literal["auto", "float32", "bfloat16"] = option(
        "auto", "Diff-C training precision (auto: bfloat16 where native); bfloat16 on CPU is not bit-reproducible")
    label_set: str | None = option(None, "probe a further label set (a label column named when extracting) instead of the default one")
    seed: int = option(0)


class GridData:
    """Per-cell features and labels of one cache root, split into train and test images."""

    def __init__(self, root: Path, test_root: Path | None, test_fraction: float, seed: int, max_train: int | None,
                 label_set: str | None = None) -> None:
        self.root, self.test_root = root, test_root
        self.info = CacheDataset.read(root / DATASET_FILE)
        read = CacheLabels.read(root, label_set)
        if read.labels is None or not read.class_names:
            raise DatasetError(f"{root} holds no labels: probes need a labelled dataset (name the label_column when extracting)")
        labels, self.rows, self.class_names = read.labels, read.rows, read.class_names
        if test_root is None:
            order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
            cut = int(len(labels) * test_fraction)
            self.test_index, self.train_index = order[:cut], order[cut:]
            self.test_labels = labels[self.test_index]
        else:
            self.train_index = torch.arange(len(labels))
            self.test_index = None
            test = CacheLabels.read(test_root, label_set)
            self.test_labels, self.test_rows = test.labels, test.rows
        if max_train is not None:
            self.train_index = self.train_index[:max_train]
        self.train_labels = labels[self.train_index]

    def features(self, hook: str, t: int, pooling: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, test) features of one cell: [N, C] for "mean", [N, T, C] for "none"."""
        train_all = _read_cell(self.root, Cell(hook, t, pooling))
        if self.test_root is None:
            return train_all[self.train_index], train_all[self.test_index]
        return train_all[self.train_index], _read_cell(self.test_root, Cell(hook, t, pooling))


def _read_cell(root: Path, cell: Cell) -> torch.Tensor:
    cache = ActivationCache(root / cell.path)
    if cell.pooling == "none" and cache.grid_side is not None and cache.tokens_per_image != cache.grid_side**2:
        raise ValueError(
            f"{root / cell.path} keeps {cache.tokens_per_image} sampled locations per image of a {cache.grid_side}x"
            f"{cache.grid_side} grid (--tokens-per-image); Diff-C probes need whole maps: extract the probe cache "
            "without --tokens-per-image, or leave diff-c out of --kinds"
        )
    rows = cache.read_all(["activations"])["activations"]
    return rows.reshape(cache.num_images, cache.tokens_per_image, cache.d_in) if cell.pooling == "none" else rows


def pixel_features(info: CacheDataset, rows: torch.Tensor) -> torch.Tensor:
    """Raw pixels of these dataset rows at the model's resolution, flattened: the no-diffusion baseline."""
    data = load_image_dataset(info.dataset, info.split, info.image_column, info.label_column)
    images = [data.dataset[int(row)][data.image_column] for row in rows]
    return to_pixels(images, info.resolution, info.image_channels).flatten(1)


def train_probe_grid(config: ProbeGridConfig) -> ProbeGrid:
    """Fit every probe of the grid and its baselines; returns the summary written to probe_grid.json."""
    data = GridData(config.cache, config.test_cache, config.test_fraction, config.seed, config.max_train, config.label_set)
    info = data.info
    names, hooks, timesteps = data.class_names, info.hooks, info.timesteps
    feature_sets = {"diffusion": data}
    if config.random_cache is not None:
        feature_sets["random-weights"] = GridData(config.random_cache, config.random_test_cache, config.test_fraction, config.seed,
                                                  config.max_train, config.label_set)
    training = {k: v for k, v in to_json(config).items() if k in ("epochs", "max_train", "seed", "test_fraction")}
    rows: list[dict] = []

    def fit(kind: str, train: torch.Tensor, test: torch.Tensor, source: GridData, metadata: dict):
        parts = split_train_validation(train, source.train_labels, seed=config.seed)
        if kind == "diff-c":
            probe = DiffCProbe.fit(*parts, names, grid_side=int(round(train.shape[1] ** 0.5)), epochs=config.epochs, seed=config.seed,
                                 precision=config.diffc_precision, **metadata)
        else:
            probe = LinearProbe.fit(*parts, names, **metadata)
        accuracy = probe.accuracy(test, source.test_labels)
        probe.config.metrics["test_accuracy"] = accuracy
        return probe, accuracy

    for features_name, source in feature_sets.items():
        for hook in hooks:
            for t in timesteps:
                base = {"backbone": info.backbone, "dataset": info.dataset, "split": info.split, "hook": hook,
                        "timestep": t, "training": training}
                for kind in config.kinds:
                    if kind == "sae-linear" and (config.saes is None or features_name != "diffusion"):
                        continue
                    pooling = "none" if kind == "diff-c" else "mean"
                    train, test = source.features(hook, t, pooling)
                    metadata = {**base, "pooling": pooling}
                    if kind == "sae-linear":
                        subfolder = Cell(hook, t, "mean").path
                        sae = KSparseAutoencoder.from_pretrained(config.saes, subfolder=subfolder)
                        with torch.no_grad():
                            train, test = (SparseFeatures.from_code(sae.encode(x), sae.d_sae) for x in (train, test))
                        metadata["sae"] = subfolder
                    probe, accuracy = fit(kind, train, test, source, metadata)
                    if features_name == "diffusion":
                        probe.save_pretrained(config.out / probe_subfolder(Cell(hook, t), kind))
                    rows.append({"features": features_name, "probe": kind, "hook": hook, "timestep": t,
                                 "test_accuracy": accuracy, "validation_accuracy": probe.config.metrics["validation_accuracy"]})
                    log.info(json.dumps(rows[-1]))

    if config.pixels:
        train_px = pixel_features(info, data.rows[data.train_index])
        if config.test_cache is None:
            test_px = pixel_features(info, data.rows[data.test_index])
        else:
            test_px = pixel_features(CacheDataset.read(config.test_cache / DATASET_FILE), data.test_rows)
        _, accuracy = fit("linear", train_px, test_px, data, {})
        rows.append({"features": "pixels", "probe": "linear", "hook": "pixels", "timestep": None,
                     "test_accuracy": accuracy, "validation_accuracy": None})
        log.info(json.dumps(rows[-1]))

    best = max((r for r in rows if r["features"] == "diffusion"), key=lambda r: r["test_accuracy"])
    summary = ProbeGrid.from_json({"class_names": names, "hooks": hooks, "timesteps": timesteps, "chance": 1 / len(names),
                                   "best": best, "rows": rows, "config": to_json(config)})
    _write_results(summary, rows, list(feature_sets), config)
    log.info("best cell: %s t=%s %s test accuracy %.4f", best['hook'], best['timestep'], best['probe'], best['test_accuracy'])
    return summary


def _write_results(summary: ProbeGrid, rows: list[dict], feature_sets: list[str], config: ProbeGridConfig) -> None:
    """metrics/probe_grid.json and .csv, and one heatmap per (features, kind)."""
    hooks, timesteps = summary.hooks, summary.timesteps
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text(metrics_file(config.out, PROBE_GRID, ".csv"), table.getvalue())
    for features_name in feature_sets:
        for kind in config.kinds:
            cells = {(r["hook"], r["timestep"]): r["test_accuracy"] for r in rows if r["features"] == features_name and r["probe"] == kind}
            if cells:
                grid_heatmap(cells, hooks, timesteps, f"{kind} probe on {features_name} features: test accuracy",
                             GridPlot.probe_accuracy(features_name, kind).path(config.out))
    summary.write(metrics_file(config.out, PROBE_GRID))  # last: its presence marks the grid finished
