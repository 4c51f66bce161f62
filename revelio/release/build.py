"""Build a complete release for any backbone and any labelled image dataset, in one call.

The dataset's labels are the release's classes (several label columns: several label sets, each
with its own probes, feature statistics, purity, reference classifier and steering measurement
under ``label_sets/<set>/``); the backbone's own conditioning (text, its own classes, none) is
separate. A local backbone is copied into the release; a Hub one is referenced
by repo id and revision. The build is a sequence of named stages (:data:`STAGES`), each a step of
revelio.steps or revelio.release over one step config that :class:`ReleaseConfig` holds whole
(so a new step option is at once a flag of train/build_release.py): the quality gate (reference
classifier + samples; only for a backbone conditioned on the dataset's own classes), activation
caches of training, test and random-weights images, the SAE grid for both poolings, the probe
grid with baselines, the SAEs' held-out evaluation into the release, exemplars and held-out
examples, release.json, held-out purity, a short steering measurement (so a fresh release's Steer
tab starts from a measured setting; ``--no-steering`` skips it) and the model card. The backbone
is loaded once (random-weights caches load their own copy). Every stage is resumable: its output
is reused when it was made with the same settings from the same inputs, so a build killed
anywhere and run again with the same command finishes with the same release. Each step is
logged and recorded in release.json as the train/ command that reproduces it.
"""

from __future__ import annotations

import logging
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import diffusers
import torch

from revelio import __version__
from revelio.config import to_argv, to_json
from revelio.data.datasets import COLOUR_FASHION_MNIST, FASHION_MNIST, default_label_column, load_image_dataset
from revelio.data.image_folders import split_description
from revelio.formats.metrics import Monosemanticity, ProbeGrid, QualityGate, SAEGrid
from revelio.formats.release import BestCell, ReleaseInfo
from revelio.grid import POOLINGS, Cell, Pooling
from revelio.layout import (
    DATASET_FILE,
    EXTRACTION_RUN_FILE,
    HELD_OUT_FILE,
    MODEL_DIR,
    PROBE_GRID,
    PROBES_DIR,
    QUALITY_GATE,
    REFERENCE_CLASSIFIER_DIR,
    RELEASE_FILE,
    SAES_DIR,
    STEERING,
    WEIGHTS_FILE,
    label_set_dir,
    metrics_file,
    sae_cells,
    sae_subfolder,
)
from revelio.models import Backbone, load_backbone
from revelio.release.card import write_card
from revelio.release.exemplars import thumbnail_side, write_exemplars, write_held_out_examples
from revelio.release.label_set_stats import write_label_set_stats
from revelio.release.load import Release, load_release
from revelio.release.purity_measurement import MonosemanticityConfig, measure_monosemanticity
from revelio.release.release_config import ReleaseConfig
from revelio.release.sae_evaluation import evaluate_saes, write_sae_metrics
from revelio.release.settings_check import check_settings, fit_to_dataset
from revelio.release.steering_measurement import SteeringMeasureConfig, measure_steering
from revelio.sae.model import KSparseAutoencoder
from revelio.steps.extract import extract_to_cache, with_inputs
from revelio.steps.extraction_config import ExtractionConfig
from revelio.steps.imported_saes import ImportedSAEsConfig, install_saes, load_published
from revelio.steps.probe_grid import ProbeGridConfig, train_probe_grid
from revelio.steps.quality_gate import with_inputs as gate_with_inputs
from revelio.steps.sae_grid import SAEGridConfig, train_sae_grid
from revelio.steps.text_quality_gate import run_any_quality_gate, text_gate_skipped
from revelio.storage.files import read_json

log = logging.getLogger(__name__)

