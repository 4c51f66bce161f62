"""DiT: a class-conditional transformer on VAE latents; hook points are its transformer blocks."""

from __future__ import annotations

from typing import Any, Literal

import torch
from diffusers import DiffusionPipeline
from PIL import Image
from torch import nn

from revelio.data.images import ImageLike
from revelio.models.backbone import Backbone
from revelio.models.class_labels import class_label_ids
from revelio.models.latents import encode_latents, vae_scale_factor
from revelio.models.sampling import sample_loop, to_output


class DiTBackbone(Backbone):
    """Block outputs are token sequences [B, T, C]; the null class is id ``num_classes``."""

    conditioning = "class"
    default_guidance_scale = 4.0  # DiT's own pipeline default

    def __init__(self, pipeline: DiffusionPipeline, name_or_path: str) -> None:
        super().__init__(pipeline, name_or_path)
        num_classes = int(self.transformer.config.num_embeds_ada_norm)
        names = [str(i) for i in range(num_classes)]
        for name, index in getattr(pipeline, "labels", {}).items():
            if 0 <= index < num_classes and names[index] == str(index):
                names[index] = name  # first synonym of each id (ImageNet ids have several)
        self._class_names = names
        self.null_class = num_classes

    @property
    def transformer(self) -> nn.Module:
        return self.pipeline.transformer

    @property
    def denoiser(self) -> nn.Module:
        return self.transformer

    @property
    def class_names(self) -> list[str]:
        return self._class_names

    @property
    def hook_channels(self) -> dict[str, int]:
        width = int(self.transformer.config.num_attention_heads * self.transformer.config.attention_head_dim)
        return {f"transformer_blocks.{i}": width for i in range(len(self.transformer.transformer_blocks))}

    @property
    def resolution(self) -> int:
        return int(self.transformer.config.sample_size) * vae_scale_factor(self.pipeline.vae)

    @property
    def image_channels(self) -> int:
        return 3

    def encode_images(self, images: list[ImageLike]) -> torch.Tensor:
        return encode_latents(self.pipeline.vae, self.pixels(images)).to(self.device, self.dtype)

    def denoise(self, x_t: torch.Tensor, t: int, condition: Any = None) -> torch.Tensor:
        ids = class_label_ids(condition, self._class_names, self.null_class, x_t.shape[0])
        labels = torch.tensor(ids, dtype=torch.long, device=self.device)
        return self.transformer(x_t, timestep=self._timestep_batch(t, x_t.shape[0]), class_labels=labels).sample

    def _sample(
        self, condition: Any, seed: int, num_images: int, num_inference_steps: int, guidance_scale: float,
        output_type: Literal["pil", "pt"], negative_prompt: str | None,
    ) -> list[Image.Image] | torch.Tensor:
        if condition is None:
            raise ValueError(f"DiT generates from class labels; pass names or ids such as {self._class_names[:3]}")
        ids = class_label_ids(condition, self._class_names, None, num_images)
        labels = torch.tensor(ids, dtype=torch.long, device=self.device)
        guided = guidance_scale != 1.0
        latent_channels = int(self.transformer.config.in_channels)

        # Our own loop instead of DiTPipeline's: that one assumes ImageNet's null class id (1000)
        # and one generator for the batch; here any class count works and images are seeded alone.
        def predict(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if guided:
                x = torch.cat([x, x])
            steps = t.expand(x.shape[0]).to(self.device)
            both = torch.cat([labels, torch.full_like(labels, self.null_class)]) if guided else labels
            eps = self.transformer(x, timestep=steps, class_labels=both).sample[:, :latent_channels]
            if not guided:
                return eps
            cond, uncond = eps.chunk(2)
            return uncond + guidance_scale * (cond - uncond)

        size = int(self.transformer.config.sample_size)
        generators = self._generators(seed, num_images)
        latents = sample_loop(self, predict, (latent_channels, size, size), generators, num_inference_steps)
        vae = self.pipeline.vae
        shift = vae.config.get("shift_factor") or 0.0
        return to_output(vae.decode(latents / vae.config.scaling_factor + shift).sample, output_type)
