"""Build a complete release for any backbone and any labelled image dataset, in one call.

The dataset's labels are the release's classes; the backbone's own conditioning (text, its own
classes, none) is separate. A local backbone is copied into the release; a Hub one is referenced
by repo id and revision. Chains the pipeline steps (each printed and recorded in release.json as the train/ command that
reproduces it): the quality gate (reference classifier + samples), activation caches of
training, test and random-weights images, the SAE grid for both poolings, and the probe grid with
baselines; the quality gate runs only for a backbone conditioned on the dataset's own classes
(otherwise release.json says why it was skipped). Then: SAE metrics on the held-out test images, each feature's mean activation at every
timestep, exemplar thumbnails, the SAE metric pictures, release.json, held-out purity, a short
steering measurement (so the app's Steer tab starts from a measured setting; ``--no-steering``
skips it) and the model card. The backbone is loaded once and handed to every step. Caches and
SAE checkpoints live in ``work`` and finished steps are reused when built again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
import torch

from revelio import __version__
from revelio.analysis.statistics import activation_by_timestep
from revelio.cache import ActivationCache
from revelio.config import option, to_argv, to_json
from revelio.data.datasets import load_image_dataset
from revelio.errors import ConfigError, DatasetError
from revelio.formats.cache import CacheDataset
from revelio.formats.metrics import ProbeGrid, QualityGate, SAEGrid, SAERow
from revelio.formats.release import BestCell, ReleaseInfo
from revelio.grid import POOLINGS, Cell
from revelio.layout import (
    DATASET_FILE,
    MODEL_DIR,
    PROBE_GRID,
    QUALITY_GATE,
    RELEASE_FILE,
    SAE_GRID,
    STEERING,
    TIMESTEPS_FILE,
    WEIGHTS_FILE,
    GridPlot,
    metrics_file,
    sae_subfolder,
)
from revelio.models import Backbone, load_backbone
from revelio.plots import grid_heatmap
from revelio.release.card import render_card
from revelio.release.exemplars import thumbnail_side, write_exemplars, write_held_out_examples
from revelio.release.load import load_release
from revelio.release.purity_measurement import MonosemanticityConfig, measure_monosemanticity
from revelio.release.steering_measurement import SteeringMeasureConfig, measure_steering
from revelio.sae.metrics import SAEEvaluator
from revelio.sae.model import KSparseAutoencoder
from revelio.sae.training import SAETrainConfig
from revelio.steps.extract import ExtractionConfig, extract_to_cache
from revelio.steps.probe_grid import ProbeGridConfig, train_probe_grid
from revelio.steps.quality_gate import QualityGateConfig, run_quality_gate
from revelio.steps.sae_grid import SAEGridConfig, train_sae_grid
from revelio.storage.files import read_json

log = logging.getLogger(__name__)


@dataclass
class ReleaseConfig:
    """Everything a release is built from; its flags are train/build_release.py's."""

    model: str = option(help="diffusers pipeline: a local folder (copied into the release) or a Hub repo id (referenced)")
    out: Path = option(help="the release folder")
    revision: str | None = option(None, "the Hub backbone's revision (branch, tag or commit)")
    dataset: str = option("fashion-mnist", "labelled images: fashion-mnist, a Hub dataset id, or an image folder (one subfolder per class)")
    image_column: str | None = option(None)
    label_column: str | None = option(None)
    test_split: str = option("test")
    hooks: list[str] | None = option(None, "default: every block-level hook point")
    timesteps: list[int] = option([25, 100, 300, 600])
    prompt_template: str | None = option(
        None, 'text models: extract with each image\'s prompt from its label, e.g. "a photo of a {}" (default: the empty prompt)')
    train_images: int = option(12000, "a seeded, class-balanced subset of the training split")
    pooled_train_images: int | None = option(
        None, "more training images for the pooled SAEs alone (pooled vectors are small; e.g. the whole split); default: --train-images")
    test_images: int = option(2000, "a seeded, class-balanced subset of the test split")
    held_out_per_class: int = option(20, "test images per class kept for the app (examples, histograms)")
    random_images: int = option(4000, "training images for the random-weights baseline")
    expansion: int = option(8)
    mean_expansion: int | None = option(None, "the pooled SAEs' expansion (default: --expansion)")
    prune_below: float = option(0.0, "pooled SAEs: drop latents firing on fewer than this share of training images (0: keep all)")
    k: int = option(8)
    mean_tokens: int = option(1_000_000, "training tokens per mean-pooled SAE")
    spatial_tokens: int = option(2_000_000, "training tokens per spatial SAE")
    sae_batch_size: int = option(1024)
    probe_max_train: int = option(6000)
    probe_epochs: int = option(20, "Diff-C epochs")
    per_class: int = option(100, "quality-gate samples per class")
    classifier_epochs: int = option(12)
    steering: bool = option(True, "measure steering at the best block (spatial SAE) so the Steer tab starts from a measured setting")
    steering_strengths: list[float] = option([1.0, 2.0, 3.0], "clamp strengths the steering measurement sweeps")
    steering_per_source: int = option(2, "images per source class in the steering measurement")
    steering_steps: int = option(20, "denoising steps per image in the steering measurement")
    repo_id: str = option("bundled", "the Hub repo id shown in the card's loading example")
    seed: int = option(0)
    device: str | None = option(None, "cpu or cuda (default: cuda when available)")
    work: Path = option(Path("artifacts/release-work"), "caches and SAE checkpoints")


