"""Classify: the release probe's class probabilities for images, at the best cell or a chosen one."""

from __future__ import annotations

from PIL import Image

from revelio.app.state import AppState
from revelio.probes.classify import classify


def classify_probabilities(state: AppState, images: list[Image.Image], hook: str | None = None,
                           timestep: int | None = None, kind: str | None = None) -> list[dict[str, float]]:
    """The release probe's class probabilities for each image (default: the best cell's probe)."""
    probe = state.release.probe(hook, timestep, kind)
    sae = None
    if probe.metadata.get("sae"):
        sae = state.release.sae(probe.metadata["hook"], int(probe.metadata["timestep"]), probe.metadata["pooling"])
    with state.model_lock:
        probabilities = classify(state.backbone, probe, images, sae=sae, seed=state.seed)
    return [dict(zip(probe.class_names, row.tolist())) for row in probabilities]


def top_classes(probabilities: dict[str, float], count: int = 5) -> dict[str, float]:
    """The ``count`` most probable classes, most probable first."""
    return dict(sorted(probabilities.items(), key=lambda item: -item[1])[:count])
