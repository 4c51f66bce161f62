"""Text-to-image transformers on VAE latents (FLUX, SD3, PixArt-Sigma): what they share.

Hook points are transformer blocks ([B, tokens, C] image tokens, row-major over the image grid);
prompts are encoded once per text (:class:`revelio.models.prompts.PromptCache`); images go through
the VAE with its ``shift_factor`` and ``scaling_factor``; generation runs the model's own diffusers
pipeline at the backbone's resolution, one generator per image.

A ``revelio.json`` beside ``model_index.json`` may set ``resolution`` (pixels, square),
``guidance_scale``, ``num_inference_steps``, ``max_sequence_length`` (T5 tokens),
``prompt_template`` and ``label_sets``; each model has its published defaults otherwise.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Literal

import torch
from diffusers import DiffusionPipeline
from PIL import Image
from torch import nn

from revelio.data.images import ImageLike
from revelio.errors import ConfigError
from revelio.models.backbone import Backbone
from revelio.models.latents import encode_latents, vae_scale_factor
from revelio.models.prompts import Encoded, PromptCache, prompt_list


class TextTransformerBackbone(Backbone):
    """A text-conditioned diffusers transformer; subclasses say how to encode prompts and call it."""

    conditioning = "text"
    # The T5 prompt length the model was trained with (its pipeline's default).
    default_max_sequence_length: int = 256

    def __init__(self, pipeline: DiffusionPipeline, name_or_path: str, extras: dict[str, Any] | None = None) -> None:
        super().__init__(pipeline, name_or_path)
        extras = extras or {}
        self.default_guidance_scale = float(extras.get("guidance_scale", self.default_guidance_scale))
        self.default_num_inference_steps = int(extras.get("num_inference_steps", self.default_num_inference_steps))
        self.max_sequence_length = int(extras.get("max_sequence_length", self.default_max_sequence_length))
        self.prompt_template: str | None = extras.get("prompt_template")
        self.label_sets: dict[str, list[str]] = {k: list(v) for k, v in (extras.get("label_sets") or {}).items()}
        self._resolution = int(extras.get("resolution", self.native_resolution))
        if self._resolution <= 0 or self._resolution % self.pixels_per_token:
            raise ConfigError(
                f"{name_or_path}: resolution {self._resolution} must be a positive multiple of {self.pixels_per_token} "
                f"pixels (one image token); fix 'resolution' in its revelio.json"
            )
        self.prompts = PromptCache(self._encode_prompt)

    # --- what subclasses provide -------------------------------------------------------------
    @property
    @abstractmethod
    def native_resolution(self) -> int:
        """The square image side the model was trained at, in pixels."""

    @property
    @abstractmethod
    def pixels_per_token(self) -> int:
        """Pixels along each side of one image token (VAE downsampling x patch size)."""

    @abstractmethod
    def _encode_prompt(self, prompt: str) -> Encoded:
        """The transformer's text inputs for one prompt, each with a batch axis of 1."""

    @abstractmethod
    def _pipeline_kwargs(self, negative_prompt: str | None, guidance_scale: float) -> dict[str, Any]:
        """Guidance and negative-prompt arguments of this model's pipeline call."""

    # --- shared behaviour ----------------------------------------------------------------------
    @property
    def transformer(self) -> nn.Module:
        return self.pipeline.transformer

    @property
    def denoiser(self) -> nn.Module:
        return self.transformer

    @property
    def width(self) -> int:
        return int(self.transformer.config.num_attention_heads * self.transformer.config.attention_head_dim)

    @property
    def hook_channels(self) -> dict[str, int]:
        return {f"transformer_blocks.{i}": self.width for i in range(len(self.transformer.transformer_blocks))}

    @property
    def resolution(self) -> int:
        return self._resolution

    @property
    def image_channels(self) -> int:
        return 3

    @property
    def token_grid(self) -> tuple[int, int]:
        """(rows, columns) of image tokens at every block: tokens are this grid, row-major."""
        side = self.resolution // self.pixels_per_token
        return side, side

    @property
    def vae_scale(self) -> int:
        return vae_scale_factor(self.pipeline.vae)

    def to(self, device: str | torch.device) -> "TextTransformerBackbone":
        self.prompts.clear()  # cached embeddings live on the old device
        return super().to(device)

    def encode_images(self, images: list[ImageLike]) -> torch.Tensor:
        return encode_latents(self.pipeline.vae, self.pixels(images)).to(self.device, self.dtype)

    def _text(self, condition: Any, batch_size: int) -> Encoded:
        return self.prompts.batch(prompt_list(condition, batch_size))

    def _sample(
        self, condition: Any, seed: int, num_images: int, num_inference_steps: int, guidance_scale: float,
        output_type: Literal["pil", "pt"], negative_prompt: str | None,
    ) -> list[Image.Image] | torch.Tensor:
        result = self.pipeline(
            prompt=prompt_list(condition, num_images),
            num_inference_steps=num_inference_steps,
            height=self.resolution,
            width=self.resolution,
            generator=self._generators(seed, num_images),
            output_type=output_type,
            max_sequence_length=self.max_sequence_length,
            **self._pipeline_kwargs(negative_prompt, guidance_scale),
        )
        return result.images.float().cpu() if output_type == "pt" else result.images
