"""Example images for the app: one held-out test image per class and two real photos."""

from __future__ import annotations

import tempfile
from pathlib import Path

from PIL import Image

from revelio.app.state import AppState


def example_files(state: AppState, folder: Path | None = None) -> list[str]:
    """PNG/JPEG files (Gradio examples are files): the first test image of each class, then photos."""
    folder = Path(folder or tempfile.mkdtemp(prefix="revelio-examples-"))
    images, labels = state.reference_images()
    names = state.class_names
    paths: list[str] = []
    for label in sorted(set(labels)):
        image = images[labels.index(label)]
        name = names[label] if label < len(names) else f"class-{label}"
        path = folder / f"{name.replace('/', '-').lower()}.png"
        image.save(path)
        paths.append(str(path))
    from sklearn.datasets import (
        load_sample_image,  # two photos shipped with scikit-learn
    )

    for photo in ("china.jpg", "flower.jpg"):
        path = folder / photo
        Image.fromarray(load_sample_image(photo)).save(path, quality=90)
        paths.append(str(path))
    return paths
