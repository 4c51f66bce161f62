"""Train probes over the whole hooks x timesteps grid of an activation cache, with baselines.

  python train/train_probes.py --cache cache/train --test-cache cache/test --out release/ \
      [--saes release/saes] [--random-cache cache/random-train --random-test-cache cache/random-test]

Kinds: "linear" (logistic regression on mean-pooled features), "diff-c" (the paper's conv head on
spatial maps), "sae-linear" (logistic regression on SAE codes, with --saes). Baselines in the same
table: logistic regression on raw pixels, and the same probes on a random-weights copy of the
backbone (--random-cache, from extract_activations.py --random-weights). Without --test-cache a
seeded fraction of the images is held out. Writes probes/<hook>/t<t>/<kind>/, metrics/probe_grid.json
and .csv, and plots/probe_accuracy_<features>_<kind>.png; prints the table and the best cell.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from revelio.sae import KSparseAutoencoder


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", required=True, type=Path, help="cache root of the training images")
    parser.add_argument("--test-cache", type=Path, help="cache root of the test images (same cells)")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="held out when there is no --test-cache")
    parser.add_argument("--random-cache", type=Path, help="training cache from a random-weights backbone")
    parser.add_argument("--random-test-cache", type=Path)
    parser.add_argument("--saes", type=Path, help="SAE folder (train_sae.py --out) for sae-linear probes")
    parser.add_argument("--kinds", nargs="+", default=["linear", "diff-c", "sae-linear"], choices=["linear", "diff-c", "sae-linear"])
    parser.add_argument("--no-pixels", action="store_true", help="skip the raw-pixel baseline")
    parser.add_argument("--max-train", type=int, help="cap on training images per probe")
    parser.add_argument("--epochs", type=int, default=20, help="Diff-C epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, type=Path)
    return parser.parse_args(argv)


class GridData:
    """Per-cell features and labels of one cache root, split into train and test images."""

    def __init__(self, root: Path, test_root: Path | None, test_fraction: float, seed: int, max_train: int | None) -> None:
        from revelio.storage.files import read_safetensors

        self.root, self.test_root = root, test_root
        self.info = json.loads((root / "dataset.json").read_text())
        labels = read_safetensors(root / "labels.safetensors")["labels"]
        if test_root is None:
            order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
            cut = int(len(labels) * test_fraction)
            self.test_index, self.train_index = order[:cut], order[cut:]
            self.test_labels = labels[self.test_index]
        else:
            self.train_index = torch.arange(len(labels))
            self.test_index = None
            self.test_labels = read_safetensors(test_root / "labels.safetensors")["labels"]
        if max_train is not None:
            self.train_index = self.train_index[:max_train]
        self.train_labels = labels[self.train_index]

    def features(self, hook: str, t: int, pooling: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, test) features of one cell: [N, C] for "mean", [N, T, C] for "none"."""
        train_all = _read_cell(self.root, hook, t, pooling)
        if self.test_root is None:
            return train_all[self.train_index], train_all[self.test_index]
        return train_all[self.train_index], _read_cell(self.test_root, hook, t, pooling)


def _read_cell(root: Path, hook: str, t: int, pooling: str) -> torch.Tensor:
    from revelio.cache import ActivationCache, cell_path

    cache = ActivationCache(cell_path(root, hook, t, pooling))
    rows = cache.read_all(["activations"])["activations"]
    return rows.reshape(cache.num_images, cache.tokens_per_image, cache.d_in) if pooling == "none" else rows


