"""Turning whatever users pass as "images" into clean PIL images, and those into model pixels.

Accepted: PIL images, numpy arrays (H x W or H x W x C, uint8 or float in [0, 1]), torch tensors
(C x H x W or H x W, uint8 or float in [0, 1]), paths to image files, and a ``datasets.Dataset``
(or a list of dicts) with an image column. Every rejection says what was wrong and what to pass.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

# Larger images are refused before decoding: 50 megapixels is far above any model resolution.
MAX_PIXELS = 50_000_000

ImageLike = Any  # PIL.Image | np.ndarray | torch.Tensor | str | Path | bytes


class ImageError(ValueError):
    """An input could not be understood as an image; the message says what to pass instead."""


def _open_file(source: str | Path | bytes) -> Image.Image:
    what = "the uploaded bytes" if isinstance(source, bytes) else f"{str(source)!r}"
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        image = Image.open(stream)
        if image.width * image.height > MAX_PIXELS:
            image.close()
            raise ImageError(
                f"{what} is {image.width}x{image.height} pixels, more than the {MAX_PIXELS:,} "
                "allowed; downscale it first."
            )
        image.seek(0)  # animated formats: use the first frame
        image.load()
        image = ImageOps.exif_transpose(image)  # phone photos: apply the camera's rotation
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"no such image file: {what}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, TypeError, struct.error, Image.DecompressionBombError) as err:
        raise ImageError(
            f"could not read {what} as an image ({err}). Pass a PNG, JPEG or WebP file, "
            "or a PIL image / numpy array."
        ) from None
    return image


def _from_array(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImageError(
            f"an image array must be H x W or H x W x C with C in (1, 3, 4); got shape {array.shape}"
        )
    if array.dtype == np.uint8:
        return Image.fromarray(array)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ImageError(
                "a float image must hold finite values in [0, 1]; "
                f"got range [{array.min():.3g}, {array.max():.3g}]"
            )
        return Image.fromarray(np.round(array * 255).astype(np.uint8))
    raise ImageError(f"image arrays must be uint8 or float in [0, 1]; got dtype {array.dtype}")


def _flatten_mode(image: Image.Image) -> Image.Image:
    """8-bit RGB or L: 16-bit and float images are rescaled, transparency goes onto white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        return Image.fromarray(np.clip(array / top * 255, 0, 255).round().astype(np.uint8))
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")  # CMYK, YCbCr, LAB, HSV, 1-bit
    return image


def load_image(item: ImageLike) -> Image.Image:
    """One input as an 8-bit RGB or greyscale PIL image, or a clear :class:`ImageError`."""
    if isinstance(item, dict) and "bytes" in item:  # datasets' undecoded Image feature
        item = item["bytes"] if item["bytes"] is not None else item.get("path")
    if isinstance(item, Image.Image):
        if item.width * item.height > MAX_PIXELS:
            raise ImageError(f"image of {item.width}x{item.height} pixels exceeds {MAX_PIXELS:,}")
        image = item
    elif isinstance(item, (str, Path, bytes)):
        image = _open_file(item)
    elif isinstance(item, torch.Tensor):
        array = item.detach().cpu()
        if array.ndim == 3 and array.shape[0] in (1, 3, 4):
            array = array.permute(1, 2, 0)
        image = _from_array(array.numpy())
    elif isinstance(item, np.ndarray):
        image = _from_array(item)
    else:
        raise ImageError(
            f"cannot use an object of type {type(item).__name__} as an image; pass a PIL image, a "
            "numpy array, a torch tensor, a file path, or a datasets.Dataset with an image column"
        )
    return _flatten_mode(image)


def _image_column(dataset: Any, image_column: str | None) -> str:
    names = list(dataset.column_names)
    if image_column is not None:
        if image_column not in names:
            raise ImageError(f"dataset has no column {image_column!r}; its columns are {names}")
        return image_column
    features = getattr(dataset, "features", {}) or {}
    for name in names:
        if type(features.get(name)).__name__ == "Image":
            return name
    for name in ("image", "img", "pixel_values"):
        if name in names:
            return name
    raise ImageError(f"cannot tell which dataset column holds images ({names}); pass image_column=")


def count_images(images: Any) -> int:
    """How many images an input holds (a single image counts as one)."""
    if _is_single(images):
        return 1
    return len(images)


def _is_single(images: Any) -> bool:
    """True for one image; arrays are one image when H x W or H x W x C (tensors: C x H x W)."""
    if isinstance(images, (Image.Image, str, Path, bytes)):
        return True
    if isinstance(images, np.ndarray):
        return images.ndim == 2 or (images.ndim == 3 and images.shape[-1] in (1, 3, 4))
    if isinstance(images, torch.Tensor):
        return images.ndim == 2 or (images.ndim == 3 and images.shape[0] in (1, 3, 4))
    return False


def iter_image_batches(
    images: Any, batch_size: int, image_column: str | None = None
) -> Iterator[list[Image.Image]]:
    """Yield lists of at most ``batch_size`` PIL images, decoding lazily (datasets stay on disk)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if _is_single(images):
        images = [images]
    if hasattr(images, "column_names"):  # datasets.Dataset: decode one batch at a time
        column = _image_column(images, image_column)
        for start in range(0, len(images), batch_size):
            yield [load_image(x) for x in images[start : start + batch_size][column]]
        return
    items: Sequence[Any] = images
    for start in range(0, len(items), batch_size):
        yield [load_image(x) for x in items[start : start + batch_size]]


def square(image: Image.Image, side: int, mode: str = "RGB") -> Image.Image:
    """Centre-cropped to a square and resized to ``side``: how every model (and the app) frames an image."""
    return ImageOps.fit(image.convert(mode), (side, side), Image.Resampling.BICUBIC)


def to_pixels(images: Sequence[ImageLike], resolution: int, channels: int) -> torch.Tensor:
    """[B, C, H, W] in [-1, 1]: any image-likes, centre-cropped, resized, in the model's channels.

    The one encoder preprocessing: backbones, pixel baselines and the reference classifier all use it.
    """
    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        raise ValueError(f"models with {channels} input channels are not supported (need 1 or 3)")
    arrays = []
    for image in images:
        array = np.asarray(square(load_image(image), resolution, mode), dtype=np.float32)
        arrays.append(array[None] if channels == 1 else array.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(arrays)) / 127.5 - 1.0
