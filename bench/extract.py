"""Benchmark: multi-hook, early-exit extraction against the paper's approach and against the limit.

Three ways to get 3 hooks x 3 timesteps of activations for the same images, timed in one run:
- reference: the paper's code path, one full denoiser forward per (hook, timestep), images
  re-encoded every run;
- revelio:   ``revelio.extract``, one forward per timestep for all hooks, stopped after the deepest;
- limit:     encode once, then per timestep a bare forward truncated after the deepest hook,
  written out by hand with no hooks at all (what any hook-based approach could at best reach).

Models: (a) a tiny class-conditional pixel UNet2DModel, (b) a UNet2DConditionModel with Stable
Diffusion 1.5's public architecture and random weights, at a small latent size. Both have the
same FLOPs per forward as trained weights would. Run: ``.venv/bin/python bench/extract.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMPipeline, DDIMScheduler, UNet2DConditionModel, UNet2DModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import revelio  # noqa: E402
from revelio.activations.capture import pool  # noqa: E402
from revelio.activations.hooks import capture_outputs  # noqa: E402
from revelio.models import PixelUNetBackbone, StableDiffusionBackbone  # noqa: E402
from tests.tiny_models import stable_diffusion_pipeline  # noqa: E402

# Stable Diffusion 1.5's UNet config (stable-diffusion-v1-5/stable-diffusion-v1-5, unet/config.json).
SD15_UNET = dict(
    in_channels=4,
    out_channels=4,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    layers_per_block=2,
    attention_head_dim=8,
    cross_attention_dim=768,
    norm_num_groups=32,
)
HOOKS = ["down_blocks.2", "mid_block", "up_blocks.1"]
TIMESTEPS = [25, 250, 500]


def _blocks_until(unet: torch.nn.Module, stop: str) -> tuple[int, int]:
    """How many down and up blocks run before ``stop`` is done (mid counts as all down)."""
    kind, _, index = stop.partition(".")
    n_down = len(unet.down_blocks)
    if kind == "down_blocks":
        return int(index) + 1, 0
    return n_down, (int(index) + 1 if kind == "up_blocks" else 0)


def truncated_forward(
    unet: torch.nn.Module,
    sample: torch.Tensor,
    t: int,
    stop: str,
    encoder_hidden_states: torch.Tensor | None = None,
    class_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """A diffusers UNet forward written out by hand, ending after block ``stop``; no hooks."""
    n_down, n_up = _blocks_until(unet, stop)
    timesteps = torch.full((sample.shape[0],), t, dtype=torch.long, device=sample.device)
    emb = unet.time_embedding(unet.time_proj(timesteps).to(sample.dtype))
    if class_labels is not None:
        emb = emb + unet.class_embedding(class_labels).to(sample.dtype)
    cross = {"encoder_hidden_states": encoder_hidden_states} if encoder_hidden_states is not None else {}
    sample = unet.conv_in(sample)
    skips: tuple[torch.Tensor, ...] = (sample,)
    for block in unet.down_blocks[:n_down]:
        extra = cross if getattr(block, "has_cross_attention", False) else {}
        sample, res = block(hidden_states=sample, temb=emb, **extra)
        skips += res
    if stop.startswith("down_blocks"):
        return sample
    sample = unet.mid_block(sample, emb, **cross) if cross else unet.mid_block(sample, emb)
    for i, block in enumerate(unet.up_blocks[:n_up]):
        res, skips = skips[-len(block.resnets) :], skips[: -len(block.resnets)]
        extra = cross if getattr(block, "has_cross_attention", False) else {}
        size = skips[-1].shape[2:] if i < len(unet.up_blocks) - 1 else None
        sample = block(
            hidden_states=sample, temb=emb, res_hidden_states_tuple=res, upsample_size=size, **extra
        )
    return sample


def run_reference(bb, images: list, batch_size: int) -> None:
    """The paper's approach: one full forward per (hook, timestep) over all images."""
    for hook in HOOKS:
        for t in TIMESTEPS:
            for start in range(0, len(images), batch_size):
                batch = images[start : start + batch_size]
                x0 = bb.encode_images(batch)
                x_t = bb.add_noise(x0, t, noise=bb.noise_like(x0, 0))
                with capture_outputs(bb.denoiser, [hook]) as acts:
                    bb.denoise(x_t, t)
                pool(acts[hook], "mean").float().cpu()


def run_revelio(bb, images: list, batch_size: int) -> None:
    revelio.extract(bb, images, HOOKS, TIMESTEPS, pooling="mean", batch_size=batch_size, progress=False)


