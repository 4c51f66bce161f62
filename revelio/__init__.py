"""revelio: interpret and steer diffusion models with k-sparse autoencoders and probes.

Names are imported on first use, so ``import revelio`` stays fast (diffusers alone takes seconds).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Backbone": "revelio.backbones",
    "load_backbone": "revelio.backbones",
    "extract": "revelio.activations",
    "iter_extract": "revelio.activations",
    "capture_outputs": "revelio.hooks",
    "replace_outputs": "revelio.hooks",
    "ImageError": "revelio.images",
    "KSparseAutoencoder": "revelio.sae",
    "SparseCode": "revelio.sae",
    "SAETrainConfig": "revelio.sae_training",
    "train_sae": "revelio.sae_training",
    "ActivationCache": "revelio.cache",
    "CacheWriter": "revelio.cache",
    "write_cache": "revelio.cache",
    "feature_stats": "revelio.features",
    "FeatureStats": "revelio.features",
    "Probe": "revelio.probes",
    "LinearProbe": "revelio.probes",
    "DiffCProbe": "revelio.probes",
    "classify": "revelio.classification",
    "steer": "revelio.steering",
    "FeatureEdit": "revelio.steering",
    "Release": "revelio.release",
    "load_release": "revelio.release",
    "ReferenceClassifier": "revelio.reference_classifier",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'revelio' has no attribute {name!r}")