class StepLog:
    """Runs steps in this process and records the train/ command that reproduces each."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    def run(self, script: str, configs: list[Any], step: Callable[[], Any], done: bool = False) -> None:
        """Run ``step``, or with ``done`` (its output is already there) only record its command."""
        shown = "python " + shlex.join([f"train/{script}", *to_argv(*configs)])
        self.commands.append(shown)
        log.info("$ %s%s", shown, "\n(finished earlier: reusing its output)" if done else "")
        if not done:
            step()


@dataclass
class Build:
    """What the stages share: the settings, the one loaded backbone, and what earlier stages made."""

    config: ReleaseConfig
    command: str
    model: str  # the backbone as the release references it: its model/ folder, or the Hub id
    local: bool
    backbone: Backbone
    hooks: list[str]
    class_names: list[str]
    label_sets: dict[str, list[str]]  # every label set by column, the default (class_names) first
    poolings: list[Pooling]  # the SAEs' (published SAEs read tokens: spatial only)
    steps: StepLog = field(default_factory=StepLog)
    caches: dict[str, Path] = field(default_factory=dict)
    gate_skipped: str | None = None
    sae_grid: SAEGrid | None = None
    exemplars: int = 0
    held_out: int = 0
    info: ReleaseInfo | None = None
    release: Release | None = None
    purity: Monosemanticity | None = None

    @property
    def out(self) -> Path:
        return self.config.out

    @property
    def columns(self) -> dict[str, str | None]:
        """The dataset's columns for steps that read one label set: the default one."""
        return {"image_column": self.config.image_column, "label_column": default_label_column(self.config.label_column)}

    @property
    def further_label_sets(self) -> list[str]:
        return list(self.label_sets)[1:]

    def view(self, label_set: str | None) -> Release:
        return self.release.with_label_set(label_set)


def build_release(config: ReleaseConfig, command: str) -> ReleaseInfo:
    """Build (or finish) the release in ``config.out``; ``command`` is recorded as how it was built."""
    build = _start(config, command)
    for number, (name, stage) in enumerate(STAGES, start=1):
        log.info("== stage %d/%d: %s", number, len(STAGES), name)
        stage(build)
    size = sum(p.stat().st_size for p in config.out.rglob("*") if p.is_file())
    best = build.info.best_cell
    log.info("release written to %s: %.1f MiB; best cell %s (%s, test accuracy %.4f)",
             config.out, size / 2**20, best.cell, best.probe, best.test_accuracy)
    return build.info


def _start(config: ReleaseConfig, command: str) -> Build:
    """Check the settings against the model and the dataset, copy a local model in, load it once."""
    check_settings(config)
    local = Path(config.model).is_dir()
    model = str(config.out / MODEL_DIR) if local else config.model
    if local and Path(config.model).resolve() != Path(model).resolve():
        shutil.rmtree(model, ignore_errors=True)
        shutil.copytree(config.model, model)
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    backbone = load_backbone(model, device=device, revision=config.revision)
    hooks = backbone.check_hook_points(published_hooks(config) if config.saes else config.hooks or backbone.hook_points)
    config = fit_to_dataset(config, backbone, hooks)
    data = load_image_dataset(config.dataset, "train", config.image_column, config.label_column)
    poolings: list[Pooling] = ["none"] if config.saes else list(POOLINGS)
    return Build(config, command, model, local, backbone, hooks, data.class_names, data.label_sets, poolings)


def published_hooks(config: ReleaseConfig) -> list[str]:
    """The hook points the published SAEs read, in their order (each named once)."""
    return list(dict.fromkeys(load_published(spec, config.revision).config.hook for spec in config.saes or []))


def stage_quality_gate(build: Build) -> None:
    config = build.config
    if build.backbone.conditioning == "text":
        build.gate_skipped = text_gate_skipped(build.backbone, build.label_sets)
    else:
        build.gate_skipped = quality_gate_skipped(build.backbone, build.class_names)
    if build.gate_skipped is not None:
        log.info("quality gate skipped: %s", build.gate_skipped)
        metrics_file(build.out, QUALITY_GATE).unlink(missing_ok=True)  # an earlier build's gate judged another model
        for label_set in [None, *build.further_label_sets]:
            shutil.rmtree(label_set_dir(build.out, label_set) / REFERENCE_CLASSIFIER_DIR, ignore_errors=True)
        return
    gate = gate_with_inputs(replace(config.gate, model=build.model, out=build.out, dataset=config.dataset, seed=config.seed,
                                    device=config.device, classifier=None, test_split=config.test_split, **build.columns))
    path = metrics_file(build.out, QUALITY_GATE)
    done = path.is_file() and QualityGate.read(path).config == to_json(gate)
    build.steps.run("quality_gate.py", [gate], lambda: run_any_quality_gate(gate, build.backbone), done=done)


