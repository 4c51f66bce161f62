"""Steering on any release, measured: success rate towards each of the dataset's classes, and side effects.

For each target class c, the features chosen by :func:`~revelio.steering.selection.steering_features`
are clamped (:func:`~revelio.steering.selection.clamp_targets`) at every chosen SAE while
generating from every source other than c, with the same seeds as an unsteered baseline. Sources
follow the backbone's conditioning: the dataset's classes for a model conditioned on them, a
prompt per class ("a photo of a {}", or the empty prompt) for text models, the backbone's own
classes otherwise, and one unconditional source for unconditional models. A judge says how many
images are c: the release's reference classifier (trained on real images only) when it has one,
else its best probe. The same number of features unrelated to any class (the heaviest ones that
no class's selection picks), clamped the same way, shows how far a clamp of as many features
moves images that it should not (pixel change, class changes). With a reference classifier, how
real the images steered towards c look is measured too (:mod:`revelio.release.steering_quality`).
"""

from __future__ import annotations

import json
import logging
import string
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch

from revelio.activations.capture import extract
from revelio.analysis.labels import evidence_labels
from revelio.config import option, to_json
from revelio.errors import ConfigError, DatasetError
from revelio.formats.metrics import ClassSteering, SideEffect, Steering, SteeringSource, SweepPoint
from revelio.grid import Cell
from revelio.layout import REFERENCE_CLASSIFIER_DIR, STEERING
from revelio.models import Backbone
from revelio.probes.classify_images import classify
from revelio.probes.reference_classifier import ReferenceClassifier
from revelio.release.load import Release, load_release
from revelio.release.steering_quality import ClassQuality
from revelio.sae import KSparseAutoencoder
from revelio.steering import FeatureEdit, steer
from revelio.steering.selection import (
    ClassCodeMaps,
    clamp_targets,
    nth_of_each_class,
    steering_features,
    unrelated_features,
    value_unit,
)

log = logging.getLogger(__name__)
VALIDATION_SEED = 500  # added to a source's seed for the images that choose exemplars (sources are 1000 apart)


@dataclass
class SteeringMeasureConfig:
    """Which SAEs of which release steer, how hard, on how many images; stored in steering.json."""

    release: str = option("bundled", "bundled, a release folder, or a Hub repo id")
    cells: list[str] = option(["mid_block:100", "up_blocks.0:100", "up_blocks.1:100"],
                              "SAEs to steer with, all at once, as HOOK:T")
    pooling: Literal["mean", "none"] = option("none")
    clamp_to: Literal["class-map", "max"] = option("class-map")
    features_per_class: int = option(16, "per SAE")
    class_features: list[str] = option([], 'classes that clamp another number of features per SAE, as CLASS=N (e.g. "Sandal=64")')
    exemplars: int | None = option(
        None, "class-map: clamp each class's features (still chosen on all held-out images) to the maps of one real "
              "held-out image instead of the mean maps: of its first this many, the one whose clamps turn most images "
              "from other seeds than the measurement's into the class (default: the mean maps)")
    exemplar_strength: float = option(1.5, "the strength the exemplars are chosen at")
    min_frequency: float = option(0.005, "features rarer than this are not chosen (class or unrelated)")
    strengths: list[float] = option([2.0], "each multiplies the class map (or the max activation); several: a sweep")
    budget: float = option(0.25, "most share of images the unrelated-feature clamps may relabel at the chosen strength")
    window: list[int] = option([999, 0], "T_HIGH T_LOW: steer only at timesteps in this range")
    per_source: int = option(5, "images per source (an unconditional model's one source gets this x the classes)")
    source_prompt: str | None = option(
        None, 'text models: the prompt of each source, "{}" for its class or "{set}" for each label set, e.g. "a {colour} {class}" '
        '(default: the release\'s caption template, else "a photo of a {}"); "" for the empty prompt')
    steps: int = option(25)
    guidance_scale: float | None = option(None, "default: the model's own")
    seed: int = option(0)
    label_set: str | None = option(None, "steer towards the concepts of this label set of the release (default: its first)")
    out: Path | None = option(None, "the folder to write steering.json into (a release's metrics/; default: log only)")


