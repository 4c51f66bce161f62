"""``classify``: extract the probe's features from images and predict, in one call."""

from __future__ import annotations

from typing import Any

import torch

from revelio.activations.capture import extract
from revelio.models.backbone import Backbone
from revelio.probes import LinearProbe, Probe, SparseFeatures
from revelio.sae import KSparseAutoencoder


def probe_features(
    backbone: Backbone, probe: Probe, images: Any, sae: KSparseAutoencoder | None = None, seed: int = 0, batch_size: int = 16
) -> torch.Tensor | SparseFeatures:
    """The features ``probe`` was trained on: its hook, timestep and pooling (and SAE codes).

    SAE codes come as :class:`SparseFeatures` for linear probes (k entries per image), dense otherwise.
    """
    cell = probe.config.cell
    if cell is None or cell.pooling is None:
        raise ValueError("this probe's config does not say which hook, timestep and pooling it was trained on")
    if probe.config.sae and sae is None:
        raise ValueError(f"this probe reads SAE codes; pass sae= (the SAE {probe.config.sae!r})")
    features = extract(backbone, images, [cell.hook], [cell.timestep], pooling=cell.pooling, seed=seed, batch_size=batch_size)
    features = features[(cell.hook, cell.timestep)]
    if sae is None:
        return features
    with torch.no_grad():
        if isinstance(probe, LinearProbe) and features.ndim == 2:
            return SparseFeatures.from_code(sae.encode(features), sae.d_sae)
        return sae.encode(features, dense=True)


def classify(
    backbone: Backbone, probe: Probe, images: Any, sae: KSparseAutoencoder | None = None, seed: int = 0, batch_size: int = 16
) -> torch.Tensor:
    """Class probabilities [N, num_classes] for ``images`` (``probe.class_names`` names them)."""
    return probe.predict_proba(probe_features(backbone, probe, images, sae, seed, batch_size))
