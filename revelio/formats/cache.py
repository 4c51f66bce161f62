"""``dataset.json`` of an activation cache root: what was extracted, from which images, how."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from revelio.formats.schema import JsonSchema
from revelio.grid import Pooling


@dataclass
class CacheDataset(JsonSchema):
    """Written when every part of an extraction is merged; its presence marks the cache finished."""

    backbone: str
    dataset: str
    split: str
    seed: int
    random_weights: bool
    image_column: str | None
    label_column: str | None
    class_names: list[str] | None
    num_images: int
    hooks: list[str]
    timesteps: list[int]
    poolings: list[Pooling]
    resolution: int
    image_channels: int
    parts: int
    config: dict[str, Any] = field(default_factory=dict)  # the ExtractionConfig
    # Every label set's names by column (label_column's labels are "labels", the others' label_set_key(column)).
    label_sets: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Shard:
    """One safetensors file of a cell, relative to the cell's folder."""

    file: str
    rows: int
    bytes: int


@dataclass
class CacheManifest(JsonSchema):
    """``manifest.json`` of one cache cell: its shards in order and what they hold.

    A shard exists for readers only once it is listed here; ``complete`` is set only when the
    writer closed cleanly. ``d_in``, ``tokens_per_image`` and ``grid_side`` are None until the
    first batch arrives. A merged cell lists its parts' shards (``parts``: their folders).
    """

    format: str
    format_version: int
    hook: str
    timestep: int
    pooling: Pooling
    dtype: str
    d_in: int | None = None
    tokens_per_image: int | None = None
    grid_side: int | None = None
    grid_tokens: int | None = None  # spatial caches that keep a seeded sample of each image's locations
    num_rows: int = 0
    num_images: int = 0
    first_image: int = 0
    complete: bool = False
    shards: list[Shard] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    parts: list[str] = field(default_factory=list)
