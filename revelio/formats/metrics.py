"""``metrics/<name>.json`` of a release: one schema per file, rows that name their cell.

Rows keep their cell flat (``hook``, ``timestep``, ``pooling``) so the CSV downloads read the
same; ``row.cell`` gives the :class:`~revelio.grid.Cell`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from revelio.formats.schema import JsonSchema
from revelio.grid import Cell, Pooling


@dataclass
class ProbeRow:
    """One probe's scores; ``features`` "diffusion", "random-weights" or "pixels" (hook "pixels", no timestep)."""

    features: str
    probe: str
    hook: str
    timestep: int | None
    test_accuracy: float
    validation_accuracy: float | None = None

    @property
    def cell(self) -> Cell:
        if self.timestep is None:
            raise ValueError(f"the {self.features} baseline has no grid cell")
        return Cell(self.hook, self.timestep)


@dataclass
class ProbeGrid(JsonSchema):
    """``probe_grid.json``: every probe and baseline of the grid, and the best diffusion cell."""

    class_names: list[str]
    hooks: list[str]
    timesteps: list[int]
    chance: float
    best: ProbeRow
    rows: list[ProbeRow]
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class SAECellRow:
    """A row of a table over the SAE grid: it names its cell."""

    hook: str
    timestep: int
    pooling: Pooling

    @property
    def cell(self) -> Cell:
        return Cell(self.hook, self.timestep, self.pooling)


@dataclass
class SAERow(SAECellRow):
    """One SAE's held-out metrics."""

    d_in: int
    d_sae: int
    k: int
    normalized_mse: float
    fraction_variance_explained: float
    l0: float
    dead_fraction: float
    test_tokens: int


@dataclass
class SAEGrid(JsonSchema):
    """``sae_grid.json``: every SAE of the release on held-out images."""

    split: str
    hooks: list[str]
    timesteps: list[int]
    rows: list[SAERow]


@dataclass
class LabelSetGate:
    """One label set of a text model's gate: its reference classifier on real and generated images."""

    reference_accuracy_on_real_test: float
    accuracy_on_samples: float
    per_concept_accuracy_on_samples: dict[str, float]


@dataclass
class QualityGate(JsonSchema):
    """``quality_gate.json``: the model's samples judged by a classifier of real images."""

    model: str
    dataset: str
    samples_per_class: int
    num_inference_steps: int
    guidance_scale: float
    seed: int
    chance: float
    reference_accuracy_on_real_test: float
    reference_accuracy_on_samples: float
    per_class_accuracy_on_samples: dict[str, float]
    config: dict[str, Any] = field(default_factory=dict)
    # Text models: samples of every prompt of the caption template, each label set judged by its own
    # reference classifier (the default set's are the fields above).
    prompt_template: str | None = None
    label_sets: dict[str, LabelSetGate] = field(default_factory=dict)


@dataclass
class PurityRow(SAECellRow):
    """Held-out purity of one SAE's features against random directions and the block's channels."""

    sae: float
    random_directions: float
    neurons: float
    chance: float
    sae_live_features: int


@dataclass
class Monosemanticity(JsonSchema):
    """``monosemanticity.json``."""

    images: int
    top_k: int
    cells: list[PurityRow]
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class ClassSteering:
    """Steering towards one class: the features clamped at each SAE, their labels, how often it worked,
    and how real the steered images look (``frechet_*``: Fréchet distances on the reference
    classifier's features to real test images of the class; None without a reference classifier):
    the steered images, the same seeds unsteered, the model's own images of the class, and as many
    other real images of it (the floor). Every set compared has as many images as were steered."""

    features: list[list[int]]
    labels: list[list[str]]
    success: float
    baseline: float
    frechet_steered: float | None = None
    frechet_unsteered: float | None = None
    frechet_model: float | None = None
    frechet_real: float | None = None
    # with Steering.exemplars: the row of Release.held_out_examples() whose maps the clamps follow, and
    # the share of validation images (other seeds) each candidate steered here, in held-out order
    exemplar: int | None = None
    exemplar_validation: list[float] = field(default_factory=list)


@dataclass
class SideEffect:
    """What clamping as many features unrelated to any class does (the control)."""

    unrelated_mean_abs_pixel_change: float
    unrelated_class_change_rate: float
    class_steering_mean_abs_pixel_change: float
    class_steering_class_change_rate: float
    unrelated_features: list[list[int]] = field(default_factory=list)
    unrelated_labels: list[list[str]] = field(default_factory=list)


@dataclass
class SweepPoint:
    """The headline numbers at one strength of the sweep."""

    strength: float
    mean_success: float
    mean_baseline: float
    unrelated_mean_abs_pixel_change: float
    unrelated_class_change_rate: float
    class_steering_mean_abs_pixel_change: float
    class_steering_class_change_rate: float
    success_per_class: dict[str, float]
    frechet_steered_per_class: dict[str, float | None] = field(default_factory=dict)


@dataclass
class SteeringSource:
    name: str
    condition: Any
    images: int


@dataclass
class Steering(JsonSchema):
    """``steering.json``: the measurement at the chosen strength, and the whole sweep.

    ``cells`` are spelled ``"hook:t"`` in the file (:meth:`Cell.spec`); :attr:`steered_cells`
    gives them as cells with the measured pooling.
    """

    release: str
    cells: list[str]
    pooling: Pooling
    clamp_to: str
    features_per_class: int
    window: list[int]
    judge: str
    num_inference_steps: int
    seed: int
    guidance_scale: float
    strength: float
    mean_success: float
    mean_baseline: float
    per_class: dict[str, ClassSteering]
    side_effect: SideEffect
    budget: float
    within_budget: bool
    sources: list[SteeringSource] = field(default_factory=list)
    sweep: list[SweepPoint] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    # None: class-map clamps follow each class's mean maps over the held-out images; a number: each
    # class's follow one held-out image's maps (ClassSteering.exemplar), chosen among its first this many
    exemplars: int | None = None
    # classes that clamp another number of features per SAE than features_per_class (the control keeps that one)
    class_features_per_class: dict[str, int] = field(default_factory=dict)

    @property
    def steered_cells(self) -> list[Cell]:
        return [Cell.parse(spec, self.pooling) for spec in self.cells]