def run_limit(bb, images: list, batch_size: int, condition_kwargs: Callable[[int], dict]) -> None:
    """Encode once; per timestep a hand-written forward that ends after the deepest hook."""
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        x0 = bb.encode_images(batch)
        noise = bb.noise_like(x0, 0)
        for t in TIMESTEPS:
            x_t = bb.add_noise(x0, t, noise=noise)
            truncated_forward(bb.denoiser, x_t, t, HOOKS[-1], **condition_kwargs(len(batch)))


def best_times(runs: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Best wall time of each run over interleaved rounds, so machine noise hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def check_limit_matches(bb, images: list, condition_kwargs: Callable[[int], dict]) -> None:
    """The hand-written forward must compute exactly what the hooked model computes."""
    x0 = bb.encode_images(images[:2])
    x_t = bb.add_noise(x0, TIMESTEPS[0], noise=bb.noise_like(x0, 0))
    mine = truncated_forward(bb.denoiser, x_t, TIMESTEPS[0], HOOKS[-1], **condition_kwargs(2))
    with capture_outputs(bb.denoiser, [HOOKS[-1]]) as acts:
        bb.denoise(x_t, TIMESTEPS[0])
    torch.testing.assert_close(mine, acts[HOOKS[-1]], atol=1e-4, rtol=1e-4)


def bench(name: str, bb, images: list, batch_size: int, rounds: int, condition_kwargs) -> None:
    with torch.inference_mode():
        check_limit_matches(bb, images, condition_kwargs)
        run_revelio(bb, images[:batch_size], batch_size)  # warm-up: allocator, lazy init
        times = best_times(
            {
                "reference": lambda: run_reference(bb, images, batch_size),
                "revelio": lambda: run_revelio(bb, images, batch_size),
                "limit": lambda: run_limit(bb, images, batch_size, condition_kwargs),
            },
            rounds,
        )
    n, ref, ours, limit = len(images), times["reference"], times["revelio"], times["limit"]
    print(f"\n== {name}: {n} images, batch {batch_size}, hooks {HOOKS}, timesteps {TIMESTEPS}")
    print(f"  reference (full forward per hook x t): {n / ref:8.2f} images/s  ({ref:.3f} s)")
    print(f"  revelio.extract (one pass per t):      {n / ours:8.2f} images/s  ({ours:.3f} s)")
    print(f"  limit (bare truncated forward per t):  {n / limit:8.2f} images/s  ({limit:.3f} s)")
    print(f"  speed-up over reference: {ref / ours:.2f}x   time vs limit: {ours / limit:.3f}x")


def pixel_backbone() -> PixelUNetBackbone:
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=28, in_channels=1, out_channels=1, block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3,
        layers_per_block=2, add_attention=False, norm_num_groups=16, num_class_embeds=11,
    )
    pipeline = DDIMPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=1000))
    extras = {"class_names": [str(i) for i in range(10)], "null_class": 10}
    return PixelUNetBackbone(pipeline, "tiny class-conditional UNet2DModel (28 px)", extras)


def sd15_backbone(latent_size: int) -> StableDiffusionBackbone:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=latent_size, **SD15_UNET)
    return StableDiffusionBackbone(stable_diffusion_pipeline(unet), "SD1.5 UNet architecture, random weights")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latent-size", type=int, default=32, help="SD1.5 latent side (64 = 512 px)")
    parser.add_argument("--sd-images", type=int, default=8)
    parser.add_argument("--pixel-images", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (best kept)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu")

    rng = np.random.default_rng(0)
    pixel = pixel_backbone()
    null = torch.full((1,), pixel.null_class, dtype=torch.long)
    images = [(rng.random((28, 28)) * 255).astype(np.uint8) for _ in range(args.pixel_images)]
    bench("(a) " + pixel.name_or_path, pixel, images, 64, args.rounds,
          lambda n: {"class_labels": null.expand(n)})

    sd = sd15_backbone(args.latent_size)
    side = sd.resolution
    images = [(rng.random((side, side, 3)) * 255).astype(np.uint8) for _ in range(args.sd_images)]
    empty_prompt = sd._prompt_cache.get("")["encoder_hidden_states"]
    bench(f"(b) {sd.name_or_path}, latent {args.latent_size}x{args.latent_size}", sd, images, 4,
          args.rounds, lambda n: {"encoder_hidden_states": empty_prompt.expand(n, -1, -1)})


if __name__ == "__main__":
    main()
