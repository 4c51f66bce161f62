"""The app in a real browser (Playwright driving the system chromium), used as people use it.

Explore: clicking examples explores them, and the bar chart always shows the table's features;
clicking a table row shows that feature. Steer: Generate at the defaults turns the baseline into
the target class, a mask painted on the baseline keeps the change inside it, progress shows per
denoising step, switching to the pooled SAE switches the clamp mode, an error leaves the last
result in place, and several SAEs steer at once. Remove: a concept picked and removed, before and
after with the probe's reading of each. Atlas: search, row clicks, CSV download.
The screenshots land in artifacts/screenshots/*-in-use.png (docs/screenshots come from them).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.helpers import SCREENSHOTS

try:
    import playwright.sync_api as playwright_api
except ImportError:  # conftest.py's `browser` fixture skips then (fails under REVELIO_REQUIRE_BROWSER=1)
    playwright_api = None

pytestmark = pytest.mark.browser  # app_url, browser: conftest.py

BARS = r"""() => {
  const block = [...document.querySelectorAll('.block')].find(e => e.querySelector('svg.marks')
      && e.querySelector('[data-testid=block-info]')?.innerText.startsWith('Top features'));
  const axis = block && block.querySelector('g.role-axis[aria-label^="X-axis"]');
  // left to right on screen: Vega keeps a label's node when it moves, so DOM order is not bar order
  return axis ? [...axis.querySelectorAll('g.role-axis-label text')].map(t => [t.getBoundingClientRect().x, t.textContent])
      .sort((a, b) => a[0] - b[0]).map(p => p[1]) : []; }"""
# the chart names a feature as the table does, a mixed one without its classes (long axis labels are cut)
SHORT = "(rows) => rows.map(r => `#${r[0]} ${r[1].startsWith('mixed') ? 'mixed' : r[1]}`)"
TABLE = r"""(label) => {
  const block = [...document.querySelectorAll('.block')].find(e => e.offsetParent && e.innerText.includes(label)
      && e.querySelector('.virtual-body'));
  return block ? [...block.querySelectorAll('.virtual-body [role=row]')].map(r =>
      [...r.querySelectorAll('[role=gridcell]')].map(c => c.innerText.trim())) : []; }"""
IMAGE_SRC = r"""(label) => {
  const block = [...document.querySelectorAll('.block')].find(e => e.offsetParent
      && e.querySelector('[data-testid=block-label]')?.innerText.trim() === label);
  const img = block && block.querySelector('img');
  return img && img.naturalWidth > 0 ? img.src : null; }"""

PROBE_LABEL = r"""(label) => {
  const block = [...document.querySelectorAll('.block')].find(e => e.offsetParent
      && e.querySelector('[data-testid=block-label]')?.innerText.trim() === label);
  const top = block && block.querySelector('[data-testid=label-output-value]');
  return top ? top.innerText.trim() : null; }"""


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    yield page
    page.close()


def choose(page, label: str, value) -> None:
    """Pick ``value`` in the visible dropdown labelled ``label`` (a label may hold an apostrophe)."""
    box = page.locator(f'input[aria-label="{label}"]:visible')
    box.click()
    box.fill(str(value))
    page.wait_for_timeout(300)
    box.press("Enter")
    page.wait_for_timeout(500)


def screenshot(page, name: str, top: str | None = None) -> None:
    """A 1280 x 1400 picture of the page (from the element with text ``top`` if given), images loaded."""
    page.set_viewport_size({"width": 1280, "height": 1400})
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")  # lazy images load
    page.wait_for_timeout(800)
    page.evaluate("window.scrollTo(0, 0)")
    if top:
        page.get_by_text(top, exact=True).first.evaluate("e => e.scrollIntoView()")
    page.wait_for_timeout(800)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}-in-use.png"))


def clear(page, label: str) -> None:
    """Empty the visible multiselect dropdown labelled ``label`` (its clear button)."""
    block = page.locator(".block", has=page.locator(f'input[aria-label="{label}"]:visible')).last
    if block.locator(".remove-all").count():
        block.locator(".remove-all").first.click()
        page.wait_for_timeout(500)


ALSO = "Also steer at (further SAEs of the same kind)"


def fetch_image(page, url: str) -> np.ndarray:
    response = page.request.get(url)
    assert response.ok, url
    return np.asarray(Image.open(io.BytesIO(response.body())).convert("L"), dtype=np.float32)


def test_clicked_examples_are_explored_and_the_chart_shows_the_tables_features(app_url, page):
    page.goto(app_url)
    page.wait_for_function(f"() => ({BARS})().length > 0", timeout=60_000)  # the first look, on load
    examples = page.locator("button.gallery-item:visible")
    assert examples.count() >= 10
    previous = page.evaluate(TABLE, "click a row")
    for index in (1, 7, 8, 5, 3):  # trouser, sneaker, bag, sandal, dress: each a new answer
        examples.nth(index).click()  # no Explore click: the example runs on its own
        # a new table, and the chart (redrawn after it, slowly on a busy machine) naming the same features in order
        settled = (f"(old) => {{ const table = ({TABLE})('click a row'); return JSON.stringify(table) !== JSON.stringify(old)"
                   f" && JSON.stringify(({BARS})()) === JSON.stringify(({SHORT})(table)); }}")
        try:
            page.wait_for_function(settled, arg=previous, timeout=30_000)
        except playwright_api.TimeoutError:
            pass
        table = page.evaluate(TABLE, "click a row")
        assert table != previous, index
        assert page.evaluate(BARS) == page.evaluate(SHORT, table), index
        previous = table
    examples.nth(1).click()  # the trousers again, then a row: its feature's details
    page.wait_for_timeout(2500)
    rows = page.locator(".virtual-body [role=row]:visible")
    third = page.evaluate(TABLE, "click a row")[2][0]
    rows.nth(2).locator("[role=gridcell]").nth(1).click()
    page.wait_for_function(f"() => [...document.querySelectorAll('h3')].some(h => h.innerText.startsWith('#{third} '))",
                           timeout=30_000)
    screenshot(page, "explore")


def test_generate_at_the_defaults_steers_to_the_target_class(app_url, page):
    page.goto(app_url + "?tab=steer")
    page.wait_for_timeout(3000)  # the suggested features (for Trouser) are there on load
    page.get_by_role("button", name="Generate").click()
    page.wait_for_function(f"() => ({IMAGE_SRC})('Steered') !== null", timeout=60_000)
    page.wait_for_timeout(1000)
    baseline, steered = (page.evaluate(PROBE_LABEL, f"Probe on the {image}") for image in ("baseline", "steered image"))
    assert baseline != "Trouser" and steered == "Trouser", (baseline, steered)
    screenshot(page, "steer")


def test_a_painted_mask_keeps_the_steering_inside_it(app_url, page):
    page.goto(app_url + "?tab=steer")
    page.wait_for_timeout(3000)
    choose(page, "Block", "up_blocks.0")
    choose(page, "Timestep", "600")
    clear(page, ALSO)  # one SAE: masks keep the change local at up_blocks.0 only
    page.get_by_role("button", name="Suggest features").click()
    page.wait_for_timeout(1500)
    page.get_by_role("button", name="Generate").click()
    page.wait_for_function(f"() => ({IMAGE_SRC})('Steered') !== null", timeout=60_000)
    page.wait_for_timeout(1000)  # the baseline becomes the painter's background
    painter = page.locator(".revelio-mask canvas").first
    painter.scroll_into_view_if_needed()
    box = painter.bounding_box()
    zoom = float(page.locator(".revelio-mask").get_by_text("%").first.inner_text().strip("% ")) / 100
    side = 256 * zoom  # the canvas (256 px, the baseline's display size) as shown, centred
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    y = cy - side / 2 + 4
    while y < cy + side / 2:  # the left half, painted in rows from the centre line out
        page.mouse.move(cx - 8, y)
        page.mouse.down()
        page.mouse.move(cx - side / 2 + 2, y, steps=2)
        page.mouse.up()
        y += 0.08 * side  # rows closer than the brush is wide (its radius: side / 12)
    page.get_by_role("button", name="Generate").click()
    page.wait_for_function("() => document.body.innerText.includes('inside the painted mask')", timeout=60_000)
    page.wait_for_timeout(1000)
    painted = float(page.get_by_text("inside the painted mask").inner_text().split("mask (")[1].split("%")[0])
    assert 40 <= painted <= 65, painted  # the left half, and a little past the middle
    baseline = fetch_image(page, page.evaluate(IMAGE_SRC, "Baseline (same seed, nothing clamped)"))
    steered = fetch_image(page, page.evaluate(IMAGE_SRC, "Steered"))
    change = np.abs(baseline - steered)
    width = change.shape[1]
    inside, outside = change[:, : int(0.4 * width)].mean(), change[:, int(0.65 * width):].mean()
    assert inside > 3 * outside and inside > 5, (inside, outside)
    screenshot(page, "steer-mask")


def test_steer_shows_progress_switches_modes_and_keeps_results_on_errors(app_url, page):
    page.goto(app_url + "?tab=steer")
    page.wait_for_timeout(3000)
    page.get_by_text("Sampling: seed, steps, guidance").click()
    steps = page.locator("input[aria-label='number input for Denoising steps']")
    steps.fill("100")
    steps.press("Enter")
    page.wait_for_function("steps => steps.value === '100'", arg=steps.element_handle())
    seed = page.locator("input[aria-label^='Seed']:visible")
    seed.fill("4321")
    seed.press("Tab")
    # every "done/total steps" text the status line shows while the baseline and the steered image
    # run, recorded by the page itself (polling from here misses most of them when generation is
    # fast); the whole page is watched, since Gradio may re-render the status block
    page.evaluate("""() => {
        window.revelioSteps = new Set();
        new MutationObserver(() => {
            const status = document.querySelector('.block.revelio-status');
            const found = status && status.innerText.match(/(\\d+)\\/(\\d+) steps/);
            if (found) window.revelioSteps.add(found[1] + '/' + found[2]);
        }).observe(document.body, {subtree: true, childList: true, characterData: true});
    }""")
    page.get_by_role("button", name="Generate").click()
    page.wait_for_function(f"() => ({IMAGE_SRC})('Steered') !== null && ({IMAGE_SRC})('Baseline (same seed, nothing "
                           "clamped)') !== null", timeout=60_000)
    seen = page.evaluate("() => [...window.revelioSteps]")
    assert len(seen) >= 3 and all(text.endswith("/200") for text in seen), seen  # 100 steps, twice
    before = (page.evaluate(IMAGE_SRC, "Baseline (same seed, nothing clamped)"), page.evaluate(IMAGE_SRC, "Steered"))

    page.locator("label:visible", has_text="pooled (one code per image)").click()  # a pooled SAE has no class maps
    clamp_modes = ("() => [...document.querySelectorAll('input[type=radio][name]')].filter(e => e.offsetParent !== null && "
                   "e.closest('.block').innerText.includes('Clamp each feature to')).map(e => [e.value, e.checked])")
    page.wait_for_function(f"() => JSON.stringify(({clamp_modes})()) === JSON.stringify([['value', true]])", timeout=15_000)
    assert not page.locator(".revelio-mask").is_visible()

    low = page.locator("input[aria-label^='number input for down to t']")
    low.fill("500")
    low.press("Enter")
    high = page.locator("input[aria-label^='number input for Steer from t']")
    high.fill("100")  # below "down to t": an error
    high.press("Enter")
    page.get_by_role("button", name="Suggest features").click()
    page.wait_for_timeout(1500)
    page.get_by_role("button", name="Generate").click()
    page.wait_for_function("() => document.body.innerText.includes('the window runs from t high down to t low')",
                           timeout=30_000)
    assert (page.evaluate(IMAGE_SRC, "Baseline (same seed, nothing clamped)"), page.evaluate(IMAGE_SRC, "Steered")) == before
    for label in ("Baseline (same seed, nothing clamped)", "Steered"):  # no error overlay over the last result
        block = page.locator(".block", has=page.locator(f"[data-testid=block-label]:text-is('{label}')"))
        assert not block.locator(".error").is_visible()


def test_the_atlas_searches_clicks_and_downloads(app_url, page):
    page.goto(app_url + "?tab=atlas")
    page.wait_for_timeout(3000)
    listed = page.evaluate(TABLE, "Features by purity")
    assert len(listed) >= 15  # listed before any click (the table draws the rows in view)
    search = page.get_by_placeholder("e.g. Trouser, or 36")
    search.fill("Trouser")
    search.press("Enter")
    page.wait_for_function(f"() => ({TABLE})('Features by purity').every(r => r[1].includes('Trouser'))", timeout=30_000)
    rows = page.evaluate(TABLE, "Features by purity")
    page.wait_for_timeout(1000)  # the list's CSV follows the list
    with page.expect_download() as download:
        page.get_by_text("Download this list (CSV)").click()
    lines = download.value.path().read_text().splitlines()
    assert lines[0] == "feature,label,purity,image frequency,max activation"
    assert all("Trouser" in line for line in lines[1:]) and [line.split(",")[0] for line in lines[1:len(rows) + 1]] == [
        row[0] for row in rows]
    table = page.locator(".block", has_text="Features by purity")
    table.locator(".virtual-body [role=row]").nth(1).locator("[role=gridcell]").nth(1).click()
    page.wait_for_function(f"() => [...document.querySelectorAll('h3')].some(h => h.offsetParent && "
                           f"h.innerText.startsWith('#{rows[1][0]} '))", timeout=30_000)
    with page.expect_download() as grid:
        page.get_by_text("Download the probe grid (CSV)").click()
    assert grid.value.path().read_text().startswith("features,probe,hook,timestep,test_accuracy")
    screenshot(page, "atlas", top="Feature browser")


def test_a_clicked_example_is_classified(app_url, page):
    page.goto(app_url + "?tab=classify")
    page.wait_for_timeout(3000)
    page.locator("button.gallery-item:visible").nth(1).click()  # the trousers
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=label-output-value]')]"
                           ".some(e => e.offsetParent && e.innerText.includes('Trouser'))", timeout=30_000)
    screenshot(page, "classify")


H3_STARTS = "(prefix) => [...document.querySelectorAll('h3')].some(h => h.offsetParent && h.innerText.startsWith(prefix))"


def test_every_explore_control_reruns_it_for_the_image_on_screen(app_url, page):
    page.goto(app_url)
    page.wait_for_function(f"() => ({BARS})().length > 0", timeout=60_000)
    previous = page.evaluate(TABLE, "click a row")
    for label, value in (("Block", "mid_block"), ("Timestep", "300"), ("SAE", "pooled (one code per image)")):
        if label == "SAE":
            page.locator("label:visible", has_text=value).first.click()
        else:
            choose(page, label, value)
        # a new table for the new SAE, the chart naming its features, and the panel showing its first one
        settled = (f"(old) => {{ const table = ({TABLE})('click a row'); return table.length > 0 && "
                   f"JSON.stringify(table) !== JSON.stringify(old) && "
                   f"JSON.stringify(({BARS})()) === JSON.stringify(({SHORT})(table)) && "
                   f"({H3_STARTS})(`#${{table[0][0]}} `); }}")
        page.wait_for_function(settled, arg=previous, timeout=60_000)
        previous = page.evaluate(TABLE, "click a row")
    assert page.get_by_text("No heatmaps with the pooled SAE").is_visible()
    page.locator(".revelio-input:visible button[aria-label='Remove Image']").first.click()  # no image any more
    choose(page, "Block", "up_blocks.0")
    page.wait_for_function("() => document.body.innerText.includes('Pick an image (upload one, or click an example) "
                           "to explore this SAE.')", timeout=30_000)
    page.wait_for_function(f"() => ({TABLE})('click a row').length === 0 && ({BARS})().length === 0", timeout=30_000)
    page.wait_for_function("() => document.body.innerText.includes('Pick a feature of the SAE up_blocks.0')", timeout=30_000)
    screenshot(page, "explore-no-image")


def test_an_upload_unlike_the_training_data_gets_a_note(app_url, page, tmp_path):
    page.goto(app_url)
    page.wait_for_function(f"() => ({BARS})().length > 0", timeout=60_000)
    jeans = Image.new("RGB", (200, 300), (230, 215, 180))
    jeans.paste((40, 60, 140), (60, 20, 140, 290))
    jeans.save(tmp_path / "jeans.png")
    page.locator(".revelio-input input[type=file]").first.set_input_files(str(tmp_path / "jeans.png"))
    page.wait_for_function("() => document.body.innerText.includes('looks unlike the training data')", timeout=60_000)
    assert page.get_by_text("fashion-mnist (28×28 px greyscale images)").first.is_visible()
    screenshot(page, "explore-unlike")


def test_classify_reruns_for_each_probe_and_cell(app_url, page):
    page.goto(app_url + "?tab=classify")
    page.wait_for_timeout(3000)
    page.locator("button.gallery-item:visible").nth(1).click()  # the trousers
    read = ("() => [...document.querySelectorAll('.block')].filter(e => e.offsetParent && "
            "e.querySelector('[data-testid=label-output-value]')).map(e => e.innerText).join('|')")
    page.wait_for_function(f"() => ({read})().includes('Trouser')", timeout=30_000)
    seen = {page.evaluate(read)}
    for label, value in (("Probe", "linear"), ("Probe", "sae-linear"), ("Block", "mid_block"), ("Timestep", "600")):
        before = page.evaluate(read)
        choose(page, label, value)
        page.wait_for_function(f"(old) => {{ const now = ({read})(); return now && now !== old; }}", arg=before, timeout=30_000)
        seen.add(page.evaluate(read))
    assert len(seen) == 5  # each control gave a new answer for the same image
    page.locator(".revelio-input:visible button[aria-label='Remove Image']").first.click()
    choose(page, "Probe", "diff-c")
    page.wait_for_function("() => document.body.innerText.includes('Pick an image (upload one, or click an example) "
                           "to classify it.')", timeout=30_000)
    assert not page.evaluate(read).strip() or "Trouser" not in page.evaluate(read)


def test_steer_says_what_will_not_steer_before_generate(app_url, page):
    page.goto(app_url + "?tab=steer")
    page.wait_for_timeout(3000)
    import revelio

    default_block = revelio.load_release("bundled").metrics("steering")["cells"][0].split(":")[0]  # the measured one
    advice = page.locator(".block.revelio-advice")
    assert f"will not keep the change inside it at {default_block}" in advice.inner_text()  # not up_blocks.0
    page.get_by_text("Why these features").click()
    page.wait_for_function("() => document.body.innerText.includes('on Trouser maps')", timeout=10_000)
    page.locator("label:visible", has_text="pooled (one code per image)").click()
    page.wait_for_function("() => document.querySelector('.revelio-advice').innerText.includes('pooled SAE will not steer')",
                           timeout=10_000)
    page.locator("label:visible", has_text="spatial (one code per location)").click()
    choose(page, "Block", "up_blocks.0")
    page.wait_for_function("() => document.querySelector('.revelio-advice').innerText.includes('Constant clamps')",
                           timeout=10_000)  # the pooled SAE switched the clamp to a value, which stays
    page.locator("label:visible", has_text="the target class's mean map").click()
    page.wait_for_function("() => !document.querySelector('.revelio-advice').innerText.trim()", timeout=10_000)
    # the progress shows on its own line: the help text under Generate stays readable while it runs
    page.get_by_role("button", name="Suggest features").click()
    page.wait_for_timeout(1500)
    page.get_by_role("button", name="Generate").click()
    page.wait_for_function("() => /\\d+\\/\\d+ steps/.test(document.querySelector('.block.revelio-status').innerText)",
                           timeout=30_000)
    help_box = page.get_by_text("Generates the baseline (same seed").bounding_box()
    overlays = page.locator(".wrap.default, .wrap.center").evaluate_all(
        "els => els.filter(e => e.offsetParent).map(e => e.getBoundingClientRect().toJSON())")
    for box in overlays:
        assert box["y"] >= help_box["y"] + help_box["height"] or box["y"] + box["height"] <= help_box["y"] or \
            box["x"] >= help_box["x"] + help_box["width"] or box["x"] + box["width"] <= help_box["x"], (box, help_box)
    screenshot(page, "steer-progress")
    page.wait_for_function(f"() => ({IMAGE_SRC})('Steered') !== null", timeout=60_000)


def test_atlas_tables_show_every_column_and_a_search_without_match_says_so(app_url, page):
    page.goto(app_url + "?tab=atlas")
    page.wait_for_timeout(3000)
    # every column's header ends inside its table's box: none is cut off or scrolled out of sight
    cut = page.evaluate("""() => [...document.querySelectorAll('.block.revelio-grid-table')].filter(e => e.offsetParent).map(e => {
        const headers = [...e.querySelectorAll('[role=columnheader], th')].filter(h => h.offsetParent);
        const last = headers[headers.length - 1];
        return [headers.length, last.getBoundingClientRect().right - e.getBoundingClientRect().right]; })""")
    assert len(cut) == 7 and all(count >= 5 and overflow <= 1 for count, overflow in cut), cut  # probes, SAE error, purity
    screenshot(page, "atlas-grids")
    search = page.get_by_placeholder("e.g. Trouser, or 36")
    search.fill("zebra")
    search.press("Enter")
    page.wait_for_function("() => document.body.innerText.includes(\"has a label containing 'zebra'\")", timeout=30_000)
    assert not page.locator(".block", has_text="Features by purity").first.is_visible()
    search.fill("mixed")
    search.press("Enter")
    page.wait_for_function(f"() => ({TABLE})('Features by purity').length > 0", timeout=30_000)
    assert all(row[1].startswith("mixed: ") for row in page.evaluate(TABLE, "Features by purity"))
    screenshot(page, "atlas-search", top="Feature browser")



def test_remove_a_concept_shows_before_after_and_the_probe(app_url, page):
    page.goto(app_url + "?tab=steer")
    page.wait_for_timeout(3000)
    page.get_by_role("tab", name="Remove a concept").click()  # Steer's second mode
    choose(page, "Generate class (the model's own classes)", "Trouser")
    choose(page, "Concept to remove", "Trouser")
    page.get_by_text("Seed, sampler steps and guidance").click()
    seed = page.locator("input[aria-label^='Seed for removal']:visible")
    seed.fill("1")
    seed.press("Tab")
    page.get_by_role("button", name="Remove", exact=True).click()
    # the first removal prepares it (about 12 s on one CPU thread), then generates twice
    page.wait_for_function(f"() => ({IMAGE_SRC})('After (concept removed)') !== null", timeout=180_000)
    page.wait_for_timeout(1000)
    before, after = (page.evaluate(PROBE_LABEL, label) for label in ("Probe before", "Probe after"))
    assert before == "Trouser" and after not in (None, "Trouser"), (before, after)
    change = np.abs(fetch_image(page, page.evaluate(IMAGE_SRC, "Before (nothing removed)"))
                    - fetch_image(page, page.evaluate(IMAGE_SRC, "After (concept removed)"))).mean()
    assert change > 5, change
    text = page.locator(".block.revelio-remove-note").inner_text()
    assert "Removed Trouser with " in text and "metrics/removal.json" in text and "at t=951" in text, text
    screenshot(page, "remove")
    page.goto(app_url + "?tab=remove")  # a link opens the mode directly
    page.wait_for_function("() => [...document.querySelectorAll('input[aria-label=\"Concept to remove\"]')]"
                           ".some(e => e.offsetParent)", timeout=30_000)


def test_steering_at_several_saes_at_once(app_url, page):
    import revelio

    page.goto(app_url + "?tab=steer")
    page.wait_for_timeout(3000)
    # the page starts with the measured cells (the first is the main SAE); three SAEs in all, added here if fewer
    cells = list(dict.fromkeys(revelio.load_release("bundled").metrics("steering")["cells"]))
    for spec in ("mid_block:100", "up_blocks.0:100", "up_blocks.1:100"):
        if len(cells) < 3 and spec not in cells:
            choose(page, ALSO, spec.replace(":", " at t="))
            cells.append(spec)
    page.get_by_role("button", name="Generate").click()
    page.wait_for_function(f"() => document.body.innerText.includes('Steered at {len(cells)} SAEs at once')", timeout=120_000)
    page.wait_for_timeout(1000)
    text = page.locator("body").inner_text()
    for spec in cells:
        assert f"Clamped at {spec.replace(':', ' at t=')}" in text, spec
    baseline, steered = (page.evaluate(PROBE_LABEL, f"Probe on the {image}") for image in ("baseline", "steered image"))
    assert baseline != "Trouser" and steered == "Trouser", (baseline, steered)
    screenshot(page, "steer-several", top="Probe on the baseline")