class StepLog:
    """Runs pipeline steps in this process and records the train/ command that reproduces each."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    def run(self, script: str, configs: list[Any], step: Callable[[], Any], done: bool = False) -> None:
        """Run ``step``, or with ``done`` (its output is already there) only record its command."""
        shown = "python " + shlex.join([f"train/{script}", *to_argv(*configs)])
        self.commands.append(shown)
        log.info("$ %s%s", shown, "\n(finished earlier: reusing its output)" if done else "")
        if not done:
            step()


def build_release(config: ReleaseConfig, command: str) -> ReleaseInfo:
    """Build (or finish) the release in ``config.out``; ``command`` is recorded as how it was built."""
    out, steps = config.out, StepLog()
    local = Path(config.model).is_dir()
    model = str(out / MODEL_DIR) if local else config.model
    if local and Path(config.model).resolve() != Path(model).resolve():
        shutil.rmtree(model, ignore_errors=True)
        shutil.copytree(config.model, model)
    backbone = load_backbone(model, device=config.device or ("cuda" if torch.cuda.is_available() else "cpu"), revision=config.revision)
    hooks = config.hooks or backbone.hook_points
    missing = [h for h in hooks if h not in backbone.hook_points]
    if missing:
        raise ConfigError(f"{config.model} has no hook points {missing}; it has {backbone.hook_points}")
    columns = {"image_column": config.image_column, "label_column": config.label_column}
    class_names = load_image_dataset(config.dataset, "train", **columns).class_names
    if not class_names:
        raise DatasetError(f"{config.dataset} has no class labels; a release needs a labelled dataset (name the label_column)")

    skipped = quality_gate_skipped(backbone, class_names)
    if skipped is None:
        gate = QualityGateConfig(model=model, out=out, dataset=config.dataset, per_class=config.per_class,
                                 epochs=config.classifier_epochs, seed=config.seed, device=config.device, **columns)
        steps.run("quality_gate.py", [gate], lambda: run_quality_gate(gate, backbone))
    else:
        log.info("quality gate skipped: %s", skipped)
    caches = {}
    extractions = [("train", "train", config.train_images, False, POOLINGS), ("test", config.test_split, config.test_images, False, POOLINGS),
                   ("random-train", "train", config.random_images, True, POOLINGS), ("random-test", config.test_split, config.test_images, True, POOLINGS)]
    if config.pooled_train_images is not None and config.pooled_train_images != config.train_images:
        extractions.append(("pooled-train", "train", config.pooled_train_images, False, ("mean",)))
    for name, split, limit, random, poolings in extractions:
        extraction = ExtractionConfig(backbone=model, revision=config.revision, out=config.work / "caches" / name, timesteps=config.timesteps,
                                      dataset=config.dataset, split=split, limit=limit, hooks=hooks, poolings=list(poolings), seed=config.seed,
                                      device=config.device, overwrite=True, random_weights=random, prompt_template=config.prompt_template, **columns)
        steps.run("extract_activations.py", [extraction], lambda e=extraction: extract_to_cache(e), done=(extraction.out / DATASET_FILE).is_file())
        caches[name] = extraction.out
    mean_expansion = config.mean_expansion or config.expansion
    for pooling, tokens, expansion in (("mean", config.mean_tokens, mean_expansion), ("none", config.spatial_tokens, config.expansion)):
        source = caches.get("pooled-train", caches["train"]) if pooling == "mean" else caches["train"]
        grid = SAEGridConfig(cache=source, out=config.work / "saes", poolings=[pooling])
        training = SAETrainConfig(expansion=expansion, k=config.k, total_tokens=tokens, batch_size=config.sae_batch_size,
                                  prune_below=config.prune_below if pooling == "mean" else 0.0, seed=config.seed)
        steps.run("train_sae.py", [grid, training], lambda g=grid, t=training: train_sae_grid(g, t))
    probes = ProbeGridConfig(cache=caches["train"], out=out, test_cache=caches["test"], random_cache=caches["random-train"],
                             random_test_cache=caches["random-test"], saes=config.work / "saes", max_train=config.probe_max_train,
                             epochs=config.probe_epochs, seed=config.seed)
    reuse_probes = _probes_done(probes, list(caches.values()))  # delete metrics/probe_grid.json to retrain
    if not reuse_probes:
        shutil.rmtree(out / "probes", ignore_errors=True)
    steps.run("train_probes.py", [probes], lambda: train_probe_grid(probes), done=reuse_probes)

    shutil.rmtree(out / "saes", ignore_errors=True)
    sae_rows = evaluate_saes(config, hooks, caches["test"])
    write_sae_metrics(sae_rows, hooks, config.timesteps, out)
    side = thumbnail_side(backbone.resolution)
    exemplars = write_exemplars(out, config.dataset, config.image_column, config.label_column, side)
    held_out = write_held_out_examples(out, config.dataset, config.test_split, config.image_column, config.label_column,
                                       config.held_out_per_class, side)
    probe_grid = ProbeGrid.read(metrics_file(out, PROBE_GRID))
    quality = QualityGate.read(metrics_file(out, QUALITY_GATE)) if skipped is None else None
    best = probe_grid.best
    info = ReleaseInfo(
        backbone=MODEL_DIR if local else config.model, backbone_revision=None if local else config.revision,
        backbone_name=f"revelio's {config.dataset} model" if config.dataset == "fashion-mnist" and local else config.model,
        conditioning=backbone.conditioning, backbone_class_names=backbone.class_names, prompt_template=config.prompt_template,
        dataset=config.dataset, num_train_images=config.train_images, num_test_images=config.test_images,
        hooks=hooks, timesteps=config.timesteps, poolings=list(POOLINGS), class_names=class_names, quality_gate_skipped=skipped,
        probe_kinds=sorted({r.probe for r in probe_grid.rows if r.features == "diffusion"}),
        best_cell=BestCell(best.hook, best.cell.timestep, best.probe, best.test_accuracy),
        sae={"expansion": config.expansion, "mean_expansion": mean_expansion, "k": config.k, "prune_below": config.prune_below, "mean_tokens": config.mean_tokens, "spatial_tokens": config.spatial_tokens,
             "mean_train_images": config.pooled_train_images or config.train_images},
        exemplar_images=exemplars, held_out_images=held_out, seed=config.seed,
        versions={"revelio": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__},
        commands=[command, *steps.commands], config=to_json(config),
    )
    info.write(out / RELEASE_FILE)
    release = load_release(out)
    purity = measure_monosemanticity(MonosemanticityConfig(release=str(out), seed=config.seed, device=config.device), release, backbone)
    if config.steering:
        steering = steering_config(config, release.best_cell, out)
        done = _steering_done(steering)
        steps.run("measure_steering.py", [steering], lambda: measure_steering(steering, release, backbone), done=done)
    render_card(info.to_json(), probe_grid.to_json(), [dataclasses.asdict(r) for r in sae_rows], quality.to_json() if quality else None,
                config.repo_id, out, purity.to_json())
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    log.info("release written to %s: %.1f MiB; best cell %s (%s, test accuracy %.4f)",
             out, size / 2**20, best.cell, best.probe, best.test_accuracy)
    return info


def steering_config(config: ReleaseConfig, best: Cell, out: Path) -> SteeringMeasureConfig:
    """A short steering measurement at the best block and timestep's spatial SAE, over the configured strengths."""
    return SteeringMeasureConfig(release=str(out), cells=[best.spec], pooling="none", clamp_to="class-map",
                                 features_per_class=8, strengths=list(config.steering_strengths),
                                 per_source=config.steering_per_source, steps=config.steering_steps, seed=config.seed,
                                 out=metrics_file(out, STEERING).parent)


