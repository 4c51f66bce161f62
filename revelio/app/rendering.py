"""Pictures and tables for the UI: heatmap overlays, enlarged samples, plot data frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from matplotlib import colormaps
from PIL import Image, ImageOps

DISPLAY_SIDE = 256


def square_view(image: Image.Image, side: int = DISPLAY_SIDE) -> Image.Image:
    """The image as the model sees it (centre-cropped square), in colour, at display size."""
    return ImageOps.fit(image.convert("RGB"), (side, side), Image.Resampling.BICUBIC)


def enlarge(image: Image.Image, side: int = DISPLAY_SIDE) -> Image.Image:
    """Nearest-neighbour enlargement so 28-pixel images stay crisp on screen."""
    if image.width >= side:
        return image
    return image.resize((side, side * image.height // image.width), Image.Resampling.NEAREST)


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
