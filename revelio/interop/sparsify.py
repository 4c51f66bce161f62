"""EleutherAI sparsify folders, and SAeUron's and SAEmnesia's (the same layout, a few more keys).

``{run}/{hookpoint}/cfg.json`` + ``sae.safetensors`` with ``encoder.weight`` [n, d_in],
``encoder.bias`` [n], ``W_dec`` [n, d_in], ``b_dec`` [d_in]. Their code encodes
``topk(relu(encoder(x - b_dec)))`` and decodes ``codes @ W_dec + b_dec``; SAeUron's
``input_unit_norm`` first standardises each row, ``(x - mean) / (std + 1e-5)``, and its forward
pass maps reconstructions back, ``* std + mean``. ``batch_topk`` / ``sample_topk`` / ``multi_topk``
only change training: their loaders reset the first two, so inference is plain TopK with ``k``.
``normalize_decoder`` only shapes training too (weights load as stored).
"""

from __future__ import annotations

from pathlib import Path

import torch

from revelio.errors import ArtifactFormatError
from revelio.formats.artifacts import SAEConfig, SAESource
from revelio.interop.files import ForeignSAE, load_weights, read_object, sae_config, value
from revelio.storage.files import write_json, write_safetensors

CONFIG = "cfg.json"
WEIGHTS = "sae.safetensors"


def read(config_path: Path, weights_path: Path, source: SAESource, hook: str | None) -> ForeignSAE:
    """The SAE of one sparsify / SAeUron folder; ``hook`` is the folder's name (their hookpoint)."""
    raw = read_object(config_path)
    for key, allowed in (("activation", "topk"), ("skip_connection", False), ("transcode", False)):
        if raw.get(key, allowed) != allowed:
            raise ArtifactFormatError(f"{config_path}: {key} = {raw[key]!r} is not supported; revelio loads "
                                      f"sparsify SAEs with activation 'topk', no skip connection, not transcoders")
    d_in = value(raw, "d_in", int, config_path)
    d_sae = value(raw, "num_latents", int, config_path, 0) or d_in * value(raw, "expansion_factor", int, config_path, 32)
    unit_norm = value(raw, "input_unit_norm", bool, config_path, False)
    config = sae_config(config_path, d_in=d_in, d_sae=d_sae, k=value(raw, "k", int, config_path),
                        input_normalization="unit_norm" if unit_norm else "scale", hook=hook,
                        pooling="none", source=source, training={"source_config": raw})
    weights = load_weights(weights_path, {"encoder.weight": (d_sae, d_in), "encoder.bias": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)})
    return ForeignSAE(config, {"W_enc": weights["encoder.weight"], "W_dec": weights["W_dec"],
                               "b_enc": weights["encoder.bias"], "b_pre": weights["b_dec"]})


def write(config: SAEConfig, tensors: dict[str, torch.Tensor], folder: Path) -> Path:
    """A folder eai-sparsify's ``SparseCoder.load_from_disk`` reads (tensors as given: the caller
    folds revelio's input scale in first)."""
    if config.input_normalization != "scale" or not config.subtract_b_pre or not config.relu:
        raise ArtifactFormatError(
            "eai-sparsify always subtracts b_dec from the raw input and applies a ReLU; this SAE "
            f"(input_normalization={config.input_normalization!r}, subtract_b_pre={config.subtract_b_pre}, "
            f"relu={config.relu}) would encode differently there. Export it with format='saelens' instead.")
    norms = tensors["W_dec"].norm(dim=1)
    write_safetensors({"encoder.weight": tensors["W_enc"], "encoder.bias": tensors["b_enc"],
                       "W_dec": tensors["W_dec"], "b_dec": tensors["b_pre"]}, folder / WEIGHTS)
    write_json({"activation": "topk", "expansion_factor": max(1, config.d_sae // config.d_in),
                "normalize_decoder": bool(torch.allclose(norms, torch.ones_like(norms), atol=1e-4)),
                "num_latents": config.d_sae, "k": config.k, "multi_topk": False, "skip_connection": False,
                "transcode": False, "d_in": config.d_in}, folder / CONFIG)
    return folder
