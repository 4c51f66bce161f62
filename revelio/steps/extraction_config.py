"""What an extraction reads and writes: its one config, shared by the orchestrator and its parts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from revelio.config import option


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
    label_column: list[str] | None = option(
        None, "default: the dataset's ClassLabel feature; several ClassLabel columns are label sets (the first is the default)")
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
    inputs: str = option("", "fingerprints of the dataset and the model (filled in when empty): a rerun on changed "
                                "files is another extraction", cli=False)
    tokens_per_image: int | None = option(
        None, "spatial caches keep this many seeded random locations per image (default: all); pooled vectors use all")
