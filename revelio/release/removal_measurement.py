"""Concept removal on a release, measured: UA, IRA, CRA, pixel change and image quality per method and concept.

For each concept of each label set, its features are chosen at every hook and every timestep the
sampler visits, from the release's held-out images conditioned as generations are (their class, or
their caption through the release's caption template) and read by the nearest cell's spatial SAE
(:class:`~revelio.steering.removal.ConceptStatistics`): noised to each later timestep, and at the
first, where removal decides which images show the concept, as a generation starts (noise only,
:func:`start_tokens`). It is removed during generation
(:class:`~revelio.steering.removal.ConceptRemoval`) while every source is generated with fixed
seeds, the same as an unedited baseline: each class of a class-conditional model; for a text model,
prompts of the caption template, one per :func:`combinations` of its label sets' concepts, each
with its label in every set. Each label set's judge (its reference classifier, trained on real
images only) says what the images show:

- UA: the removed concept's own images no longer recognised as it;
- IRA: the same label set's other concepts' images still recognised as their own;
- CRA: every other label set's label still recognised, on all images (None with one label set);
- pixel change: mean |edited - unedited| in [0, 1] units, the concept's images and the others';
- Fréchet distance: the default label set's reference classifier's penultimate features of all edited images of one
  concept against real test images (the unedited images, as many, and real images, as many, give
  the scale: it depends on the sample size);
- artifact share: edited images whose most likely class has less than ``confidence`` probability
  under the reference classifier. A garment the classifier cannot place is blurred, broken or a
  mix of garments; real test images fall under 0.5 about 1% of the time and the model's unedited
  samples a few percent (both recorded), so a share well above those is edits making bad images.

The method with the highest worst of (mean UA, mean IRA, mean CRA) is the app's (ties: fewer artifacts).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from revelio.activations.capture import Activations, extract, pool
from revelio.activations.hooks import StopForward, capture_outputs
from revelio.config import option, to_json
from revelio.data.datasets import load_image_dataset
from revelio.data.images import to_pixels
from revelio.errors import ConfigError, DatasetError
from revelio.formats.removal import ConceptRemovalRow, Removal, RemovalBaseline, RemovalMethod
from revelio.grid import Cell
from revelio.layout import REMOVAL
from revelio.models import Backbone
from revelio.probes.reference_classifier import ReferenceClassifier, frechet_distance
from revelio.release.load import Release, load_release
from revelio.sae import KSparseAutoencoder
from revelio.steering import steer
from revelio.steering.removal import METHODS, ConceptRemoval, ConceptStatistics, Method, concept_removal
from revelio.steps.text_quality_gate import template_fields

log = logging.getLogger(__name__)
SHOWN_FEATURES = 16  # features per concept and hook that removal.json lists (of the many removed)


@dataclass
class RemovalMeasureConfig:
    """What is removed where, how, and on how many images; stored in removal.json."""

    release: str = option("bundled", "bundled, a release folder, or a Hub repo id")
    label_sets: list[str] = option([], "the label sets whose concepts are removed (default: every one of the release; one unnamed set is 'class')")
    hooks: list[str] = option(["mid_block", "up_blocks.0"], "blocks to remove at, at every sampler step, each step read by the nearest cell's spatial SAE")
    features: int = option(128, "features removed per hook and step: the concept's highest SAeUron scores")
    methods: list[str] = option(list(METHODS), f"removal methods, of {list(METHODS)}")
    multiplier: float = option(-5.0, "ablate: the features become this x their value (0 ablates; SAeUron scales by negative ones)")
    per_source: int = option(10, "images generated per source (class), each with its own fixed seed")
    real_images: int = option(2000, "real test images the Fréchet distance compares with")
    confidence: float = option(0.5, "an image whose most likely class has less probability counts as an artifact")
    steps: int = option(25)
    guidance_scale: float | None = option(None, "default: the model's own")
    seed: int = option(0)
    out: Path | None = option(None, "the folder to write removal.json into (a release's metrics/; default: log only)")


def measured_label_sets(release: Release) -> list[str]:
    """The release's label sets by name, the default first; a release with one unnamed set calls it "class"."""
    return release.label_sets or ["class"]


