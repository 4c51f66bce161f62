"""The paper's own SD-kSAE code (revelio-diffusion/revelio): one pickled ``.pt`` per SAE.

A pickle (torch's save) of ``{"cfg": SDSAERunnerConfig(...), "state_dict": ...}`` with ``W_enc`` [d_in, d_sae],
``b_enc`` [d_sae], ``W_dec`` [d_sae, d_in], ``b_dec`` [d_in]. Its forward pass encodes
``topk((x - b_dec) @ W_enc + b_enc)`` with no ReLU (kept values may be negative) and decodes
``codes @ W_dec + b_dec``; it was trained on mean-pooled SD1.5 block outputs (``block_name``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from revelio.errors import ArtifactFormatError
from revelio.formats.artifacts import SAESource
from revelio.interop.files import ForeignSAE, check_shapes, sae_config, value
from revelio.interop.unpickle import Fields, load_weights_only

CONFIG_CLASSES = ("training.config.SDSAERunnerConfig",)  # where train_ksae.py's config class lives


def convert(path: Path, source: SAESource) -> ForeignSAE:
    """The SAE in one .pt file, read with weights_only (its config object as plain fields)."""
    loaded = load_weights_only(path, CONFIG_CLASSES)
    if not isinstance(loaded, dict) or not isinstance(loaded.get("state_dict"), dict):
        raise ArtifactFormatError(f"{path} must hold {{'cfg': ..., 'state_dict': ...}}; found {type(loaded).__name__}")
    cfg = loaded.get("cfg")
    raw = cfg.as_dict() if isinstance(cfg, Fields) else cfg if isinstance(cfg, dict) else {}
    d_in = value(raw, "d_in", int, path)
    d_sae = value(raw, "d_sae", int, path, 0) or d_in * value(raw, "expansion_factor", int, path)
    hook = raw.get("block_name") or raw.get("module_name")
    config = sae_config(path, d_in=d_in, d_sae=d_sae, k=value(raw, "k", int, path), relu=False, pooling="mean",
                        hook=hook if isinstance(hook, str) else None, timestep=value(raw, "timestep", int, path, None),
                        source=source, training={"source_config": {k: _plain(v) for k, v in raw.items()}})
    weights = check_shapes(path, loaded["state_dict"], {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)})
    return ForeignSAE(config, {"W_enc": weights["W_enc"].t().contiguous(), "W_dec": weights["W_dec"],
                               "b_enc": weights["b_enc"], "b_pre": weights["b_dec"]})


def _plain(value: Any) -> Any:
    """A config value as JSON (devices and dtypes as their names)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)
