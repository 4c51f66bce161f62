"""Extract activations of a backbone over a dataset into an on-disk cache, for SAEs and probes.

One pass over the data serves every (hook, timestep) and both poolings: spatial tokens are
captured once and their mean is the pooled vector.

  python train/extract_activations.py --backbone PATH_OR_ID --dataset DATASET \
      --hooks mid_block up_blocks.0 --timesteps 25 250 --poolings mean none --out cache/
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", required=True, help="diffusers pipeline: Hub repo id or local folder")
    parser.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist (default), a Hub dataset id, or a local image folder")
    parser.add_argument("--split", default="train")
    parser.add_argument("--image-column")
    parser.add_argument("--label-column")
    parser.add_argument("--limit", type=int, help="use only the first N images")
    parser.add_argument("--hooks", nargs="+", help="hook points (default: all block-level ones)")
    parser.add_argument("--timesteps", nargs="+", type=int, required=True)
    parser.add_argument("--poolings", nargs="+", default=["mean", "none"], choices=["mean", "none"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="noise seed (same noise for every image)")
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"], help="storage dtype")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--out", required=True, type=Path, help="cache root folder")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--random-weights", action="store_true", help="baseline: re-initialise the denoiser first")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import revelio
    from revelio.cache import CacheWriter
    from revelio.data.datasets import load_image_dataset
    from revelio.storage.files import write_json, write_safetensors

    backbone = revelio.load_backbone(args.backbone, device=args.device)
    if args.random_weights:
        backbone.randomize_weights(seed=args.seed)
    data = load_image_dataset(args.dataset, args.split, args.image_column, args.label_column, args.limit)
    hooks = args.hooks or backbone.hook_points
    metadata = {"backbone": args.backbone, "dataset": args.dataset, "split": args.split, "seed": args.seed,
                "random_weights": args.random_weights}
    dtype = getattr(torch, args.dtype)
    args.out.mkdir(parents=True, exist_ok=True)
    writers = {
        pooling: CacheWriter(args.out, pooling=pooling, dtype=dtype, metadata=metadata, overwrite=args.overwrite)
        for pooling in args.poolings
    }
    batches: Iterator[dict] = revelio.iter_extract(
        backbone, data.dataset, hooks, args.timesteps, pooling="none", seed=args.seed,
        batch_size=args.batch_size, image_column=data.image_column, progress=True,
    )
    for batch in batches:
        for pooling, writer in writers.items():
            writer.add(batch if pooling == "none" else {key: tokens.mean(dim=1) for key, tokens in batch.items()})
    for writer in writers.values():
        writer.close()
    if data.label_column is not None:
        write_safetensors({"labels": torch.tensor(data.labels, dtype=torch.long)}, args.out / "labels.safetensors")
    write_json(
        {**metadata, "image_column": data.image_column, "label_column": data.label_column,
         "class_names": data.class_names, "num_images": len(data.dataset), "hooks": hooks,
         "timesteps": args.timesteps, "poolings": args.poolings, "resolution": backbone.resolution,
         "image_channels": backbone.image_channels},
        args.out / "dataset.json",
    )
    print(json.dumps({"cache": str(args.out), "images": len(data.dataset), "cells": len(hooks) * len(args.timesteps) * len(args.poolings)}))


if __name__ == "__main__":
    main()