def _steering_done(steering: SteeringMeasureConfig) -> bool:
    """steering.json is there, measured with these settings (an SAE rebuild deletes it with the saes/ folder)."""
    path = metrics_file(steering.release, STEERING)
    return path.is_file() and read_json(path).get("config") == to_json(steering)


def quality_gate_skipped(backbone: Backbone, class_names: list[str]) -> str | None:
    """Why the quality gate cannot run (it generates each of the dataset's classes), or None when it can."""
    if backbone.conditioning != "class":
        return (f"the backbone is conditioned on {backbone.conditioning!r}, not on the dataset's classes, so it cannot "
                "be asked for a class; the probes judge steering instead")
    if list(backbone.class_names or []) != list(class_names):
        return f"the backbone's classes {backbone.class_names[:5]}... are not the dataset's {class_names[:5]}..."
    return None


def _probes_done(probes: ProbeGridConfig, caches: list[Path]) -> bool:
    """The release already holds a probe grid of these settings, newer than every cache and SAE it read."""
    grid = metrics_file(probes.out, PROBE_GRID)
    if not grid.is_file():
        return False
    if read_json(grid).get("config") != to_json(probes):
        return False
    inputs = [c / DATASET_FILE for c in caches] + list(Path(probes.saes).rglob(WEIGHTS_FILE))
    return all(grid.stat().st_mtime >= p.stat().st_mtime for p in inputs if p.is_file())


