"""The SAE grid: one k-SAE per cached cell, each saved with its feature statistics.

Cells are folders ``<cache>/<hook>/t<timestep>/<pooling>/``; each SAE lands in the same relative
folder under ``out`` (the release layout), with its feature statistics (top exemplars, firing
frequency, label purity and automatic labels when the cache has labels) in stats.safetensors.
Interrupted runs resume from their last checkpoint; finished cells are skipped. The grid shards
over processes or GPUs with ``accelerate launch`` (each process trains its share of the cells).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch
from accelerate import PartialState

from revelio.analysis.statistics import feature_stats
from revelio.cache import ActivationCache, find_cells
from revelio.cache.labels import CacheLabels
from revelio.config import option, to_json
from revelio.errors import CacheError
from revelio.grid import Cell
from revelio.layout import CONFIG_FILE, DATASET_FILE, STATS_FILE
from revelio.sae.model import KSparseAutoencoder
from revelio.sae.training import SAETrainConfig, train_sae
from revelio.storage.files import read_json

log = logging.getLogger(__name__)


@dataclass
class SAEGridConfig:
    """Which cells of a cache to train SAEs for, and where they go."""

    cache: Path = option(help="cache root written by extract_activations.py")
    out: Path = option(help="where SAEs are written, one folder per cell")
    hooks: list[str] | None = option(None, "only these hook points (default: every cell in the cache)")
    timesteps: list[int] | None = option(None, "only these timesteps")
    poolings: list[Literal["mean", "none"]] | None = option(None, "only these poolings")
    overwrite: bool = option(False, "retrain cells that already have a finished SAE")


def save_with_stats(sae: KSparseAutoencoder, cache: ActivationCache, labels: CacheLabels, out: Path) -> None:
    """Per-feature statistics (exemplars, firing, labels) over the cache, saved beside the SAE."""
    sae.feature_stats = feature_stats(sae, cache, labels=labels.labels, class_names=labels.class_names, image_ids=labels.rows)
    sae.save_pretrained(out)


def selected_cells(grid: SAEGridConfig) -> list[Cell]:
    """The cache's cells that pass the filters, in a stable order."""
    cells = [
        cell for cell in find_cells(grid.cache)
        if (grid.hooks is None or cell.hook in grid.hooks) and (grid.timesteps is None or cell.timestep in grid.timesteps)
        and (grid.poolings is None or cell.pooling in grid.poolings)
    ]
    if not cells:
        raise CacheError(f"no cache cells under {grid.cache} match the filters (hooks, timesteps, poolings); extract activations first")
    return cells


def train_sae_grid(grid: SAEGridConfig, training: SAETrainConfig) -> None:
    """Train every selected cell (this process's share of them under accelerate)."""
    state = PartialState(cpu=not torch.cuda.is_available())
    cells = selected_cells(grid)
    labels = CacheLabels.read(grid.cache)
    with state.split_between_processes(cells) as mine:
        for cell in mine:
            train_cell(cell, grid, training, state, labels)


def train_cell(cell: Cell, grid: SAEGridConfig, training: SAETrainConfig, state: PartialState, labels: CacheLabels) -> None:
    """Train one cell's SAE and its feature statistics, unless a finished one is already there."""
    out = grid.out / cell.path
    cache = ActivationCache(grid.cache / cell.path)
    meta = cache.manifest.metadata
    config = replace(training, metadata={"backbone": meta.get("backbone"), "dataset": meta.get("dataset"),
                                         "hook": cache.hook, "timestep": cache.timestep, "pooling": cache.pooling})
    stale = None if grid.overwrite else stale_cell(out, grid.cache, {k: v for k, v in to_json(config).items() if k != "metadata"})
    if stale == "":
        log.info(json.dumps({"rank": state.process_index, "cell": cell.path, "skipped": "finished earlier"}))
        return
    if out.exists() and (grid.overwrite or stale):
        log.info(json.dumps({"rank": state.process_index, "cell": cell.path, "retrained": stale or "overwrite"}))
        shutil.rmtree(out)  # no checkpoint of other data or settings resumes
    sae = train_sae(cache, config, out, device=state.device)
    save_with_stats(sae, cache, labels, out)
    summary = {k: v for k, v in sae.config.metrics.items() if k != "density_histogram"}
    log.info(json.dumps({"rank": state.process_index, "cell": cell.path, **summary}))


def stale_cell(out: Path, cache: Path, training: dict) -> str | None:
    """Why the SAE in ``out`` cannot be kept: "" when it is finished (its config lists its statistics,
    written last) with these training settings after the cache was extracted; a reason when it is
    from other settings or older data; None when there is nothing (or an interruption to resume)."""
    extracted = (cache / DATASET_FILE).stat().st_mtime if (cache / DATASET_FILE).is_file() else 0.0
    config = out / CONFIG_FILE
    if config.is_file() and STATS_FILE in read_json(config).get("sha256", {}):
        if read_json(config).get("training") != training:
            return "its training settings changed"
        return "" if config.stat().st_mtime >= extracted else "its cache was extracted again since"
    latest = out / "training" / "checkpoints" / "latest.json"
    if latest.is_file():
        if latest.stat().st_mtime < extracted:
            return "its cache was extracted again since it was interrupted"
        trainer = read_json(latest.parent / read_json(latest)["folder"] / "trainer.json")
        if {k: v for k, v in trainer["config"].items() if k != "metadata"} != training:
            return "its training settings changed since it was interrupted"
    return None