def label_view(release: Release, label_set: str) -> Release:
    """``release`` seen through ``label_set`` (its names, held-out labels, reference classifier)."""
    if label_set not in measured_label_sets(release):
        raise ConfigError(f"this release has no label set {label_set!r}; removal can measure {measured_label_sets(release)}")
    view = release.with_label_set(None if not release.label_sets else label_set)
    if not view.class_names:
        raise ConfigError(f"the label set {label_set!r} of this release names no concepts")
    return view


def concepts(release: Release, label_set: str = "class") -> list[str]:
    """The concepts of one label set of ``release``, in label order."""
    return list(label_view(release, label_set).class_names)


def held_out_labels(release: Release, label_set: str = "class") -> list[int]:
    """The held-out images' labels in ``label_set`` (the images are :meth:`Release.held_out_examples`)."""
    return label_view(release, label_set).held_out_examples()[1]


@dataclass
class Source:
    """Images generated from one condition, and its label in every judged label set."""

    index: int
    name: str
    condition: Any
    labels: dict[str, int]


def caption_template(release: Release, backbone: Backbone) -> tuple[str, list[str]]:
    """A text model's caption template and its fields, each a label set of the release (refused otherwise)."""
    template = release.info.caption_template or getattr(backbone, "prompt_template", None)
    fields = template_fields(template)
    if not fields:
        raise ConfigError("removal on a text model asks for each concept through the release's caption template over its "
                          f"label sets (e.g. \"a {{colour}} {{class}}\"); this release has {template!r}")
    unknown = [f for f in fields if f not in release.label_sets]
    if unknown:
        raise ConfigError(f"the caption template {template!r} names {unknown}, which are not label sets of this release ({release.label_sets})")
    return template, fields


def combinations(sizes: dict[str, int]) -> list[dict[str, int]]:
    """Two rounds over the largest label set's concepts, each paired with the others' concepts in turn
    (shifted by one in the second round): every concept of every set comes up at least twice, each
    time beside a different concept of the others, in 2 x (largest set) prompts rather than all of them."""
    largest = max(sizes, key=sizes.get)
    n = sizes[largest]
    rows = [{name: i if name == largest else (i + r) % size for name, size in sizes.items()} for r in range(2) for i in range(n)]
    return [dict(row) for row in dict.fromkeys(tuple(row.items()) for row in rows)]


def sources(release: Release, backbone: Backbone, label_sets: list[str]) -> list[Source]:
    """What to generate, with fixed labels in every label set a judge reads: each class of a model
    conditioned on the release's classes; for a text model, prompts of the caption template, one per
    :func:`combinations` of its label sets' concepts ("a red top", "a orange trouser", ...)."""
    for name in label_sets:
        label_view(release, name)  # each one is a label set of the release
    if backbone.conditioning == "text":
        template, fields = caption_template(release, backbone)
        outside = [name for name in label_sets if name not in fields]
        if outside:
            raise ConfigError(f"the caption template {template!r} cannot ask for the label sets {outside}; it names {fields}")
        names = {f: concepts(release, f) for f in fields}
        found = []
        for p, labels in enumerate(combinations({f: len(names[f]) for f in fields})):
            prompt = template.format(**{f: names[f][i] for f, i in labels.items()})
            found.append(Source(p, prompt, prompt, labels))
        return found
    default = measured_label_sets(release)[0]
    if backbone.conditioning != "class" or list(backbone.class_names or []) != concepts(release, default):
        raise ConfigError(f"removal is measured on a text model with a caption template or a model conditioned on the release's "
                          f"{default!r} concepts; this one is conditioned on {backbone.conditioning!r}")
    if label_sets != [default]:
        raise ConfigError(f"a class-conditional model is asked for its classes only: removal measures label set {default!r} "
                          f"on it, not {label_sets}")
    return [Source(i, name, i, {default: i}) for i, name in enumerate(concepts(release, default))]


def judges(release: Release, label_sets: list[str]) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Per label set: images in [0, 1] -> predicted label ids, by that set's reference classifier."""
    found = {}
    for name in label_sets:
        try:
            classifier = label_view(release, name).reference_classifier()
        except FileNotFoundError:
            raise ConfigError(f"removal is judged by each label set's reference classifier; this release has none for {name!r} "
                              f"({release.info.quality_gate_skipped or 'rebuild it with its quality gate'})") from None
        found[name] = lambda images, classifier=classifier: classifier.predict(images * 2 - 1)
    return found


