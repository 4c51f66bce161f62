"""PixArt-Sigma: a DiT with T5 cross-attention on VAE latents, DDPM-family noising.

PixArt-Sigma is trained as an epsilon-prediction diffusion model with learned variance (its
transformer outputs noise and variance channels, as DiT), so noising is the DDPM forward process
of :class:`revelio.models.backbone.Backbone`. Hook points are ``transformer_blocks.N`` ([B, T, C]
image tokens; the prompt enters by cross-attention, so there is one stream).
"""

from __future__ import annotations

from typing import Any

import torch

from revelio.models.prompts import Encoded
from revelio.models.text_transformer import TextTransformerBackbone


class PixArtBackbone(TextTransformerBackbone):
    """A PixArtSigmaPipeline (whose transformer takes no resolution or aspect-ratio inputs, unlike PixArt-Alpha's)."""

    # PixArtSigmaPipeline's defaults.
    default_guidance_scale = 4.5
    default_num_inference_steps = 20
    default_max_sequence_length = 300

    @property
    def native_resolution(self) -> int:
        return int(self.transformer.config.sample_size) * self.vae_scale

    @property
    def pixels_per_token(self) -> int:
        return self.vae_scale * int(self.transformer.config.patch_size)

    def _encode_prompt(self, prompt: str) -> Encoded:
        embeds, mask, _, _ = self.pipeline.encode_prompt(
            prompt, do_classifier_free_guidance=False, device=self.device, num_images_per_prompt=1,
            clean_caption=False, max_sequence_length=self.max_sequence_length,
        )
        return {"embeds": embeds, "mask": mask}

    def denoise(self, x_t: torch.Tensor, t: int, condition: Any = None) -> torch.Tensor:
        """Noise and variance channels, as the transformer predicts them."""
        text = self._text(condition, x_t.shape[0])
        return self.transformer(
            x_t, encoder_hidden_states=text["embeds"], encoder_attention_mask=text["mask"],
            timestep=self._timestep_batch(t, x_t.shape[0]), added_cond_kwargs={"resolution": None, "aspect_ratio": None},
            return_dict=False,
        )[0]

    def _pipeline_kwargs(self, negative_prompt: str | None, guidance_scale: float) -> dict[str, Any]:
        # Resolution binning maps sizes onto the published models' aspect-ratio buckets; the backbone's size is square.
        return {"guidance_scale": guidance_scale, "negative_prompt": negative_prompt or "",
                "use_resolution_binning": False, "clean_caption": False}
