"""Activations of a backbone over a labelled dataset into an on-disk cache, for SAEs and probes.

One pass over the data serves every (hook, timestep) and both poolings: spatial tokens are
captured once and their mean is the pooled vector. The cache root also gets ``dataset.json``
(this config plus what was found: columns, class names, image count) and ``labels.safetensors``
(each cache image's label and its row in the dataset split).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from revelio.config import option, to_json

DATASET_FILE = "dataset.json"
LABELS_FILE = "labels.safetensors"


@dataclass
class ExtractionConfig:
    """What to extract from which backbone and dataset, and where the cache goes."""

    backbone: str = option(help="diffusers pipeline: Hub repo id or local folder")
    out: Path = option(help="cache root folder")
    timesteps: list[int] = option(help="denoising timesteps to capture at")
    revision: str | None = option(None, "the backbone's Hub revision (branch, tag or commit)")
    dataset: str = option("fashion-mnist", "fashion-mnist, a Hub dataset id, or a local image folder")
    split: str = option("train")
    image_column: str | None = option(None, "default: the dataset's image feature")
    label_column: str | None = option(None, "default: the dataset's ClassLabel feature")
    limit: int | None = option(None, "a seeded, class-balanced subset of N images (seeded by --seed)")
    hooks: list[str] | None = option(None, "hook points (default: all block-level ones)")
    poolings: list[Literal["mean", "none"]] = option(["mean", "none"], "poolings to store")
    batch_size: int = option(64)
    seed: int = option(0, "noise seed (same noise for every image)")
    dtype: Literal["float16", "bfloat16"] = option("float16", "storage dtype")
    device: str | None = option(None, "cpu or cuda (default: cuda when available)")
    overwrite: bool = option(False, "replace a complete cache")
    random_weights: bool = option(False, "baseline: re-initialise the denoiser first")
    prompt_template: str | None = option(
        None, 'text models: each image\'s prompt from its label, e.g. "a photo of a {}" (default: the empty prompt, as the paper)')


def extraction_conditions(template: str | None, conditioning: str, labels: list[int] | None, class_names: list[str] | None) -> list[str] | None:
    """One prompt per image from ``template`` and the labels, or None: unconditional (empty prompt / null class)."""
    if template is None:
        return None
    if conditioning != "text":
        raise ValueError(f"--prompt-template needs a text-conditioned backbone; this one is conditioned on {conditioning!r}")
    if labels is None or class_names is None or "{}" not in template:
        raise ValueError('--prompt-template needs a labelled dataset and a "{}" where the class name goes, e.g. "a photo of a {}"')
    return [template.format(class_names[label]) for label in labels]


def extract_to_cache(config: ExtractionConfig) -> dict:
    """Run the extraction; returns a summary (cache root, images, cells)."""
    import revelio
    from revelio.cache import CacheWriter
    from revelio.data.datasets import load_image_dataset
    from revelio.storage.files import write_json, write_safetensors

    backbone = revelio.load_backbone(config.backbone, device=config.device, revision=config.revision)
    if config.random_weights:
        backbone.randomize_weights(seed=config.seed)
    data = load_image_dataset(config.dataset, config.split, config.image_column, config.label_column, config.limit, config.seed)
    hooks = config.hooks or backbone.hook_points
    metadata = {"backbone": config.backbone, "dataset": config.dataset, "split": config.split, "seed": config.seed,
                "random_weights": config.random_weights}
    dtype = getattr(torch, config.dtype)
    config.out.mkdir(parents=True, exist_ok=True)
    writers = {
        pooling: CacheWriter(config.out, pooling=pooling, dtype=dtype, metadata=metadata, overwrite=config.overwrite)
        for pooling in config.poolings
    }
    conditions = extraction_conditions(config.prompt_template, backbone.conditioning, data.labels, data.class_names)
    batches = revelio.iter_extract(
        backbone, data.dataset, hooks, config.timesteps, pooling="none", seed=config.seed,
        batch_size=config.batch_size, condition=conditions, image_column=data.image_column, progress=True,
    )
    for batch in batches:
        for pooling, writer in writers.items():
            writer.add(batch if pooling == "none" else {key: tokens.mean(dim=1) for key, tokens in batch.items()})
    for writer in writers.values():
        writer.close()
    rows = torch.arange(len(data.dataset)) if data.indices is None else torch.tensor(data.indices)
    labels = {} if data.label_column is None else {"labels": torch.tensor(data.labels, dtype=torch.long)}
    write_safetensors({**labels, "dataset_index": rows}, config.out / LABELS_FILE)  # cache image i is row dataset_index[i]
    write_json(
        {**metadata, "image_column": data.image_column, "label_column": data.label_column,
         "class_names": data.class_names, "num_images": len(data.dataset), "hooks": hooks,
         "timesteps": config.timesteps, "poolings": config.poolings, "resolution": backbone.resolution,
         "image_channels": backbone.image_channels, "config": to_json(config)},
        config.out / DATASET_FILE,
    )
    summary = {"cache": str(config.out), "images": len(data.dataset), "cells": len(hooks) * len(config.timesteps) * len(config.poolings)}
    print(json.dumps(summary))
    return summary
