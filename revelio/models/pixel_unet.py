"""Pixel-space UNet2DModel backbones (DDPM/DDIM pipelines), optionally class-conditional."""

from __future__ import annotations

from typing import Any, Literal

import torch
from diffusers import DiffusionPipeline, UNet2DModel
from PIL import Image

from revelio.models.backbone import Backbone
from revelio.models.class_labels import class_label_ids
from revelio.models.sampling import sample_loop, to_output


def unet_hook_channels(block_out_channels: tuple[int, ...], n_down: int, n_up: int) -> dict[str, int]:
    """Output widths of a diffusers UNet's blocks: down i -> width i, up i -> reversed width i."""
    widths = list(block_out_channels)
    channels = {f"down_blocks.{i}": widths[i] for i in range(n_down)}
    channels["mid_block"] = widths[-1]
    channels.update({f"up_blocks.{i}": widths[::-1][i] for i in range(n_up)})
    return channels


class PixelUNetBackbone(Backbone):
    """UNet2DModel on pixels; class-conditional when the UNet has class embeddings.

    Class names and the null class (for classifier-free guidance) come from ``revelio.json`` in
    the pipeline folder; without it classes are named by their ids and there is no null class.
    """

    def __init__(
        self, pipeline: DiffusionPipeline, name_or_path: str, extras: dict[str, Any] | None = None
    ) -> None:
        super().__init__(pipeline, name_or_path)
        extras = extras or {}
        num_classes = self.unet.config.num_class_embeds
        self.conditioning = "class" if num_classes else "none"
        names = extras.get("class_names") or [str(i) for i in range(num_classes or 0)]
        self._class_names = list(names) if num_classes else None
        self.null_class: int | None = extras.get("null_class")
        self.default_guidance_scale = float(extras.get("guidance_scale", 1.0))

    @property
    def unet(self) -> UNet2DModel:
        return self.pipeline.unet

    @property
    def denoiser(self) -> UNet2DModel:
        return self.unet

    @property
    def class_names(self) -> list[str] | None:
        return self._class_names

    @property
    def hook_channels(self) -> dict[str, int]:
        return unet_hook_channels(
            self.unet.config.block_out_channels, len(self.unet.down_blocks), len(self.unet.up_blocks)
        )

    @property
    def resolution(self) -> int:
        size = self.unet.config.sample_size
        return int(size if isinstance(size, int) else size[0])

    @property
    def image_channels(self) -> int:
        return int(self.unet.config.in_channels)

    def _labels(self, condition: Any, batch_size: int) -> torch.Tensor | None:
        if self.conditioning == "none":
            if condition is not None:
                raise ValueError("this model is unconditional; pass condition=None")
            return None
        ids = class_label_ids(condition, self._class_names, self.null_class, batch_size)
        return torch.tensor(ids, dtype=torch.long, device=self.device)

    def denoise(self, x_t: torch.Tensor, t: int, condition: Any = None) -> torch.Tensor:
        labels = self._labels(condition, x_t.shape[0])
        return self.unet(x_t, self._timestep_batch(t, x_t.shape[0]), class_labels=labels).sample

    def _sample(
        self, condition: Any, seed: int, num_images: int, num_inference_steps: int, guidance_scale: float,
        output_type: Literal["pil", "pt"], negative_prompt: str | None,
    ) -> list[Image.Image] | torch.Tensor:
        labels = self._labels(condition, num_images)
        guided = labels is not None and guidance_scale != 1.0
        if guided and self.null_class is None:
            raise ValueError("guidance_scale != 1 needs a null class, which this model lacks")

        def predict(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            steps = t.expand(x.shape[0] * (2 if guided else 1)).to(self.device)
            if not guided:
                return self.unet(x, steps, class_labels=labels).sample
            null = torch.full_like(labels, self.null_class)
            both = self.unet(torch.cat([x, x]), steps, class_labels=torch.cat([labels, null])).sample
            cond, uncond = both.chunk(2)
            return uncond + guidance_scale * (cond - uncond)

        shape = (self.image_channels, self.resolution, self.resolution)
        x0 = sample_loop(self, predict, shape, self._generators(seed, num_images), num_inference_steps)
        return to_output(x0, output_type)
