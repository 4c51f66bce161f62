"""The per-feature statistics format stored beside an SAE (``stats.safetensors``).

Firing frequencies, mean/max activations, top exemplars and automatic labels. The labels live in
the safetensors header metadata, so they share the file (and its checksum) with the tensors they
describe. :func:`revelio.analysis.statistics` computes them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from revelio.storage.files import (
    ArtifactFormatError,
    read_safetensors,
    read_safetensors_metadata,
    write_safetensors,
)

# Key of the safetensors header metadata that holds the label strings (a JSON list).
LABELS_METADATA_KEY = "feature_labels"
DEAD = "dead"

@dataclass
class FeatureStats:
    """Per-feature statistics of an SAE over one cache; every tensor's first dimension is d_sae.

    ``firing_frequency`` is the share of rows (tokens, for spatial caches) where the feature is
    active (value > 0), ``image_frequency`` the share of images where it is active anywhere.
    ``mean_activation`` is the mean over the rows where it is active, ``overall_mean_activation``
    the mean over all rows (inactive rows count as 0). Exemplars are sorted by activation,
    padded with image -1 and activation 0; for spatial caches each image appears at most once
    (with its maximum over tokens and that token's ``top_locations``), for pooled ones the
    location is -1. ``label_distribution`` is [d_sae, n_classes] ([d_sae, 0] without labels).
    ``labels`` holds e.g. "sneaker (94%)", "dead" for features that never fire, and "" for live
    features when no image labels were given.
    """

    firing_frequency: torch.Tensor
    image_frequency: torch.Tensor
    mean_activation: torch.Tensor
    overall_mean_activation: torch.Tensor
    max_activation: torch.Tensor
    top_images: torch.Tensor
    top_activations: torch.Tensor
    top_locations: torch.Tensor
    label_distribution: torch.Tensor
    dominant_label: torch.Tensor
    purity: torch.Tensor
    labels: list[str]

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Every field but ``labels``, for ``stats.safetensors`` (labels go in its metadata)."""
        return {name: getattr(self, name).contiguous() for name in _tensor_fields()}

    def to_metadata(self) -> dict[str, str]:
        """The safetensors header metadata that carries ``labels``."""
        return {LABELS_METADATA_KEY: json.dumps(self.labels)}

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor], labels: Sequence[str]) -> FeatureStats:
        """Rebuild from :meth:`to_tensors` output and the label strings."""
        missing = [name for name in _tensor_fields() if name not in tensors]
        if missing:
            raise ArtifactFormatError(
                f"feature statistics lack the tensors {missing}; recompute them with revelio.analysis.statistics"
            )
        d_sae = len(tensors["firing_frequency"])
        if len(labels) != d_sae or any(len(tensors[name]) != d_sae for name in _tensor_fields()):
            raise ArtifactFormatError(
                f"feature statistics disagree on the number of features: {len(labels)} labels, "
                f"{ {name: len(tensors[name]) for name in _tensor_fields()} }; recompute them"
            )
        return cls(**{name: tensors[name] for name in _tensor_fields()}, labels=list(labels))

    def save(self, path: str | Path) -> None:
        """Write one safetensors file: the tensors, with the labels in its header metadata."""
        write_safetensors(self.to_tensors(), Path(path), self.to_metadata())

    @classmethod
    def load(cls, path: str | Path) -> FeatureStats:
        """Read a file written by :meth:`save` (never unpickles)."""
        tensors = read_safetensors(Path(path))  # validates the file, so its header reads below
        return cls.from_tensors(tensors, labels_from_metadata(read_safetensors_metadata(Path(path))))


def labels_from_metadata(metadata: Mapping[str, str]) -> list[str]:
    """The label strings stored by :meth:`FeatureStats.to_metadata`."""
    try:
        labels = json.loads(metadata[LABELS_METADATA_KEY])
    except (KeyError, ValueError):
        raise ArtifactFormatError(
            f"the stats file's metadata has no readable {LABELS_METADATA_KEY!r} entry; "
            "save the statistics with FeatureStats.save or FeatureStats.to_metadata"
        ) from None
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise ArtifactFormatError(f"{LABELS_METADATA_KEY!r} must be a JSON list of strings")
    return labels


def _tensor_fields() -> list[str]:
    return [field.name for field in fields(FeatureStats) if field.name != "labels"]
