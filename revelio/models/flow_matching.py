"""Flow-matching noising (FLUX, SD3): ``x_t = (1 - sigma) x0 + sigma * noise``, with sigma = t / 1000.

How a timestep is named. Revelio keeps one integer grid for every model, ``t`` in 0..999. On a
flow-matching model ``t`` names the noise level sigma = t / num_train_timesteps (1000): exactly the
value these models' time embeddings are given. diffusers' flow-matching schedulers keep
``timestep = sigma * num_train_timesteps`` at every point of every schedule (SD3's transformer is
called with that timestep, FLUX's with sigma and multiplies it by 1000 inside), so ``t = 250`` is
the noise level the model saw whenever it was called with timestep 250, in training or sampling.

The scheduler's ``shift`` (SD3: 3.0) and resolution-dependent dynamic shifting (FLUX.1-dev) decide
*which* sigmas a sampler visits; they never change what a timestep means, so the same ``t`` names
the same noise level at any resolution or step count. Steering windows (``timesteps=(high, low)``)
use the same scale: :func:`revelio.activations.hooks.forward_timestep` reads FLUX's sigma back as
``1000 * sigma``.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SchedulerMixin

from revelio.models.backbone import Backbone


class FlowMatchingNoise(Backbone):
    """Rectified-flow noising for a backbone whose model was trained with flow matching."""

    noising = "flow-matching"

    def _noise_schedule(self, config: Any) -> SchedulerMixin:
        # Only num_train_timesteps is read (sigma = t / N); the sampler keeps the pipeline's own scheduler.
        return FlowMatchEulerDiscreteScheduler.from_config(config)

    def sigma(self, t: int) -> float:
        """The noise level timestep ``t`` names: t / num_train_timesteps."""
        (t,) = self.check_timesteps([t])
        return t / self.num_train_timesteps

    def add_noise(
        self,
        x0: torch.Tensor,
        t: int,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x_t = (1 - sigma) x0 + sigma noise at sigma = t / 1000, as the scheduler's ``scale_noise``."""
        sigma = torch.tensor(self.sigma(t), dtype=x0.dtype, device=x0.device)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
        return sigma * noise + (1.0 - sigma) * x0
