"""Everything the app shows about one feature: label, exemplars, activation histogram, timesteps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from revelio.app.state import AppState, Cell
from revelio.sae.model import TIMESTEPS_FILE


@dataclass
class FeatureView:
    """What the app shows about one feature of one SAE."""

    feature: int
    label: str
    summary: dict[str, float]
    exemplars: list[tuple[Image.Image, str]]  # training images, strongest first, with captions
    histogram: tuple[np.ndarray, np.ndarray]  # (counts, bin edges) over held-out images where it fires
    held_out_firing: tuple[int, int]  # (images it fires on, held-out images)
    timesteps: list[tuple[int, float]]  # (timestep, mean activation) at the SAE's hook


def feature_view(state: AppState, cell: Cell, feature: int, bins: int = 12) -> FeatureView:
    """Gather one feature's label, statistics, exemplars, histogram and timestep curve."""
    stats = state.stats(cell)
    names = state.class_names
    exemplars = []
    found = state.release.exemplar_images(stats.top_images[feature])
    for image, index, activation in zip(found, stats.top_images[feature].tolist(), stats.top_activations[feature].tolist()):
        if image is None or index < 0:
            continue
        exemplars.append((image, f"train #{index} · {activation:.2f}"))
    strengths = state.held_out_strengths(cell)[:, feature].numpy()
    firing = strengths[strengths > 0]
    histogram = np.histogram(firing, bins=bins, range=(0.0, float(max(firing.max(initial=0.0), 1e-6))))
    sae = state.sae(cell)
    timesteps: list[tuple[int, float]] = []
    if TIMESTEPS_FILE in sae.extra_files:
        tensors = sae.extra_files[TIMESTEPS_FILE][0]
        timesteps = list(zip(tensors["timesteps"].tolist(), tensors["mean_activation"][:, feature].tolist()))
    summary = {
        "firing frequency": float(stats.firing_frequency[feature]),
        "image frequency": float(stats.image_frequency[feature]),
        "max activation": float(stats.max_activation[feature]),
        "purity": float(stats.purity[feature]),
    }
    if names and stats.label_distribution.shape[1] == len(names):
        summary |= {f"share: {names[c]}": float(stats.label_distribution[feature, c]) for c in range(len(names))}
    return FeatureView(feature, state.feature_label(cell, feature), summary, exemplars,
                       (histogram[0], histogram[1]), (int(len(firing)), int(len(strengths))), timesteps)
