"""The reverse-diffusion loop for backbones whose diffusers pipeline lacks one we can condition."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from PIL import Image

from revelio.models.backbone import Backbone


def sample_loop(
    backbone: Backbone,
    predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    shape: tuple[int, ...],
    generators: list[torch.Generator],
    num_inference_steps: int,
) -> torch.Tensor:
    """Run the pipeline's own scheduler from pure noise to a clean sample (pixels or latents).

    Each image draws its noise from its own generator, so results do not depend on batch size.
    A fresh scheduler per call keeps no state between generations.
    """
    scheduler = type(backbone.pipeline.scheduler).from_config(backbone.pipeline.scheduler.config)
    scheduler.set_timesteps(num_inference_steps, device=backbone.device)
    x = torch.stack([torch.randn(shape, generator=g) for g in generators])
    x = (x * scheduler.init_noise_sigma).to(backbone.device, backbone.dtype)
    # Stochastic schedulers take the generators; deterministic ones (PNDM, LMS) have no such argument.
    extra = {"generator": generators} if "generator" in inspect.signature(scheduler.step).parameters else {}
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(x, t)
        prediction = predict(model_input, t)
        x = scheduler.step(prediction, t, x, **extra).prev_sample
    return x


def to_output(x: torch.Tensor, output_type: Literal["pil", "pt"]) -> list[Image.Image] | torch.Tensor:
    """Images in [-1, 1] as PIL images, or as a float tensor in [0, 1] ("pt")."""
    images = (x.float().cpu().clamp(-1, 1) + 1) / 2
    if output_type == "pt":
        return images
    if output_type != "pil":
        raise ValueError(f"output_type must be 'pil' or 'pt', got {output_type!r}")
    arrays = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arrays]
