"""The probe family's base: class names, metadata, prediction, the Hub format and kind dispatch.

Probes are light classifiers on frozen diffusion features: how much does a (block, timestep)
know? They share the SAE's Hub grammar (``save_pretrained`` / ``from_pretrained`` /
``push_to_hub``); ``Probe.from_pretrained`` returns whichever kind a folder holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from revelio.artifact import HubArtifact
from revelio.errors import ArtifactFormatError
from revelio.formats.artifacts import ProbeConfig
from revelio.probes.sparse import SparseFeatures


@dataclass
class Split:
    """Features (dense, or :class:`SparseFeatures` for SAE codes) and integer labels of one split."""

    features: torch.Tensor | SparseFeatures
    labels: torch.Tensor


def split_train_validation(
    features: torch.Tensor | SparseFeatures, labels: torch.Tensor, validation_fraction: float = 0.2, seed: int = 0
) -> tuple[Split, Split]:
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    cut = max(1, int(len(labels) * validation_fraction))
    return Split(features[order[cut:]], labels[order[cut:]]), Split(features[order[:cut]], labels[order[:cut]])


class Probe(nn.Module, HubArtifact[ProbeConfig]):
    """Base of the probe family: its typed :class:`ProbeConfig`, prediction, and kind dispatch on load."""

    artifact_type = "probe"
    config_class = ProbeConfig
    kind: ClassVar[str]
    _kinds: ClassVar[dict[str, type[Probe]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Probe._kinds[cls.kind] = cls

    def __init__(self, config: ProbeConfig) -> None:
        super().__init__()
        self.config = config
        self.extra_files = {}

    @property
    def class_names(self) -> list[str]:
        return self.config.class_names

    @property
    def d_in(self) -> int:
        return self.config.d_in

    def _check_features(self, features: torch.Tensor, expected: int, layout: str) -> torch.Tensor:
        if features.shape[-1] != expected:
            raise ValueError(
                f"this probe takes {layout} with {expected} channels; got shape {tuple(features.shape)}. "
                "Extract features from the hook point, timestep and pooling it was trained on "
                f"({self.config.cell}, pooling {self.config.pooling!r})."
            )
        weight = next(self.parameters())
        return features.to(weight.device, weight.dtype)

    @torch.no_grad()
    def predict_proba(self, features: torch.Tensor) -> torch.Tensor:
        """Class probabilities [N, num_classes]."""
        return self(features).softmax(dim=-1)

    @torch.no_grad()
    def predict(self, features: torch.Tensor) -> torch.Tensor:
        return self(features).argmax(dim=-1)

    def accuracy(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        return float((self.predict(features) == labels).float().mean())

    @classmethod
    def from_config(cls, config: ProbeConfig) -> Probe:
        kind = Probe._kinds.get(config.probe_type)
        if kind is None:
            raise ArtifactFormatError(f"unknown probe_type {config.probe_type!r}; known: {sorted(Probe._kinds)}")
        return kind(config)

    @classmethod
    def weight_shapes(cls, config: ProbeConfig) -> dict[str, tuple[int, ...]]:
        probe = cls.from_config(config)
        return {name: tuple(t.shape) for name, t in probe.state().items()}

    def state(self) -> dict[str, torch.Tensor]:
        return dict(self.state_dict())

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.load_state_dict(tensors)
        self.eval()

    @classmethod
    def from_pretrained(cls, repo_id_or_dir: Any, subfolder: str | None = None, revision: str | None = None, **hub_kwargs: Any) -> Probe:
        probe = super().from_pretrained(repo_id_or_dir, subfolder, revision, **hub_kwargs)
        if cls is not Probe and not isinstance(probe, cls):
            raise ArtifactFormatError(f"{repo_id_or_dir}/{subfolder or ''} holds a {probe.kind} probe, not a {cls.kind}")
        return probe
