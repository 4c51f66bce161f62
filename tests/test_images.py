"""Every kind of image input is either understood or rejected with a message saying what to do."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from revelio.data.images import (
    MAX_PIXELS,
    ImageError,
    iter_image_batches,
    load_image,
    to_pixels,
)


def _png_bytes(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_odd_modes_become_8_bit_rgb_or_grey():
    transparent = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert load_image(transparent).getpixel((0, 0)) == (255, 255, 255)  # onto white, not black
    assert load_image(Image.new("CMYK", (4, 4), (0, 0, 0, 0))).mode == "RGB"
    assert load_image(Image.new("P", (4, 4))).mode == "RGB"
    deep = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert load_image(deep).getpixel((0, 0)) == 255  # 16-bit white stays white
    assert load_image(Image.new("1", (4, 4), 1)).mode == "RGB"


def test_animated_images_use_the_first_frame():
    frames = [Image.new("L", (4, 4), value) for value in (10, 200)]
    data = _png_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert load_image(data).convert("L").getpixel((0, 0)) == 10


def test_unreadable_and_truncated_files_are_rejected(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ImageError, match="could not read .*notes.txt"):
        load_image(text)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(_png_bytes(Image.new("RGB", (64, 64), (9, 9, 9)))[:60])
    with pytest.raises(ImageError, match="could not read"):
        load_image(truncated)
    with pytest.raises(ImageError, match="no such image file"):
        load_image(tmp_path / "missing.png")


def test_huge_images_are_refused_before_decoding():
    side = int(MAX_PIXELS**0.5) + 100
    huge = _png_bytes(Image.new("L", (side, side)))
    with pytest.raises(ImageError, match="downscale it first"):
        load_image(huge)


def test_arrays_and_tensors_need_sensible_ranges_and_shapes():
    with pytest.raises(ImageError, match=r"float image must hold finite values in \[0, 1\]"):
        load_image(np.full((4, 4), 2.0))
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((4, 4, 5), dtype=np.uint8))
    with pytest.raises(ImageError, match="cannot use an object of type dict"):
        load_image({"x": 1})
    chw = torch.zeros(3, 5, 7)
    assert load_image(chw).size == (7, 5)


def test_batches_and_pixels():
    images = [np.zeros((10, 20), dtype=np.uint8)] * 5
    sizes = [len(batch) for batch in iter_image_batches(images, 2)]
    assert sizes == [2, 2, 1]
    single = list(iter_image_batches(np.zeros((8, 8, 3), dtype=np.uint8), 4))
    assert len(single) == 1 and len(single[0]) == 1
    pixels = to_pixels([Image.new("RGB", (30, 10), (255, 255, 255))], 8, 3)
    assert pixels.shape == (1, 3, 8, 8) and torch.all(pixels == 1)