def stage_extract(build: Build) -> None:
    """The four caches (and the pooled SAEs' larger one): finished ones reused, interrupted ones resumed."""
    config = build.config
    extractions = [("train", "train", config.train_images, False, POOLINGS), ("test", config.test_split, config.test_images, False, POOLINGS),
                   ("random-train", "train", config.random_images, True, POOLINGS),
                   ("random-test", config.test_split, config.test_images, True, POOLINGS)]
    if config.pooled_train_images is not None and config.pooled_train_images != config.train_images:
        extractions.append(("pooled-train", "train", config.pooled_train_images, False, ("mean",)))
    for name, split, limit, random, poolings in extractions:
        extraction = with_inputs(replace(
            config.extraction, backbone=build.model, revision=config.revision, out=config.work / "caches" / name,
            timesteps=config.timesteps, dataset=config.dataset, split=split, limit=limit, hooks=build.hooks, poolings=list(poolings),
            seed=config.seed, device=config.device, random_weights=random, prompt_template=config.prompt_template,
            image_column=config.image_column, label_column=config.label_column))
        same = _same_extraction(extraction, name)
        run = replace(extraction, overwrite=not same)  # other settings start that cache over (not recorded: a rerun resumes)
        backbone = None if random else build.backbone  # a random-weights copy is its own model
        build.steps.run("extract_activations.py", [extraction], lambda e=run, b=backbone: extract_to_cache(e, b),
                        done=same and (extraction.out / DATASET_FILE).is_file())
        build.caches[name] = extraction.out


def _same_extraction(extraction: ExtractionConfig, name: str) -> bool:
    """The cache folder was (or is being) extracted by this very command from these very files;
    when it was not, the log says what changed."""
    run = extraction.out / EXTRACTION_RUN_FILE
    if not run.is_file():
        return False
    started = read_json(run)
    wanted = {k: v for k, v in to_json(extraction).items() if k != "overwrite"}
    changed = sorted(k for k in set(started) | set(wanted) if started.get(k) != wanted.get(k))
    if changed:
        log.info("the %s cache was extracted with other %s (%s): extracting it again", name,
                 "inputs" if changed == ["inputs"] else "settings",
                 "; ".join(f"{k}: {started.get(k)!r} -> {wanted.get(k)!r}" for k in changed))
    return not changed


def stage_saes(build: Build) -> None:
    """Pooled and spatial SAE grids in the work folder (finished cells kept, interrupted ones
    resumed), or the published SAEs installed there with statistics on this data."""
    config = build.config
    if config.saes:
        imported = ImportedSAEsConfig(saes=list(config.saes), cache=build.caches["train"], out=config.work / SAES_DIR,
                                      timesteps=config.timesteps, revision=config.revision)
        build.steps.run("import_saes.py", [imported], lambda: install_saes(imported))
        return
    for pooling, training in (("mean", config.pooled_sae), ("none", config.spatial_sae)):
        source = build.caches.get("pooled-train", build.caches["train"]) if pooling == "mean" else build.caches["train"]
        grid = SAEGridConfig(cache=source, out=config.work / SAES_DIR, poolings=[pooling])
        training = replace(training, seed=config.seed)
        build.steps.run("train_sae.py", [grid, training], lambda g=grid, t=training: train_sae_grid(g, t))


def stage_probes(build: Build) -> None:
    """The probe grid of every label set (a further set's into label_sets/<set>/)."""
    config = build.config
    kinds = [k for k in config.probes.kinds if k != "sae-linear" or "mean" in build.poolings]  # it reads pooled SAEs
    for label_set in [None, *build.further_label_sets]:
        out = label_set_dir(build.out, label_set)
        probes = replace(config.probes, cache=build.caches["train"], out=out, test_cache=build.caches["test"],
                         random_cache=build.caches["random-train"], random_test_cache=build.caches["random-test"],
                         saes=config.work / SAES_DIR, seed=config.seed, kinds=kinds, label_set=label_set)
        reuse = _probes_done(probes, list(build.caches.values()))  # delete metrics/probe_grid.json to retrain
        if not reuse:
            shutil.rmtree(out / PROBES_DIR, ignore_errors=True)
        build.steps.run("train_probes.py", [probes], lambda p=probes: train_probe_grid(p), done=reuse)


