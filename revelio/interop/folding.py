"""A revelio SAE's input scale folded into its weights, for formats that have no input scale.

Encoding ``(x * s - b_pre) @ W_enc.T`` equals ``(x - b_pre / s) @ (s * W_enc).T``, and the
reconstruction ``(out + b_pre) / s`` equals the decoder ``W_dec / s`` plus ``b_pre / s``: the same
SAE in real arithmetic, so the exported SAE's codes match up to float32 rounding (computed in
float64, rounded once). An SAE whose scale is already 1 is written bit for bit.
"""

from __future__ import annotations

import dataclasses

import torch

from revelio.formats.artifacts import SAEConfig


def fold_input_scale(config: SAEConfig, tensors: dict[str, torch.Tensor]) -> tuple[SAEConfig, dict[str, torch.Tensor]]:
    """The same SAE with ``input_scale`` 1."""
    scale = config.input_scale
    if scale == 1.0:
        return config, tensors
    folded = {"W_enc": tensors["W_enc"].double() * scale, "W_dec": tensors["W_dec"].double() / scale,
              "b_pre": tensors["b_pre"].double() / scale, "b_enc": tensors["b_enc"]}
    return dataclasses.replace(config, input_scale=1.0), {name: t.to(tensors[name].dtype) for name, t in folded.items()}
