"""Benchmark: what FLUX.1-schnell, SD3-medium and PixArt-Sigma cost per image at their native 1024 px.

Each model's denoiser, VAE and text encoders are built from their published configs (the numbers
of each repo's ``config.json``, written out below because this machine cannot reach the Hub) on
the meta device: no weights are allocated, and torch's FlopCounterMode counts the FLOPs of one
forward (matrix products and convolutions, a multiply-add counted as 2; elementwise work is not
counted). Printed per image:
- extraction: the VAE encode once, then one denoiser forward per timestep, in full and stopped
  after the published SAEs' hook points (revelio stops the forward after the deepest hook);
- the prompt's text encoders (once per prompt: extraction reuses one encoded prompt);
- generation at the model's default steps and guidance (classifier-free guidance doubles the batch);
- the bytes one image adds to an activation cache per (hook, timestep) cell, pooled and spatial, in float16;
- measured CPU time: a small copy of each denoiser (one block of each kind, 256 px, random weights,
  real tensors) is timed here; its counted FLOPs over its time give this machine's rate, and the
  full forward's counted FLOPs at that rate an extrapolated time (labelled so).
Run: ``.venv/bin/python bench/backbones.py`` (about a minute; ``--no-time`` skips the timed copies).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, FluxTransformer2DModel, PixArtTransformer2DModel, SD3Transformer2DModel
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from revelio.activations.hooks import StopForward, capture_outputs  # noqa: E402

# --- Published configs (config.json of each repo's subfolders) -------------------------------------------------
FLUX_SCHNELL = dict(  # black-forest-labs/FLUX.1-schnell, transformer/
    patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128, num_attention_heads=24,
    joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=False, axes_dims_rope=(16, 56, 56),
)
SD3_MEDIUM = dict(  # stabilityai/stable-diffusion-3-medium-diffusers, transformer/
    sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64, num_attention_heads=24,
    joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192,
)
PIXART_SIGMA = dict(  # PixArt-alpha/PixArt-Sigma-XL-2-1024-MS, transformer/
    sample_size=128, patch_size=2, in_channels=4, out_channels=8, num_layers=28, num_attention_heads=16, attention_head_dim=72,
    cross_attention_dim=1152, caption_channels=4096, norm_type="ada_norm_single", num_embeds_ada_norm=1000,
    activation_fn="gelu-approximate", attention_bias=True, use_additional_conditions=False, interpolation_scale=2,
)
# The VAEs: FLUX and SD3 share the 16-channel layout (their scaling and shift factors differ); PixArt uses SDXL's.
VAE_16 = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=16, norm_num_groups=32,
    use_quant_conv=False, use_post_quant_conv=False,
)
VAE_SDXL = {**VAE_16, "latent_channels": 4, "use_quant_conv": True, "use_post_quant_conv": True}
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, projection_dim=768,
              max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu")
CLIP_G = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20, projection_dim=1280,
              max_position_embeddings=77, vocab_size=49408, hidden_act="gelu")
T5_XXL = dict(d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24, vocab_size=32128, feed_forward_proj="gated-gelu",
              relative_attention_num_buckets=32, relative_attention_max_distance=128, tie_word_embeddings=False)
CLIP_TOKENS = 77
RESOLUTION = 1024  # native for all three
VAE_SCALE = 8


@dataclass
class Model:
    """One text-to-image transformer: how to build its parts and call its denoiser."""

    name: str
    transformer: Callable[..., nn.Module]  # (**overrides) -> transformer
    call: Callable[[nn.Module, int, str], Any]  # (transformer, resolution, device) -> output
    vae: dict
    text_encoders: list[tuple[str, Callable[[], nn.Module], int]]  # (name, builder, tokens)
    steps: int
    guidance_batch: int  # 2 with classifier-free guidance
    hooks: list[str]  # published or representative SAE hook points
    width: int
    small: dict = field(default_factory=dict)  # overrides for the timed small copy


def _meta(shape: tuple[int, ...], device: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(shape, device=device, dtype=dtype)


def _flux_call(model: nn.Module, resolution: int, device: str, text: int = 256) -> Any:
    tokens = (resolution // VAE_SCALE // 2) ** 2
    return model(hidden_states=_meta((1, tokens, 64), device), timestep=torch.ones(1, device=device),
                 pooled_projections=_meta((1, 768), device), encoder_hidden_states=_meta((1, text, 4096), device),
                 txt_ids=torch.zeros(text, 3, device=device), img_ids=torch.zeros(tokens, 3, device=device), return_dict=False)


def _sd3_call(model: nn.Module, resolution: int, device: str, text: int = CLIP_TOKENS + 256) -> Any:
    side = resolution // VAE_SCALE
    return model(hidden_states=_meta((1, 16, side, side), device), timestep=torch.full((1,), 500.0, device=device),
                 encoder_hidden_states=_meta((1, text, 4096), device), pooled_projections=_meta((1, 2048), device), return_dict=False)


def _pixart_call(model: nn.Module, resolution: int, device: str, text: int = 300) -> Any:
    side = resolution // VAE_SCALE
    return model(_meta((1, 4, side, side), device), encoder_hidden_states=_meta((1, text, 4096), device),
                 encoder_attention_mask=torch.ones(1, text, device=device), timestep=torch.full((1,), 500, device=device),
                 added_cond_kwargs={"resolution": None, "aspect_ratio": None}, return_dict=False)


def _clip(config: dict, projection: bool) -> Callable[[], nn.Module]:
    return lambda: (CLIPTextModelWithProjection if projection else CLIPTextModel)(CLIPTextConfig(**config))


def _t5() -> nn.Module:
    return T5EncoderModel(T5Config(**T5_XXL))


MODELS = [
    Model("FLUX.1-schnell", lambda **o: FluxTransformer2DModel(**{**FLUX_SCHNELL, **o}), _flux_call, VAE_16,
          [("CLIP-L", _clip(CLIP_L, False), CLIP_TOKENS), ("T5-XXL", _t5, 256)], steps=4, guidance_batch=1,
          hooks=["transformer_blocks.0", "transformer_blocks.18", "single_transformer_blocks.9", "single_transformer_blocks.37"],
          width=3072, small={"num_layers": 1, "num_single_layers": 1}),
    Model("SD3-medium", lambda **o: SD3Transformer2DModel(**{**SD3_MEDIUM, **o}), _sd3_call, VAE_16,
          [("CLIP-L", _clip(CLIP_L, True), CLIP_TOKENS), ("CLIP-G", _clip(CLIP_G, True), CLIP_TOKENS), ("T5-XXL", _t5, 256)],
          steps=28, guidance_batch=2, hooks=["transformer_blocks.11", "transformer_blocks.23"], width=1536, small={"num_layers": 1}),
    Model("PixArt-Sigma", lambda **o: PixArtTransformer2DModel(**{**PIXART_SIGMA, **o}), _pixart_call, VAE_SDXL,
          [("T5-XXL", _t5, 300)], steps=20, guidance_batch=2, hooks=["transformer_blocks.13", "transformer_blocks.27"],
          width=1152, small={"num_layers": 1, "sample_size": 32}),
]


def flops(fn: Callable[[], Any]) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def flops_to(model: nn.Module, hook: str, fn: Callable[[], Any]) -> float:
    """FLOPs of a forward stopped right after ``hook``, as revelio's extraction stops it."""
    def run() -> None:
        with capture_outputs(model, [hook], stop_when_done=True):
            try:
                fn()
            except StopForward:
                pass

    return flops(run)


