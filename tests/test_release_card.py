"""A release's card says what its metrics say: steering and removal tables, rewritten from the files
alone (after a measurement is redone), and the bundled cards are up to date with their metrics."""

from __future__ import annotations

import shutil

import pytest

from revelio.bundled import bundled_release_dir
from revelio.formats.removal import REMOVAL, Removal
from revelio.layout import STEERING, metrics_file
from revelio.release.card import write_card
from revelio.release.load import Release
from revelio.storage.files import read_json, write_json


def _section(card: str) -> str:
    start = card.index("## Steering and concept removal")
    return card[start:card.index("## Files", start)]


@pytest.mark.parametrize("name", ["bundled", "bundled-text"])
def test_the_bundled_cards_show_their_steering_and_removal_metrics(name, tmp_path):
    folder = shutil.copytree(bundled_release_dir(name), tmp_path / "release")
    write_card(Release(folder), name)
    written = (folder / "README.md").read_text()
    assert _section(written) == _section((bundled_release_dir(name) / "README.md").read_text())  # committed card is current
    steering = read_json(metrics_file(folder, STEERING))
    for target, row in steering["per_class"].items():
        assert f"| {target} | {row['success']:.2f} | {row['baseline']:.2f} |" in written
    if metrics_file(folder, REMOVAL).is_file():
        removal = Removal.read(metrics_file(folder, REMOVAL))
        assert f"removes with **{removal.app_method}**" in written
        for method in removal.methods.values():
            assert f"**{method.mean_ua:.3f} / {method.mean_ira:.3f} /" in written


def test_a_redone_measurement_shows_in_the_rewritten_card(tmp_path):
    folder = shutil.copytree(bundled_release_dir("bundled"), tmp_path / "release")
    path = metrics_file(folder, STEERING)
    steering = read_json(path)
    steering["mean_success"] = 0.123456
    write_json(steering, path)
    metrics_file(folder, REMOVAL).unlink()
    write_card(Release(folder), str(folder))
    card = (folder / "README.md").read_text()
    assert "**mean success 0.123**" in card and "Concept removal" not in card
