"""Datasets for the train/ scripts: Fashion-MNIST from Debian's files, image folders, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from revelio.data.datasets import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    load_fashion_mnist,
    load_image_dataset,
)


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="needs Debian's dataset-fashion-mnist (make setup installs it)")
def test_fashion_mnist_from_debian_files():
    data = load_image_dataset("fashion-mnist", "test")
    assert len(data.dataset) == 10_000 and data.class_names == FASHION_MNIST_CLASSES
    assert (data.image_column, data.label_column) == ("image", "label")
    first = data.dataset[0]
    assert first["image"].size == (28, 28) and first["label"] == 9  # the test set opens with an ankle boot
    assert np.bincount(data.dataset["label"][:]).tolist() == [1000] * 10


def test_missing_fashion_mnist_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("train", root=tmp_path)
    with pytest.raises(ValueError, match="splits"):
        load_fashion_mnist("validation", root=tmp_path)


def test_image_folder_with_classes_and_column_errors(tmp_path):
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(3):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / label / f"{i}.png")
    data = load_image_dataset(str(tmp_path), limit=4)
    assert data.class_names == ["cat", "dog"] and len(data.dataset) == 4
    with pytest.raises(ValueError, match="no column 'picture'"):
        load_image_dataset(str(tmp_path), image_column="picture")
