"""A release's folder layout and ``release.json`` schema: written by the builder, read by :class:`Release`.

::

  README.md                              model card
  release.json                           :class:`ReleaseInfo`
  model/                                 the backbone, when it is not on the Hub
  saes/<hook>/t<timestep>/<pooling>/     config.json, model.safetensors, stats.safetensors, timesteps.safetensors
  probes/<hook>/t<timestep>/<kind>/      config.json, model.safetensors
  reference_classifier/                  config.json, model.safetensors (class-conditional backbones)
  exemplars/thumbnails.safetensors       training images that are top exemplars of some feature
  exemplars/held_out.safetensors         labelled test images for histograms and examples
  metrics/*.json, plots/*.png            grid metrics and their pictures
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from revelio.bundled import RELEASE_FILE
from revelio.grid import Cell
from revelio.storage.files import ArtifactFormatError

MODEL_DIR = "model"
REFERENCE_CLASSIFIER_DIR = "reference_classifier"
EXEMPLARS_FILE = "exemplars/thumbnails.safetensors"
HELD_OUT_FILE = "exemplars/held_out.safetensors"
METRICS_DIR = "metrics"
PLOTS_DIR = "plots"

__all__ = ["RELEASE_FILE", "ReleaseInfo", "probe_subfolder", "sae_subfolder"]


def sae_subfolder(cell: Cell) -> str:
    if cell.pooling is None:
        raise ValueError(f"an SAE cell needs a pooling; got {cell!r}")
    return f"saes/{cell.path}"


def sae_cells(root: Path) -> list[Cell]:
    """Every cell of a release folder that holds an SAE, in a stable order."""
    saes = root / "saes"
    return sorted(Cell.from_path(p.parent.relative_to(saes).as_posix()) for p in saes.glob("*/t*/*/config.json"))


def probe_subfolder(hook: str, timestep: int, kind: str) -> str:
    return f"probes/{Cell(hook, timestep).path}/{kind}"


@dataclass
class BestCell:
    """The (hook, timestep) whose probe classified the test images best."""

    hook: str
    timestep: int
    probe: str
    test_accuracy: float


@dataclass
class ReleaseInfo:
    """``release.json``: what the release holds (required to load it) and how it was made (descriptive)."""

    backbone: str  # "model" (the model/ folder) or a Hub repo id
    hooks: list[str]
    timesteps: list[int]
    poolings: list[str]
    probe_kinds: list[str]
    best_cell: BestCell
    backbone_name: str = ""
    backbone_revision: str | None = None  # a Hub backbone's revision (None: a local model/ folder or main)
    conditioning: str = "class"  # the backbone's own: "class" | "text" | "none"
    backbone_class_names: list[str] | None = None  # a class-conditional backbone's classes
    prompt_template: str | None = None  # text models: extraction prompt per label, e.g. "a photo of a {}"; None = empty prompt
    dataset: str = ""
    class_names: list[str] | None = None  # the dataset's labels: what probes predict and steering targets
    quality_gate_skipped: str | None = None  # why there is no quality gate / reference classifier
    num_train_images: int = 0
    num_test_images: int = 0
    sae: dict[str, Any] = field(default_factory=dict)
    exemplar_images: int = 0
    held_out_images: int = 0
    seed: int = 0  # the noise seed of the release's caches: the app noises uploads the same way
    versions: dict[str, str] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)  # the ReleaseConfig it was built from

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any, where: str = RELEASE_FILE) -> ReleaseInfo:
        """Validate a parsed release.json; missing or malformed fields are an ArtifactFormatError."""
        if not isinstance(data, dict):
            raise ArtifactFormatError(f"{where} must hold a JSON object; rebuild the release")
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise ArtifactFormatError(f"{where} lacks the fields {missing}; rebuild the release with train/build_release.py")
        try:
            known = {f.name for f in fields(cls)}
            values = {k: v for k, v in data.items() if k in known}
            return cls(**{**values, "best_cell": BestCell(**data["best_cell"])})
        except TypeError as err:
            raise ArtifactFormatError(f"{where} has a malformed field ({err}); rebuild the release") from None
