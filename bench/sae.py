"""Benchmark: our k-SAE trainer against a dense-decode reference (the paper's way) and the limit.

Same activations, same hyperparameters (d_in 1280, 16x expansion, k 32, batch 1024, Adam, same
initialisation and learning rate), timed in one run:
- revelio:   sparse encoder backward + embedding_bag decode, our trainer's own ``FusedStep``,
             with no dead latents and with AuxK running on 1% dead latents;
- reference: top-k codes scattered into a dense [batch, d_sae] buffer, decoded with a dense
             matmul, dense autograd through the encoder, no AuxK (as the paper's code);
- limit:     the bare encoder forward, matmul + top-k, no gradient: no SAE step can be faster.
Then both trainers get the same token budget on the same batches, and we compare normalized MSE
on held-out rows and the dead-latent fraction. Last, peak RSS of training while streaming a
cache of more than 4 GB from disk, in a fresh process.

Activations are synthetic but SAE-shaped: each row is a sparse, power-law mix of 16k hidden unit
directions plus an offset and noise (random diffusion weights would give no structure to find).

Run: ``.venv/bin/python bench/sae.py`` (about 15 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from revelio.sae import KSparseAutoencoder  # noqa: E402
from revelio.sae.evaluation import SAEEvaluator  # noqa: E402
from revelio.sae.training import FusedStep, initialise, make_optimizer  # noqa: E402

D_IN, EXPANSION, K, BATCH = 1280, 16, 32, 1024
HIDDEN_FEATURES, ACTIVE_PER_ROW = 16384, 24


class SyntheticActivations:
    """Deterministic SAE-shaped rows: sparse power-law mixtures of fixed unit directions."""

    def __init__(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.directions = F.normalize(torch.randn(HIDDEN_FEATURES, D_IN, generator=g), dim=1)
        frequency = 1.0 / torch.arange(1, HIDDEN_FEATURES + 1).double() ** 0.7
        self.cdf = (frequency.cumsum(0) / frequency.sum()).float()
        self.offset = torch.randn(D_IN, generator=g) * 2

    def rows(self, n: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        # Power-law draws by inverse CDF (a repeat just adds weight to one direction).
        chosen = torch.searchsorted(self.cdf, torch.rand(n, ACTIVE_PER_ROW, generator=g)).clamp_max(HIDDEN_FEATURES - 1)
        weights = torch.empty(n, ACTIVE_PER_ROW).exponential_(generator=g)
        mixed = F.embedding_bag(chosen, self.directions, per_sample_weights=weights, mode="sum")
        return mixed + self.offset + 0.05 * torch.randn(n, D_IN, generator=g)


def reference_step(sae: KSparseAutoencoder, opt: torch.optim.Optimizer, x: torch.Tensor, since_fired: torch.Tensor) -> None:
    """The paper's approach: dense autograd through the encoder, dense-buffer decode, no AuxK."""
    scaled = x * sae.input_scale
    pre = (scaled - sae.b_pre) @ sae.W_enc.t() + sae.b_enc
    values, indices = pre.topk(sae.k, dim=-1)
    codes = torch.zeros_like(pre).scatter(-1, indices, values.relu())
    recon = codes @ sae.W_dec + sae.b_pre
    loss = (scaled - recon).pow(2).sum() / (scaled - scaled.mean(dim=0)).pow(2).sum()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    sae.remove_parallel_decoder_grad()
    opt.step()
    sae.normalize_decoder()
    with torch.no_grad():
        since_fired += x.shape[0]
        since_fired[indices[values > 0]] = 0


@torch.no_grad()
def limit_step(sae: KSparseAutoencoder, x: torch.Tensor, out: torch.Tensor) -> None:
    torch.addmm(sae.b_enc, x, sae.W_enc.t(), out=out).topk(sae.k, dim=-1, sorted=False)


def fresh_sae(sample: torch.Tensor) -> KSparseAutoencoder:
    torch.manual_seed(0)
    sae = KSparseAutoencoder(D_IN, EXPANSION * D_IN, K)
    initialise(sae, sample)
    return sae


