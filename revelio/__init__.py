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
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'revelio' has no attribute {name!r}")
