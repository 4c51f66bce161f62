"""Class conditions given as names, ids or lists of either, turned into label tensors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def class_label_ids(
    condition: Any, class_names: Sequence[str], null_class: int | None, batch_size: int | None
) -> list[int]:
    """Label ids for a batch: ``None`` means unconditional (the null class); one label repeats.

    Names match ``class_names`` exactly; ids must lie in ``range(len(class_names))``.
    """
    if condition is None:
        if null_class is None:
            raise ValueError(
                "this class-conditional model has no null class, so it cannot run unconditionally; "
                f"pass a class name or id from {list(class_names)}"
            )
        return [null_class] * (batch_size or 1)
    items = list(condition) if isinstance(condition, (list, tuple, torch.Tensor, np.ndarray)) else [condition]
    if batch_size is not None and len(items) == 1:
        items = items * batch_size
    if batch_size is not None and len(items) != batch_size:
        raise ValueError(f"got {len(items)} class labels for a batch of {batch_size} images")
    return [_label_id(item, class_names, null_class) for item in items]


def _label_id(item: Any, class_names: Sequence[str], null_class: int | None) -> int:
    if isinstance(item, (torch.Tensor, np.generic)):
        item = item.item()
    if isinstance(item, str):
        if item in class_names:
            return list(class_names).index(item)
        raise ValueError(f"unknown class {item!r}; this model's classes are {list(class_names)}")
    if isinstance(item, bool) or not isinstance(item, int):
        raise ValueError(f"a class label must be a class name or an int id; got {item!r}")
    if 0 <= item < len(class_names) or item == null_class:
        return item
    raise ValueError(f"class id {item} is out of range 0..{len(class_names) - 1}")

