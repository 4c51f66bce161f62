"""SDXL-unbox ("One-Step is Enough", SDXL-Turbo; also its FLUX branch): one folder per block.

``config.json`` (``n_dirs_local``, ``d_model``, ``k``, ``auxk``, ``dead_steps_threshold``),
``state_dict.pth`` (a pickle of ``{"state_dict": ...}`` with ``encoder.weight`` [n, d],
``decoder.weight`` [d, n], ``pre_bias`` [d], ``latent_bias`` [n], ``stats_last_nonzero`` [n]),
and ``mean.pt`` / ``std.pt`` ([n]: each feature's mean and spread when active; their app clamps a
feature to ``strength * mean[f] * k``). Their code encodes
``relu(topk(encoder(x - pre_bias) + latent_bias))`` and decodes ``decoder(codes) + pre_bias``, on
the block's residual update (output minus input) as channels-last tokens. Folders are named
``<hook>_k10_hidden5120_...``; the hook is read from that name.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from revelio.errors import ArtifactFormatError
from revelio.formats.artifacts import SAESource
from revelio.interop.files import ForeignSAE, check_shapes, finite, read_object, sae_config, value
from revelio.interop.unpickle import load_weights_only
from revelio.layout import SOURCE_STATS_FILE

CONFIG = "config.json"
WEIGHTS = "state_dict.pth"
MEAN, STD = "mean.pt", "std.pt"
_HOOK = re.compile(r"((?:unet|transformer)\.[\w.]+?)(?:_k\d+.*)?")


def is_block(folder: Path) -> bool:
    return (folder / CONFIG).is_file() and (folder / WEIGHTS).is_file()


def hook_of(folder: Path) -> str | None:
    """The module path an SDXL-unbox folder (or one of its parents) is named after."""
    for part in reversed(folder.parts):
        if match := _HOOK.fullmatch(part):
            return match[1]
    return None


def convert(folder: Path, source: SAESource) -> ForeignSAE:
    """One block's SAE, its pickles read with weights_only; mean.pt/std.pt kept as source statistics."""
    raw = read_object(folder / CONFIG)
    d_in, d_sae = value(raw, "d_model", int, folder / CONFIG), value(raw, "n_dirs_local", int, folder / CONFIG)
    config = sae_config(folder / CONFIG, d_in=d_in, d_sae=d_sae, k=value(raw, "k", int, folder / CONFIG), hook=hook_of(folder),
                        pooling="none", source=source, training={"source_config": raw})
    loaded = load_weights_only(folder / WEIGHTS)
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict):
        raise ArtifactFormatError(f"{folder / WEIGHTS} must hold a state dict (or {{'state_dict': ...}}); found {type(loaded).__name__}")
    weights = check_shapes(folder / WEIGHTS, state, {"encoder.weight": (d_sae, d_in), "decoder.weight": (d_in, d_sae),
                                                     "pre_bias": (d_in,), "latent_bias": (d_sae,)})
    tensors = {"W_enc": weights["encoder.weight"], "W_dec": weights["decoder.weight"].t().contiguous(),
               "b_enc": weights["latent_bias"], "b_pre": weights["pre_bias"]}
    return ForeignSAE(config, tensors, _source_stats(folder, d_sae))


def _source_stats(folder: Path, d_sae: int) -> dict:
    """mean.pt and std.pt, when present, as ``typical_activation`` and ``activation_std`` [d_sae]."""
    names = {"typical_activation": MEAN, "activation_std": STD}
    stats = {}
    for key, name in names.items():
        if (folder / name).is_file():
            tensor = load_weights_only(folder / name)
            if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != (d_sae,) or not tensor.is_floating_point():
                raise ArtifactFormatError(f"{folder / name} must hold one float tensor of shape [{d_sae}]")
            stats[key] = tensor.float().contiguous()
    if not stats:
        return {}
    finite(folder, stats)
    return {SOURCE_STATS_FILE: (stats, {"source": "SDXL-unbox " + " and ".join(names[k] for k in stats),
                                        "clamp_value": "strength * typical_activation[f] * k (SDXL-unbox's app)"})}
