"""The ``config.json`` of each artifact kind: SAE, probe, reference classifier.

What a saved artifact is (sizes, where in the model it reads, how it was trained) as one typed
object, checked on load before any weight is allocated. Foreign SAE formats map into
:class:`SAEConfig`; its :class:`SAESource` records where such an SAE came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from revelio.formats.schema import JsonSchema
from revelio.grid import Cell, Pooling
from revelio.hook_points import HookPoint

# No config may ask for more weights than this (float32: 32 GiB), so a hostile or mistaken file
# is refused before anything is allocated. The paper's largest SAE has 1280 x 81920 = 1e8.
MAX_PARAMETERS = 2**33


def check_sizes(what: str, **sizes: int) -> None:
    """Every size positive, and their product within :data:`MAX_PARAMETERS`."""
    total = 1
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{what} {name} must be a positive whole number; got {value!r}")
        total *= value
    if total > MAX_PARAMETERS:
        raise ValueError(f"{what} sizes {sizes} ask for {total:.3g} weights, over the limit of {MAX_PARAMETERS:.3g}; refusing to allocate them")


@dataclass
class SAESource:
    """Where an SAE came from when revelio did not train it (filled by importers)."""

    format: str  # "revelio", "sparsify", "saelens", "sdxl-unbox", "paper"
    repo: str = ""  # Hub repo id or folder it was read from
    subfolder: str = ""
    license: str = ""
    reads: Literal["output", "residual update"] = "output"  # what it read at its hook: the module's "output" or its "residual update" (output - input)


@dataclass(kw_only=True)
class ReadsCell:
    """Where in which model an artifact reads its features, and how it did (SAEs and probes)."""

    backbone: str | None = None
    hook: str | None = None
    timestep: int | None = None
    pooling: Pooling | None = None
    dataset: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)

    @property
    def cell(self) -> Cell | None:
        """The grid cell it was trained on, when its config says."""
        if self.hook is None or self.timestep is None:
            return None
        return Cell(self.hook, self.timestep, self.pooling)


@dataclass
class SAEConfig(ReadsCell, JsonSchema):
    """An SAE: its sizes, how it treats its inputs, the cell it reads, and its training record.

    The defaults are revelio's own SAEs. The other settings exist so that an SAE trained elsewhere
    encodes exactly as its own code does: SAeUron's ``input_unit_norm`` and SAELens'
    ``layer_norm`` standardise each input row (``"unit_norm"``), SAELens may skip subtracting
    ``b_dec`` from the input (``subtract_b_pre``), and the paper's SD-kSAE keeps its top k
    pre-activations without a ReLU (``relu``).
    """

    d_in: int
    d_sae: int
    k: int
    input_scale: float = 1.0  # "scale": inputs are multiplied by this before encoding (training saw a fixed mean norm)
    # "unit_norm": each row minus its mean, divided by (its std + 1e-5); reconstructions times that std plus that mean
    input_normalization: Literal["scale", "unit_norm"] = "scale"
    subtract_b_pre: bool = True  # encode x - b_pre (False: encode x itself; decoding adds b_pre either way)
    relu: bool = True  # the kept top-k values go through a ReLU
    training_tokens: int | None = None
    source: SAESource | None = None

    def __post_init__(self) -> None:
        check_sizes("SAE", d_in=self.d_in, d_sae=self.d_sae)
        if not 0 < self.k <= self.d_sae:
            raise ValueError(f"k must be in 1..d_sae ({self.d_sae}); got {self.k}")
        if self.input_normalization not in ("scale", "unit_norm"):
            raise ValueError(f"input_normalization must be 'scale' or 'unit_norm'; got {self.input_normalization!r}")
        if self.input_normalization == "unit_norm" and self.input_scale != 1.0:
            raise ValueError(f"a unit_norm SAE standardises each input itself; its input_scale must be 1, not {self.input_scale}")

    @property
    def hook_point(self) -> str | None:
        """Where it reads, in revelio's spelling (:mod:`revelio.hook_points`): its hook without foreign
        prefixes, read at the residual update when its source says it was trained on those."""
        if self.hook is None:
            return None
        point = HookPoint.parse(self.hook)
        if self.source is not None and self.source.reads == "residual update" and point.read == "output":
            point = HookPoint(point.module, "residual")
        return point.spec


@dataclass
class ProbeConfig(ReadsCell, JsonSchema):
    """A probe: its kind and shape, the cell (and SAE) whose features it reads, and its scores."""

    probe_type: str
    class_names: list[str]
    d_in: int
    grid_side: int | None = None  # diff-c: the activation map's side
    width: int | None = None  # diff-c: hidden channels
    dropout: float | None = None
    input_normalization: str = ""
    split: str | None = None
    sae: str | None = None  # the SAE subfolder whose codes it reads (sae-linear)

    def __post_init__(self) -> None:
        check_sizes("probe", d_in=self.d_in, classes=max(1, len(self.class_names)), **({"grid": self.grid_side**2} if self.grid_side else {}))


@dataclass
class ReferenceClassifierConfig(JsonSchema):
    """The classifier of real images that judges generated ones (quality gate, steering)."""

    image_channels: int
    resolution: int
    class_names: list[str]
    width: int = 32
    dataset: str | None = None
    trained_on: str | None = None
    test_accuracy: float | None = None
    config: dict[str, Any] = field(default_factory=dict)  # the quality gate's settings

    def __post_init__(self) -> None:
        check_sizes("reference classifier", channels=self.image_channels, resolution=self.resolution, width=self.width)
