"""Explore: which SAE features fire on one image, where, and how well the SAE explains it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from revelio.analysis.queries import feature_strengths, feature_values, strongest
from revelio.app.state import AppState, Cell


@dataclass
class FeatureHit:
    feature: int
    label: str
    activation: float
    relative: float  # activation / the feature's largest activation on the training images


@dataclass
class Exploration:
    hits: list[FeatureHit]
    heatmaps: dict[int, torch.Tensor]  # feature -> [side, side] activations (spatial SAEs only)
    fvu: float  # fraction of this image's activation variance the SAE leaves unexplained


@torch.no_grad()
def explore_image(state: AppState, image: Image.Image, cell: Cell, count: int = 8) -> Exploration:
    """The ``count`` strongest features of ``image`` at ``cell``, their heatmaps and the image's FVU."""
    tokens = state.tokens([image], cell.hook, cell.timestep)[0]  # [locations, C]
    x = tokens if cell.pooling == "none" else tokens.mean(0, keepdim=True)
    sae, stats = state.sae(cell), state.stats(cell)
    code = sae.encode(x[None])  # one encode serves the reconstruction, the ranking and the heatmaps
    reconstruction = sae.decode(code)[0]
    mean = state.held_out_mean(cell)
    fvu = float((x - reconstruction).pow(2).sum() / (x - mean).pow(2).sum().clamp_min(1e-12))
    hits = []
    for feature, activation in strongest(feature_strengths(code, sae.d_sae)[0], count):
        peak = float(stats.max_activation[feature])
        hits.append(FeatureHit(feature, stats.labels[feature], activation, activation / peak if peak > 0 else 0.0))
    heatmaps: dict[int, torch.Tensor] = {}
    if cell.pooling == "none":
        side = int(round(tokens.shape[0] ** 0.5))
        heatmaps = {hit.feature: feature_values(code, hit.feature)[0].reshape(side, side) for hit in hits}
    return Exploration(hits, heatmaps, fvu)
