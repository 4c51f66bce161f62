"""The quality gate: does a classifier that never saw the model recognise its samples?

A small CNN trained on the dataset's REAL training images (the reference classifier, kept in the
release for steering measurements too) labels ``per_class`` samples of every class, generated
with fixed seeds (class c, image i uses seed ``seed + 1000 c + i``); the share it labels as the
class they were generated from is the model's score (chance is 1/classes).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from revelio.config import option, to_json
from revelio.data.datasets import load_image_dataset
from revelio.data.fingerprint import fingerprint
from revelio.data.images import to_pixels
from revelio.errors import ConfigError, DatasetError
from revelio.formats.metrics import QualityGate
from revelio.layout import CONFIG_FILE, PLOTS_DIR, QUALITY_GATE, REFERENCE_CLASSIFIER_DIR, SAMPLES_PLOT, metrics_file
from revelio.models import Backbone, load_backbone
from revelio.plots import sample_grid
from revelio.probes.reference_classifier import ReferenceClassifier

log = logging.getLogger(__name__)


@dataclass
class QualityGateConfig:
    """Which model to judge, against which dataset, with how many samples; stored in quality_gate.json."""

    model: str = option(help="class-conditional diffusers pipeline (folder or Hub id)")
    out: Path = option(help="release folder: gets reference_classifier/, metrics/quality_gate.json, plots/samples.png")
    dataset: str = option("fashion-mnist", "the dataset the model was trained on")
    image_column: str | None = option(None)
    label_column: str | None = option(None)
    classifier: Path | None = option(None, "reference classifier folder (default: <out>/reference_classifier); trained when missing")
    epochs: int = option(12, "reference classifier epochs")
    classifier_width: int = option(64, "reference classifier conv width (12 epochs at 64 reach 0.91+ on Fashion-MNIST's real test images)")
    per_class: int = option(100, "samples generated per class")
    steps: int = option(25, "denoising steps per sample (25 suits DPM-Solver++)")
    guidance_scale: float | None = option(None, "default: the model's own")
    grid_columns: int = option(10, "samples per class in plots/samples.png")
    seed: int = option(0)
    device: str | None = option(None)
    test_split: str = option("test", "the split of real images the classifier is scored on")
    inputs: str = option("", "fingerprint of the dataset's files (filled in when empty): the classifier is retrained on others",
                         cli=False)
    model_inputs: str = option("", "fingerprint of the model's files (filled in when empty): other files are another gate",
                               cli=False)


# What the reference classifier depends on (not the model): it is reused only when these match.
CLASSIFIER_SETTINGS = ("dataset", "image_column", "label_column", "test_split", "epochs", "classifier_width", "seed", "inputs")


def with_inputs(config: QualityGateConfig) -> QualityGateConfig:
    """The config with the fingerprints of its dataset and model files, so changed files are another gate."""
    return replace(config, inputs=config.inputs or fingerprint(config.dataset), model_inputs=config.model_inputs or fingerprint(config.model))


def real_images(config: QualityGateConfig, split: str, resolution: int, channels: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(images in [-1, 1], labels, class names) of one split of the dataset."""
    data = load_image_dataset(config.dataset, split, config.image_column, config.label_column)
    if data.class_names is None:
        raise DatasetError(f"{config.dataset} has no class labels; the quality gate needs them (name the label_column)")
    return to_pixels(data.dataset[data.image_column], resolution, channels), torch.tensor(data.labels), data.class_names


def reference_classifier(config: QualityGateConfig, resolution: int, channels: int) -> tuple[ReferenceClassifier, float]:
    """Load the reference classifier, or train it on real images and save it; returns (classifier, test accuracy)."""
    folder = config.classifier or config.out / REFERENCE_CLASSIFIER_DIR
    test_x, test_y, names = real_images(config, config.test_split, resolution, channels)
    if (folder / CONFIG_FILE).is_file():
        classifier = ReferenceClassifier.from_pretrained(folder)
        recorded, wanted = classifier.config.config, to_json(config)
        changed = [k for k in CLASSIFIER_SETTINGS if recorded.get(k) != wanted[k]]
        if not changed:
            return classifier, classifier.accuracy(test_x, test_y)
        log.info("the reference classifier in %s was trained with other %s: training it again", folder, ", ".join(changed))
    train_x, train_y, _ = real_images(config, "train", resolution, channels)
    classifier = ReferenceClassifier.fit(train_x, train_y, names, epochs=config.epochs, seed=config.seed, width=config.classifier_width,
                                         dataset=config.dataset, trained_on="real training images", config=to_json(config))
    classifier.config.test_accuracy = classifier.accuracy(test_x, test_y)
    classifier.save_pretrained(folder)
    return classifier, classifier.config.test_accuracy


def run_quality_gate(config: QualityGateConfig, backbone: Backbone | None = None) -> QualityGate:
    """Judge the model's samples of every class; writes quality_gate.json and samples.png, returns the metrics.
    A caller that already holds the backbone passes it."""
    backbone = backbone or load_backbone(config.model, device=config.device)
    config = with_inputs(config)
    names = backbone.class_names
    if not names:
        raise ConfigError(f"{config.model} is not class-conditional; the quality gate generates per class")
    classifier, real_accuracy = reference_classifier(config, backbone.resolution, backbone.image_channels)
    if classifier.class_names != names:
        raise ConfigError(f"the classifier's classes {classifier.class_names} differ from the model's {names}")
    columns = min(config.grid_columns, config.per_class)
    per_class, samples = {}, []
    for c, name in enumerate(names):
        images = backbone.generate(c, seed=config.seed + 1000 * c, num_images=config.per_class,
                                   num_inference_steps=config.steps, guidance_scale=config.guidance_scale, output_type="pt")
        predicted = classifier.predict(images * 2 - 1)
        per_class[name] = float((predicted == c).float().mean())
        samples.append(images[:columns])
        log.info(json.dumps({"class": name, "accuracy": per_class[name]}))
    result = QualityGate(
        model=config.model, dataset=config.dataset, samples_per_class=config.per_class,
        num_inference_steps=config.steps, guidance_scale=config.guidance_scale or backbone.default_guidance_scale,
        seed=config.seed, chance=1 / len(names), reference_accuracy_on_real_test=real_accuracy,
        reference_accuracy_on_samples=sum(per_class.values()) / len(per_class), per_class_accuracy_on_samples=per_class,
        config=to_json(config),
    )
    sample_grid(torch.stack(samples).numpy(), names, columns, config.out / PLOTS_DIR / SAMPLES_PLOT)
    result.write(metrics_file(config.out, QUALITY_GATE))  # last: its presence marks the gate finished
    log.info("reference classifier: %.4f on real test images, %.4f on generated samples (chance %.2f)",
             real_accuracy, result.reference_accuracy_on_samples, result.chance)
    return result
