"""Pictures and tables for the UI: heatmap overlays, samples at display size, plot data frames."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib import colormaps
from PIL import Image, ImageOps

from revelio.app.outputs import text_file

DISPLAY_SIDE = 256
# The most a sample is shown at: a 1024-pixel SDXL image is sent at half size (a quarter of the
# bytes), still sharper than the box it lands in.
LARGEST_SIDE = 512
PROBE_KINDS = ("Probe kinds: *linear* reads the block's activations averaged over the image; *diff-c* is the "
               "paper's small convolutional classifier on the activation map; *sae-linear* reads the pooled "
               "SAE's feature codes.")


def square_view(image: Image.Image, side: int = DISPLAY_SIDE) -> Image.Image:
    """The image as the model sees it (centre-cropped square), in colour, at display size."""
    return ImageOps.fit(image.convert("RGB"), (side, side), Image.Resampling.BICUBIC)


def display_side(resolution: int) -> int:
    """The side a model's samples are shown at: small ones enlarged to DISPLAY_SIDE, big ones at most LARGEST_SIDE."""
    return min(max(resolution, DISPLAY_SIDE), LARGEST_SIDE)


def to_display(image: Image.Image, side: int = DISPLAY_SIDE) -> Image.Image:
    """``image`` with its longer side near ``side``: small ones enlarged by a whole factor, nearest
    neighbour (a 28-pixel image stays crisp), big ones shrunk (browsers only shrink images to fit)."""
    longest = max(image.size)
    if longest > side:
        scale = side / longest
        return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.LANCZOS)
    factor = side // longest
    if factor < 2:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def heatmap_overlay(image: Image.Image, heatmap: torch.Tensor, peak: float, side: int = DISPLAY_SIDE) -> Image.Image:
    """``heatmap`` ([h, w], smoothly upsampled) over the image; colour scale 0..``peak`` (the feature's max)."""
    base = square_view(image, side)
    level = (heatmap.float() / max(peak, 1e-12)).clamp(0, 1).numpy().astype(np.float32)
    level = np.asarray(Image.fromarray(level).resize((side, side), Image.Resampling.BILINEAR))
    colours = colormaps["inferno"](level)[..., :3] * 255
    alpha = (0.25 + 0.6 * level)[..., None]
    blended = np.asarray(base, dtype=np.float32) * (1 - alpha) + colours * alpha
    return Image.fromarray(blended.clip(0, 255).astype(np.uint8))


def histogram_frame(counts: np.ndarray, edges: np.ndarray) -> pd.DataFrame:
    centres = (edges[:-1] + edges[1:]) / 2
    return pd.DataFrame({"activation": [f"{c:.2f}" for c in centres], "images": counts.astype(int)})


def timesteps_frame(points: list[tuple[int, float]]) -> pd.DataFrame:
    return pd.DataFrame({"timestep": [t for t, _ in points], "mean activation": [v for _, v in points]})


def frame_csv(frame: pd.DataFrame, name: str, first: tuple[str, ...] = ()) -> str:
    """A table as an immutable CSV file named ``name`` (for a download button), the columns that
    name a row (``first``) leading: metrics JSON stores its keys sorted, which would bury them."""
    leading = [c for c in first if c in frame.columns]
    frame = frame[leading + [c for c in frame.columns if c not in leading]]
    return text_file(frame.to_csv(index=False), name)


def table_csv(payload: Any, name: str = "top-features.csv") -> str | None:
    """The CSV of a table as the browser shows it (a Dataframe's raw value: headers and rows)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("headers"), list) or not isinstance(payload.get("data"), list):
        return None
    rows = [row for row in payload["data"] if isinstance(row, list)]
    if not rows or rows == [[""] * len(rows[0])]:  # the empty table Gradio shows before any result
        return None
    return frame_csv(pd.DataFrame(rows, columns=payload["headers"][: len(rows[0])]), name)
