"""Image datasets for the train/ scripts: a Hub dataset id or a local image folder.

Everything comes back as a ``datasets.Dataset`` with its image column (and label column, with
class names when the dataset declares them), so the same scripts run on users' own data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import datasets


@dataclass
class ImageDataset:
    """A dataset split plus which columns hold images and labels."""

    dataset: datasets.Dataset
    name: str
    split: str
    image_column: str
    label_column: str | None
    class_names: list[str] | None

    @property
    def labels(self) -> list[int] | None:
        return None if self.label_column is None else list(self.dataset[self.label_column])


def load_image_dataset(
    name: str,
    split: str = "train",
    image_column: str | None = None,
    label_column: str | None = None,
    limit: int | None = None,
) -> ImageDataset:
    """Load ``name`` (local image folder, or Hub dataset id) and find its image/label columns."""
    if Path(name).is_dir():
        dataset = datasets.load_dataset("imagefolder", data_dir=name, split=split)
    else:
        try:
            dataset = datasets.load_dataset(name, split=split)
        except (FileNotFoundError, ConnectionError, ValueError) as err:
            raise ValueError(
                f"could not load dataset {name!r} split {split!r} ({err}). Pass a local image "
                "folder (one subfolder per class) or a Hub dataset id reachable from here."
            ) from None
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    features = dataset.features
    if image_column is None:
        image_column = next((c for c, f in features.items() if isinstance(f, datasets.Image)), None)
        if image_column is None:
            raise ValueError(f"no image column in {name!r} ({list(features)}); pass --image-column")
    elif image_column not in features:
        raise ValueError(f"{name!r} has no column {image_column!r}; its columns: {list(features)}")
    if label_column is None:
        label_column = next((c for c, f in features.items() if isinstance(f, datasets.ClassLabel)), None)
    elif label_column not in features:
        raise ValueError(f"{name!r} has no column {label_column!r}; its columns: {list(features)}")
    label_feature = features.get(label_column) if label_column else None
    class_names = list(label_feature.names) if isinstance(label_feature, datasets.ClassLabel) else None
    return ImageDataset(dataset, name, split, image_column, label_column, class_names)
