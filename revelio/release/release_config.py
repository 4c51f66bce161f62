"""What a release is built from: one config holding every step's config, and the build's own settings.

Its fields are train/build_release.py's flags; the step configs are held whole
(:func:`revelio.config.group`), so ``--pooled-sae-k 16`` sets ``pooled_sae.k`` and a new option of a
step is at once a flag of the build.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from revelio.config import group, option
from revelio.release.steering_measurement import SteeringMeasureConfig
from revelio.sae.training import SAETrainConfig
from revelio.steps.extraction_config import ExtractionConfig
from revelio.steps.probe_grid import ProbeGridConfig
from revelio.steps.quality_gate import QualityGateConfig

# The fields of each step config that the build fills in itself (no flag of their own).
EXTRACTION_DERIVED = ("backbone", "out", "timesteps", "revision", "dataset", "split", "image_column", "label_column", "limit",
                      "hooks", "poolings", "seed", "device", "overwrite", "random_weights", "prompt_template")
SAE_DERIVED = ("seed",)
PROBE_DERIVED = ("cache", "out", "test_cache", "random_cache", "random_test_cache", "saes", "seed", "label_set")
GATE_DERIVED = ("model", "out", "dataset", "image_column", "label_column", "classifier", "seed", "device", "test_split")
STEERING_DERIVED = ("release", "out", "seed", "label_set")
UNSET = Path("")  # a derived path the build fills in


@dataclass
class ReleaseConfig:
    """Everything a release is built from; its flags are train/build_release.py's.

    The five step configs are held whole: ``--pooled-sae-k 16`` sets ``pooled_sae.k``,
    ``--probe-epochs 5`` sets ``probes.epochs``, and so on for every option of those steps.
    """

    model: str = option(help="diffusers pipeline: a local folder (copied into the release), a Hub repo id (referenced), or bundled")
    out: Path = option(help="the release folder")
    preset: Literal["default", "smoke", "paper"] = option(
        "default", "smoke: a first look in minutes on a CPU; paper: the paper's SD1.5 setting (flags given here still win)")
    revision: str | None = option(None, "the Hub backbone's revision (branch, tag or commit)")
    dataset: str = option("fashion-mnist", "labelled images: fashion-mnist, a Hub dataset id, or an image folder: class folders "
                          "(split 80/20, stratified, seeded) or train/ and test/ folders of class folders")
    image_column: str | None = option(None)
    label_column: list[str] | None = option(
        None, "default: the dataset's ClassLabel feature; several ClassLabel columns are label sets, each with its own probes, "
        "feature labels, purity and steering targets (the first is the default, e.g. --label-column class colour)")
    test_split: str = option("test")
    hooks: list[str] | None = option(None, "default: every block-level hook point (with --saes: the SAEs' own)")
    saes: list[str] | None = option(
        None, "published SAEs instead of training: SOURCE[:SUBFOLDER] each (Hub repo id or folder), used at their own "
        "hook points and every --timesteps (spatial SAEs only)")
    timesteps: list[int] = option([25, 100, 300, 600])
    prompt_template: str | None = option(
        None, 'text models: extract with each image\'s prompt from its label, e.g. "a photo of a {}" (default: the empty prompt)')
    train_images: int = option(12000, "a seeded, class-balanced subset of the training split")
    pooled_train_images: int | None = option(
        None, "more training images for the pooled SAEs alone (pooled vectors are small; e.g. the whole split); default: --train-images")
    test_images: int = option(2000, "a seeded, class-balanced subset of the test split")
    held_out_per_class: int = option(20, "test images per class kept for the app (examples, histograms)")
    random_images: int = option(4000, "training images for the random-weights baseline")
    with_steering: bool = option(True, "end with a short steering measurement (the Steer tab starts from its setting)",
                                    flag="--steering")
    repo_id: str | None = option(None, "the Hub repo id the release will be pushed to, for the card's title and Load snippet "
                                 "(default: the release folder)")
    seed: int = option(0)
    device: str | None = option(None, "cpu or cuda (default: cuda when available)")
    work: Path = option(Path("artifacts/release-work"), "caches and SAE checkpoints")
    extraction: ExtractionConfig = group(lambda: ExtractionConfig(backbone="", out=UNSET, timesteps=[]), "extract", EXTRACTION_DERIVED)
    pooled_sae: SAETrainConfig = group(lambda: SAETrainConfig(expansion=8, k=8, total_tokens=1_000_000), "pooled-sae", SAE_DERIVED)
    spatial_sae: SAETrainConfig = group(lambda: SAETrainConfig(expansion=8, k=8, total_tokens=2_000_000), "spatial-sae", SAE_DERIVED)
    probes: ProbeGridConfig = group(lambda: ProbeGridConfig(cache=UNSET, out=UNSET, max_train=6000), "probe", PROBE_DERIVED)
    gate: QualityGateConfig = group(lambda: QualityGateConfig(model="", out=UNSET), "gate", GATE_DERIVED)
    steering: SteeringMeasureConfig = group(
        lambda: SteeringMeasureConfig(cells=[], features_per_class=8, strengths=[1.0, 2.0, 3.0], per_source=2, steps=20),
        "steering", STEERING_DERIVED, help="no --steering-cells: the best probe's block and timestep")
