"""Train k-SAEs on cached activations: one cell, or a whole grid of hooks x timesteps x poolings.

  python train/train_sae.py --cache cache/ --out saes/ [--hooks mid_block] [--timesteps 25] \
      [--poolings mean] --expansion 16 --k 32 --tokens 2000000

Cells are folders ``<cache>/<hook>/t<timestep>/<pooling>/``; each SAE lands in the same relative
folder under ``--out`` (the release layout), with its feature statistics (top exemplars, firing
frequency, label purity and automatic labels when the cache has labels) in stats.safetensors. Interrupted runs resume from their last checkpoint
when the command is run again. To shard a grid over processes or GPUs:

  accelerate launch --multi_gpu --num_processes 2 train/train_sae.py --cache cache/ --out saes/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from accelerate import PartialState


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
    parser.add_argument("--overwrite", action="store_true", help="retrain cells that already have a finished SAE")
    return parser.parse_args(argv)


def find_cells(cache: Path, hooks: list[str] | None, timesteps: list[int] | None, poolings: list[str] | None) -> list[Path]:
    """Cache cell folders <hook>/t<timestep>/<pooling> that pass the filters, in a stable order."""
    cells = []
    for manifest in sorted(cache.glob("*/t*/*/manifest.json")):
        cell = manifest.parent
        hook, timestep, pooling = cell.parent.parent.name, int(cell.parent.name[1:]), cell.name
        if (hooks is None or hook in hooks) and (timesteps is None or timestep in timesteps) and (
            poolings is None or pooling in poolings
        ):
            cells.append(cell)
    if not cells:
        raise SystemExit(f"no cache cells under {cache} match the filters; run train/extract_activations.py first")
    return cells


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch
    from accelerate import PartialState

    from revelio.storage.files import read_safetensors

    state = PartialState(cpu=not torch.cuda.is_available())
    cells = find_cells(args.cache, args.hooks, args.timesteps, args.poolings)
    labels_file, info_file = args.cache / "labels.safetensors", args.cache / "dataset.json"
    labels = read_safetensors(labels_file)["labels"] if labels_file.is_file() else None
    class_names = json.loads(info_file.read_text()).get("class_names") if info_file.is_file() and labels is not None else None
    with state.split_between_processes(cells) as mine:
        for cell in mine:
            train_cell(cell, args, state, labels, class_names)


def train_cell(cell: Path, args: argparse.Namespace, state: "PartialState", labels: "torch.Tensor | None", class_names: list[str] | None) -> None:
    """Train one cell's SAE and its feature statistics, unless a finished one is already there."""
    from revelio.analysis.statistics import feature_stats
    from revelio.cache import ActivationCache
    from revelio.sae.training import SAETrainConfig, train_sae

    out = args.out / cell.relative_to(args.cache)
    if (out / "stats.safetensors").is_file() and not args.overwrite:
        print(json.dumps({"rank": state.process_index, "cell": str(cell.relative_to(args.cache)), "skipped": "finished earlier"}), flush=True)
        return
    cache = ActivationCache(cell)
    meta = cache.manifest.get("metadata", {})
    config = SAETrainConfig(
        expansion=args.expansion, k=args.k, batch_size=args.batch_size, total_tokens=args.tokens,
        lr=args.lr, warmup_steps=args.warmup_steps, dead_tokens=args.dead_tokens,
        checkpoint_every=args.checkpoint_every, seed=args.seed,
        metadata={"backbone": meta.get("backbone"), "dataset": meta.get("dataset"),
                  "hook": cache.hook, "timestep": cache.timestep, "pooling": cache.pooling},
    )
    sae = train_sae(cache, config, out, device=state.device)
    # Per-feature statistics (exemplars, firing, labels) over the same cache, saved beside it.
    sae.feature_stats = feature_stats(sae, cache, labels=labels, class_names=class_names)
    sae.save_pretrained(out)
    summary = {k: v for k, v in sae.metadata["metrics"].items() if k != "density_histogram"}
    print(json.dumps({"rank": state.process_index, "cell": str(cell.relative_to(args.cache)), **summary}), flush=True)


if __name__ == "__main__":
    main()