def statistics_condition(release: Release, backbone: Backbone) -> Any:
    """What the held-out images are conditioned on for the statistics, as generation conditions the
    images removal edits: their own class (class model) or their own caption (text model with a
    caption template); None (unconditional / empty prompt) otherwise."""
    if backbone.conditioning == "class":
        return held_out_labels(release, measured_label_sets(release)[0])
    if backbone.conditioning == "text" and template_fields(release.info.caption_template or getattr(backbone, "prompt_template", None)):
        template, fields = caption_template(release, backbone)
        words = {f: [concepts(release, f)[i] for i in held_out_labels(release, f)] for f in fields}
        return [template.format(**{f: words[f][i] for f in fields}) for i in range(len(next(iter(words.values()))))]
    return None


def sampler_timesteps(backbone: Backbone, steps: int) -> list[int]:
    """The timesteps the model's own sampler visits in ``steps`` steps, highest first."""
    scheduler = type(backbone.pipeline.scheduler).from_config(backbone.pipeline.scheduler.config)
    scheduler.set_timesteps(steps)
    return [int(t) for t in scheduler.timesteps]


@dataclass
class RemovalSetup:
    """What removal needs on one release, computed once: at every hook and sampler timestep, the SAE of
    the release's nearest cell and each label set's concept statistics there (from the held-out images)."""

    statistics: dict[str, dict[str, dict[int, tuple[KSparseAutoencoder, ConceptStatistics]]]]  # label set -> hook -> t -> ...
    statistics_images: int

    @property
    def timesteps(self) -> list[int]:
        return list(next(iter(next(iter(self.statistics.values())).values())))

    def cells(self) -> dict[str, str]:
        """Which SAE each hook and sampler timestep ("hook:t") reads with (its cell, "hook:t")."""
        steps = next(iter(self.statistics.values()))
        return {f"{hook}:{t}": f"{hook}:{sae.config.timestep}" for hook, by_t in steps.items() for t, (sae, _) in by_t.items()}

    def edits(self, label_set: str, concept: int, method: Method, features: int, multiplier: float = 0.0) -> list[ConceptRemoval]:
        """One removal per hook that has features for ``concept``."""
        edits = [concept_removal(hook, steps, concept, features, method, multiplier) for hook, steps in self.statistics[label_set].items()]
        return [edit for edit in edits if edit is not None]

    def features(self, label_set: str, concept: int, features: int) -> dict[str, list[int]]:
        """Per hook ("hook:t"), the concept's highest-scoring features at the first sampler step, where
        removal decides which images show it: the first :data:`SHOWN_FEATURES` of ``features``, best first
        (every step's full selection is :meth:`edits`' and comes back from the same held-out images)."""
        return {f"{hook}:{max(steps)}": steps[max(steps)][1].features(concept, min(features, SHOWN_FEATURES))
                for hook, steps in self.statistics[label_set].items()}


@torch.no_grad()
def start_tokens(backbone: Backbone, count: int, hooks: list[str], t: int, seed: int, condition: Any, batch_size: int = 16) -> Activations:
    """Spatial activations at a generation's first step for ``count`` conditions: no image yet, only
    noise (x0 = 0 noised to ``t``), image i's noise from ``seed + i``. Held-out images noised to the
    first step share one noise (as the caches are seeded) and keep a trace of themselves, which the
    blocks read: a decision learned there separates the held-out images and not generations."""
    shape = backbone.encode_images([Image.new("RGB", (backbone.resolution,) * 2)]).shape[1:]
    parts: dict[str, list[torch.Tensor]] = {hook: [] for hook in hooks}
    for start in range(0, count, batch_size):
        stop = min(start + batch_size, count)
        zeros = torch.zeros(stop - start, *shape, device=backbone.device, dtype=backbone.dtype)
        x_t = backbone.add_noise(zeros, t, noise=backbone.noise_like(zeros, [seed + i for i in range(start, stop)]))
        with capture_outputs(backbone.denoiser, hooks, stop_when_done=True) as acts:
            try:
                backbone.denoise(x_t, t, condition[start:stop] if isinstance(condition, list) else condition)
            except StopForward:
                pass
        for hook in hooks:
            parts[hook].append(pool(acts[hook].float(), "none").cpu())
    return {(hook, t): torch.cat(values) for hook, values in parts.items()}