def stage_evaluate_saes(build: Build) -> None:
    """Each SAE into the release with its held-out metrics; cells of an earlier grid that this one lacks are removed."""
    config = build.config
    rows = evaluate_saes(config.work / SAES_DIR, build.out, build.hooks, config.timesteps, build.poolings, build.caches["test"])
    wanted = {row.cell for row in rows}
    for cell in sae_cells(build.out):
        if cell not in wanted:
            shutil.rmtree(build.out / sae_subfolder(cell))
    build.sae_grid = write_sae_metrics(rows, build.hooks, config.timesteps, build.poolings, build.out)
    trained_on = {"mean": build.caches.get("pooled-train", build.caches["train"]), "none": build.caches["train"]}
    for label_set in build.further_label_sets:
        write_label_set_stats(build.out, sorted(wanted), trained_on, label_set)


def stage_examples(build: Build) -> None:
    config = build.config
    side = thumbnail_side(build.backbone.resolution)
    build.exemplars = write_exemplars(build.out, config.dataset, config.image_column, config.label_column, side)
    build.held_out = write_held_out_examples(build.out, config.dataset, config.test_split, config.image_column,
                                             config.label_column, config.held_out_per_class, side)  # every label set's labels


def stage_release_info(build: Build) -> None:
    config = build.config
    probe_grid = ProbeGrid.read(metrics_file(build.out, PROBE_GRID))
    best = probe_grid.best
    further = {s: ProbeGrid.read(metrics_file(label_set_dir(build.out, s), PROBE_GRID)).best for s in build.further_label_sets}
    pooled, spatial = config.pooled_sae, config.spatial_sae
    build.info = ReleaseInfo(
        backbone=MODEL_DIR if build.local else config.model, backbone_revision=None if build.local else config.revision,
        backbone_name=backbone_name(config, build.local, build.backbone),
        conditioning=build.backbone.conditioning, noising=build.backbone.noising, backbone_class_names=build.backbone.class_names,
        prompt_template=config.prompt_template, caption_template=getattr(build.backbone, "prompt_template", None), dataset=config.dataset, dataset_split=dataset_split(config),
        dataset_name=Path(config.dataset).name if Path(config.dataset).is_dir() else config.dataset,
        num_train_images=config.train_images,
        num_test_images=config.test_images, hooks=build.hooks, timesteps=config.timesteps, poolings=build.poolings,
        class_names=build.class_names, label_sets=build.label_sets, default_label_set=next(iter(build.label_sets), None),
        quality_gate_skipped=build.gate_skipped,
        label_set_best_cells={s: BestCell(b.hook, b.cell.timestep, b.probe, b.test_accuracy) for s, b in further.items()},
        probe_kinds=sorted({r.probe for r in probe_grid.rows if r.features == "diffusion"}),
        best_cell=BestCell(best.hook, best.cell.timestep, best.probe, best.test_accuracy),
        sae=published_summary(build) if config.saes else {
            "expansion": spatial.expansion, "mean_expansion": pooled.expansion, "k": spatial.k, "mean_k": pooled.k,
            "prune_below": pooled.prune_below, "mean_tokens": pooled.total_tokens, "spatial_tokens": spatial.total_tokens,
            "mean_train_images": config.pooled_train_images or config.train_images},
        exemplar_images=build.exemplars, held_out_images=build.held_out, seed=config.seed,
        versions={"revelio": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__},
        commands=[build.command, *build.steps.commands], config=to_json(config),
    )
    build.info.write(build.out / RELEASE_FILE)
    build.release = load_release(build.out)


