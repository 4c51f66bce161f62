"""Stable Diffusion 1.x/2.x and SDXL: a text-conditioned UNet2DConditionModel on VAE latents."""

from __future__ import annotations

from typing import Any, Literal

import torch
from diffusers import DiffusionPipeline, UNet2DConditionModel
from PIL import Image

from revelio.data.images import ImageLike
from revelio.models.backbone import Backbone
from revelio.models.latents import encode_latents, vae_scale_factor
from revelio.models.pixel_unet import unet_hook_channels
from revelio.models.prompts import Encoded, PromptCache, prompt_list

# Adversarially distilled models sample in 1-4 steps without classifier-free guidance; their Hub
# folders carry no revelio.json, so their defaults (steps, guidance) are known by repo name.
DISTILLED_DEFAULTS = {"sdxl-turbo": (1, 0.0), "sd-turbo": (1, 0.0)}


class StableDiffusionBackbone(Backbone):
    """Extraction runs with the empty prompt unless a prompt is given (as the paper does).

    A ``revelio.json`` beside ``model_index.json`` (written by ``train/train_text_model.py``) may
    give the model's sampler defaults (``guidance_scale``, ``num_inference_steps``), its caption
    template (``prompt_template``, e.g. "a {colour} {class}") and the words each of its fields
    takes (``label_sets``).
    """

    conditioning = "text"
    default_guidance_scale = 7.5  # the Stable Diffusion pipelines' own default

    def __init__(self, pipeline: DiffusionPipeline, name_or_path: str, extras: dict[str, Any] | None = None) -> None:
        super().__init__(pipeline, name_or_path)
        extras = extras or {}
        steps, guidance = DISTILLED_DEFAULTS.get(str(name_or_path).rstrip("/").split("/")[-1].lower(),
                                                 (self.default_num_inference_steps, self.default_guidance_scale))
        self.default_guidance_scale = float(extras.get("guidance_scale", guidance))
        self.default_num_inference_steps = int(extras.get("num_inference_steps", steps))
        self.prompt_template: str | None = extras.get("prompt_template")
        self.label_sets: dict[str, list[str]] = {k: list(v) for k, v in (extras.get("label_sets") or {}).items()}
        self.is_xl = getattr(pipeline, "text_encoder_2", None) is not None
        self._prompt_cache = PromptCache(self._encode_prompt)  # extraction reuses one prompt, an app a handful

    def to(self, device: str | torch.device) -> "StableDiffusionBackbone":
        self._prompt_cache.clear()  # cached embeddings live on the old device
        return super().to(device)

    @property
    def unet(self) -> UNet2DConditionModel:
        return self.pipeline.unet

    @property
    def denoiser(self) -> UNet2DConditionModel:
        return self.unet

    @property
    def hook_channels(self) -> dict[str, int]:
        return unet_hook_channels(
            self.unet.config.block_out_channels, len(self.unet.down_blocks), len(self.unet.up_blocks)
        )

    @property
    def resolution(self) -> int:
        size = self.unet.config.sample_size
        return int(size if isinstance(size, int) else size[0]) * vae_scale_factor(self.pipeline.vae)

    @property
    def image_channels(self) -> int:
        return 3

    def encode_images(self, images: list[ImageLike]) -> torch.Tensor:
        return encode_latents(self.pipeline.vae, self.pixels(images)).to(self.device, self.dtype)

    def _encode_prompt(self, prompt: str) -> Encoded:
        """UNet conditioning for one prompt (batch of 1): its embeddings, and SDXL's pooled ones and size ids."""
        if not self.is_xl:
            embeds, _ = self.pipeline.encode_prompt(prompt, self.device, 1, False)
            return {"encoder_hidden_states": embeds}
        embeds, _, pooled, _ = self.pipeline.encode_prompt(
            prompt, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False,
        )
        # SDXL micro-conditioning: original size, crop top-left, target size.
        size = self.resolution
        time_ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=embeds.dtype, device=self.device)
        return {"encoder_hidden_states": embeds, "text_embeds": pooled, "time_ids": time_ids}

    def _batch_kwargs(self, condition: Any, batch_size: int) -> dict[str, Any]:
        encoded = self._prompt_cache.batch(prompt_list(condition, batch_size))
        kwargs: dict[str, Any] = {"encoder_hidden_states": encoded["encoder_hidden_states"]}
        if self.is_xl:
            kwargs["added_cond_kwargs"] = {key: encoded[key] for key in ("text_embeds", "time_ids")}
        return kwargs

    def denoise(self, x_t: torch.Tensor, t: int, condition: Any = None) -> torch.Tensor:
        kwargs = self._batch_kwargs(condition, x_t.shape[0])
        return self.unet(x_t, self._timestep_batch(t, x_t.shape[0]), **kwargs).sample

    def _sample(
        self, condition: Any, seed: int, num_images: int, num_inference_steps: int, guidance_scale: float,
        output_type: Literal["pil", "pt"], negative_prompt: str | None,
    ) -> list[Image.Image] | torch.Tensor:
        result = self.pipeline(
            prompt=prompt_list(condition, num_images),
            negative_prompt=None if negative_prompt is None else [negative_prompt] * num_images,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            generator=self._generators(seed, num_images),
            output_type=output_type,
        )
        return result.images.float().cpu() if output_type == "pt" else result.images
