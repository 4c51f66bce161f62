"""GPU benchmark, one script under 8 minutes on one H100: extraction and SAE training at paper scale.

Times, with random weights built from published configs (the same FLOPs as the trained models):
1. Stable Diffusion 1.5-architecture extraction at 512 px, batch 32, float16 (the paper's hooks
   mid_block and up_blocks.0-2, one timestep; the forward stops after up_blocks.2);
2. the k-SAE training step at the paper's size: d_in 1280, 64x expansion (81,920 latents), k 32,
   batch 8192, the trainer's own fused step (float32);
3. FLUX.1-schnell-architecture extraction at 1024 px, bfloat16, through revelio's FLUX backbone
   (hooks transformer_blocks.18, as SDXL-unbox's FLUX SAE, and single_transformer_blocks.37, the
   last block, so one full forward), two timesteps;
4. then runs ``tests/test_sae_cuda.py``.
Each figure prints images/s or tokens/s, its counted FLOPs (torch FlopCounterMode) and the ratio
of the time those FLOPs take at the GPU's dense peak to the measured time (1.0 = at peak).

Run on a GPU machine: ``python bench/gpu.py`` (H100 and H200 peaks are built in; pass
``--peak-tflops`` and ``--fp32-peak-tflops`` for another GPU).
``--smoke`` runs every part on the CPU at toy sizes, to check the script itself without a GPU.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import revelio  # noqa: E402
from bench.backbones import CLIP_L, FLUX_SCHNELL, T5_XXL, VAE_16  # noqa: E402
from bench.extract import SD15_UNET  # noqa: E402
from bench.sd15_throughput import PAPER_HOOKS, SD15_VAE  # noqa: E402

# Dense tensor-core peaks in TFLOPS (NVIDIA datasheets): (float16/bfloat16, TF32, float32).
PEAKS = {"H100 PCIe": (756.0, 378.0, 51.0), "H100": (989.4, 494.7, 66.9), "H200": (989.4, 494.7, 66.9)}
FLUX_HOOKS = ["transformer_blocks.18", "single_transformer_blocks.37"]


def peaks(name: str, half: float | None, fp32: float | None) -> tuple[float, float, float]:
    """(float16/bfloat16, TF32, float32) dense peaks of the GPU called ``name``, or the ones given."""
    if half is not None and fp32 is not None:
        return half, fp32, fp32
    for key, value in PEAKS.items():  # "H100 PCIe" before "H100"
        if all(part in name for part in key.split()):
            return value
    raise SystemExit(f"unknown GPU {name!r}: pass --peak-tflops and --fp32-peak-tflops (its dense peaks)")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeat: int = 1) -> float:
    """Seconds per call, after one warm-up call."""
    fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeat


def counted(fn: Callable[[], Any]) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def report(what: str, seconds: float, flops: float, peak_tflops: float, unit: str, per_second: float) -> None:
    at_peak = flops / (peak_tflops * 1e12)
    print(f"{what}: {per_second:,.1f} {unit}/s; {flops / 1e12:.4f} TFLOPs counted per call, "
          f"{seconds * 1e3:.1f} ms measured, {at_peak * 1e3:.2f} ms at the {peak_tflops:.0f} TFLOPS peak: ratio {at_peak / seconds:.2f}")


def random_init(module: torch.nn.Module, std: float = 0.02) -> torch.nn.Module:
    """Fill a module made with ``to_empty`` (uninitialised memory) with small random weights."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0.0, std)
    return module