def checked_cells(config: SteeringMeasureConfig) -> list[Cell]:
    """The cells to steer at, once the config is known to make sense (before anything loads)."""
    if len(config.window) != 2:
        raise ConfigError(f"window is two timesteps, T_HIGH T_LOW (e.g. 999 0); got {config.window}")
    if config.clamp_to == "class-map" and config.pooling != "none":
        raise ConfigError("clamp_to 'class-map' needs spatial SAEs (pooling 'none'); use clamp_to 'max' for pooled ones")
    if config.exemplars is not None and (config.clamp_to != "class-map" or config.exemplars < 1):
        raise ConfigError(f"exemplars (got {config.exemplars}) is how many held-out images of each class (at least 1) "
                          "to choose the one whose maps the clamps follow from; it needs clamp_to 'class-map'")
    try:
        return [Cell.parse(spec, config.pooling) for spec in config.cells]
    except ValueError as err:
        raise ConfigError(str(err)) from None


@dataclass
class _Steering:
    """What one measurement steers with: the SAEs (with class maps when clamping to them) and how to generate.

    ``saes`` holds the maps of every held-out image, which choose the features; ``targets`` the maps
    the chosen features are clamped to (the same, or with ``exemplars`` one held-out image's per class,
    ``exemplar`` its row); ``tokens`` the held-out images' activations at each SAE's hook.
    """

    config: SteeringMeasureConfig
    backbone: Backbone
    saes: list[tuple[KSparseAutoencoder, ClassCodeMaps | None]]
    labels: dict[int, list[str]]  # id(sae) -> its features' labels by the app's evidence rule, computed once
    targets: list[ClassCodeMaps | None]
    tokens: list[torch.Tensor]
    held_out_labels: list[int]
    counts: dict[int, int]  # class id -> features per SAE, where it is not features_per_class
    exemplar: list[int] | None = None

    def edits(self, target: int | None, strength: float, targets: list[ClassCodeMaps | None] | None = None) -> list[FeatureEdit]:
        """One FeatureEdit per SAE: class ``target``'s selective features (its own number of them where
        ``counts`` says), or (None) ``features_per_class`` unrelated ones (none that any class's
        selection picks), clamped to ``targets`` (default: the measurement's)."""
        config, edits = self.config, []
        for (sae, maps), values in zip(self.saes, targets or self.targets):
            stats, n = sae.feature_stats, config.features_per_class

            def select(c: int, stats=stats, maps=maps) -> list[int]:
                return steering_features(stats, c, self.counts.get(c, n), maps, config.min_frequency)

            if target is None:
                used = {f for c in range(stats.label_distribution.shape[1]) for f in select(c)}
                chosen = unrelated_features(stats, n, config.min_frequency, used, None if maps is None else maps.mass())
            else:
                chosen = select(target)
            clamp = clamp_targets(chosen, strength, stats, values, target, value_unit(sae))
            if clamp:  # an SAE may have no feature that qualifies
                edits.append(FeatureEdit(sae, clamp=clamp, timesteps=(config.window[0], config.window[1])))
        return edits

    def images(self, source: Source, edits: list[FeatureEdit] | None, offset: int = 0) -> torch.Tensor:
        """``source.count`` images of one source in [0, 1], steered by ``edits``, seeded by the source (and ``offset``)."""
        config = self.config
        kwargs = {"seed": config.seed + offset + 1000 * source.index, "num_images": source.count, "num_inference_steps": config.steps,
                  "guidance_scale": config.guidance_scale, "output_type": "pt"}
        if not edits:
            return self.backbone.generate(source.condition, **kwargs)
        with steer(self.backbone, edits):
            return self.backbone.generate(source.condition, **kwargs)


@dataclass
class Source:
    """Images generated from one condition; ``label`` is the dataset class it depicts (None: unknown)."""

    index: int
    name: str
    condition: Any
    label: int | None
    count: int


def source_prompt(template: str, release: Release, index: int) -> str:
    """The prompt of source ``index`` (a concept of the release's label set): "{}" is its name; a
    "{set}" field is its name for its own set and, for another set, that set's ``index``-th concept
    (cycling), so every source is a different combination."""
    names = release.class_names or []
    fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    if not fields or fields == [""]:
        return template.format(names[index])
    own = release.label_set_name
    unknown = [f for f in fields if f not in release.info.label_sets]
    if unknown:
        raise ConfigError(f"the source prompt {template!r} names {unknown}, which are not label sets of this release "
                          f"({release.label_sets}); use '{{}}' for the class or one of those")
    sets = release.info.label_sets
    words = {f: names[index] if f == own else sets[f][index % len(sets[f])] for f in fields}
    return template.format(**words)


