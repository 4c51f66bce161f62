"""The quality gate of a text-to-image model whose captions are a template over label sets.

A model captioned "a {colour} {class}" is asked for every combination of the label sets' words
(every prompt of the template); one reference classifier per label set, each trained on the
dataset's REAL images with that set's labels (kept in the release: ``reference_classifier/`` for
the default set, ``label_sets/<set>/reference_classifier/`` for the others), says whether each
sample shows what its prompt named. Prompt p, image i uses seed ``seed + 1000 p + i``. The
default set's scores fill the fields every gate has; each set's are in ``label_sets``.
"""

from __future__ import annotations

import itertools
import json
import logging
import string
from dataclasses import replace

import torch

from revelio.config import to_json
from revelio.data.datasets import load_image_dataset
from revelio.errors import ConfigError
from revelio.formats.metrics import LabelSetGate, QualityGate
from revelio.layout import PLOTS_DIR, QUALITY_GATE, SAMPLES_PLOT, label_set_dir, metrics_file
from revelio.models import Backbone, load_backbone
from revelio.plots import sample_grid
from revelio.steps.quality_gate import QualityGateConfig, reference_classifier, run_quality_gate, with_inputs

log = logging.getLogger(__name__)


def template_fields(template: str | None) -> list[str]:
    """The named fields of a caption template, in order ([] for none or "{}")."""
    if not template:
        return []
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def text_gate_skipped(backbone: Backbone, label_sets: dict[str, list[str]]) -> str | None:
    """Why a text model's gate cannot run on these label sets, or None when it can."""
    template = getattr(backbone, "prompt_template", None)
    fields = template_fields(template)
    if not fields:
        return ("the text model names no caption template over label sets (revelio.json's prompt_template, e.g. "
                "\"a {colour} {class}\"), so it cannot be asked for a label")
    missing = [f for f in fields if f not in label_sets]
    if missing:
        return f"its caption template {template!r} names {missing}, which are not label columns of the dataset ({list(label_sets)})"
    return None


def gate_label_sets(config: QualityGateConfig, backbone: Backbone) -> dict[str, list[str]]:
    """The dataset's label sets the caption template names, the gate's label column (if any) first."""
    fields = template_fields(getattr(backbone, "prompt_template", None))
    columns = list(dict.fromkeys([c for c in [config.label_column] if c] + fields))
    return load_image_dataset(config.dataset, "train", config.image_column, columns or None).label_sets


def run_any_quality_gate(config: QualityGateConfig, backbone: Backbone | None = None) -> QualityGate:
    """The gate that fits the model: per class (class-conditional), per prompt of its caption template (text)."""
    backbone = backbone or load_backbone(config.model, device=config.device)
    if backbone.conditioning == "text":
        return run_text_quality_gate(config, backbone)
    return run_quality_gate(config, backbone)


def run_text_quality_gate(config: QualityGateConfig, backbone: Backbone) -> QualityGate:
    """Judge samples of every prompt by each label set's reference classifier; writes quality_gate.json
    and samples.png (one row per concept of the default set, one column per combination of the others)."""
    config = with_inputs(config)
    template = backbone.prompt_template
    fields = template_fields(template)
    label_sets = gate_label_sets(config, backbone)
    if text_gate_skipped(backbone, label_sets):
        raise ConfigError(text_gate_skipped(backbone, label_sets))
    default = next(iter(label_sets))
    order = [default, *[f for f in fields if f != default]]  # rows: the default set's concepts
    classifiers, real = {}, {}
    for name in fields:
        set_config = replace(config, label_column=name, out=label_set_dir(config.out, None if name == default else name))
        classifiers[name], real[name] = reference_classifier(set_config, backbone.resolution, backbone.image_channels)
    hits = {name: {word: [] for word in label_sets[name]} for name in fields}
    rows: dict[str, list[torch.Tensor]] = {}
    for p, combination in enumerate(itertools.product(*(range(len(label_sets[f])) for f in order))):
        words = {f: label_sets[f][i] for f, i in zip(order, combination)}
        prompt = template.format(**words)
        images = backbone.generate(prompt, seed=config.seed + 1000 * p, num_images=config.per_class,
                                   num_inference_steps=config.steps, guidance_scale=config.guidance_scale, output_type="pt")
        for name in fields:
            right = classifiers[name].predict(images * 2 - 1) == combination[order.index(name)]
            hits[name][words[name]] += right.tolist()
        rows.setdefault(words[default], []).append(images[0])
        log.info(json.dumps({"prompt": prompt, **{name: sum(hits[name][words[name]][-config.per_class:]) / config.per_class
                                                  for name in fields}}))
    sets = {name: LabelSetGate(real[name], _mean([x for v in hits[name].values() for x in v]),
                               {word: _mean(v) for word, v in hits[name].items()}) for name in fields}
    first = sets[default]
    result = QualityGate(
        model=config.model, dataset=config.dataset, samples_per_class=config.per_class, num_inference_steps=config.steps,
        guidance_scale=config.guidance_scale or backbone.default_guidance_scale, seed=config.seed,
        chance=1 / len(label_sets[default]), reference_accuracy_on_real_test=first.reference_accuracy_on_real_test,
        reference_accuracy_on_samples=first.accuracy_on_samples, per_class_accuracy_on_samples=first.per_concept_accuracy_on_samples,
        config=to_json(config), prompt_template=template, label_sets=sets,
    )
    columns = min(len(r) for r in rows.values())
    sample_grid(torch.stack([torch.stack(r[:columns]) for r in rows.values()]).numpy(), list(rows), columns,
                config.out / PLOTS_DIR / SAMPLES_PLOT)
    result.write(metrics_file(config.out, QUALITY_GATE))  # last: its presence marks the gate finished
    log.info("text quality gate: %s", ", ".join(f"{n} {s.accuracy_on_samples:.3f} (real {s.reference_accuracy_on_real_test:.3f})"
                                                 for n, s in sets.items()))
    return result


def _mean(values: list[float]) -> float:
    return sum(values) / max(len(values), 1)