def sd15_extraction(device: torch.device, dtype: torch.dtype, smoke: bool, peak: float) -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from revelio.models import StableDiffusionBackbone
    from tests.tiny_models import stable_diffusion_pipeline

    side, batch, count = (64, 2, 4) if smoke else (512, 32, 256)
    torch.manual_seed(0)
    pipeline = stable_diffusion_pipeline(UNet2DConditionModel(sample_size=side // 8, **SD15_UNET))
    pipeline.vae = AutoencoderKL(**SD15_VAE)
    pipeline.to(device, dtype)
    backbone = StableDiffusionBackbone(pipeline, "SD1.5 architecture, random weights")
    rng = np.random.default_rng(0)
    images = [(rng.random((side, side, 3)) * 255).astype(np.uint8) for _ in range(count)]
    seconds = timed(lambda: revelio.extract(backbone, images, PAPER_HOOKS, [25], batch_size=batch), device)
    flops = counted(lambda: revelio.extract(backbone, images[:batch], PAPER_HOOKS, [25], batch_size=batch))
    report(f"SD1.5-architecture extraction, {side} px, batch {batch}, {dtype}", seconds / (count // batch), flops, peak,
           "images", count / seconds)


def sae_training_step(device: torch.device, smoke: bool, peak: float) -> None:
    from revelio.sae import KSparseAutoencoder
    from revelio.sae.fused_step import FusedStep
    from revelio.sae.training import initialise, make_optimizer

    d_in, expansion, k, batch = (64, 8, 8, 256) if smoke else (1280, 64, 32, 8192)
    torch.manual_seed(0)
    sae = KSparseAutoencoder(d_in, expansion * d_in, k).to(device)
    x = torch.randn(batch, d_in, device=device)
    initialise(sae, x)
    step = FusedStep(sae, make_optimizer(sae, 1e-4), batch)
    seconds = timed(lambda: step(x, None, 0, 1 / 32), device, repeat=3 if smoke else 20)
    flops = counted(lambda: step(x, None, 0, 1 / 32))
    report(f"SAE training step, d_in {d_in}, {expansion}x, k {k}, batch {batch}, float32", seconds, flops, peak,
           "tokens", batch / seconds)


def flux_backbone(device: torch.device, smoke: bool) -> revelio.Backbone:
    """A FluxPipeline of FLUX.1-schnell's architecture, random bfloat16 weights, in revelio's FLUX backbone."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from revelio.models import FluxBackbone
    from tests.tiny_models import _t5_tokenizer, _tokenizer

    dtype = torch.bfloat16
    # the smoke run keeps every block (the hooks exist) at a toy width
    small = {} if not smoke else {"attention_head_dim": 16, "num_attention_heads": 2, "joint_attention_dim": 64, "axes_dims_rope": (4, 6, 6)}
    t5 = T5_XXL if not smoke else {**T5_XXL, "d_model": 64, "d_ff": 128, "num_heads": 2, "num_layers": 1}
    with torch.device("meta"):  # billions of parameters: allocate them once, in bfloat16, on the GPU
        transformer = FluxTransformer2DModel(**{**FLUX_SCHNELL, **small}).to(dtype)
        text_encoder_2 = T5EncoderModel(T5Config(**t5)).to(dtype)
    torch.manual_seed(0)
    transformer = random_init(transformer.to_empty(device=device))
    text_encoder_2 = random_init(text_encoder_2.to_empty(device=device))
    pipeline = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0), vae=AutoencoderKL(**VAE_16, scaling_factor=0.3611, shift_factor=0.1159),
        text_encoder=CLIPTextModel(CLIPTextConfig(**CLIP_L)), tokenizer=_tokenizer(), text_encoder_2=text_encoder_2,
        tokenizer_2=_t5_tokenizer(), transformer=transformer,
    ).to(device, dtype)
    return FluxBackbone(pipeline, "FLUX.1-schnell architecture, random weights", {"resolution": 128 if smoke else 1024})


def flux_extraction(device: torch.device, smoke: bool, peak: float) -> None:
    backbone = flux_backbone(device, smoke)
    side, batch, count, timesteps = backbone.resolution, (2 if smoke else 8), (2 if smoke else 32), [250, 750]
    rng = np.random.default_rng(0)
    images = [(rng.random((side, side, 3)) * 255).astype(np.uint8) for _ in range(count)]
    tokens = backbone.token_grid[0] * backbone.token_grid[1]
    for hooks in ([FLUX_HOOKS[0]], FLUX_HOOKS):
        seconds = timed(lambda h=hooks: revelio.extract(backbone, images, h, timesteps, batch_size=batch), device)
        flops = counted(lambda h=hooks: revelio.extract(backbone, images[:batch], h, timesteps, batch_size=batch))
        report(f"FLUX.1-schnell-architecture extraction to {hooks[-1]}, {side} px, batch {batch}, {len(timesteps)} timesteps, bfloat16",
               seconds / (count // batch), flops, peak, "images", count / seconds)
        print(f"  = {count * tokens * len(timesteps) / seconds:,.0f} image tokens/s over all timesteps")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense float16/bfloat16 peak of a GPU not in PEAKS")
    parser.add_argument("--fp32-peak-tflops", type=float, default=None, help="its float32 peak (the SAE step's limit)")
    parser.add_argument("--smoke", action="store_true", help="every part on the CPU at toy sizes (checks the script)")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.smoke:
        device, name = torch.device("cpu"), "CPU (smoke run: toy sizes, ratios meaningless)"
        half, tf32, fp32 = 1.0, 1.0, 1.0
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run this on a GPU machine (or --smoke to check the script on the CPU)")
        device, name = torch.device("cuda"), torch.cuda.get_device_name()
        half, tf32, fp32 = peaks(name, args.peak_tflops, args.fp32_peak_tflops)
    sae_peak = tf32 if torch.backends.cuda.matmul.allow_tf32 else fp32
    print(f"{name}; torch {torch.__version__}; peaks used: float16/bfloat16 {half}, SAE (float32{', TF32' if sae_peak == tf32 else ''}) "
          f"{sae_peak} TFLOPS")
    torch.set_grad_enabled(False)
    sd15_extraction(device, torch.float32 if args.smoke else torch.float16, args.smoke, half)
    torch.set_grad_enabled(True)
    sae_training_step(device, args.smoke, sae_peak)
    torch.set_grad_enabled(False)
    flux_extraction(device, args.smoke, half)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", str(ROOT / "tests" / "test_sae_cuda.py")], cwd=ROOT)
    print(f"tests/test_sae_cuda.py: exit {result.returncode}; whole run {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
