"""Train k-SAEs on cached activations: one cell, or a whole grid of hooks x timesteps x poolings.

  python train/train_sae.py --cache cache/ --out saes/ [--hooks mid_block] [--timesteps 25] \
      [--poolings mean] --expansion 16 --k 32 --tokens 2000000

Cells are folders ``<cache>/<hook>/t<timestep>/<pooling>/``; each SAE lands in the same relative
folder under ``--out`` (the release layout). Interrupted runs resume from their last checkpoint
when the command is run again. To shard a grid over processes or GPUs:

  accelerate launch --multi_gpu --num_processes 2 train/train_sae.py --cache cache/ --out saes/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", required=True, type=Path, help="cache root written by extract_activations.py")
    parser.add_argument("--out", required=True, type=Path, help="where SAEs are written, one folder per cell")
    parser.add_argument("--hooks", nargs="+", help="only these hook points (default: every cell in the cache)")
    parser.add_argument("--timesteps", nargs="+", type=int, help="only these timesteps")
    parser.add_argument("--poolings", nargs="+", choices=["mean", "none"], help="only these poolings")
    parser.add_argument("--expansion", type=int, default=16, help="d_sae = expansion x d_in")
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--tokens", type=int, default=2_000_000, help="training tokens per SAE")
    parser.add_argument("--lr", type=float, help="default: 2e-4 / sqrt(d_sae / 2**14)")
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--dead-tokens", type=int, default=500_000, help="tokens without firing = dead (AuxK)")
    parser.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def find_cells(cache: Path, hooks: list[str] | None, timesteps: list[int] | None, poolings: list[str] | None) -> list[Path]:
    """Cache cell folders (those with a manifest) that pass the filters, in a stable order."""
    from revelio.cache import ActivationCache

    cells = []
    for manifest in sorted(cache.glob("**/manifest.json")):
        cell = ActivationCache(manifest.parent)
        if (hooks is None or cell.hook in hooks) and (timesteps is None or cell.timestep in timesteps) and (
            poolings is None or cell.pooling in poolings
        ):
            cells.append(manifest.parent)
    if not cells:
        raise SystemExit(f"no cache cells under {cache} match the filters; run train/extract_activations.py first")
    return cells


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch
    from accelerate import PartialState

    from revelio.cache import ActivationCache
    from revelio.sae_training import SAETrainConfig, train_sae

    state = PartialState(cpu=not torch.cuda.is_available())
    cells = find_cells(args.cache, args.hooks, args.timesteps, args.poolings)
    mine = cells[state.process_index :: state.num_processes]
    for cell in mine:
        cache = ActivationCache(cell)
        meta = cache.manifest.get("metadata", {})
        config = SAETrainConfig(
            expansion=args.expansion, k=args.k, batch_size=args.batch_size, total_tokens=args.tokens,
            lr=args.lr, warmup_steps=args.warmup_steps, dead_tokens=args.dead_tokens,
            checkpoint_every=args.checkpoint_every, seed=args.seed,
            metadata={"backbone": meta.get("backbone"), "dataset": meta.get("dataset"),
                      "hook": cache.hook, "timestep": cache.timestep, "pooling": cache.pooling},
        )
        out = args.out / cell.relative_to(args.cache)
        sae = train_sae(cache, config, out, device=state.device)
        print(json.dumps({"rank": state.process_index, "cell": str(cell.relative_to(args.cache)), **sae.metadata["metrics"]}), flush=True)


if __name__ == "__main__":
    main()
