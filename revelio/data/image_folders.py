"""Local image folders as users have them: one folder per class, split or not.

Two layouts are accepted:

- ``<root>/<class>/<image>``: a flat folder of class folders. It is split into train and test
  with a seeded, class-stratified split (:data:`TEST_FRACTION` of each class to test, seed
  :data:`SPLIT_SEED`), the same on every call, so every step of a build sees the same split.
- ``<root>/train/<class>/<image>`` and ``<root>/test/<class>/<image>``: the user's own split, kept.

Anything else gets a :class:`~revelio.errors.DatasetError` naming both layouts.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import datasets

from revelio.errors import DatasetError

SPLITS = ("train", "test")
TEST_FRACTION = 0.2
SPLIT_SEED = 0
LAYOUTS = ("a folder of class folders (<root>/<class>/<image>; split 80/20 into train and test, stratified by class), "
           "or train/ and test/ folders of class folders (<root>/train/<class>/<image>, <root>/test/<class>/<image>), "
           "or a DatasetDict saved with save_to_disk (several ClassLabel columns: label sets)")


def folder_layout(root: Path) -> str:
    """``"split"`` (train/ and test/ folders), ``"flat"`` (class folders), or a DatasetError."""
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if set(SPLITS) <= set(folders):
        return "split"
    if "train" in folders or "test" in folders:
        raise DatasetError(f"{root} has a {'train' if 'train' in folders else 'test'}/ folder but no "
                           f"{'test' if 'train' in folders else 'train'}/ one. A dataset folder is {LAYOUTS}.")
    if not folders:
        raise DatasetError(f"{root} holds no class folders. A dataset folder is {LAYOUTS}.")
    return "flat"


SAVED_DATASET_FILE = "dataset_dict.json"


def split_description(root: Path) -> str:
    """How a folder's train and test images are chosen, for release.json and cards."""
    if is_saved_dataset(root):
        return "the saved dataset's own splits"
    if folder_layout(root) == "split":
        return "the folder's own train/ and test/ folders"
    return f"a seeded class-stratified split of the class folders: {TEST_FRACTION:.0%} of each class to test (seed {SPLIT_SEED})"


def is_saved_dataset(root: Path) -> bool:
    """A folder written by ``DatasetDict.save_to_disk`` (Arrow files and JSON: nothing unpickled)."""
    return (Path(root) / SAVED_DATASET_FILE).is_file()


def load_saved_dataset(root: Path, split: str, streaming: bool = False) -> datasets.Dataset | datasets.IterableDataset:
    splits = datasets.load_from_disk(str(root))
    if not isinstance(splits, datasets.DatasetDict) or split not in splits:
        found = list(splits) if isinstance(splits, datasets.DatasetDict) else "one unnamed split"
        raise DatasetError(f"{root} holds the splits {found}, not {split!r}; save a DatasetDict with 'train' and 'test'")
    return splits[split].to_iterable_dataset() if streaming else splits[split]


def load_image_folder(root: Path, split: str, streaming: bool = False) -> datasets.Dataset | datasets.IterableDataset:
    """One split of a local image folder in either layout, or of a dataset saved with ``save_to_disk``."""
    if is_saved_dataset(root):
        return load_saved_dataset(root, split, streaming)
    if split not in SPLITS:
        raise DatasetError(f"an image folder has the splits {list(SPLITS)}, not {split!r}")
    if folder_layout(root) == "split":
        return datasets.load_dataset("imagefolder", data_dir=str(root), split=split, streaming=streaming)
    if streaming:
        raise DatasetError(f"{root} is split into train and test here, which needs every label first; read it without streaming")
    whole = datasets.load_dataset("imagefolder", data_dir=str(root), split="train")
    label = next((c for c, f in whole.features.items() if isinstance(f, datasets.ClassLabel)), None)
    if label is None:
        raise DatasetError(f"{root} holds images but no class folders. A dataset folder is {LAYOUTS}.")
    counts = Counter(whole[label])
    small = [name for index, name in enumerate(whole.features[label].names) if counts[index] < 2]
    if small:
        raise DatasetError(f"{root}: every class needs at least 2 images to be split into train and test; {small} have fewer")
    try:
        parts = whole.train_test_split(test_size=TEST_FRACTION, stratify_by_column=label, seed=SPLIT_SEED)
    except ValueError as err:  # fewer test images than classes: no stratified split exists
        raise DatasetError(f"{root} is too small to split {TEST_FRACTION:.0%} of each class into a test set ({err}); "
                           f"add images, or make the split yourself as train/ and test/ folders") from None
    return parts[split]