def sources(config: SteeringMeasureConfig, backbone: Backbone, release: Release) -> list[Source]:
    """What to steer from, by the backbone's conditioning (see the module docstring)."""
    n, class_names = config.per_source, release.class_names
    if backbone.conditioning == "text":
        template = config.source_prompt
        if template is None:
            template = release.info.caption_template or "a photo of a {}"
        if not template:
            return [Source(0, "empty prompt", "", None, n * len(class_names))]
        return [Source(i, name, source_prompt(template, release, i), i, n) for i, name in enumerate(class_names)]
    if backbone.conditioning == "class":
        own = list(backbone.class_names or [])
        if own == list(class_names):
            return [Source(i, name, i, i, n) for i, name in enumerate(class_names)]
        return [Source(i, name, i, None, n) for i, name in enumerate(own[: len(class_names)])]
    return [Source(0, "unconditional", None, None, n * len(class_names))]


def reference_classifier(release: Release) -> ReferenceClassifier | None:
    """The release's classifier of real images of this label set, if its quality gate trained one."""
    if not release.info.quality_gate_skipped and (release.labels_root / REFERENCE_CLASSIFIER_DIR).is_dir():
        return release.reference_classifier()
    return None


def judge(release: Release, backbone: Backbone) -> tuple[str, Callable[[torch.Tensor], torch.Tensor]]:
    """(what judges, images in [0, 1] -> predicted dataset class): the reference classifier, else the best probe."""
    classifier = reference_classifier(release)
    if classifier is not None:
        return "reference classifier", lambda images: classifier.predict(images * 2 - 1)
    probe = release.probe()
    sae = release.probe_sae(probe)

    def predict(images: torch.Tensor) -> torch.Tensor:
        return classify(backbone, probe, list(images), sae=sae, seed=release.info.seed).argmax(-1)

    return f"best probe ({probe.config.cell}, {probe.kind})", predict


def _load(config: SteeringMeasureConfig, cells: list[Cell], release: Release, backbone: Backbone) -> _Steering:
    """The cells' SAEs, checked to carry labelled statistics, with class maps from held-out images when needed."""
    saes = [release.sae(cell) for cell in cells]
    if any(sae.feature_stats is None or sae.feature_stats.label_distribution.shape[1] == 0 for sae in saes):
        raise DatasetError("these SAEs have no labelled feature statistics; rebuild the release with labels")
    maps: list[ClassCodeMaps | None] = [None] * len(saes)
    tokens: list[torch.Tensor] = []
    held_out: list[int] = []
    if config.clamp_to == "class-map":
        images, held_out = release.held_out_examples()
        tokens = [extract(backbone, images, [c.hook], [c.timestep], pooling="none", seed=release.info.seed)[(c.hook, c.timestep)]
                  for c in cells]
        maps = [ClassCodeMaps.from_tokens(sae, x, held_out, len(release.class_names)) for sae, x in zip(saes, tokens)]
    labels = {id(sae): [str(label) for label in evidence_labels(sae.feature_stats, release.class_names)] for sae in saes}
    return _Steering(config, backbone, list(zip(saes, maps)), labels, list(maps), tokens, held_out,
                     class_counts(config.class_features, release.class_names))


def class_counts(specs: list[str], names: list[str]) -> dict[int, int]:
    """``CLASS=N`` overrides of the number of features per SAE, by class id."""
    counts = {}
    for spec in specs:
        name, _, number = spec.rpartition("=")
        if name not in names or not number.isdigit() or int(number) < 1:
            raise ConfigError(f"class_features takes CLASS=N with a class of this release ({names}) and N >= 1; got {spec!r}")
        counts[names.index(name)] = int(number)
    return counts


def _maps_of(steering: _Steering, rows: list[int]) -> list[ClassCodeMaps | None]:
    """Each SAE's class maps from one held-out image per class (``rows``, by class)."""
    return [ClassCodeMaps.from_tokens(sae, x[rows], [steering.held_out_labels[r] for r in rows], len(rows))
            for (sae, _), x in zip(steering.saes, steering.tokens)]