def measure(model: Model) -> dict[str, Any]:
    with torch.device("meta"):
        transformer = model.transformer()
        vae = AutoencoderKL(**model.vae)
    image = _meta((1, 3, RESOLUTION, RESOLUTION), "meta")
    latent_side = RESOLUTION // VAE_SCALE
    latents = _meta((1, model.vae["latent_channels"], latent_side, latent_side), "meta")
    forward = flops(lambda: model.call(transformer, RESOLUTION, "meta"))
    text = {}
    for name, build, tokens in model.text_encoders:
        with torch.device("meta"):
            encoder = build()
        text[name] = flops(lambda e=encoder, n=tokens: e(input_ids=torch.zeros(1, n, dtype=torch.long, device="meta")))
    tokens = (RESOLUTION // (VAE_SCALE * 2)) ** 2  # all three: 2x2 latent patches (FLUX packs, the others patchify)
    return {
        "params": sum(p.numel() for p in transformer.parameters()),
        "forward": forward,
        "to_hook": {h: flops_to(transformer, h, lambda: model.call(transformer, RESOLUTION, "meta")) for h in model.hooks},
        "vae_encode": flops(lambda: vae.encode(image)),
        "vae_decode": flops(lambda: vae.decode(latents)),
        "text": text,
        "tokens": tokens,
    }


def time_small_copy(model: Model, resolution: int = 256) -> tuple[float, float]:
    """(seconds, counted FLOPs) of one forward of a one-block-per-kind copy with real weights."""
    torch.manual_seed(0)
    small = model.transformer(**model.small).eval()
    with torch.no_grad():
        model.call(small, resolution, "cpu")  # warm-up
        start = time.perf_counter()
        model.call(small, resolution, "cpu")
        seconds = time.perf_counter() - start
    with torch.device("meta"):
        meta = model.transformer(**model.small)
    return seconds, flops(lambda: model.call(meta, resolution, "meta"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-time", action="store_true", help="skip the timed small copies (counting only)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    T = 1e12
    print(f"Counted FLOPs per image at {RESOLUTION} px (batch 1, random weights from published configs; TFLOPs = 1e12)\n")
    for model in MODELS:
        m = measure(model)
        text_total = sum(m["text"].values())
        generation = model.steps * model.guidance_batch * m["forward"] + m["vae_decode"]
        pooled, spatial = model.width * 2, m["tokens"] * model.width * 2
        print(f"## {model.name}: denoiser {m['params'] / 1e9:.2f} B parameters, {m['tokens']} image tokens of {model.width} channels")
        print(f"  denoiser forward (one timestep)   {m['forward'] / T:8.2f} TFLOPs")
        for hook, value in m["to_hook"].items():
            print(f"    stopped after {hook:<28} {value / T:8.2f} TFLOPs ({value / m['forward']:.0%})")
        print(f"  VAE encode                        {m['vae_encode'] / T:8.2f} TFLOPs")
        print(f"  extraction, 1 / 4 timesteps       {(m['vae_encode'] + m['forward']) / T:8.2f} / "
              f"{(m['vae_encode'] + 4 * m['forward']) / T:.2f} TFLOPs (full forwards)")
        print("  text encoders, once per prompt    " + ", ".join(f"{k} {v / T:.3f}" for k, v in m["text"].items())
              + f" = {text_total / T:.2f} TFLOPs")
        print(f"  generation ({model.steps} steps x {model.guidance_batch}, VAE decode) {generation / T:8.2f} TFLOPs "
              f"(+ {text_total / T:.2f} text{' x2: prompt and negative/empty prompt' if model.guidance_batch == 2 else ''})")
        print(f"  cache bytes per image per cell    pooled {pooled:,} B, spatial {spatial:,} B ({spatial / 2**20:.1f} MiB) in float16")
        if not args.no_time:
            seconds, small_flops = time_small_copy(model)
            rate = small_flops / seconds
            print(f"  measured here: a one-block copy at 256 px, {small_flops / 1e9:.1f} GFLOPs in {seconds:.2f} s "
                  f"({rate / 1e9:.0f} GFLOP/s on {torch.get_num_threads()} threads); the full forward at that rate "
                  f"(extrapolated) {m['forward'] / rate:,.0f} s")
        print()


if __name__ == "__main__":
    main()
