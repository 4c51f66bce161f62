"""FLUX.1 (schnell, dev): a flow-matching MMDiT on 2x2-packed VAE latents, CLIP + T5 prompts.

Hook points are the double-stream blocks ``transformer_blocks.N`` (separate text and image
streams) and the single-stream blocks ``single_transformer_blocks.N`` (one sequence, split again
on return); every one reads the image stream (:mod:`revelio.models.image_stream`). Each image token
is a 2x2 patch of latents, so a 1024 px image has a 64x64 token grid, row-major: token ``i`` covers
row ``i // 64``, column ``i % 64``, which is how heatmaps and masks map onto the image.

Guidance: FLUX.1-schnell (no guidance embedding) samples in 4 steps without classifier-free
guidance; ``guidance_scale > 1`` turns on true classifier-free guidance against the negative (or
empty) prompt. FLUX.1-dev takes guidance as an input of the model (``guidance_scale``, default
3.5; also used during extraction) and no negative prompt.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import DiffusionPipeline

from revelio.errors import ConfigError
from revelio.models.flow_matching import FlowMatchingNoise
from revelio.models.image_stream import ImageStreamHooks
from revelio.models.prompts import Encoded
from revelio.models.text_transformer import TextTransformerBackbone

# FluxPipeline's default_sample_size (latents) times the VAE's 8x downsampling.
NATIVE_RESOLUTION = 1024
PACK = 2  # latents per token along each side


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] latents -> [B, (H/2)(W/2), 4C] tokens: 2x2 patches, row-major (as FluxPipeline packs)."""
    batch, channels, rows, cols = latents.shape
    patches = latents.view(batch, channels, rows // PACK, PACK, cols // PACK, PACK).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(batch, (rows // PACK) * (cols // PACK), channels * PACK * PACK)


def unpack_latents(tokens: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """The inverse of :func:`pack_latents` for a [rows, cols] latent grid."""
    batch, _, width = tokens.shape
    channels = width // (PACK * PACK)
    patches = tokens.view(batch, rows // PACK, cols // PACK, channels, PACK, PACK).permute(0, 3, 1, 4, 2, 5)
    return patches.reshape(batch, channels, rows, cols)


def image_token_ids(rows: int, cols: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[rows * cols, 3] position ids of the token grid (0, row, column), as FluxPipeline gives them."""
    ids = torch.zeros(rows, cols, 3)
    ids[..., 1] = torch.arange(rows)[:, None]
    ids[..., 2] = torch.arange(cols)[None, :]
    return ids.reshape(rows * cols, 3).to(device, dtype)


class FluxBackbone(ImageStreamHooks, FlowMatchingNoise, TextTransformerBackbone):
    """A FluxPipeline; guidance-distilled (dev) when its transformer embeds guidance."""

    cuda_dtype = torch.bfloat16  # as Black Forest Labs and diffusers run it: float16 overflows

    def __init__(self, pipeline: DiffusionPipeline, name_or_path: str, extras: dict[str, Any] | None = None) -> None:
        self.distilled_guidance = bool(pipeline.transformer.config.guidance_embeds)
        # Published settings: FLUX.1-dev 28 steps at guidance 3.5, T5 512 tokens; FLUX.1-schnell 4 steps, no guidance, 256.
        self.default_guidance_scale = 3.5 if self.distilled_guidance else 0.0
        self.default_num_inference_steps = 28 if self.distilled_guidance else 4
        self.default_max_sequence_length = 512 if self.distilled_guidance else 256
        super().__init__(pipeline, name_or_path, extras)

    @property
    def native_resolution(self) -> int:
        return NATIVE_RESOLUTION

    @property
    def pixels_per_token(self) -> int:
        return self.vae_scale * PACK * int(self.transformer.config.patch_size)

    @property
    def hook_channels(self) -> dict[str, int]:
        double = {f"transformer_blocks.{i}": self.width for i in range(len(self.transformer.transformer_blocks))}
        single = {f"single_transformer_blocks.{i}": self.width for i in range(len(self.transformer.single_transformer_blocks))}
        return {**double, **single}

    def _encode_prompt(self, prompt: str) -> Encoded:
        embeds, pooled, text_ids = self.pipeline.encode_prompt(
            prompt=prompt, prompt_2=None, device=self.device, num_images_per_prompt=1,
            max_sequence_length=self.max_sequence_length,
        )
        return {"embeds": embeds, "pooled": pooled, "text_ids": text_ids[None]}

    def denoise(self, x_t: torch.Tensor, t: int, condition: Any = None) -> torch.Tensor:
        """The velocity prediction for unpacked latents ``x_t`` (packed for the transformer, unpacked back)."""
        batch, _, rows, cols = x_t.shape
        text = self._text(condition, batch)
        sigma = torch.full((batch,), self.sigma(t), device=self.device, dtype=x_t.dtype)
        guidance = (torch.full((batch,), self.default_guidance_scale, device=self.device, dtype=torch.float32)
                    if self.distilled_guidance else None)
        velocity = self.transformer(
            hidden_states=pack_latents(x_t), timestep=sigma, guidance=guidance,
            pooled_projections=text["pooled"], encoder_hidden_states=text["embeds"], txt_ids=text["text_ids"][0],
            img_ids=image_token_ids(rows // PACK, cols // PACK, self.device, x_t.dtype), return_dict=False,
        )[0]
        return unpack_latents(velocity, rows, cols)

    def _pipeline_kwargs(self, negative_prompt: str | None, guidance_scale: float) -> dict[str, Any]:
        if self.distilled_guidance:
            if negative_prompt is not None:
                raise ConfigError("this FLUX model takes guidance as an input (guidance_scale) and no negative prompt; leave it empty")
            return {"guidance_scale": guidance_scale}
        if guidance_scale > 1:
            return {"true_cfg_scale": guidance_scale, "negative_prompt": negative_prompt or ""}
        if negative_prompt is not None:
            raise ConfigError(
                f"a negative prompt needs classifier-free guidance: pass guidance_scale > 1 (got {guidance_scale}; "
                "this FLUX model samples without guidance by default)"
            )
        return {}
