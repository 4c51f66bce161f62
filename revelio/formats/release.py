"""``release.json``: what a release holds (required to load it) and how it was made (descriptive)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from revelio.formats.schema import JsonSchema
from revelio.grid import Cell


@dataclass
class BestCell:
    """The (hook, timestep) whose probe classified the test images best."""

    hook: str
    timestep: int
    probe: str
    test_accuracy: float

    @property
    def cell(self) -> Cell:
        return Cell(self.hook, self.timestep)


@dataclass
class ReleaseInfo(JsonSchema):
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
    noising: str = "ddpm"  # "ddpm": timesteps are training steps; "flow-matching": t names sigma = t / 1000
    backbone_class_names: list[str] | None = None  # a class-conditional backbone's classes
    prompt_template: str | None = None  # text models: extraction prompt per label, e.g. "a photo of a {}"; None = empty prompt
    caption_template: str | None = None  # text models trained by revelio: how they were captioned, e.g. "a {colour} {class}"
    dataset: str = ""
    dataset_name: str = ""  # how to call the dataset: a local folder's name, else the dataset's id
    dataset_split: str = ""  # how the train and test images were chosen (an image folder may be split here)
    class_names: list[str] | None = None  # the dataset's labels: what probes predict and steering targets
    # Every label set by column ({} for a release with one unnamed set); default_label_set's names are class_names.
    label_sets: dict[str, list[str]] = field(default_factory=dict)
    default_label_set: str | None = None
    # Each further label set's best probe (the default set's is best_cell).
    label_set_best_cells: dict[str, BestCell] = field(default_factory=dict)
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
