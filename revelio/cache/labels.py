"""The labels of a cache root's images, for one label set (the default one, or a further column)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from revelio.errors import DatasetError
from revelio.formats.cache import CacheDataset
from revelio.layout import DATASET_FILE, LABELS_FILE, label_set_key
from revelio.storage.files import read_safetensors


@dataclass
class CacheLabels:
    """Each cache image's label in one label set and its dataset row (labels None without labels)."""

    labels: torch.Tensor | None
    class_names: list[str] | None
    rows: torch.Tensor | None  # each cache image's row in the dataset split (exemplars name rows)

    @classmethod
    def read(cls, cache: Path, label_set: str | None = None) -> CacheLabels:
        """``label_set``: a further label column named when extracting (None: the default label set)."""
        labels_file, info_file = Path(cache) / LABELS_FILE, Path(cache) / DATASET_FILE
        columns = read_safetensors(labels_file) if labels_file.is_file() else {}
        info = CacheDataset.read(info_file) if info_file.is_file() else None
        if label_set is None or (info is not None and label_set == info.label_column):
            labels = columns.get("labels")
            names = info.class_names if info is not None and labels is not None else None
            return cls(labels, names, columns.get("dataset_index"))
        if info is None or label_set not in info.label_sets or label_set_key(label_set) not in columns:
            known = list(info.label_sets) if info is not None else []
            raise DatasetError(f"{cache} holds no label set {label_set!r} (it holds {known or 'none'}); extract with "
                               f"--label-column naming every label column, e.g. --label-column class {label_set}")
        return cls(columns[label_set_key(label_set)], info.label_sets[label_set], columns.get("dataset_index"))
