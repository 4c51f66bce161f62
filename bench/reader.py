"""Benchmark: does the activation-cache reader feed the SAE trainer faster than it trains?

On one synthetic cache (d_in 1280, fp16, about 400 MB in 16384-row shards, written with
``revelio.cache.write_cache``), timed in one run:
- raw:     a sequential read of the same shard files, ``safetensors.torch.load_file`` of each,
           copied into memory (load_file only maps the file; the copy reads every byte once),
           no shuffling, no float32 conversion: what the disk and the file format give at best;
- reader:  ``ActivationCache.batches(1024)``, the trainer's stream: shuffled float32 batches
           through the bounded shuffle buffer, one full epoch;
- trainer: the SAE trainer's own step (``FusedStep``: d_in 1280, expansion 16, k 32, batch
           1024, fused Adam) on this CPU, on one batch held in memory and fed by the reader
           (two trainers, steps alternating), so the reader's cost inside training shows directly.
Raw and reader are timed with the shards in the page cache ("warm") and, where the kernel
honours ``posix_fadvise(DONTNEED)``, evicted from it first ("cold": read from disk).
Ratios: reader rows/s over trainer tokens/s (> 1: the reader keeps up) and reader over raw.

Run: ``.venv/bin/python bench/reader.py`` (about 2 minutes on 2 CPU cores; ``--rows`` to resize).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from revelio.cache import ActivationCache, write_cache  # noqa: E402
from revelio.sae import KSparseAutoencoder  # noqa: E402
from revelio.sae.training import FusedStep, initialise, make_optimizer  # noqa: E402

D_IN, EXPANSION, K, BATCH = 1280, 16, 32, 1024
CELL = ("mid_block", 100)


def write_synthetic_cache(root: Path, rows: int) -> Path:
    """``rows`` fp16 rows of d_in 1280 (an offset plus noise, SAE-input-like scale) in one cell."""
    g = torch.Generator().manual_seed(0)
    offset = torch.randn(D_IN, generator=g) * 2

    def batches():
        for start in range(0, rows, 8192):
            yield {CELL: offset + torch.randn(min(8192, rows - start), D_IN, generator=g)}

    return write_cache(root, batches(), pooling="mean")[CELL]


def shard_files(cell: Path) -> list[Path]:
    cache = ActivationCache(cell)
    return [cell / shard.file for shard in cache.manifest.shards]


def evict(files: list[Path]) -> bool:
    """Drop the files from the page cache (no root needed); False where the OS cannot."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


def raw_read(files: list[Path]) -> tuple[float, int]:
    """Seconds and rows for loading every shard file once, in order, into memory."""
    start, rows = time.perf_counter(), 0
    for path in files:
        rows += len(load_file(str(path))["activations"].clone())  # load_file maps; clone reads
    return time.perf_counter() - start, rows


def reader_epoch(cell: Path, batches: int) -> tuple[float, int]:
    """Seconds and rows for ``batches`` shuffled float32 batches from ``ActivationCache.batches``."""
    stream = ActivationCache(cell).batches(BATCH, seed=0)
    start = time.perf_counter()
    rows = sum(len(next(stream)) for _ in range(batches))
    return time.perf_counter() - start, rows


def trainer_rates(cell: Path, steps: int) -> tuple[float, float]:
    """Tokens/s of the trainer's step on one in-memory batch, and fed by the reader.

    Two identical trainers whose steps alternate, so load on the machine hits both alike;
    each rate is from the median step time.
    """
    cache = ActivationCache(cell)
    sample = cache.sample(8192)
    trainers = []
    for _ in range(2):
        torch.manual_seed(0)
        sae = KSparseAutoencoder(D_IN, EXPANSION * D_IN, K)
        initialise(sae, sample)
        trainers.append(FusedStep(sae, make_optimizer(sae, 1e-4), BATCH))
    stream = cache.batches(BATCH, seed=1)
    fixed = next(stream)
    for step in trainers:
        step(fixed, None, 0, 0.0)  # warm-up: the optimiser's state and the buffers fault in once
    times: list[list[float]] = [[], []]
    for _ in range(steps):
        for which, step in enumerate(trainers):
            start = time.perf_counter()
            step(next(stream) if which else fixed, None, 0, 0.0)
            times[which].append(time.perf_counter() - start)
    alone, fed = (BATCH / sorted(t)[len(t) // 2] for t in times)
    return alone, fed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=163_840, help="cache rows (163840 x 1280 fp16 = 419 MB)")
    parser.add_argument("--steps", type=int, default=12, help="trainer steps timed per variant")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="revelio-bench-reader-") as tmp:
        start = time.perf_counter()
        cell = write_synthetic_cache(Path(tmp), args.rows)
        files = shard_files(cell)
        size = sum(p.stat().st_size for p in files)
        print(f"cache: {args.rows} rows x {D_IN} fp16, {len(files)} shards, {size / 2**20:.0f} MiB, "
              f"written in {time.perf_counter() - start:.1f} s")
        epoch_batches = args.rows // BATCH
        results = {}
        for state in ("warm", "cold"):
            if state == "cold" and not evict(files):
                print("cold: posix_fadvise unavailable here; skipped")
                continue
            seconds, rows = raw_read(files)
            results[f"raw {state}"] = rows / seconds
            if state == "cold":
                evict(files)
            seconds, rows = reader_epoch(cell, epoch_batches)
            results[f"reader {state}"] = rows / seconds
        for name, rate in results.items():
            print(f"{name:12s} {rate:12,.0f} rows/s  ({rate * D_IN * 2 / 2**20:,.0f} MiB/s of fp16)")
        alone, fed = trainer_rates(cell, args.steps)
        print(f"trainer (one in-memory batch) {alone:10,.0f} tokens/s  ({BATCH / alone * 1000:.0f} ms/step)")
        print(f"trainer fed by the reader     {fed:10,.0f} tokens/s  ({BATCH / fed * 1000:.0f} ms/step)")
        print("ratios:")
        for state in ("warm", "cold"):
            if f"reader {state}" in results:
                reader = results[f"reader {state}"]
                print(f"  reader {state} / trainer:   {reader / alone:8.1f}x  (the reader keeps up while > 1)")
                print(f"  reader {state} / raw {state}:  {reader / results[f'raw {state}']:8.2f}x")
        print(f"  trainer fed / trainer alone: {fed / alone:8.3f}x  (1.0: reading costs the trainer nothing)")


if __name__ == "__main__":
    main()
