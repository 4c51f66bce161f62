"""``metrics/removal.json``: concept removal measured per method and concept, and the method the app uses.

Accuracies are shares of generated images judged by the release's judge of each label set:
UA (unlearning accuracy) the share of the removed concept's images no longer recognised as it,
IRA (in-domain retain accuracy) the share of the same label set's other concepts' images still
recognised as their own, CRA (cross-domain retain accuracy) the share of images whose label in
every other label set is still recognised (None for a release with one label set). Each comes with
the same number on the unedited images of the same seeds (``baseline_*``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from revelio.formats.schema import JsonSchema
from revelio.layout import REMOVAL

__all__ = ["REMOVAL", "ConceptRemovalRow", "Removal", "RemovalBaseline", "RemovalMethod"]  # REMOVAL: metrics/<REMOVAL>.json


@dataclass
class ConceptRemovalRow:
    """Removing one concept of one label set: its best features per hook at the first sampler step
    ("hook:t", where removal decides which images show it) and what removal did."""

    label_set: str
    features: dict[str, list[int]]
    ua: float
    ira: float
    cra: float | None
    baseline_ua: float
    baseline_ira: float
    baseline_cra: float | None
    concept_pixel_change: float  # mean |edited - unedited| in [0, 1] units, the concept's own images
    others_pixel_change: float  # the same on the other images
    frechet: float  # the edited images (every source) against real test images
    artifact_share: float  # edited images the judge cannot place confidently


@dataclass
class RemovalMethod:
    """One way to remove, averaged over every concept of every label set, and per concept."""

    mean_ua: float
    mean_ira: float
    mean_cra: float | None
    mean_frechet: float
    artifact_share: float
    concept_pixel_change: float
    others_pixel_change: float
    per_concept: dict[str, ConceptRemovalRow]


@dataclass
class RemovalBaseline:
    """The unedited images and the real ones, for scale: the same numbers without any removal."""

    frechet: float  # unedited samples (as many as one concept's edited set) against real test images
    frechet_real: float  # as many real test images against the rest: the floor at this sample size
    artifact_share: float  # unedited samples the judge cannot place confidently
    artifact_share_real: float  # real test images the judge cannot place confidently
    accuracy: dict[str, float]  # per label set: unedited images recognised as their source's label


@dataclass
class Removal(JsonSchema):
    """``removal.json``: every concept of every label set removed by every method, same seeds and judge.

    Removal runs at every hook of ``hooks`` and every sampler timestep of ``timesteps``, each read
    by the SAE of the nearest cell (``saes``: {"hook:t": "hook:cell t"}), with ``features`` features
    each; ``app_method`` is the method the app removes with, ``app_method_reason`` why.
    """

    release: str
    label_sets: list[str]
    hooks: list[str]
    timesteps: list[int]
    saes: dict[str, str]
    features: int
    multiplier: float
    judge: str
    confidence_threshold: float
    num_inference_steps: int
    guidance_scale: float
    seed: int
    images_per_source: int
    statistics_images: int
    real_images: int
    baseline: RemovalBaseline
    methods: dict[str, RemovalMethod]
    app_method: str
    app_method_reason: str = ""
    config: dict[str, Any] = field(default_factory=dict)
