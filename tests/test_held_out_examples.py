"""The held-out examples are written once: a rebuild with the same settings leaves the file (and
its time, which the steering stage's done-check compares against) alone, and a change rewrites it."""

from __future__ import annotations

from revelio.layout import HELD_OUT_FILE
from revelio.release.exemplars import write_held_out_examples
from revelio.storage.files import read_safetensors


def test_a_rebuild_keeps_the_held_out_examples_and_a_change_rewrites_them(make_image_folder, tmp_path):
    images = make_image_folder({"dark": 40.0, "light": 200.0}, {"train": 2, "test": 4})
    write_held_out_examples(tmp_path, str(images), "test", None, "label", 2, 16)
    path = tmp_path / HELD_OUT_FILE
    written = path.stat().st_mtime_ns
    assert write_held_out_examples(tmp_path, str(images), "test", None, "label", 2, 16) == 4
    assert path.stat().st_mtime_ns == written
    assert write_held_out_examples(tmp_path, str(images), "test", None, "label", 3, 16) == 6
    assert path.stat().st_mtime_ns != written and len(read_safetensors(path)["labels"]) == 6
