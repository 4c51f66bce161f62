"""What every backbone offers: hook points, conditioning, images -> model space, noising, generation.

Backbones wrap a loaded diffusers pipeline; they never re-implement a model. Subclasses say how
to run one denoiser forward with a condition, how to move images into the space the denoiser
works in (pixels or VAE latents), and how to generate.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from diffusers import DDPMScheduler, DiffusionPipeline, SchedulerMixin
from PIL import Image
from torch import nn

from revelio.data.images import ImageLike, to_pixels
from revelio.errors import ConfigError
from revelio.hook_points import HookPoint

Conditioning = Literal["class", "text", "none"]


class Backbone(ABC):
    """A diffusion model prepared for activation capture and steering."""

    conditioning: Conditioning = "none"
    # Classifier-free guidance when generate() is given none; 1.0 means unguided.
    default_guidance_scale: float = 1.0
    # Sampler steps when generate() is given none (a model's revelio.json may say fewer).
    default_num_inference_steps: int = 50
    # How x_t is made from x0 and what a timestep t names: "ddpm" (training step t of the
    # schedule) or "flow-matching" (noise level sigma = t / 1000).
    noising: Literal["ddpm", "flow-matching"] = "ddpm"
    # The dtype load_backbone picks on CUDA when given none.
    cuda_dtype: torch.dtype = torch.float16

    def __init__(self, pipeline: DiffusionPipeline, name_or_path: str) -> None:
        self.pipeline = pipeline
        self.name_or_path = name_or_path
        self.noise_schedule = self._noise_schedule(pipeline.scheduler.config)
        self.pipeline.set_progress_bar_config(disable=True)
        for module in self._modules():
            module.requires_grad_(False).eval()

    # --- what subclasses provide -------------------------------------------------------------
    @property
    @abstractmethod
    def denoiser(self) -> nn.Module:
        """The network whose blocks are hooked (a UNet or a transformer)."""

    @property
    @abstractmethod
    def hook_channels(self) -> dict[str, int]:
        """Channel width of each block-level hook point, in forward order."""

    @property
    @abstractmethod
    def resolution(self) -> int:
        """Side of the square images the model works on, in pixels."""

    @property
    @abstractmethod
    def image_channels(self) -> int:
        """1 for greyscale models, 3 for RGB."""

    @abstractmethod
    def denoise(self, x_t: torch.Tensor, t: int, condition: Any = None) -> torch.Tensor:
        """One denoiser forward on a batch of noisy inputs at timestep ``t``."""

    @abstractmethod
    def _sample(
        self, condition: Any, seed: int, num_images: int, num_inference_steps: int, guidance_scale: float,
        output_type: Literal["pil", "pt"], negative_prompt: str | None,
    ) -> list[Image.Image] | torch.Tensor:
        """Sample ``num_images`` images (image i from seed ``seed + i``); arguments already checked."""

    # --- shared behaviour ----------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        condition: Any = None,
        *,
        seed: int = 0,
        num_images: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        output_type: Literal["pil", "pt"] = "pil",
        negative_prompt: str | None = None,
    ) -> list[Image.Image] | torch.Tensor:
        """Sample images; image i uses seed ``seed + i`` so a batch equals its images run alone.

        ``condition`` is what :attr:`conditioning` needs: a prompt or one per image ("text"), a class
        name or id or one per image ("class"), nothing ("none"). ``num_images`` defaults to one per
        condition in a list, else 1; ``num_inference_steps`` and ``guidance_scale`` to
        :attr:`default_num_inference_steps` and :attr:`default_guidance_scale`;
        ``negative_prompt`` (text models) replaces the empty prompt of classifier-free guidance;
        ``output_type="pt"`` gives floats in [0, 1].
        """
        if output_type not in ("pil", "pt"):
            raise ValueError(f"output_type must be 'pil' or 'pt', got {output_type!r}")
        if negative_prompt is not None and self.conditioning != "text":
            raise ValueError(f"negative_prompt needs a text-conditioned model; this one is conditioned on {self.conditioning!r}")
        if self.conditioning == "none" and condition is not None:
            raise ValueError("this model is unconditional; call generate() without a condition")
        if num_images is None:
            num_images = len(condition) if isinstance(condition, (list, tuple)) else 1
        scale = self.default_guidance_scale if guidance_scale is None else float(guidance_scale)
        steps = self.default_num_inference_steps if num_inference_steps is None else int(num_inference_steps)
        return self._sample(condition, seed, num_images, steps, scale, output_type, negative_prompt)

    @property
    def hook_points(self) -> list[str]:
        """Block-level module paths that can be hooked, in the order the forward runs them."""
        return list(self.hook_channels)

    @property
    def class_names(self) -> list[str] | None:
        return None

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.denoiser.parameters()).dtype

    @property
    def num_train_timesteps(self) -> int:
        return int(self.noise_schedule.config.num_train_timesteps)

    def _noise_schedule(self, config: Any) -> SchedulerMixin:
        """The training noise schedule :meth:`add_noise` follows, without sampler step state.

        DDPM-family models need only ``alphas_cumprod``, which every DDPM-family scheduler config
        describes; flow-matching backbones override this (:mod:`revelio.models.flow_matching`).
        """
        return DDPMScheduler.from_config(config)

    def _modules(self) -> list[nn.Module]:
        return [m for m in self.pipeline.components.values() if isinstance(m, nn.Module)]

    def randomize_weights(self, seed: int = 0) -> "Backbone":
        """Replace the denoiser by a freshly initialised one of the same architecture.

        The baseline that shows what training adds: probes on a random-weights copy measure how
        much of their accuracy comes from the architecture alone.
        """
        name = next(key for key, module in self.pipeline.components.items() if module is self.denoiser)
        torch.manual_seed(seed)
        fresh = type(self.denoiser).from_config(self.denoiser.config).to(self.device)
        if fresh.dtype != self.dtype:  # only cast when needed: diffusers warns about dtype casts
            fresh = fresh.to(self.dtype)
        setattr(self.pipeline, name, fresh.requires_grad_(False).eval())
        return self

    def to(self, device: str | torch.device) -> "Backbone":
        self.pipeline.to(device)
        return self

    def check_timesteps(self, timesteps: Sequence[int]) -> list[int]:
        """Timesteps as ints, or a ValueError naming the scheduler's valid range."""
        checked = []
        for t in timesteps:
            if isinstance(t, bool) or not float(t).is_integer():
                raise ConfigError(f"timesteps must be whole numbers; got {t!r}")
            if not 0 <= int(t) < self.num_train_timesteps:
                raise ConfigError(
                    f"timestep {t} is outside this scheduler's range 0..{self.num_train_timesteps - 1}"
                )
            checked.append(int(t))
        return checked

    def check_hook_points(self, hook_points: Sequence[str]) -> list[str]:
        """Hook points in their canonical spelling (:mod:`revelio.hook_points`), or a ValueError
        naming the ones this backbone has."""
        if isinstance(hook_points, str):
            hook_points = [hook_points]
        names = dict(self.denoiser.named_modules())
        checked = []
        for spec in hook_points:
            try:
                hook = HookPoint.parse(spec)
            except ValueError as err:
                raise ConfigError(f"{spec!r} is not a hook point: {err}") from None
            if hook.module not in names:
                raise ConfigError(
                    f"{type(self.denoiser).__name__} has no hook point {spec!r} (no module {hook.module!r}). "
                    f"Block-level hook points: {self.hook_points}; any module path also works, and "
                    "'<module>@residual' reads its residual update."
                )
            checked.append(hook.spec)
        return checked

    def pixels(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """Images as [B, C, H, W] in [-1, 1] at the model's resolution and channels."""
        return to_pixels(images, self.resolution, self.image_channels)

    def encode_images(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """Images in the denoiser's input space (pixels here; latent models override this)."""
        return self.pixels(images).to(self.device, self.dtype)

    def noise_like(self, x0: torch.Tensor, seeds: int | Sequence[int]) -> torch.Tensor:
        """Gaussian noise for a batch, drawn per image from CPU generators.

        An int seed gives every image the same noise, so an image's activations never depend on
        which batch (or which dataset) it came in; a sequence gives image i ``seeds[i]``.
        """
        shape = tuple(x0.shape[1:])
        if isinstance(seeds, (int, np.integer)):
            one = torch.randn(shape, generator=torch.Generator().manual_seed(int(seeds)))
            noise = one.expand(x0.shape[0], *shape)
        else:
            if len(seeds) != x0.shape[0]:
                raise ValueError(f"got {len(seeds)} seeds for a batch of {x0.shape[0]} images")
            noise = torch.stack(
                [torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
            )
        return noise.to(x0.device, x0.dtype)

    def add_noise(
        self,
        x0: torch.Tensor,
        t: int,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, the forward process at timestep ``t``."""
        (t,) = self.check_timesteps([t])
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
        timesteps = torch.full((x0.shape[0],), t, dtype=torch.long)
        return self.noise_schedule.add_noise(x0, noise, timesteps)

    def _timestep_batch(self, t: int, batch_size: int) -> torch.Tensor:
        return torch.full((batch_size,), t, device=self.device, dtype=torch.long)

    @staticmethod
    def _generators(seed: int, count: int) -> list[torch.Generator]:
        return [torch.Generator().manual_seed(seed + i) for i in range(count)]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name_or_path!r}, conditioning={self.conditioning!r}, "
            f"resolution={self.resolution}, hook_points={self.hook_points})"
        )