def prepare_removal(release: Release, backbone: Backbone, label_sets: list[str], hooks: list[str], steps: int) -> RemovalSetup:
    """Concept statistics at every hook and every timestep of a ``steps``-step generation, each read
    by the spatial SAE of the nearest cell, from the held-out images conditioned as the images removal
    edits are generated (:func:`statistics_condition`): noised to each later timestep (seeded as the
    release's caches), and at the first, where removal decides which images show the concept, as a
    generation starts (:func:`start_tokens`)."""
    if "none" not in release.poolings:
        raise ConfigError(f"removal needs spatial SAEs (pooling 'none'); this release has {release.poolings}")
    missing = [h for h in hooks if h not in release.hooks]
    if missing or not hooks:
        raise ConfigError(f"hooks {missing or hooks} are not hooks of this release; it has {release.hooks}")
    timesteps = sampler_timesteps(backbone, steps)
    images, _ = release.held_out_examples()
    condition = statistics_condition(release, backbone)
    tokens = extract(backbone, images, hooks, timesteps[1:], pooling="none", seed=release.info.seed, condition=condition) if steps > 1 else {}
    tokens.update(start_tokens(backbone, len(images), hooks, timesteps[0], release.info.seed, condition))

    def sae_at(hook: str, t: int) -> KSparseAutoencoder:
        return release.sae(Cell(hook, min(release.timesteps, key=lambda cell_t: abs(cell_t - t)), "none"))

    statistics = {
        label_set: {
            hook: {t: (sae_at(hook, t), ConceptStatistics.from_tokens(sae_at(hook, t), tokens[(hook, t)], held_out_labels(release, label_set),
                                                                       len(concepts(release, label_set)))) for t in timesteps}
            for hook in hooks
        }
        for label_set in label_sets
    }
    return RemovalSetup(statistics, len(images))