def _choose_exemplars(steering: _Steering, origins: list[Source], n_classes: int,
                      predict: Callable[[torch.Tensor], torch.Tensor]) -> list[list[float]]:
    """Clamp each class's features to the maps of each of its first ``exemplars`` held-out images in
    turn, generating one image from every other source with validation seeds (never the
    measurement's); keep for each class the image whose clamps make the most of them the class
    (the earlier one on a tie). Returns each class's share per candidate."""
    config = steering.config
    shares: list[list[float]] = [[] for _ in range(n_classes)]
    for n in range(config.exemplars or 0):
        candidates = _maps_of(steering, nth_of_each_class(steering.held_out_labels, n_classes, n))
        for target in range(n_classes):
            edits = steering.edits(target, config.exemplar_strength, candidates)
            others = [replace(o, count=1) for o in origins if o.label != target]
            hits = [int((predict(steering.images(o, edits, VALIDATION_SEED)) == target).sum()) for o in others]
            shares[target].append(sum(hits) / len(others))
    best = [max(range(len(row)), key=lambda n, row=row: (row[n], -n)) for row in shares]
    steering.exemplar = [nth_of_each_class(steering.held_out_labels, n_classes, n)[c] for c, n in enumerate(best)]
    steering.targets = _maps_of(steering, steering.exemplar)
    log.info("exemplars (held-out rows by class) %s, chosen from validation shares %s", steering.exemplar, shares)
    return shares


def _chosen(edits: list[FeatureEdit], labels: dict[int, list[str]]) -> tuple[list[list[int]], list[list[str]]]:
    """The clamped features of each edit, and their labels (named only with evidence, as the app shows them)."""
    return [list(e.clamp) for e in edits], [[labels[id(e.sae)][f] for f in e.clamp] for e in edits]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def measure_steering(config: SteeringMeasureConfig, release: Release | None = None, backbone: Backbone | None = None) -> Steering:
    """Steer towards every class and with unrelated features at each strength; the result is the
    measurement at the chosen strength (the most successful one whose unrelated-feature clamps
    relabel at most ``budget`` of the images) plus the whole sweep. Returns (and with ``out``
    writes) steering.json. A caller that holds the release and its backbone passes them."""
    cells = checked_cells(config)
    release = release or load_release(config.release, label_set=config.label_set)
    backbone = backbone or release.backbone()
    judged_by, predict = judge(release, backbone)
    steering = _load(config, cells, release, backbone)
    origins = sources(config, backbone, release)
    baseline = {o.index: steering.images(o, None) for o in origins}
    baseline_pred = {i: predict(x) for i, x in baseline.items()}
    shares = _choose_exemplars(steering, origins, len(release.class_names), predict) if config.exemplars else None
    classifier = reference_classifier(release)
    quality = None if classifier is None else ClassQuality.load(release, classifier, config.seed)
    sweep = [_measure_at(strength, steering, origins, release.class_names, baseline, baseline_pred, predict, quality)
             for strength in config.strengths]
    within = [m for m in sweep if m["side_effect"]["unrelated_class_change_rate"] <= config.budget]
    chosen = max(within or sweep, key=lambda m: (m["mean_success"], -m["strength"]))
    side = chosen["side_effect"]
    yardsticks = {} if quality is None else _yardsticks(quality, steering, origins, release.class_names, baseline)
    result = Steering(
        release=config.release, cells=[cell.spec for cell in cells], pooling=config.pooling, clamp_to=config.clamp_to,
        features_per_class=config.features_per_class, exemplars=config.exemplars, window=list(config.window),
        class_features_per_class={release.class_names[c]: n for c, n in steering.counts.items()},
        sources=[SteeringSource(o.name, o.condition, o.count) for o in origins], judge=judged_by,
        num_inference_steps=config.steps, seed=config.seed,
        guidance_scale=config.guidance_scale or backbone.default_guidance_scale,
        strength=chosen["strength"], mean_success=chosen["mean_success"], mean_baseline=chosen["mean_baseline"],
        per_class={name: ClassSteering(**c, **yardsticks.get(name, {}), **_exemplar(steering, shares, i))
                   for i, (name, c) in enumerate(chosen["per_class"].items())}, side_effect=SideEffect(**side),
        budget=config.budget, within_budget=bool(within),
        sweep=[SweepPoint(strength=m["strength"], mean_success=m["mean_success"], mean_baseline=m["mean_baseline"],
                          **{k: v for k, v in m["side_effect"].items() if k not in ("unrelated_features", "unrelated_labels")},
                          success_per_class={name: c["success"] for name, c in m["per_class"].items()},
                          frechet_steered_per_class={name: c["frechet_steered"] for name, c in m["per_class"].items()})
               for m in sweep],
        config=to_json(config),
    )
    log.info("chosen strength %g (%s the budget of %.2f relabelled by unrelated features): steering success %.3f "
             "(unsteered baseline %.3f, judged by %s)", result.strength, "within" if within else "NOT within", config.budget,
             result.mean_success, result.mean_baseline, judged_by)
    if config.out is not None:
        result.write(Path(config.out) / f"{STEERING}.json")
    return result


