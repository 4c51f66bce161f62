"""revelio: interpret and steer diffusion models with k-sparse autoencoders and probes.

Names are imported on first use, so ``import revelio`` stays fast (diffusers alone takes seconds).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Backbone": "revelio.models",
    "load_backbone": "revelio.models",
    "extract": "revelio.activations.capture",
    "iter_extract": "revelio.activations.capture",
    "capture_outputs": "revelio.activations.hooks",
    "replace_outputs": "revelio.activations.hooks",
    "ImageError": "revelio.data.images",
    "KSparseAutoencoder": "revelio.sae.model",
    "SparseCode": "revelio.sae.model",
    "SAETrainConfig": "revelio.sae.training",
    "train_sae": "revelio.sae.training",
    "ActivationCache": "revelio.cache",
    "CacheWriter": "revelio.cache",
    "write_cache": "revelio.cache",
    "feature_stats": "revelio.analysis.statistics",
    "FeatureStats": "revelio.sae.stats",
    "Probe": "revelio.probes",
    "LinearProbe": "revelio.probes",
    "DiffCProbe": "revelio.probes",
    "classify": "revelio.probes.classify_images",
    "steer": "revelio.steering.edits",
    "FeatureEdit": "revelio.steering.edits",
    "Release": "revelio.release.load",
    "load_release": "revelio.release.load",
    "ReferenceClassifier": "revelio.probes.reference_classifier",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'revelio' has no attribute {name!r}")
