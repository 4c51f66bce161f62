"""Benchmark: extraction cost of the paper's setting, Stable Diffusion 1.5 at 512 px, measured here.

Builds SD1.5's UNet and VAE from their public configs with random weights (the same FLOPs as the
trained model), then times ``revelio.extract`` for the paper's hooks (mid_block, up_blocks.0-2) at
one timestep, empty prompt, on this machine, and counts the FLOPs of one image with torch's
FlopCounterMode. Prints seconds per image (measured), FLOPs per image (counted), the bytes one
image adds to a cache per hook and pooling (arithmetic), and an explicitly extrapolated GPU time
(counted FLOPs at an assumed utilisation of a GPU's peak; nothing here runs on a GPU).
Run: ``.venv/bin/python bench/sd15_throughput.py`` (a few minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import revelio  # noqa: E402
from bench.extract import SD15_UNET  # noqa: E402
from revelio.models import StableDiffusionBackbone  # noqa: E402
from tests.tiny_models import stable_diffusion_pipeline  # noqa: E402

# Stable Diffusion 1.5's VAE config (stable-diffusion-v1-5/stable-diffusion-v1-5, vae/config.json).
SD15_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)
PAPER_HOOKS = ["mid_block", "up_blocks.0", "up_blocks.1", "up_blocks.2"]


def sd15_backbone() -> StableDiffusionBackbone:
    torch.manual_seed(0)
    pipeline = stable_diffusion_pipeline(UNet2DConditionModel(sample_size=64, **SD15_UNET))
    pipeline.vae = AutoencoderKL(**SD15_VAE).eval()
    return StableDiffusionBackbone(pipeline, "SD1.5 architecture (UNet + VAE), random weights, 512 px")


def cache_bytes(backbone: StableDiffusionBackbone, image: np.ndarray) -> dict[str, dict[str, int]]:
    """fp16 bytes one image adds per hook: pooled (one vector) and spatial (every location)."""
    acts = revelio.extract(backbone, [image], PAPER_HOOKS, [25], pooling="none")
    return {hook: {"mean": 2 * acts[(hook, 25)].shape[-1], "none": 2 * acts[(hook, 25)][0].numel()} for hook in PAPER_HOOKS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--gpu-peak-tflops", type=float, default=989.0, help="H100 SXM dense fp16/bf16 peak")
    parser.add_argument("--gpu-utilisation", type=float, default=0.3, help="assumed share of peak reached")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu, float32")
    backbone = sd15_backbone()
    rng = np.random.default_rng(0)
    images = [(rng.random((512, 512, 3)) * 255).astype(np.uint8) for _ in range(args.images)]
    revelio.extract(backbone, images[:1], PAPER_HOOKS, [25])  # warm-up

    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            backbone.encode_images(images[:1])
    vae_flops = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        revelio.extract(backbone, images[:1], PAPER_HOOKS, [25])
    total_flops = counter.get_total_flops()

    start = time.perf_counter()
    with torch.no_grad():
        backbone.encode_images(images)
    vae_seconds = (time.perf_counter() - start) / len(images)
    start = time.perf_counter()
    revelio.extract(backbone, images, PAPER_HOOKS, [25], batch_size=args.batch_size)
    seconds = (time.perf_counter() - start) / len(images)

    print(f"\n{backbone.name_or_path}; hooks {PAPER_HOOKS}, t=25, empty prompt, batch {args.batch_size}")
    print(f"measured here: {seconds:.2f} s per image ({1 / seconds:.3f} images/s), of which VAE encode {vae_seconds:.2f} s")
    print(f"counted: {total_flops / 1e9:.0f} GFLOP per image and timestep (VAE encode {vae_flops / 1e9:.0f}, "
          f"UNet up to up_blocks.2 {(total_flops - vae_flops) / 1e9:.0f})")
    gpu = total_flops / (args.gpu_peak_tflops * 1e12 * args.gpu_utilisation)
    print(f"extrapolated, not measured: {gpu * 1e3:.1f} ms per image on one GPU at {args.gpu_utilisation:.0%} of "
          f"{args.gpu_peak_tflops:.0f} TFLOPS ({1 / gpu:.0f} images/s)")
    print("cache bytes per image and timestep (fp16):")
    for hook, sizes in cache_bytes(backbone, images[0]).items():
        print(f"  {hook:12s} pooled {sizes['mean']:>8,d}   spatial {sizes['none']:>12,d}")


if __name__ == "__main__":
    main()