def _exemplar(steering: _Steering, shares: list[list[float]] | None, target: int) -> dict[str, Any]:
    """ClassSteering's exemplar fields of class ``target`` (none without exemplars)."""
    if shares is None or steering.exemplar is None:
        return {}
    return {"exemplar": steering.exemplar[target], "exemplar_validation": shares[target]}


def _yardsticks(quality: ClassQuality, steering: _Steering, origins: list[Source], names: list[str],
                baseline: dict[int, torch.Tensor]) -> dict[str, dict[str, float | None]]:
    """What the Fréchet distance of the images steered towards each class compares with: the same
    seeds unsteered, the model's own images of the class (from its source, as many), the real floor."""
    yardsticks = {}
    for target, name in enumerate(names):
        others = [o for o in origins if o.label != target]
        count = sum(o.count for o in others)
        own = next((o for o in origins if o.label == target), None)
        model = None if own is None else quality.distance(target, quality.features(steering.images(replace(own, count=count), None)))
        yardsticks[name] = {"frechet_unsteered": quality.distance(target, quality.features(torch.cat([baseline[o.index] for o in others]))),
                            "frechet_model": model, "frechet_real": quality.floor(target, count)}
        log.info(json.dumps({"target": name, **yardsticks[name]}))
    return yardsticks


def _measure_at(strength: float, steering: _Steering, origins: list[Source], names: list[str], baseline: dict,
                baseline_pred: dict, predict: Callable[[torch.Tensor], torch.Tensor], quality: ClassQuality | None) -> dict[str, Any]:
    """Success towards every class (and with ``quality`` how real its steered images look) and the side
    effects of unrelated features, at one strength."""
    per_class, class_moves, class_flips = {}, [], []
    for target, name in enumerate(names):
        edits = steering.edits(target, strength)
        hits = base_hits = total = 0
        images = []
        for origin in origins:
            if origin.label == target:
                continue
            steered = steering.images(origin, edits)
            images.append(steered)
            predicted = predict(steered)
            hits += int((predicted == target).sum())
            base_hits += int((baseline_pred[origin.index] == target).sum())
            total += len(predicted)
            class_moves.append((steered - baseline[origin.index]).abs().mean().item())
            class_flips.append(float((predicted != baseline_pred[origin.index]).float().mean()))
        features, labels = _chosen(edits, steering.labels)
        frechet = None if quality is None else quality.distance(target, quality.features(torch.cat(images)))
        per_class[name] = {"features": features, "labels": labels, "success": hits / total, "baseline": base_hits / total,
                           "frechet_steered": frechet}
        log.info(json.dumps({"strength": strength, "target": name, **per_class[name]}))
    unrelated = steering.edits(None, strength)
    moves, flips = [], []
    for origin in origins:
        steered = steering.images(origin, unrelated)
        moves.append((steered - baseline[origin.index]).abs().mean().item())
        flips.append(float((predict(steered) != baseline_pred[origin.index]).float().mean()))
    side_features, side_labels = _chosen(unrelated, steering.labels)
    measured = {
        "strength": strength,
        "mean_success": _mean([c["success"] for c in per_class.values()]),
        "mean_baseline": _mean([c["baseline"] for c in per_class.values()]),
        "per_class": per_class,
        "side_effect": {
            "unrelated_features": side_features, "unrelated_labels": side_labels,
            "unrelated_mean_abs_pixel_change": _mean(moves), "unrelated_class_change_rate": _mean(flips),
            "class_steering_mean_abs_pixel_change": _mean(class_moves), "class_steering_class_change_rate": _mean(class_flips),
        },
    }
    log.info("strength %g: success %.3f (baseline %.3f); unrelated features move pixels by %.4f and relabel %.3f of images "
             "(class steering moves them by %.4f)", strength, measured["mean_success"], measured["mean_baseline"],
             _mean(moves), _mean(flips), _mean(class_moves))
    return measured
