"""Colour Fashion-MNIST: derived data for the small text-to-image model (captions with two label sets).

Each Fashion-MNIST image is padded from 28 to 32 px on its black background and its garment is
tinted with one colour of a named palette: the RGB pixel is the grey value times the colour, so
the garment keeps its shading and its grey image comes back exactly as the RGB maximum (every
palette colour has one channel at 255). Colours are seeded and balanced within every class, and
every image is captioned "a {colour} {class}". The class words are plain single words a tokenizer
can keep whole ("top" for Fashion-MNIST's "T-shirt/top", since "t-shirt" would split into "t",
"-" and the other class's "shirt"); "ankle boot" is two words. Derived from Fashion-MNIST (MIT,
Zalando); ``load_image_dataset("colour-fashion-mnist")`` builds it offline from Debian's
dataset-fashion-mnist.
"""

from __future__ import annotations

import datasets
import numpy as np

CLASS_WORDS = ["top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
# Saturated colours far apart in hue (degrees: 0, 30, 54, 120, 221, 278), each with a channel at 255.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "orange": (255, 128, 0),
    "yellow": (255, 230, 0),
    "green": (0, 255, 0),
    "blue": (0, 80, 255),
    "purple": (160, 0, 255),
}
COLOURS = list(PALETTE)
PROMPT_TEMPLATE = "a {colour} {class}"
RESOLUTION = 32
_SPLIT_SEEDS = {"train": 0, "test": 1}


def caption(colour: str, class_word: str) -> str:
    return PROMPT_TEMPLATE.format(**{"colour": colour, "class": class_word})


def balanced_colours(labels: np.ndarray, seed: int) -> np.ndarray:
    """A colour index per image: within each class, an equal share of every colour, in seeded order."""
    rng = np.random.default_rng(seed)
    colours = np.empty(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        colours[rng.permutation(members)] = np.arange(len(members)) % len(COLOURS)
    return colours


def tint(grey: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """[N, 28, 28] uint8 grey images and colour indices -> [N, 32, 32, 3] uint8 tinted images on black."""
    palette = np.array(list(PALETTE.values()), dtype=np.uint16)
    pad = (RESOLUTION - grey.shape[-1]) // 2
    padded = np.pad(grey, ((0, 0), (pad, pad), (pad, pad))).astype(np.uint16)
    return ((padded[..., None] * palette[colours][:, None, None, :] + 127) // 255).astype(np.uint8)


def colour_fashion_mnist(grey: datasets.Dataset, split: str, seed: int = 0) -> datasets.Dataset:
    """One split of Fashion-MNIST (``grey``: image, label) as image (32 px RGB), caption, class and
    colour (both ClassLabel); each split has its own colour draw."""
    labels = np.asarray(grey["label"], dtype=np.int64)
    images = np.stack([np.asarray(image) for image in grey["image"]])
    colours = balanced_colours(labels, seed * len(_SPLIT_SEEDS) + _SPLIT_SEEDS[split])
    features = datasets.Features({
        "image": datasets.Image(), "caption": datasets.Value("string"),
        "class": datasets.ClassLabel(names=CLASS_WORDS), "colour": datasets.ClassLabel(names=COLOURS),
    })
    captions = [caption(COLOURS[c], CLASS_WORDS[y]) for y, c in zip(labels, colours)]
    return datasets.Dataset.from_dict(
        {"image": list(tint(images, colours)), "caption": captions, "class": labels, "colour": colours}, features=features
    )