def our_step_fn(sae: KSparseAutoencoder, opt: torch.optim.Optimizer, since_fired: torch.Tensor, dead_tokens: int):
    """The trainer's own step and dead-latent bookkeeping (as in ``train_sae``)."""
    fused = FusedStep(sae, opt, BATCH)

    def step(x: torch.Tensor) -> None:
        dead = since_fired >= dead_tokens
        k_aux = min(D_IN // 2, int(dead.sum()))
        out = fused(x, dead if k_aux else None, k_aux, 1 / 32)
        since_fired.add_(x.shape[0])
        since_fired[out["indices"][out["active"]]] = 0

    return step


def time_steps(data: SyntheticActivations, rounds: int, steps: int, lr: float) -> dict[str, float]:
    """Seconds per step of each method, best of interleaved rounds."""
    sample = data.rows(16384, seed=1)
    ours, ours_auxk, ref = fresh_sae(sample), fresh_sae(sample), fresh_sae(sample)
    fused, fused_auxk = FusedStep(ours, make_optimizer(ours, lr), BATCH), FusedStep(ours_auxk, make_optimizer(ours_auxk, lr), BATCH)
    dead = torch.zeros(ours.d_sae, dtype=torch.bool)
    dead[:: 100] = True  # 1% of latents dead: AuxK runs on them, as in steady-state training
    k_aux = min(D_IN // 2, int(dead.sum()))
    ref_opt, ref_fired = make_optimizer(ref, lr), torch.zeros(ref.d_sae, dtype=torch.long)
    limit_out = torch.empty(BATCH, ours.d_sae)
    methods = {
        "revelio": lambda x: fused(x, None, 0, 1 / 32),
        "revelio+auxk": lambda x: fused_auxk(x, dead, k_aux, 1 / 32),
        "reference": lambda x: reference_step(ref, ref_opt, x, ref_fired),
        "limit": lambda x: limit_step(ours, x, limit_out),
    }
    batch = data.rows(BATCH, seed=2)
    for fn in methods.values():
        fn(batch)  # warm-up
    best = {name: float("inf") for name in methods}
    for _ in range(rounds):
        for name, fn in methods.items():
            fn(batch)  # untimed: let caches and the allocator settle after the previous method
            start = time.perf_counter()
            for _ in range(steps):
                fn(batch)
            best[name] = min(best[name], (time.perf_counter() - start) / steps)
    return best


def quality(data: SyntheticActivations, budget_steps: int, dead_tokens: int, lr: float) -> dict[str, dict[str, float]]:
    """Both trainers on the same batches for the same token budget; held-out metrics."""
    sample = data.rows(16384, seed=1)
    held_out = data.rows(16384, seed=3)
    results = {}
    for name in ("revelio", "reference"):
        sae = fresh_sae(sample)
        opt = make_optimizer(sae, lr)
        since_fired = torch.zeros(sae.d_sae, dtype=torch.long)
        step = our_step_fn(sae, opt, since_fired, dead_tokens) if name == "revelio" else (
            lambda x, sae=sae, opt=opt, since_fired=since_fired: reference_step(sae, opt, x, since_fired))
        start = time.perf_counter()
        for i in range(budget_steps):
            for group in opt.param_groups:
                group["lr"] = lr * min(1.0, (i + 1) / 50)
            step(data.rows(BATCH, seed=1000 + i))
        seconds = time.perf_counter() - start
        evaluator = SAEEvaluator(sae)
        for chunk in held_out.split(4096):
            evaluator.add(chunk)
        metrics = evaluator.result()
        metrics["dead_fraction_training"] = float((since_fired >= dead_tokens).float().mean())
        metrics["train_seconds"] = seconds
        results[name] = metrics
    return results


RSS_CHILD = """
import json, sys, torch
from revelio.cache import ActivationCache
from revelio.sae.training import FusedStep, initialise, make_optimizer
from revelio.sae import KSparseAutoencoder
cache = ActivationCache(sys.argv[1]); every = int(sys.argv[2])
torch.manual_seed(0)
sae = KSparseAutoencoder(cache.d_in, 16 * cache.d_in, 32); initialise(sae, cache.sample(16384))
step = FusedStep(sae, make_optimizer(sae, 1e-4), 1024)
rows = steps = 0
for i, x in enumerate(cache.batches(1024, seed=0)):
    rows += len(x)
    if i % every == 0:
        step(x, None, 0, 1 / 32); steps += 1
    if rows >= cache.num_rows:
        break
# VmHWM is this process image's own peak (ru_maxrss would include the parent's RSS at fork).
hwm_kb = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
print(json.dumps({"rows_streamed": rows, "train_steps": steps, "peak_rss_gb": hwm_kb / 2**20}))
"""


def peak_rss(data: SyntheticActivations, gigabytes: float, folder: Path) -> dict[str, float]:
    """Write a cache of more than ``gigabytes`` (fp16) and stream all of it while training."""
    from revelio.cache import ActivationCache, write_cache

    rows = int(gigabytes * 2**30 / (D_IN * 2)) + 1
    chunk = 16384

    def batches():
        for start in range(0, rows, chunk):
            yield {("synthetic", 0): data.rows(min(chunk, rows - start), seed=10_000 + start)}

    start = time.perf_counter()
    paths = write_cache(folder, batches(), pooling="mean", dtype=torch.float16)
    cell = paths[("synthetic", 0)]
    on_disk = sum(p.stat().st_size for p in cell.iterdir()) / 2**30
    write_seconds = time.perf_counter() - start
    result = subprocess.run(
        [sys.executable, "-c", RSS_CHILD, str(cell), "40"], capture_output=True, text=True, check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return {"cache_gb_on_disk": on_disk, "cache_rows": ActivationCache(cell).num_rows, "write_seconds": write_seconds, **report}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="steps per timing round")
    parser.add_argument("--budget-steps", type=int, default=150, help="training steps for the quality comparison")
    parser.add_argument("--dead-tokens", type=int, default=50_000, help="AuxK dead window, scaled to the budget")
    parser.add_argument("--cache-gb", type=float, default=4.2)
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-timing", action="store_true")
    args = parser.parse_args()
    lr = 2e-4 / (EXPANSION * D_IN / 2**14) ** 0.5 * 4  # 4x the Gao et al. rate: short budget
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; d_in {D_IN}, d_sae {EXPANSION * D_IN}, k {K}, batch {BATCH}, lr {lr:.2e}")

    if not args.skip_timing:
        times = time_steps(SyntheticActivations(), args.rounds, args.steps, lr)
        print("\n== step time (best of interleaved rounds)")
        for name, seconds in times.items():
            print(f"  {name:12s} {seconds:7.3f} s/step  {BATCH / seconds:9.0f} tokens/s")
        print(f"  revelio vs reference: {times['reference'] / times['revelio']:.2f}x tokens/s "
              f"({times['reference'] / times['revelio+auxk']:.2f}x with AuxK on 1% dead latents)")
        print(f"  revelio step vs limit (matmul + top-k): {times['revelio'] / times['limit']:.2f}x "
              f"({times['revelio+auxk'] / times['limit']:.2f}x with AuxK on 1% dead latents)")

    results = {} if args.skip_quality else quality(SyntheticActivations(), args.budget_steps, args.dead_tokens, lr)
    if results:
        print(f"\n== quality after the same budget ({args.budget_steps * BATCH:,} tokens), held-out 16,384 rows")
    for name, m in results.items():
        print(f"  {name:10s} normalized MSE {m['normalized_mse']:.4f}  FVE {m['fraction_variance_explained']:.4f}  "
              f"L0 {m['l0']:.1f}  dead (no fire in last {args.dead_tokens:,} tokens) {m['dead_fraction_training']:.2%}  "
              f"dead on held-out {m['dead_fraction']:.2%}  ({m['train_seconds']:.0f} s)")

    if not args.skip_rss:
        with tempfile.TemporaryDirectory() as tmp:
            rss = peak_rss(SyntheticActivations(), args.cache_gb, Path(tmp))
        print("\n== peak RSS while training and streaming the whole cache from disk (fresh process)")
        print(f"  cache {rss['cache_gb_on_disk']:.2f} GB on disk, {rss['cache_rows']:,} rows (written in {rss['write_seconds']:.0f} s)")
        print(f"  streamed {rss['rows_streamed']:,} rows, {rss['train_steps']} train steps, peak RSS {rss['peak_rss_gb']:.2f} GB")


if __name__ == "__main__":
    main()
