"""What a feature draws (the feature view's picture): the change lands where the feature fires, the
picture comes back from the API and in a real browser, and a second look is free."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import revelio
from revelio.app.feature_icon import FeatureIcons, neutral_condition
from revelio.app.state import AppState
from tests.helpers import SCREENSHOTS


@pytest.fixture(scope="module")
def state() -> AppState:
    return AppState(revelio.load_release("bundled"))


def _inside_and_outside(icons: FeatureIcons, cell, feature: int) -> tuple[float, float]:
    """Mean pixel change where the feature's map is at least a quarter of its peak, and elsewhere."""
    moved = icons.icon(cell, feature).difference()
    where = icons.clamp_unit(cell, feature)
    where = torch.nn.functional.interpolate(where[None, None], size=tuple(moved.shape), mode="bilinear")[0, 0]
    inside = where > 0.25 * where.max()
    return float(moved[inside].mean()), float(moved[~inside].mean())


def test_a_pushed_feature_changes_the_image_where_it_fires(state):
    icons = FeatureIcons(state)
    cell = state.cell("up_blocks.1", 100, "none")
    for feature in state.stats(cell).purity.argsort(descending=True)[:3].tolist():
        inside, outside = _inside_and_outside(icons, cell, feature)
        assert inside > 3 * outside and inside > 1.0, (feature, inside, outside)


def test_pictures_are_cached_and_the_baseline_is_the_unedited_neutral_image(state):
    icons = FeatureIcons(state)
    cell = state.cell("mid_block", 100, "none")
    feature = int(state.stats(cell).purity.argmax())
    first = icons.icon(cell, feature)
    started = time.perf_counter()
    assert icons.icon(cell, feature) is first and time.perf_counter() - started < 0.05
    condition, words = neutral_condition(state)
    assert condition is None and "null class" in words  # the bundled model has a null class
    unedited = state.backbone.generate(None, seed=icons.seed, num_inference_steps=icons.steps, guidance_scale=1.0)[0]
    assert np.array_equal(np.asarray(first.baseline), np.asarray(unedited))


def test_a_pooled_sae_pushes_the_feature_by_value(state):
    icons = FeatureIcons(state)
    cell = state.cell("up_blocks.0", 600, "mean")
    feature = int(state.stats(cell).purity.argmax())
    assert icons.clamp_unit(cell, feature).ndim == 0
    assert float(icons.icon(cell, feature).difference().mean()) > 0


def test_the_picture_comes_back_from_the_api_and_bad_features_are_refused(app_url):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(app_url, verbose=False, download_files=False)
    pictures = client.predict("up_blocks.1", 100, "none", 36, api_name="/feature_icon")
    assert len(pictures) == 3 and all(p["image"] for p in pictures)
    assert "pushed up" in pictures[1]["caption"] and "where it changed: up to" in pictures[2]["caption"]
    with pytest.raises(AppError, match="pick a feature"):
        client.predict("up_blocks.1", 100, "none", None, api_name="/feature_icon")
    with pytest.raises(AppError, match="feature"):
        client.predict("up_blocks.1", 100, "none", 99999, api_name="/feature_icon")


@pytest.mark.browser
def test_a_user_draws_a_feature_in_the_browser(app_url, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    try:
        page.goto(app_url)
        page.wait_for_function("() => [...document.querySelectorAll('h3')].some(h => h.innerText.startsWith('#'))",
                               timeout=60_000)  # the first look picks the top feature and shows its details
        page.get_by_role("button", name="Draw what this feature adds").click()
        page.wait_for_function("() => document.querySelectorAll('.revelio-icon img').length >= 3", timeout=60_000)
        page.locator(".revelio-icon").scroll_into_view_if_needed()
        page.wait_for_timeout(800)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "feature-icon-in-use.png"))
        # another feature: the picture of the previous one goes
        page.locator(".virtual-body [role=row]:visible").nth(1).locator("[role=gridcell]").nth(1).click()
        page.wait_for_function("() => document.querySelectorAll('.revelio-icon img').length === 0", timeout=30_000)
    finally:
        page.close()
