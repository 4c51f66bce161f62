"""SAELens TopK SAEs: ``cfg.json`` + ``sae_weights.safetensors`` (+ an optional ``sparsity.safetensors``).

Weights ``W_enc`` [d_in, d_sae], ``b_enc`` [d_sae], ``W_dec`` [d_sae, d_in], ``b_dec`` [d_in].
SAELens' ``TopKSAE`` encodes ``relu(topk(norm_in(x) - b_dec * apply_b_dec_to_input) @ W_enc + b_enc)``
and decodes ``norm_out(codes @ W_dec + b_dec)``, where ``layer_norm`` is revelio's ``"unit_norm"``
(the same equations, eps 1e-5) and ``none`` is the identity. With ``rescale_acts_by_decoder_norm``
the pre-activations are multiplied by the decoder row norms and the codes divided by them before
decoding; that is folded into the weights here (SAELens' own ``fold_W_dec_norm``: equal codes up
to float rounding). Configs older than SAELens 6 (``hook_point``, ``activation_fn: topk``) are
read the way SAELens reads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from revelio.errors import ArtifactFormatError
from revelio.formats.artifacts import SAEConfig, SAESource
from revelio.interop.files import ForeignSAE, load_weights, read_object, sae_config, value
from revelio.storage.files import write_json, write_safetensors

CONFIG = "cfg.json"
WEIGHTS = "sae_weights.safetensors"
NORMALIZATIONS = {"none": "scale", "layer_norm": "unit_norm"}
WRITTEN_VERSION = "6.0.0"  # the SAELens config format the written cfg.json follows


def read(config_path: Path, weights_path: Path, source: SAESource) -> ForeignSAE:
    """The TopK SAE of one SAELens folder; other architectures are refused by name."""
    raw = _current(read_object(config_path), config_path)
    architecture = raw.get("architecture", "standard")
    if architecture != "topk":
        raise ArtifactFormatError(f"{config_path}: SAELens architecture {architecture!r} is not supported; revelio loads "
                                  "SAELens 'topk' SAEs (and sparsify/SAeUron TopK folders)")
    normalization = raw.get("normalize_activations") or "none"
    if normalization not in NORMALIZATIONS:
        raise ArtifactFormatError(f"{config_path}: normalize_activations {normalization!r} is not supported; "
                                  f"supported: {sorted(NORMALIZATIONS)} (fold a constant scaling factor into the weights first)")
    if raw.get("reshape_activations", "none") != "none":
        raise ArtifactFormatError(f"{config_path}: reshape_activations {raw['reshape_activations']!r} (attention heads) is not supported")
    d_in, d_sae = value(raw, "d_in", int, config_path), value(raw, "d_sae", int, config_path)
    metadata = value(raw, "metadata", dict, config_path, {})
    hook = metadata.get("hook_name") or raw.get("hook_name")
    config = sae_config(config_path, d_in=d_in, d_sae=d_sae, k=value(raw, "k", int, config_path),
                        input_normalization=NORMALIZATIONS[normalization],
                        subtract_b_pre=value(raw, "apply_b_dec_to_input", bool, config_path, True),
                        hook=hook if isinstance(hook, str) else None, source=source, training={"source_config": raw})
    weights = load_weights(weights_path, {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)},
                           optional={"scaling_factor": (d_sae,)})
    if "scaling_factor" in weights and not bool((weights["scaling_factor"] == 1).all()):
        raise ArtifactFormatError(f"{weights_path}: a fine-tuning scaling_factor other than 1 is not supported")
    tensors = {"W_enc": weights["W_enc"].t().contiguous(), "W_dec": weights["W_dec"], "b_enc": weights["b_enc"], "b_pre": weights["b_dec"]}
    if value(raw, "rescale_acts_by_decoder_norm", bool, config_path, False):
        tensors = _fold_decoder_norms(tensors, weights_path)
    return ForeignSAE(config, tensors)


def _current(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """A config in SAELens 6 terms: older ones name the hook ``hook_point``, mark TopK by
    ``activation_fn``, and store ``normalize_activations`` as a bool."""
    metadata = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
    version = str(raw.get("sae_lens_version") or metadata.get("sae_lens_version") or "0")
    major = version.split(".")[0]
    if major.isdigit() and int(major) >= 6:
        return raw
    raw = {**raw}
    kwargs = raw.get("activation_fn_kwargs")
    if raw.get("activation_fn", raw.get("activation_fn_str")) == "topk" and isinstance(kwargs, dict) and "k" in kwargs:
        raw.setdefault("architecture", "topk")
        raw["k"] = kwargs["k"]
    if isinstance(raw.get("normalize_activations"), bool):
        raw["normalize_activations"] = "expected_average_only_in" if raw["normalize_activations"] else "none"
    raw.setdefault("hook_name", raw.get("hook_point"))
    return raw


def _fold_decoder_norms(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Pre-activations times ||W_dec_i|| and codes divided by it, folded into W_enc, b_enc, W_dec."""
    norms = tensors["W_dec"].double().norm(dim=1)
    if not bool((norms > 0).all()):
        raise ArtifactFormatError(f"{path}: W_dec has all-zero rows, so rescale_acts_by_decoder_norm divides by zero")
    return {"W_enc": (tensors["W_enc"].double() * norms[:, None]).float(), "b_enc": (tensors["b_enc"].double() * norms).float(),
            "W_dec": (tensors["W_dec"].double() / norms[:, None]).float(), "b_pre": tensors["b_pre"]}


def write(config: SAEConfig, tensors: dict[str, torch.Tensor], folder: Path) -> Path:
    """A folder sae-lens' ``SAE.load_from_disk`` reads as a ``TopKSAE`` (tensors as given: the
    caller folds revelio's input scale in first)."""
    if not config.relu:
        raise ArtifactFormatError("SAELens TopK SAEs apply a ReLU to the kept values; this SAE keeps negative ones "
                                  "(relu=False), so no SAELens architecture encodes as it does")
    write_safetensors({"W_enc": tensors["W_enc"].t(), "b_enc": tensors["b_enc"], "W_dec": tensors["W_dec"],
                       "b_dec": tensors["b_pre"]}, folder / WEIGHTS)
    metadata = {"sae_lens_version": WRITTEN_VERSION, "hook_name": config.hook, "model_name": config.backbone}
    write_json({"architecture": "topk", "d_in": config.d_in, "d_sae": config.d_sae, "k": config.k, "dtype": "float32",
                "device": "cpu", "apply_b_dec_to_input": config.subtract_b_pre,
                "normalize_activations": {v: k for k, v in NORMALIZATIONS.items()}[config.input_normalization],
                "reshape_activations": "none", "rescale_acts_by_decoder_norm": False,
                "metadata": {k: v for k, v in metadata.items() if v is not None}}, folder / CONFIG)
    return folder
