"""The release's copy of each SAE: held-out metrics and per-timestep mean activations added, once.

The SAE grid trains in the build's work folder; this stage writes each SAE into the release with
what only the test cache can tell (its held-out reconstruction error, dead features, and each
feature's mean activation at every timestep of the grid), then the grid's table and pictures.
A cell whose release copy is newer than its trained SAE is kept: a rerun after a crash finishes
only the cells still missing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import torch

from revelio.analysis.statistics import activation_by_timestep
from revelio.cache import ActivationCache
from revelio.formats.metrics import SAEGrid, SAERow
from revelio.grid import Cell, Pooling
from revelio.layout import CONFIG_FILE, DATASET_FILE, SAE_GRID, STATS_FILE, TIMESTEPS_FILE, GridPlot, metrics_file, sae_subfolder
from revelio.plots import grid_heatmap
from revelio.sae.evaluation import SAEEvaluator
from revelio.sae.model import KSparseAutoencoder

log = logging.getLogger(__name__)


def evaluate_saes(trained: Path, out: Path, hooks: list[str], timesteps: list[int], poolings: list[Pooling],
                  test_cache: Path) -> list[SAERow]:
    """Write each SAE of ``trained`` (an SAE grid folder) into the release ``out`` with its held-out metrics."""
    rows = []
    for hook in hooks:
        for pooling in poolings:
            caches = {t: ActivationCache(test_cache / Cell(hook, t, pooling).path) for t in timesteps}
            for t in timesteps:
                cell = Cell(hook, t, pooling)
                target = out / sae_subfolder(cell)
                if _evaluated(trained / cell.path, target, test_cache):
                    sae = KSparseAutoencoder.from_pretrained(target)
                    held_out = sae.config.metrics["test"]
                else:
                    sae = KSparseAutoencoder.from_pretrained(trained / cell.path)
                    evaluator = SAEEvaluator(sae)
                    for chunk in caches[t].chunks(rows=65536, columns=("activations",)):
                        evaluator.add(chunk["activations"])
                    held_out = evaluator.result()
                    sae.config.metrics = {**sae.config.metrics, "test": held_out}
                    by_t = activation_by_timestep(sae, caches)
                    sae.extra_files[TIMESTEPS_FILE] = ({"timesteps": torch.tensor(sorted(caches)), "mean_activation": by_t}, {})
                    sae.save_pretrained(target)
                rows.append(SAERow(hook=hook, timestep=t, pooling=pooling, d_in=sae.d_in, d_sae=sae.d_sae, k=sae.k,
                                   test_tokens=held_out["tokens"], **{k: v for k, v in held_out.items() if k != "tokens"}))
                log.info(json.dumps(dataclasses.asdict(rows[-1])))
    return rows


def _evaluated(trained: Path, target: Path, test_cache: Path) -> bool:
    """The release already holds this SAE's evaluated copy, written after the SAE was trained and the
    test images were extracted."""
    copy = target / CONFIG_FILE
    if not copy.is_file() or not (target / TIMESTEPS_FILE).is_file():
        return False
    inputs = [trained / STATS_FILE, test_cache / DATASET_FILE]
    return all(copy.stat().st_mtime >= p.stat().st_mtime for p in inputs if p.is_file())


def write_sae_metrics(rows: list[SAERow], hooks: list[str], timesteps: list[int], poolings: list[Pooling], out: Path) -> SAEGrid:
    """metrics/sae_grid.json and the SAE metric pictures."""
    grid = SAEGrid(split="test", hooks=hooks, timesteps=timesteps, rows=rows)
    grid.write(metrics_file(out, SAE_GRID))
    for pooling in poolings:
        cells = [r for r in rows if r.pooling == pooling]
        for metric in ("normalized_mse", "dead_fraction"):
            grid_heatmap({(r.hook, r.timestep): getattr(r, metric) for r in cells}, hooks, timesteps,
                         f"SAE {metric} on test images (pooling {pooling})", GridPlot.sae_metric(metric, pooling).path(out),
                         colorbar_label=metric, best="min")
    return grid
