"""Pixels to the scaled VAE latents that latent diffusion models denoise."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL


def vae_scale_factor(vae: AutoencoderKL) -> int:
    """How many pixels one latent cell covers along each side."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


@torch.no_grad()
def encode_latents(vae: AutoencoderKL, pixels: torch.Tensor) -> torch.Tensor:
    """The latent distribution's mode (deterministic, as the paper), shifted and scaled.

    VAEs flagged ``force_upcast`` (SDXL's) overflow in float16, so they encode in float32.
    """
    dtype = next(vae.parameters()).dtype
    upcast = dtype == torch.float16 and vae.config.get("force_upcast", False)
    if upcast:
        vae.to(torch.float32)
    try:
        first = next(vae.parameters())
        latents = vae.encode(pixels.to(first.device, first.dtype)).latent_dist.mode()
    finally:
        if upcast:
            vae.to(dtype)
    shift = vae.config.get("shift_factor") or 0.0
    return ((latents - shift) * vae.config.scaling_factor).to(dtype)
