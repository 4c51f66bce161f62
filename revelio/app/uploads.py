"""Uploaded files to clean PIL images, or a message that says what was wrong and what to do.

Handlers receive the raw upload (Gradio's file payload, before Gradio opens it), so a non-image,
a corrupt or truncated file or a decompression bomb reaches our checks instead of failing inside
the framework with a generic error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from revelio.app.outputs import cache_folder
from revelio.data.images import ImageError, load_image

# Raster formats Pillow decodes itself; EPS/PDF would hand the file to Ghostscript.
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
# Far above any diffusion model's resolution; larger uploads cost seconds to decode for nothing.
MAX_UPLOAD_PIXELS = 4096 * 4096
MAX_UPLOAD_BYTES = 10 * 2**20


def upload_path(payload: Any) -> Path:
    """The server-side path of an upload: a Gradio FileData dict (or a path string) naming a file
    that was uploaded to this server (Gradio's upload folder). Anything else, a path elsewhere on
    the server included, is refused without being opened, so no request reads the server's files."""
    if payload is None or payload == "":
        raise ImageError("no image: upload a PNG, JPEG or WebP file, or pick one of the examples")
    path = payload.get("path") if isinstance(payload, dict) else payload
    if not isinstance(path, (str, Path)) or not str(path) or len(str(path)) > 4096:
        raise ImageError("the image must be an uploaded file: send it with gradio_client.handle_file(path), or upload it again")
    try:
        resolved = Path(path).resolve()
        uploaded = resolved.is_relative_to(cache_folder().resolve()) and resolved.is_file()
    except (OSError, ValueError):
        uploaded = False
    if not uploaded:
        raise ImageError("the image must be a file uploaded to this app (with gradio_client.handle_file, or the "
                         "upload button); it did not arrive as one, so upload it again")
    return resolved


def checked_upload(payload: Any) -> Path:
    """The path of an uploaded image whose size, format and pixel count are within the limits
    (only its header is read)."""
    path = upload_path(payload)
    size = path.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise ImageError(f"the file is {size / 2**20:.1f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB. Upload a smaller image.")
    try:
        with Image.open(path, formats=FORMATS) as probe:  # reads the header only: size is known before decoding
            width, height = probe.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise ImageError("this file is not an image we can read; upload a PNG, JPEG, WebP, GIF, BMP or TIFF file") from None
    if width * height > MAX_UPLOAD_PIXELS:
        raise ImageError(
            f"the image is {width}x{height} pixels, more than {MAX_UPLOAD_PIXELS:,}; downscale it "
            "(the model works at a few dozen pixels anyway) and upload it again"
        )
    return path


def read_upload(payload: Any) -> Image.Image:
    """The uploaded image as 8-bit RGB or greyscale; :class:`ImageError` for anything unusable."""
    return load_image(checked_upload(payload))


def read_upload_raw(payload: Any) -> Image.Image:
    """The uploaded image decoded as it is (its mode kept: a painted mask keeps its transparency)."""
    path = checked_upload(payload)
    try:
        with Image.open(path, formats=FORMATS) as image:
            image.load()
            return image.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise ImageError("could not read the file as an image; upload a PNG, JPEG, WebP, GIF, BMP or TIFF file") from None
