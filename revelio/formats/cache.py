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
