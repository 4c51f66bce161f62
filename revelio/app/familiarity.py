"""Notes for uploads unlike the release's training data: features and classes then mean little.

An SAE explains images like its training data about as well as the release's held-out test
images; an upload it explains worse than all of them, a colour upload to a release of greyscale
images, or an image the probe hesitates on, gets a note saying what the release was trained on.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from revelio.app.state import AppState
from revelio.grid import Cell

UNSURE = 0.5  # a top class below one half: the probe hesitates (held-out images are mostly far above)


def greyscale_data(state: AppState) -> bool:
    """Whether every held-out image of the release is greyscale (its training data, then, too)."""
    return all(image.mode == "L" for image in state.reference_images()[0])


def trained_on(state: AppState) -> str:
    """What the release was trained on, in a phrase: its dataset and image size."""
    side = state.backbone.resolution
    colour = "greyscale " if greyscale_data(state) else ""
    return f"{state.release.info.dataset or 'its dataset'} ({side}×{side} px {colour}images)"


def colour_upload(state: AppState, image: Image.Image) -> bool:
    """A colour image sent to a release of greyscale images (the model sees it as grey)."""
    if image.mode == "L" or not greyscale_data(state):
        return False
    small = image.convert("RGB").resize((32, 32)).convert("HSV")  # more than a tint: mean saturation above 10%
    return float(np.asarray(small.getchannel("S")).mean()) / 255 > 0.1


def explore_note(state: AppState, cell: Cell, fvu: float, image: Image.Image) -> str:
    """Why this image's features may mean little here ("" when it looks like the training data)."""
    reasons = []
    held_out = state.held_out_fvu(cell)
    low, high = float(held_out.min()), float(held_out.max())
    if fvu > high:
        reasons.append(f"the SAE explains it worse than every held-out test image (FVU {fvu:.3f}; "
                       f"held-out images {low:.3f}–{high:.3f})")
    if colour_upload(state, image):
        reasons.append("it is in colour")
    return _note(state, reasons, "its features and their labels may mean little here")


def classify_note(state: AppState, top_probability: float, image: Image.Image) -> str:
    """Why these classes may mean little ("" when the probe is sure of an image like the training data)."""
    reasons = []
    if top_probability < UNSURE:
        reasons.append(f"the probe is unsure (its top class has {100 * top_probability:.0f}%)")
    if colour_upload(state, image):
        reasons.append("it is in colour")
    return _note(state, reasons, "the probe can only answer with its classes, however unlike them the image is")


def _note(state: AppState, reasons: list[str], consequence: str) -> str:
    if not reasons:
        return ""
    return (f"⚠️ **This image looks unlike the training data**: {' and '.join(reasons)}. This release was "
            f"trained on {trained_on(state)}; {consequence}.")
