"""Activations of a backbone over a labelled dataset into an on-disk cache, for SAEs and probes.

One pass over the data serves every (hook, timestep) and both poolings: spatial tokens are
captured once and their mean is the pooled vector. The images are cut into parts of
``part_images``; each part is a complete small cache under ``parts/``, written once, so a killed
run resumes at its first unfinished part, and under ``accelerate launch`` (or torchrun) each
process writes every n-th part. When all parts exist, the cache root gets one manifest per cell
listing the parts' shards in order (one logical cache, equal to a single-process run),
``dataset.json`` (this config plus what was found: columns, class names, image count) and
``labels.safetensors`` (each cache image's label and its row in the dataset split).
"""

from __future__ import annotations

import logging
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from revelio.config import option

log = logging.getLogger(__name__)

RUN_FILE = "extraction.json"  # the command's config: a rerun resumes only the same command


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
    overwrite: bool = option(False, "start over, discarding what an earlier run of this command wrote")
    random_weights: bool = option(False, "baseline: re-initialise the denoiser first")
    prompt_template: str | None = option(
        None, 'text models: each image\'s prompt from its label, e.g. "a photo of a {}" (default: the empty prompt, as the paper)')
    part_images: int = option(1024, "images per part: the unit of resuming and of splitting over processes")
    streaming: bool = option(False, "read the dataset as a stream (Hub datasets: no full download)")
    tokens_per_image: int | None = option(
        None, "spatial caches keep this many seeded random locations per image (default: all); pooled vectors use all")


def extract_to_cache(config: ExtractionConfig) -> dict:
    """Run (or resume, or finish) the extraction; returns a summary (cache root, images, cells)."""
    import shutil

    from accelerate import PartialState

    import revelio
    from revelio.data.datasets import load_image_dataset
    from revelio.steps.runs import check_same_command
    from revelio.steps.extract_parts import (
        DATASET_FILE,
        LABELS_FILE,
        PARTS_DIR,
        finished_parts,
        merge,
        write_parts,
    )

    state = PartialState(cpu=not torch.cuda.is_available() or config.device == "cpu")
    if config.overwrite and state.is_main_process:
        for name in (PARTS_DIR, RUN_FILE, DATASET_FILE, LABELS_FILE):
            shutil.rmtree(config.out / name, ignore_errors=True) if (config.out / name).is_dir() else (config.out / name).unlink(missing_ok=True)
    state.wait_for_everyone()
    check_same_command(config, config.out / RUN_FILE, "an extraction", ignore=("overwrite",), record=state.is_main_process)
    state.wait_for_everyone()
    # each process on its own GPU under accelerate/torchrun ("cuda" alone would put all on cuda:0)
    device = state.device if state.device.type == "cuda" and config.device in (None, "cuda") else config.device
    backbone = revelio.load_backbone(config.backbone, device=device, revision=config.revision)
    if config.random_weights:
        backbone.randomize_weights(seed=config.seed)
    data = load_image_dataset(config.dataset, config.split, config.image_column, config.label_column, config.limit,
                              config.seed, streaming=config.streaming)
    hooks = config.hooks or backbone.hook_points
    done = finished_parts(config.out)
    mine = lambda part: part % state.num_processes == state.process_index and part not in done  # noqa: E731
    written = write_parts(config, backbone, data, hooks, mine)
    state.wait_for_everyone()
    summary = {"cache": str(config.out), "parts_written_here": written}
    if state.is_main_process:
        summary |= merge(config, data, hooks, backbone)
        log.info(json.dumps(summary))
    state.wait_for_everyone()
    return summary
