"""Stable Diffusion 3 / 3.5: a flow-matching MMDiT on VAE latents, prompts from two CLIPs and T5.

Hook points are the joint blocks ``transformer_blocks.N``; each returns (text, image) and the
image stream is read (:mod:`revelio.models.image_stream`; the last block returns no text stream
at all). Image tokens are ``patch_size`` x ``patch_size`` latent patches, row-major over the grid.
The scheduler's ``shift`` (3.0) changes which noise levels the sampler visits, not what a
timestep names (:mod:`revelio.models.flow_matching`).
"""

from __future__ import annotations

from typing import Any

import torch

from revelio.models.flow_matching import FlowMatchingNoise
from revelio.models.image_stream import ImageStreamHooks
from revelio.models.prompts import Encoded
from revelio.models.text_transformer import TextTransformerBackbone


class SD3Backbone(ImageStreamHooks, FlowMatchingNoise, TextTransformerBackbone):
    """A StableDiffusion3Pipeline (the T5 encoder may be absent, as diffusers allows)."""

    # StableDiffusion3Pipeline's defaults.
    default_guidance_scale = 7.0
    default_num_inference_steps = 28
    default_max_sequence_length = 256

    @property
    def native_resolution(self) -> int:
        return int(self.transformer.config.sample_size) * self.vae_scale

    @property
    def pixels_per_token(self) -> int:
        return self.vae_scale * int(self.transformer.config.patch_size)

    def _encode_prompt(self, prompt: str) -> Encoded:
        embeds, _, pooled, _ = self.pipeline.encode_prompt(
            prompt=prompt, prompt_2=None, prompt_3=None, device=self.device, num_images_per_prompt=1,
            do_classifier_free_guidance=False, max_sequence_length=self.max_sequence_length,
        )
        return {"embeds": embeds, "pooled": pooled}

    def denoise(self, x_t: torch.Tensor, t: int, condition: Any = None) -> torch.Tensor:
        """The velocity prediction; the transformer takes the timestep itself (1000 sigma)."""
        text = self._text(condition, x_t.shape[0])
        timestep = torch.full((x_t.shape[0],), float(self.sigma(t) * self.num_train_timesteps), device=self.device)
        return self.transformer(
            hidden_states=x_t, timestep=timestep, encoder_hidden_states=text["embeds"],
            pooled_projections=text["pooled"], return_dict=False,
        )[0]

    def _pipeline_kwargs(self, negative_prompt: str | None, guidance_scale: float) -> dict[str, Any]:
        return {"guidance_scale": guidance_scale, "negative_prompt": negative_prompt}
