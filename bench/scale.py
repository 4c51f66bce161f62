"""Benchmark: does extraction (with cache writing) and SAE training cost stay linear as data grows?

At 1x, 4x and 16x images of Fashion-MNIST through the bundled model (hooks mid_block and
up_blocks.1, two timesteps), each run in a fresh process:
- extraction + cache writing: seconds per image, peak RSS, cache bytes per image, with all spatial
  locations and with ``--tokens-per-image 8``;
- extraction alone (the same pipeline with no pooling to write), for the writing overhead;
- SAE training on the spatial up_blocks.1 cache (one pass over its rows): seconds per row, peak RSS.
Per-row time and peak RSS should stay flat across scales. Whole-run times include fixed costs
(loading the model and the dataset, the SAE's initialisation and final evaluation), so the cost per
row is the marginal one between two scales: (t(4x) - t(1x)) / (rows(4x) - rows(1x)), and the same
from 4x to 16x; linear cost means the two marginals agree. Run: ``.venv/bin/python bench/scale.py``
(``--base`` images at 1x).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOOKS, TIMESTEPS = ["mid_block", "up_blocks.1"], [100, 300]


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def work(kind: str, images: int, out: Path, tokens: int | None) -> dict:
    """One measured run in this (fresh) process."""
    import torch

    sys.path.insert(0, str(ROOT))
    from revelio.steps.extract import extract_to_cache
    from revelio.steps.extraction_config import ExtractionConfig

    config = ExtractionConfig(backbone="bundled", out=out, timesteps=TIMESTEPS, dataset="fashion-mnist", limit=images,
                              hooks=HOOKS, batch_size=64, part_images=1024, device="cpu", tokens_per_image=tokens)
    start = time.perf_counter()
    if kind == "extract":
        extract_to_cache(config)
    elif kind == "forward-only":  # the same pipeline (decoding thread, parts), with no pooling written
        from dataclasses import replace

        extract_to_cache(replace(config, poolings=[]))
    elif kind == "sae":
        from revelio.cache import ActivationCache
        from revelio.sae.training import SAETrainConfig, train_sae

        cache = ActivationCache(out / "up_blocks.1" / "t100" / "none")
        rows = cache.num_rows - cache.num_rows % 1024
        start = time.perf_counter()
        train_sae(cache, SAETrainConfig(expansion=8, k=8, total_tokens=rows, batch_size=1024, checkpoint_every=10**9,
                                        eval_tokens=8192), out / "sae", progress=False)
        return {"seconds": time.perf_counter() - start, "rows": rows, "peak_rss_mb": peak_rss_mb(), "threads": torch.get_num_threads()}
    seconds = time.perf_counter() - start
    disk = sum(p.stat().st_size for p in out.rglob("shard-*.safetensors")) if out.exists() else 0
    return {"seconds": seconds, "images": images, "peak_rss_mb": peak_rss_mb(), "cache_bytes": disk}


def measure(kind: str, images: int, out: Path, tokens: int | None = None, repeats: int = 2) -> dict:
    """The fastest of ``repeats`` fresh-process runs (this machine is shared and noisy)."""
    import shutil

    runs = []
    for _ in range(repeats):
        if kind != "sae":
            shutil.rmtree(out, ignore_errors=True)
        argv = [sys.executable, __file__, "--worker", kind, str(images), str(out), str(tokens or 0)]
        result = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=ROOT)
        runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
    return min(runs, key=lambda r: r["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=int, default=256, help="images at 1x")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, images, out, tokens = args.worker
        print(json.dumps(work(kind, int(images), Path(out), int(tokens) or None)))
        return
    print(f"bundled model, hooks {HOOKS}, timesteps {TIMESTEPS}, 2 poolings; each number the best of 2 fresh processes")
    print("(whole-run seconds include loading the model and the dataset; the marginal rows below remove them)")
    print(f"{'scale':>5} {'images':>6} | {'extract+write s/img':>19} {'forward-only s/img':>18} {'peak RSS MB':>11} | "
          f"{'bytes/img':>9} {'bytes/img tpi=8':>15} | {'SAE s/row':>10} {'SAE RSS MB':>10}")
    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        for scale in (1, 4, 16):
            images = args.base * scale
            full = measure("extract", images, Path(tmp) / f"full-{scale}")
            sampled = measure("extract", images, Path(tmp) / f"sampled-{scale}", tokens=8)
            alone = measure("forward-only", images, Path(tmp) / f"none-{scale}")
            sae = measure("sae", images, Path(tmp) / f"full-{scale}")
            found[scale] = (images, full, alone, sae)
            print(f"{scale:>4}x {images:>6} | {full['seconds'] / images:>19.4f} {alone['seconds'] / images:>18.4f} "
                  f"{full['peak_rss_mb']:>11.0f} | {full['cache_bytes'] / images:>9.0f} {sampled['cache_bytes'] / images:>15.0f} | "
                  f"{sae['seconds'] / sae['rows']:>10.2e} {sae['peak_rss_mb']:>10.0f}", flush=True)
    for low, high in ((1, 4), (4, 16)):
        (n0, full0, alone0, sae0), (n1, full1, alone1, sae1) = found[low], found[high]
        with_writing = (full1["seconds"] - full0["seconds"]) / (n1 - n0)
        alone = (alone1["seconds"] - alone0["seconds"]) / (n1 - n0)
        sae_row = (sae1["seconds"] - sae0["seconds"]) / (sae1["rows"] - sae0["rows"])
        print(f"marginal {low}x->{high}x: extract+write {with_writing:.4f} s/img, forward-only {alone:.4f} s/img, "
              f"extraction with writing / extraction alone = {with_writing / alone:.2f}x; SAE training {sae_row:.2e} s/row")


if __name__ == "__main__":
    main()