def _sae_codes(sae: "KSparseAutoencoder", features: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Dense SAE codes, encoded in chunks without autograd (bounded extra memory)."""
    with torch.no_grad():
        return torch.cat([sae.encode(part, dense=True) for part in features.split(chunk)])


def pixel_features(info: dict, split: str, index: torch.Tensor | None) -> torch.Tensor:
    """Raw pixels at the model's resolution, flattened: the no-diffusion baseline."""
    from revelio.data.datasets import load_image_dataset
    from revelio.data.images import load_image, to_pixels

    data = load_image_dataset(info["dataset"], split, info["image_column"], info["label_column"], limit=info["num_images"])
    column = data.dataset[data.image_column]
    images = [load_image(x) for x in column] if index is None else [load_image(column[int(i)]) for i in index]
    return to_pixels(images, info["resolution"], info["image_channels"]).flatten(1)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from revelio.plots import grid_heatmap
    from revelio.probes import DiffCProbe, LinearProbe, split_train_validation
    from revelio.sae import KSparseAutoencoder

    data = GridData(args.cache, args.test_cache, args.test_fraction, args.seed, args.max_train)
    info, names = data.info, data.info["class_names"]
    hooks, timesteps = info["hooks"], info["timesteps"]
    feature_sets = {"diffusion": data}
    if args.random_cache is not None:
        feature_sets["random-weights"] = GridData(args.random_cache, args.random_test_cache, args.test_fraction, args.seed, args.max_train)
    rows: list[dict] = []

    def fit(kind: str, train: torch.Tensor, test: torch.Tensor, source: GridData, metadata: dict):
        parts = split_train_validation(train, source.train_labels, seed=args.seed)
        if kind == "diff-c":
            probe = DiffCProbe.fit(*parts, names, grid_side=int(round(train.shape[1] ** 0.5)), epochs=args.epochs, seed=args.seed, **metadata)
        else:
            probe = LinearProbe.fit(*parts, names, **metadata)
        accuracy = probe.accuracy(test, source.test_labels)
        probe.metadata["metrics"]["test_accuracy"] = accuracy
        return probe, accuracy

    for features_name, source in feature_sets.items():
        for hook in hooks:
            for t in timesteps:
                base = {"backbone": info["backbone"], "dataset": info["dataset"], "split": info["split"], "hook": hook, "timestep": t}
                for kind in args.kinds:
                    if kind == "sae-linear" and (args.saes is None or features_name != "diffusion"):
                        continue
                    pooling = "none" if kind == "diff-c" else "mean"
                    train, test = source.features(hook, t, pooling)
                    metadata = {**base, "pooling": pooling}
                    if kind == "sae-linear":
                        subfolder = f"{hook}/t{t}/mean"
                        sae = KSparseAutoencoder.from_pretrained(args.saes, subfolder=subfolder)
                        train, test = (_sae_codes(sae, x) for x in (train, test))
                        metadata["sae"] = subfolder
                    probe, accuracy = fit(kind, train, test, source, metadata)
                    if features_name == "diffusion":
                        probe.save_pretrained(args.out / "probes" / hook / f"t{t}" / kind)
                    rows.append({"features": features_name, "probe": kind, "hook": hook, "timestep": t,
                                 "test_accuracy": accuracy, "validation_accuracy": probe.metadata["metrics"]["validation_accuracy"]})
                    print(json.dumps(rows[-1]), flush=True)

    if not args.no_pixels:
        train_px = pixel_features(info, info["split"], data.train_index)
        test_px = pixel_features(info, info["split"], data.test_index) if args.test_cache is None else pixel_features(
            json.loads((args.test_cache / "dataset.json").read_text()), json.loads((args.test_cache / "dataset.json").read_text())["split"], None)
        _, accuracy = fit("linear", train_px, test_px, data, {})
        rows.append({"features": "pixels", "probe": "linear", "hook": "pixels", "timestep": None,
                     "test_accuracy": accuracy, "validation_accuracy": None})
        print(json.dumps(rows[-1]), flush=True)

    diffusion = [r for r in rows if r["features"] == "diffusion"]
    best = max(diffusion, key=lambda r: r["test_accuracy"])
    (args.out / "metrics").mkdir(parents=True, exist_ok=True)
    summary = {"class_names": names, "hooks": hooks, "timesteps": timesteps, "chance": 1 / len(names), "best": best, "rows": rows}
    (args.out / "metrics" / "probe_grid.json").write_text(json.dumps(summary, indent=2) + "\n")
    with open(args.out / "metrics" / "probe_grid.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for features_name in feature_sets:
        for kind in args.kinds:
            cells = {(r["hook"], r["timestep"]): r["test_accuracy"] for r in rows if r["features"] == features_name and r["probe"] == kind}
            if cells:
                grid_heatmap(cells, hooks, timesteps, f"{kind} probe on {features_name} features: test accuracy",
                             args.out / "plots" / f"probe_accuracy_{features_name}_{kind}.png")
    print(f"best cell: {best['hook']} t={best['timestep']} {best['probe']} test accuracy {best['test_accuracy']:.4f}")


if __name__ == "__main__":
    main()
