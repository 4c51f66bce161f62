"""The images a release ships: exemplar thumbnails of training images, and labelled held-out images.

Both are uint8 arrays in one safetensors file each, keyed by dataset index, so the app shows
features' top images and histograms without the dataset. Images are framed as the model sees them
(centre square) at one fixed side, so datasets with mixed image sizes stack, and releases of
512 px models stay small.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from revelio.data.datasets import LabelColumns, load_image_dataset
from revelio.data.images import load_image, square
from revelio.layout import (
    EXEMPLARS_FILE,
    HELD_OUT_FILE,
    label_set_key,
    sae_cells,
    sae_subfolder,
)
from revelio.sae.model import STATS_FILE
from revelio.storage.files import holds, read_safetensors, write_safetensors

# The thumbnails' side: the model's resolution, at most this many pixels.
MAX_THUMBNAIL_SIDE = 128


def thumbnail_side(resolution: int) -> int:
    return min(resolution, MAX_THUMBNAIL_SIDE)


def _image_array(dataset: Sequence, column: str, index: list[int], side: int) -> torch.Tensor:
    """[N, side, side, C] uint8 of the chosen rows' images (C = 1 for greyscale), decoding only those rows."""

    images = [load_image(dataset[i][column]) for i in index]
    mode = "L" if all(image.mode == "L" for image in images) else "RGB"
    arrays = [np.asarray(square(image, side, mode)) for image in images]
    return torch.from_numpy(np.stack([a[..., None] if a.ndim == 2 else a for a in arrays]))


def write_exemplars(out: Path, dataset: str, image_column: str | None, label_column: LabelColumns, side: int) -> int:
    """Every training image that is a top exemplar of some feature, as uint8 thumbnails by dataset index."""

    used: set[int] = set()
    for cell in sae_cells(out):
        stats = read_safetensors(out / sae_subfolder(cell) / STATS_FILE)
        used.update(int(i) for i in stats["top_images"].flatten().tolist() if i >= 0)
    index = sorted(used)
    data = load_image_dataset(dataset, "train", image_column, label_column)
    images = _image_array(data.dataset, data.image_column, index, side)
    write_safetensors({"images": images, "dataset_index": torch.tensor(index, dtype=torch.long)}, out / EXEMPLARS_FILE)
    return len(index)


def _in_turn(queues: list[list[int]], count: int) -> list[int]:
    """Up to ``count`` items, the first of every queue, then the second of every queue, and so on."""
    taken: list[int] = []
    for rank in range(max(map(len, queues), default=0)):
        taken += [queue[rank] for queue in queues if rank < len(queue)][: count - len(taken)]
    return taken


def write_held_out_examples(out: Path, dataset: str, split: str, image_column: str | None, label_column: LabelColumns,
                            per_class: int, side: int) -> int:
    """``per_class`` test images of every class (of the default label set), for the app's examples, activation
    histograms and class maps, with their labels in every label set. Within a class the first images are
    taken, one of each combination of the further sets' labels in turn, so every colour of a release with
    a colour set has maps too."""

    data = load_image_dataset(dataset, split, image_column, label_column)
    labels = data.labels or [0] * len(data.dataset)  # unlabelled data: the first images, one group
    further = list(data.label_sets)[1:]
    combinations = list(zip(*(data.dataset[column] for column in further))) if further else [()] * len(labels)
    groups: dict[int, dict[tuple, list[int]]] = {}
    for row, label in enumerate(labels):
        groups.setdefault(label, {}).setdefault(combinations[row], []).append(row)
    index = sorted(row for by_combination in groups.values() for row in _in_turn(list(by_combination.values()), per_class))
    tensors = {
        "images": _image_array(data.dataset, data.image_column, index, side),
        "labels": torch.tensor([labels[i] for i in index], dtype=torch.long),
        "dataset_index": torch.tensor(index, dtype=torch.long),
        **{label_set_key(column): torch.tensor([data.dataset[i][column] for i in index], dtype=torch.long)
           for column in list(data.label_sets)[1:]},
    }
    if not holds(out / HELD_OUT_FILE, tensors):  # a rebuild keeps it as it was: measurements made on it stay valid
        write_safetensors(tensors, out / HELD_OUT_FILE)
    return len(index)
