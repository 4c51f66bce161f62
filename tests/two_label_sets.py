"""A release with two label sets, built in-process (not a test module: test modules never import each other).

A tiny SD model whose captions are "a {colour} {shape}", built on a ``datasets`` DatasetDict with two
ClassLabel columns (saved with save_to_disk): every label set gets its probes, feature labels,
held-out labels, steering targets and reference classifier. tests/test_label_sets.py and the removal
tests build it.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np

import revelio
from revelio.release.build import build_release
from revelio.release.release_config import UNSET, ReleaseConfig
from revelio.release.steering_measurement import SteeringMeasureConfig
from revelio.sae.training import SAETrainConfig
from revelio.steps.probe_grid import ProbeGridConfig
from revelio.steps.quality_gate import QualityGateConfig
from tests import tiny_models

SHAPES = ["disc", "bar", "ring"]
COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220)}
TEMPLATE = "a {colour} {shape}"


def _image(shape: int, rgb: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[:32, :32] - 15.5 + rng.normal(0, 1.5, 2)[:, None, None]
    radius = np.hypot(x, y)
    mask = [radius < 9, (abs(y) < 4) & (abs(x) < 13), (radius > 6) & (radius < 11)][shape]
    image = mask[..., None] * np.array(rgb) + rng.normal(0, 12, (32, 32, 3))
    return image.clip(0, 255).astype(np.uint8)


def _split(per_combination: int, seed: int) -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    rows = [(s, c) for s in range(len(SHAPES)) for c in range(len(COLOURS)) for _ in range(per_combination)]
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string"),
                                  "shape": datasets.ClassLabel(names=SHAPES), "colour": datasets.ClassLabel(names=list(COLOURS))})
    return datasets.Dataset.from_dict({
        "image": [_image(s, list(COLOURS.values())[c], rng) for s, c in rows],
        "caption": [TEMPLATE.format(colour=list(COLOURS)[c], shape=SHAPES[s]) for s, c in rows],
        "shape": [s for s, _ in rows], "colour": [c for _, c in rows]}, features=features)


def build_two_label_set_release(tmp: Path) -> revelio.Release:
    """Build the shapes-and-colours release under ``tmp`` (a minute on one CPU) and load it."""
    data = tmp / "shapes"
    datasets.DatasetDict({"train": _split(8, 0), "test": _split(3, 1)}).save_to_disk(str(data))
    model = tiny_models.build_stable_diffusion(tmp / "model-src")
    (model / "revelio.json").write_text(json.dumps({
        "prompt_template": TEMPLATE, "label_sets": {"shape": SHAPES, "colour": list(COLOURS)},
        "guidance_scale": 3.0, "num_inference_steps": 3}))
    backbone = revelio.load_backbone(model, device="cpu")
    sae = {"expansion": 2, "k": 4, "batch_size": 32}
    config = ReleaseConfig(
        model=str(model), out=tmp / "release", dataset=str(data), label_column=["shape", "colour"],
        hooks=backbone.hook_points[-2:], timesteps=[100, 500], train_images=48, test_images=18, random_images=24,
        held_out_per_class=3, pooled_sae=SAETrainConfig(**sae, total_tokens=400), spatial_sae=SAETrainConfig(**sae, total_tokens=1600),
        probes=ProbeGridConfig(cache=UNSET, out=UNSET, max_train=48, epochs=1),
        gate=QualityGateConfig(model="", out=UNSET, per_class=1, epochs=1, steps=2),
        steering=SteeringMeasureConfig(cells=[], features_per_class=2, strengths=[2.0], per_source=1, steps=2), work=tmp / "work",
    )
    build_release(config, "test build of a release with two label sets")
    return revelio.load_release(tmp / "release")