def backbone_name(config: ReleaseConfig, local: bool, backbone: Backbone) -> str:
    """How the card and the app name the model: revelio's own bundled models by what they are, others
    by their Hub id or their folder's name (the path where it was built means nothing elsewhere)."""
    if local and config.dataset in (FASHION_MNIST, COLOUR_FASHION_MNIST):
        kind = "text-to-image model" if backbone.conditioning == "text" else "model"
        return f"revelio's {config.dataset} {kind}"
    return Path(config.model).name if local else config.model


def dataset_split(config: ReleaseConfig) -> str:
    """How the release's train and test images were chosen, in words."""
    if Path(config.dataset).is_dir():
        return split_description(Path(config.dataset))
    return f"the dataset's own 'train' and {config.test_split!r} splits"


def published_summary(build: Build) -> dict[str, Any]:
    """release.json's ``sae`` for published SAEs: where each came from, its size and hook point."""
    sources = []
    for cell in sorted({Cell(hook, build.config.timesteps[0], "none") for hook in build.hooks}):
        sae = KSparseAutoencoder.from_pretrained(build.out, subfolder=sae_subfolder(cell))
        origin = sae.config.source
        sources.append({"hook": cell.hook, "d_sae": sae.d_sae, "k": sae.k, "format": origin.format if origin else "revelio",
                        "repo": origin.repo if origin else "", "subfolder": origin.subfolder if origin else "",
                        "license": origin.license if origin else ""})
    return {"published": sources}


def stage_monosemanticity(build: Build) -> None:
    """Held-out purity of every SAE and its baselines, in every label set (the card shows the default set's)."""
    for label_set in [None, *build.further_label_sets]:
        config = MonosemanticityConfig(release=str(build.out), seed=build.config.seed, device=build.config.device, label_set=label_set)
        purity = measure_monosemanticity(config, build.view(label_set), build.backbone)
        build.purity = build.purity or purity


def stage_steering(build: Build) -> None:
    """A short steering measurement at the chosen cells' spatial SAEs (default: the best cell)."""
    if not build.config.with_steering:
        log.info("steering measurement skipped (--no-steering)")
        metrics_file(build.out, STEERING).unlink(missing_ok=True)  # an earlier build's would describe other SAEs
        return
    config = build.config
    for label_set in [None, *build.further_label_sets]:
        view = build.view(label_set)
        cells = config.steering.cells or [view.best_cell.spec]
        steering = replace(config.steering, release=str(build.out), cells=cells, seed=config.seed, label_set=label_set,
                           out=metrics_file(view.labels_root, STEERING).parent)
        done = _steering_done(steering, view)
        build.steps.run("measure_steering.py", [steering], lambda s=steering, v=view: measure_steering(s, v, build.backbone),
                        done=done)
    build.info.commands = [build.command, *build.steps.commands]
    build.info.write(build.out / RELEASE_FILE)


def stage_card(build: Build) -> None:
    # read afresh: the steering stage rewrote release.json (its commands) after build.release was loaded
    write_card(load_release(build.out), build.config.repo_id or build.out.as_posix())


STAGES: list[tuple[str, Callable[[Build], None]]] = [
    ("quality gate", stage_quality_gate),
    ("activation caches", stage_extract),
    ("SAE grid", stage_saes),
    ("probe grid", stage_probes),
    ("SAEs on held-out images", stage_evaluate_saes),
    ("exemplars and held-out examples", stage_examples),
    ("release.json", stage_release_info),
    ("held-out purity", stage_monosemanticity),
    ("steering measurement", stage_steering),
    ("model card", stage_card),
]


def _steering_done(steering: SteeringMeasureConfig, view: Release) -> bool:
    """steering.json is there, measured with these settings, after every SAE and probe it may use was written."""
    path = metrics_file(view.labels_root, STEERING)
    if not path.is_file() or read_json(path).get("config") != to_json(steering):
        return False
    inputs = [*(Path(steering.release) / SAES_DIR).rglob(WEIGHTS_FILE), metrics_file(view.labels_root, PROBE_GRID),
              Path(steering.release) / HELD_OUT_FILE]  # class maps come from the held-out images
    return all(path.stat().st_mtime >= p.stat().st_mtime for p in inputs if p.is_file())


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