def _real_features(release: Release, classifier: ReferenceClassifier, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(penultimate features, probabilities) of ``count`` real test images of the release's dataset."""
    try:
        data = load_image_dataset(release.info.dataset, "test", limit=count)
    except (ValueError, FileNotFoundError) as err:
        raise DatasetError(f"the Fréchet distance needs the real test images of {release.info.dataset!r}: {err}") from None
    pixels = to_pixels(data.dataset[data.image_column], classifier.resolution, classifier.image_channels)
    return classifier.features(pixels), classifier.predict_proba(pixels)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


@dataclass
class _Images:
    """Generated images by source and what the judges and the reference classifier make of them."""

    pixels: dict[int, torch.Tensor]
    predicted: dict[str, dict[int, torch.Tensor]]
    features: torch.Tensor
    confidence: torch.Tensor


class _Measurement:
    """One measurement's fixed parts: model, sources, judges, reference classifier, real features."""

    def __init__(self, config: RemovalMeasureConfig, release: Release, backbone: Backbone, label_sets: list[str]) -> None:
        self.config, self.release, self.backbone = config, release, backbone
        self.sources = sources(release, backbone, label_sets)
        self.judged = list(self.sources[0].labels)  # every label set the sources name, removed or not: CRA reads them
        self.judges = judges(release, self.judged)
        self.quality_set = measured_label_sets(release)[0]  # the default set's classifier measures image quality
        self.classifier = label_view(release, self.quality_set).reference_classifier()
        self.real_features, real_proba = _real_features(release, self.classifier, config.real_images)
        self.real_artifacts = float((real_proba.amax(-1) < config.confidence).float().mean())

    def generate(self, edits: list[ConceptRemoval] | None) -> _Images:
        config, pixels = self.config, {}
        for source in self.sources:
            kwargs = {"seed": config.seed + 1000 * source.index, "num_images": config.per_source,
                      "num_inference_steps": config.steps, "guidance_scale": config.guidance_scale, "output_type": "pt"}
            if edits:
                with steer(self.backbone, edits):
                    pixels[source.index] = self.backbone.generate(source.condition, **kwargs)
            else:
                pixels[source.index] = self.backbone.generate(source.condition, **kwargs)
        everything = torch.cat(list(pixels.values())) * 2 - 1
        predicted = {name: {i: judge(x) for i, x in pixels.items()} for name, judge in self.judges.items()}
        return _Images(pixels, predicted, self.classifier.features(everything),
                       self.classifier.predict_proba(everything).amax(-1))

    def shares(self, images: _Images, label_set: str, concept: int) -> tuple[float, float, float | None]:
        """(UA, IRA, CRA) of ``images`` for removing ``concept`` of ``label_set``."""
        return retention(self.sources, images.predicted, label_set, concept)

    def accuracy(self, images: _Images, label_set: str) -> float:
        return _mean([float((images.predicted[label_set][s.index] == s.labels[label_set]).float().mean()) for s in self.sources])

    def pixel_change(self, images: _Images, baseline: _Images, label_set: str, concept: int) -> tuple[float, float]:
        moves = {s.index: float((images.pixels[s.index] - baseline.pixels[s.index]).abs().mean()) for s in self.sources}
        own = [moves[s.index] for s in self.sources if s.labels[label_set] == concept]
        rest = [moves[s.index] for s in self.sources if s.labels[label_set] != concept]
        return _mean(own), _mean(rest)

    def artifacts(self, images: _Images) -> float:
        return float((images.confidence < self.config.confidence).float().mean())


def retention(sources: list[Source], predicted: dict[str, dict[int, torch.Tensor]], label_set: str,
              concept: int) -> tuple[float, float, float | None]:
    """(UA, IRA, CRA) for removing ``concept`` of ``label_set``, from each judged label set's predicted
    labels of each source's images (``predicted[set][source index]``), each a mean over sources:
    UA, the concept's sources' images not labelled as it; IRA, the same set's other sources' images
    labelled as their own; CRA, every source's images labelled as their own in each *other* judged
    set (removing a colour must keep classes, and the other way round; None when there is none)."""
    own = [s for s in sources if s.labels[label_set] == concept]
    rest = [s for s in sources if s.labels[label_set] != concept]
    if not own or not rest:
        raise ConfigError(f"removal of concept {concept} of {label_set!r} needs sources with it and without it")
    ua = _mean([float((predicted[label_set][s.index] != concept).float().mean()) for s in own])
    ira = _mean([float((predicted[label_set][s.index] == s.labels[label_set]).float().mean()) for s in rest])
    other_sets = [name for name in sources[0].labels if name != label_set]
    cra = _mean([float((predicted[name][s.index] == s.labels[name]).float().mean())
                 for name in other_sets for s in sources]) if other_sets else None
    return ua, ira, cra


def checked(config: RemovalMeasureConfig) -> None:
    """Refuse settings that cannot work, before anything loads."""
    unknown = [m for m in config.methods if m not in METHODS]
    if unknown or not config.methods:
        raise ConfigError(f"methods must be some of {list(METHODS)}; got {config.methods}")
    if config.features < 1 or config.per_source < 1 or config.steps < 1:
        raise ConfigError("features, per_source and steps must be at least 1")
    if config.real_images < 2 * config.per_source:
        raise ConfigError("real_images must be at least twice per_source (the real floor compares two real sets)")
    if not 0 < config.confidence < 1:
        raise ConfigError(f"confidence is a probability threshold in (0, 1); got {config.confidence}")


def _app_method(methods: dict[str, RemovalMethod]) -> tuple[str, str]:
    """The method with the highest worst of mean UA / IRA / CRA (ties: fewer artifacts), and why."""
    def worst(m: RemovalMethod) -> float:
        return min(v for v in (m.mean_ua, m.mean_ira, m.mean_cra) if v is not None)

    best = max(methods, key=lambda name: (worst(methods[name]), -methods[name].artifact_share))
    others = ", ".join(f"{name} {worst(m):.3f}" for name, m in methods.items() if name != best)
    return best, (f"highest worst of mean UA / IRA / CRA: {worst(methods[best]):.3f} (artifact share "
                  f"{methods[best].artifact_share:.3f})" + (f" against {others}" if others else ""))


def measure_removal(config: RemovalMeasureConfig, release: Release | None = None, backbone: Backbone | None = None) -> Removal:
    """Remove every concept of every label set by every method; returns (and with ``out`` writes) removal.json."""
    checked(config)
    release = release or load_release(config.release)
    backbone = backbone or release.backbone()
    label_sets = list(config.label_sets) or measured_label_sets(release)
    run = _Measurement(config, release, backbone, label_sets)
    setup = prepare_removal(release, backbone, label_sets, config.hooks, config.steps)
    baseline = run.generate(None)
    size = len(baseline.features)
    methods = {}
    for method in config.methods:
        rows: dict[str, ConceptRemovalRow] = {}
        for label_set in label_sets:
            for concept, name in enumerate(concepts(release, label_set)):
                if name in rows:
                    raise ConfigError(f"concept {name!r} is in two label sets; removal.json keys concepts by name")
                images = run.generate(setup.edits(label_set, concept, method, config.features, config.multiplier))
                ua, ira, cra = run.shares(images, label_set, concept)
                base = run.shares(baseline, label_set, concept)
                moved = run.pixel_change(images, baseline, label_set, concept)
                rows[name] = ConceptRemovalRow(
                    label_set=label_set, features=setup.features(label_set, concept, config.features),
                    ua=ua, ira=ira, cra=cra, baseline_ua=base[0], baseline_ira=base[1], baseline_cra=base[2], concept_pixel_change=moved[0], others_pixel_change=moved[1],
                    frechet=frechet_distance(images.features, run.real_features), artifact_share=run.artifacts(images),
                )
                log.info("%s: removing %s %r: UA %.3f IRA %.3f CRA %s (unedited UA %.3f IRA %.3f); Fréchet %.1f, artifacts %.3f",
                         method, label_set, name, ua, ira, "-" if cra is None else f"{cra:.3f}", *base[:2],
                         rows[name].frechet, rows[name].artifact_share)
        values = list(rows.values())
        cras = [r.cra for r in values if r.cra is not None]
        methods[method] = RemovalMethod(
            mean_ua=_mean([r.ua for r in values]), mean_ira=_mean([r.ira for r in values]),
            mean_cra=_mean(cras) if cras else None, mean_frechet=_mean([r.frechet for r in values]),
            artifact_share=_mean([r.artifact_share for r in values]),
            concept_pixel_change=_mean([r.concept_pixel_change for r in values]),
            others_pixel_change=_mean([r.others_pixel_change for r in values]), per_concept=rows,
        )
        log.info("%s: mean UA %.3f IRA %.3f CRA %s; Fréchet %.1f; artifacts %.3f", method, methods[method].mean_ua,
                 methods[method].mean_ira, "-" if methods[method].mean_cra is None else f"{methods[method].mean_cra:.3f}",
                 methods[method].mean_frechet, methods[method].artifact_share)
    app_method, reason = _app_method(methods)
    real = run.real_features
    result = Removal(
        release=config.release, label_sets=label_sets, hooks=list(config.hooks), timesteps=setup.timesteps,
        saes=setup.cells(), features=config.features, multiplier=config.multiplier, judge=f"reference classifier of each label set (Fréchet distance and artifacts: the {run.quality_set!r} set's)",
        confidence_threshold=config.confidence,
        num_inference_steps=config.steps, guidance_scale=config.guidance_scale or backbone.default_guidance_scale,
        seed=config.seed, images_per_source=config.per_source, statistics_images=setup.statistics_images,
        real_images=len(real),
        baseline=RemovalBaseline(
            frechet=frechet_distance(baseline.features, real), frechet_real=frechet_distance(real[:size], real[size:]),
            artifact_share=run.artifacts(baseline), artifact_share_real=run.real_artifacts,
            accuracy={name: run.accuracy(baseline, name) for name in run.judged},
        ),
        methods=methods, app_method=app_method, app_method_reason=reason, config=to_json(config),
    )
    log.info("app method: %s (%s)", app_method, reason)
    if config.out is not None:
        result.write(Path(config.out) / f"{REMOVAL}.json")
    return result
