"""The Steer tab's painted mask: where on the image a spatial SAE's clamp applies.

The painter (a Gradio ImageEditor) sends its layers as uploads, or first to its blob store with
only an ``id`` in the value. A mask is [H, W] in [0, 1]; None means nothing was painted, and the
clamp then applies everywhere.
"""

from __future__ import annotations

import io
from collections.abc import MutableMapping
from typing import Any

import numpy as np
import torch
from PIL import Image

from revelio.app.uploads import read_upload_raw
from revelio.data.images import ImageError

PAINTED = 0.02  # a pixel this bright (or opaque) or more is marked


def read_mask(payload: Any, blobs: MutableMapping[str, Any] | None = None) -> torch.Tensor | None:
    """A mask ([H, W] in [0, 1]) from the painter's value: where its layers are painted (opaque;
    a layer without transparency, such as an uploaded black-and-white image, by its brightness).
    None when nothing is painted. ``blobs`` is the painter's blob store: layers the browser sent
    there first are taken from it (and removed)."""
    if payload in (None, "", {}):
        return None
    if not isinstance(payload, dict):
        raise ValueError("the mask must be the painter's value: {'background': None, 'layers': [an uploaded image], "  # noqa: TRY004
                         "'composite': None}")
    layers = payload.get("layers") or []
    if not isinstance(layers, list):
        raise ValueError("the mask's 'layers' must be a list of uploaded images")  # noqa: TRY004 - a user error
    images = [read_upload_raw(layer) for layer in layers if layer]
    blob = payload.get("id") and blobs is not None and blobs.pop(payload["id"], None)
    if blob:  # the browser sent the layers to the editor's blob store first
        images += [_decode(data) for data in blob.layers if data]
    masks = [m for m in map(image_mask, images) if m is not None]
    if not masks:
        return None
    side = max(m.shape[0] for m in masks)
    return torch.stack([_resize(m, side) for m in masks]).amax(0)


def is_painted(payload: Any) -> bool:
    """Whether the painter's value marks something (layers in its blob store count, unread: reading
    them would use them up); an unreadable value counts as nothing painted."""
    if isinstance(payload, dict) and payload.get("id"):
        return True
    try:
        return read_mask(payload) is not None
    except ValueError:
        return False


def image_mask(image: Image.Image) -> torch.Tensor | None:
    """Where a layer is marked: its opacity when it has some transparency, else its brightness
    (white clamps, black leaves alone); None when nothing is marked."""
    alpha = np.asarray(image.getchannel("A"), dtype=np.float32) / 255 if "A" in image.getbands() else None
    if alpha is not None and alpha.min() < 1:
        values = alpha
    else:
        values = np.asarray(image.convert("L"), dtype=np.float32) / 255
    if values.max() <= PAINTED:  # nothing painted
        return None
    return torch.from_numpy((values > PAINTED).astype(np.float32))


def _decode(data: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception:  # noqa: BLE001 - any undecodable layer is the same user error
        raise ImageError("the painted mask could not be read; paint it again") from None
    return image


def _resize(mask: torch.Tensor, side: int) -> torch.Tensor:
    if mask.shape == (side, side):
        return mask
    return torch.nn.functional.interpolate(mask[None, None], size=(side, side), mode="bilinear", align_corners=False)[0, 0]
