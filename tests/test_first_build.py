"""A new user's first release: a flat folder of class folders, the smoke preset, first try; then the
folder is fixed in place and the same command rebuilds what the change affects, and says why."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import revelio
from revelio.data.datasets import load_image_dataset
from revelio.data.image_folders import LAYOUTS
from revelio.errors import DatasetError
from revelio.storage.files import read_safetensors
from tests import tiny_models
from tests.helpers import run

pytestmark = pytest.mark.build
CLASSES = ["circle", "square", "star"]


@pytest.fixture
def shapes(make_image_folder, tmp_path) -> Path:
    """3 classes of 30 images in one flat folder (a copy: the test moves images)."""
    folder = make_image_folder({"circle": 40, "square": 130, "star": 220}, per_class=30, seed=7)
    copy = tmp_path / "shapes"
    copy.mkdir()
    for image in folder.rglob("*.png"):
        (copy / image.parent.name).mkdir(exist_ok=True)
        (copy / image.parent.name / image.name).write_bytes(image.read_bytes())
    return copy


def _build(model: Path, dataset: Path, tmp: Path) -> str:
    return run(sys.executable, "train/build_release.py", "--model", str(model), "--dataset", str(dataset), "--preset", "smoke",
               "--hooks", "mid_block", "up_blocks.1", "--timesteps", "100", "--work", str(tmp / "work"),
               "--out", str(tmp / "release"), OMP_NUM_THREADS="1").stdout


def test_a_flat_class_folder_builds_first_try_and_a_fixed_folder_rebuilds_what_changed(shapes, tmp_path):
    model = tiny_models.build_pixel_unet(tmp_path / "model-src")
    first = _build(model, shapes, tmp_path)
    assert "--pooled-sae-batch-size 256 is more than the rows the pooled SAEs train on (72): using 72" in first
    release = revelio.load_release(tmp_path / "release")
    assert release.class_names == CLASSES and "seeded class-stratified split" in release.info.dataset_split
    assert release.info.num_train_images == 72 and release.info.num_test_images == 18, "30 per class, 20% of each to test"
    card = (tmp_path / "release" / "README.md").read_text()
    assert f'revelio.load_release("{(tmp_path / "release").as_posix()}")' in card, "the card loads what loads it"
    assert "revelio release: shapes" in card and release.info.dataset_name == "shapes", "named by the folder, not its path"

    next((shapes / "circle").iterdir()).rename(shapes / "square" / "moved.png")  # a mislabelled image, fixed in place
    second = _build(model, shapes, tmp_path)
    for cache in ("train", "test", "random-train", "random-test"):
        assert f"the {cache} cache was extracted with other inputs" in second, cache
    assert second.count('"retrained": "its cache was extracted again since"') == 4, "2 hooks x 1 timestep x 2 poolings"
    assert "finished earlier: reusing its output" not in second.split("train_probes.py")[1].split("\n")[1], "probes retrained"
    squares = sum(int((read_safetensors(tmp_path / "work" / "caches" / split / "labels.safetensors")["labels"] == 1).sum())
                  for split in ("train", "test"))
    assert squares == 31, "the caches hold the folder as it is now"


def test_an_image_folder_in_neither_layout_is_refused_naming_both(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no test/ one") as refused:
        load_image_dataset(str(tmp_path), "train")
    assert LAYOUTS in str(refused.value)