def evaluate_saes(config: ReleaseConfig, hooks: list[str], test_cache: Path) -> list[SAERow]:
    """Copy each SAE into the release with its held-out metrics and per-timestep mean activations."""
    rows = []
    for hook in hooks:
        for pooling in POOLINGS:
            caches = {t: ActivationCache(test_cache / Cell(hook, t, pooling).path) for t in config.timesteps}
            for t in config.timesteps:
                cell = Cell(hook, t, pooling)
                sae = KSparseAutoencoder.from_pretrained(config.work / "saes" / cell.path)
                evaluator = SAEEvaluator(sae)
                for chunk in caches[t].chunks(rows=65536, columns=("activations",)):
                    evaluator.add(chunk["activations"])
                held_out = evaluator.result()
                sae.config.metrics = {**sae.config.metrics, "test": held_out}
                by_t = activation_by_timestep(sae, caches)
                sae.extra_files[TIMESTEPS_FILE] = ({"timesteps": torch.tensor(sorted(caches)), "mean_activation": by_t}, {})
                sae.save_pretrained(config.out / sae_subfolder(cell))
                rows.append(SAERow(hook=hook, timestep=t, pooling=pooling, d_in=sae.d_in, d_sae=sae.d_sae, k=sae.k,
                                   test_tokens=held_out["tokens"], **{k: v for k, v in held_out.items() if k != "tokens"}))
                log.info(json.dumps(dataclasses.asdict(rows[-1])))
    return rows


def write_sae_metrics(rows: list[SAERow], hooks: list[str], timesteps: list[int], out: Path) -> None:
    SAEGrid(split="test", hooks=hooks, timesteps=timesteps, rows=rows).write(metrics_file(out, SAE_GRID))
    for pooling in POOLINGS:
        cells = [r for r in rows if r.pooling == pooling]
        for metric in ("normalized_mse", "dead_fraction"):
            grid_heatmap({(r.hook, r.timestep): getattr(r, metric) for r in cells}, hooks, timesteps,
                         f"SAE {metric} on test images (pooling {pooling})", GridPlot.sae_metric(metric, pooling).path(out),
                         colorbar_label=metric, best="min")
