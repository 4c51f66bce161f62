"""Every image an event returns becomes an immutable file: written once, atomically, never rewritten.

Gradio saves a returned PIL image or array by writing its bytes *in place* to a file named by
their hash (``gradio.processing_utils.save_pil_to_cache``: open, truncate, write). When two
requests return the same picture (one example explored by many users, a cached Steer baseline, a
feature's exemplars) the second request truncates and rewrites the very file the first client is
downloading, which then arrives short or empty ("peer closed connection without sending complete
message body"). So no event returns a PIL image to Gradio: :func:`to_files`, applied to every
event's outputs by :func:`revelio.app.events.wire`, replaces each image with the path of a
file in Gradio's cache folder named by its content and written under a temporary name, then
renamed into place (``os.replace``). A file that exists is never written again, and a reader
always sees a complete file; Gradio serves paths already in its cache folder as they are.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image

# Lossless where users keep the result (steered images, downloads), small where they only look.
PNG = "png"
WEBP = "webp"
PREFIX = "revelio-"


def cache_folder() -> Path:
    """Gradio's cache folder (``GRADIO_TEMP_DIR``, else <tmp>/gradio): files there are served as they are."""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder())


def write_once(data: bytes, name: str) -> str:
    """``data`` as ``<cache>/revelio-<sha256>/<name>``, written atomically unless it is already there."""
    digest = hashlib.sha256(data).hexdigest()
    folder = cache_folder() / f"{PREFIX}{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if path.is_file() and path.stat().st_size == len(data):
        return str(path)
    fd, staging = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(staging, 0o644)
        os.replace(staging, path)  # atomic: readers see the old complete file or the new one
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return str(path)


def image_file(image: Image.Image, stem: str = "image", fmt: str = WEBP) -> str:
    """The image encoded (PNG lossless, WebP at quality 90) as an immutable cache file."""
    buffer = io.BytesIO()
    if fmt == PNG:
        image.save(buffer, format="PNG", compress_level=1)
    else:
        image.save(buffer, format="WEBP", quality=90, method=0)
    return write_once(buffer.getvalue(), f"{stem}.{fmt}")


def text_file(text: str, name: str) -> str:
    """Text (a CSV table) as an immutable cache file named ``name``."""
    return write_once(text.encode("utf-8"), name)


def to_files(value: Any) -> Any:
    """``value`` with every PIL image in it (alone, in tuples and lists: gallery items) replaced by
    its immutable file; PNG for single images (the Steer results), WebP in galleries."""
    return _convert(value, PNG)


def _convert(value: Any, fmt: str) -> Any:
    if isinstance(value, Image.Image):
        return image_file(value, fmt=fmt)
    if isinstance(value, list):  # a gallery: many small pictures
        return [_convert(item, WEBP) for item in value]
    if isinstance(value, tuple):
        return tuple(_convert(item, fmt) for item in value)
    return value
