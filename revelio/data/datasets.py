"""Image datasets for the train/ scripts: Fashion-MNIST (grey, or colour-fashion-mnist: tinted and
captioned, see revelio.data.colour_fashion), a Hub dataset id, or a local image folder.

Everything comes back as a ``datasets.Dataset`` with its image column (and label column, with
class names when the dataset declares them), so the same scripts run on users' own data.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np

from revelio.data.colour_fashion import colour_fashion_mnist
from revelio.data.image_folders import LAYOUTS, load_image_folder

FASHION_MNIST = "fashion-mnist"
COLOUR_FASHION_MNIST = "colour-fashion-mnist"
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
# Debian's dataset-fashion-mnist package (MIT), the offline source; the Hub copy when online.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_HUB = "zalando-datasets/fashion_mnist"
_IDX_FILES = {"train": "train", "test": "t10k"}
# Images a limited stream is shuffled within before its first N are kept.
STREAM_SHUFFLE_BUFFER = 10_000


@dataclass
class ImageDataset:
    """A dataset split plus which columns hold images and labels."""

    dataset: datasets.Dataset
    name: str
    split: str
    image_column: str
    label_column: str | None
    class_names: list[str] | None
    indices: list[int] | None = None  # the split's rows this dataset holds (None: all, in order)
    # Every label set (a ClassLabel column) by column, the default one (``label_column``) first.
    label_sets: dict[str, list[str]] = field(default_factory=dict)

    @property
    def labels(self) -> list[int] | None:
        return None if self.label_column is None else list(self.dataset[self.label_column])


LabelColumns = str | list[str] | None


def label_columns(label_column: LabelColumns) -> list[str]:
    """``--label-column`` as a list: one column, several (label sets, the first the default), or none."""
    if label_column is None:
        return []
    return [label_column] if isinstance(label_column, str) else list(label_column)


def default_label_column(label_column: LabelColumns) -> str | None:
    """The first of several label columns: the release's default label set."""
    return next(iter(label_columns(label_column)), None)


def load_image_dataset(
    name: str,
    split: str = "train",
    image_column: str | None = None,
    label_column: LabelColumns = None,
    limit: int | None = None,
    seed: int = 0,
    streaming: bool = False,
) -> ImageDataset:
    """Load ``name`` ("fashion-mnist", a local image folder, or a Hub dataset id) and find its columns.

    ``limit`` keeps a seeded, class-balanced subset of that many images (never the first N: image
    folders and many Hub datasets are sorted by class), in dataset order. ``streaming`` reads the
    dataset as a ``datasets`` stream (no full download; images stay undecoded until used); a
    limited stream is the first ``limit`` images after a seeded shuffle buffer (not class-balanced:
    that would need every label first).
    """
    if name == FASHION_MNIST:
        dataset = load_fashion_mnist(split)
        dataset = dataset.to_iterable_dataset() if streaming else dataset
    elif name == COLOUR_FASHION_MNIST:
        dataset = colour_fashion_mnist(load_fashion_mnist(split), split)
        dataset = dataset.to_iterable_dataset() if streaming else dataset
    elif Path(name).is_dir():
        dataset = load_image_folder(Path(name), split, streaming)
    else:
        try:
            dataset = datasets.load_dataset(name, split=split, streaming=streaming)
        except (FileNotFoundError, ConnectionError, ValueError) as err:
            raise ValueError(
                f"could not load dataset {name!r} split {split!r} ({err}). Pass a local image folder "
                f"({LAYOUTS}) or a Hub dataset id reachable from here."
            ) from None
    features = dataset.features
    if image_column is None:
        image_column = next((c for c, f in features.items() if isinstance(f, datasets.Image)), None)
        if image_column is None:
            raise ValueError(f"no image column in {name!r} ({list(features)}); pass --image-column")
    elif image_column not in features:
        raise ValueError(f"{name!r} has no column {image_column!r}; its columns: {list(features)}")
    columns = label_columns(label_column)
    if not columns:
        columns = [c for c, f in features.items() if isinstance(f, datasets.ClassLabel)][:1]
    for column in columns:
        if column not in features:
            raise ValueError(f"{name!r} has no column {column!r}; its columns: {list(features)}")
    if len(columns) > 1 and not all(isinstance(features[c], datasets.ClassLabel) for c in columns):
        raise ValueError(f"label sets must be ClassLabel columns; {name!r} has {[(c, type(features[c]).__name__) for c in columns]}")
    label_column = columns[0] if columns else None
    label_sets = {c: list(features[c].names) for c in columns if isinstance(features[c], datasets.ClassLabel)}
    class_names = label_sets.get(label_column) if label_column else None
    indices = None
    if streaming:
        dataset = dataset.cast_column(image_column, datasets.Image(decode=False))  # decoded by whoever uses it
        if limit is not None:
            dataset = dataset.shuffle(seed=seed, buffer_size=STREAM_SHUFFLE_BUFFER).take(limit)
    elif limit is not None and limit < len(dataset):
        labels = dataset[label_column] if label_column else None
        indices = balanced_subset(labels, len(dataset), limit, seed)
        dataset = dataset.select(indices)
    return ImageDataset(dataset, name, split, image_column, label_column, class_names, indices, label_sets)


def balanced_subset(labels: list[int] | None, total: int, count: int, seed: int = 0) -> list[int]:
    """``count`` of ``total`` row indices, sorted: as equal a share of every label as it has images.

    Rows are drawn at random (seeded) within each label; a label with too few images gives its
    share to the others. Without labels, a seeded random subset.
    """
    rng = np.random.default_rng(seed)
    if labels is None:
        return sorted(rng.choice(total, size=min(count, total), replace=False).tolist())
    groups: dict[int, list[int]] = {}
    for index in rng.permutation(total).tolist():
        groups.setdefault(int(labels[index]), []).append(index)
    chosen: list[int] = []
    queues = [groups[label] for label in sorted(groups)]
    while len(chosen) < count and any(queues):
        for queue in queues:  # one image of every label per round
            if queue and len(chosen) < count:
                chosen.append(queue.pop())
    return sorted(chosen)


def _read_idx(path: Path, header_bytes: int) -> np.ndarray:
    with gzip.open(path, "rb") as file:
        return np.frombuffer(file.read(), dtype=np.uint8, offset=header_bytes)


def load_fashion_mnist(split: str = "train", root: Path = FASHION_MNIST_DIR) -> datasets.Dataset:
    """Fashion-MNIST from Debian's idx.gz files (16-byte image, 8-byte label headers), else the Hub."""
    if split not in _IDX_FILES:
        raise ValueError(f"Fashion-MNIST has splits {list(_IDX_FILES)}, not {split!r}")
    images_path = root / f"{_IDX_FILES[split]}-images-idx3-ubyte.gz"
    labels_path = root / f"{_IDX_FILES[split]}-labels-idx1-ubyte.gz"
    if images_path.is_file() and labels_path.is_file():
        images = _read_idx(images_path, 16).reshape(-1, 28, 28)
        labels = _read_idx(labels_path, 8).astype(np.int64)
        features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=FASHION_MNIST_CLASSES)})
        return datasets.Dataset.from_dict({"image": list(images), "label": labels}, features=features)
    try:
        return datasets.load_dataset(FASHION_MNIST_HUB, split=split)
    except Exception as err:  # offline, no cache: say how to get the data
        raise FileNotFoundError(
            f"Fashion-MNIST is neither in {root} nor reachable on the Hub ({type(err).__name__}). "
            "Install it with: sudo apt-get install dataset-fashion-mnist (Debian/Ubuntu), or go online once."
        ) from None
