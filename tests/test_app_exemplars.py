"""The Steer tab reproduces the release's measured steering: three SAEs at once, each class's features
clamped to the maps of the held-out image the measurement chose for it, and its own feature count."""

from __future__ import annotations

import pytest
import torch

import revelio
from revelio.app.generation import GenerationService
from revelio.app.state import AppState
from revelio.app.steer_request import read_request, steering_defaults
from revelio.formats.metrics import Steering
from revelio.layout import STEERING
from revelio.steering.selection import ClassCodeMaps


@pytest.fixture(scope="module")
def state() -> AppState:
    return AppState(revelio.load_release("bundled"))


def test_the_tab_starts_from_the_measured_setting(state):
    measured = state.release.read_metrics(STEERING, Steering)
    defaults = steering_defaults(state)
    assert [defaults.cell, *defaults.also] == [state.cell(c.hook, c.timestep, "none") for c in measured.steered_cells]
    assert defaults.clamp_to == "exemplar" and defaults.strength == measured.strength
    assert dict(defaults.counts) == measured.class_features_per_class  # e.g. Sandal: 64
    rows = state.exemplar_rows()
    assert list(rows) == [measured.per_class[name].exemplar for name in state.class_names]


def test_exemplar_clamps_follow_the_chosen_image_and_mean_maps_do_not(state):
    target = state.class_names.index("Pullover")
    cell = steering_defaults(state).cell
    features = [int(f) for f in state.class_maps(cell).maps[target].sum(dim=(0, 1)).argsort(descending=True)[:4]]
    service = GenerationService(state)
    clamps = {}
    for mode in ("exemplar", "class-map"):
        request = read_request(state, 0, 0, 10, 2.0, cell.hook, cell.timestep, "none", features, mode, target, 2.0, 999, 0)
        clamps[mode] = service.clamp(request)
    row = state.exemplar_rows()[target]
    tokens = state.held_out_tokens(cell.hook, cell.timestep)[[row]]
    own = ClassCodeMaps.from_tokens(state.sae(cell), tokens, [0], 1)
    for f in features:
        assert torch.allclose(clamps["exemplar"][f], 2.0 * own.map(0, f))
    assert any(not torch.allclose(clamps["exemplar"][f], clamps["class-map"][f]) for f in features)


def test_exemplars_need_a_measurement_that_chose_them(state):
    text = AppState(revelio.load_release("bundled-text"))
    assert text.exemplar_rows() is None
    cell = steering_defaults(text).cell
    with pytest.raises(ValueError, match="chose no exemplar images"):
        text.exemplar_maps(cell)
    with pytest.raises(ValueError, match="needs a spatial SAE"):
        read_request(state, 0, 0, 10, 2.0, "mid_block", 100, "mean", [1], "exemplar", 1, 2.0, 999, 0)
