"""The Gradio app on the bundled release, driven like users drive it: gradio_client and a real browser."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from revelio.app.uploads import MAX_UPLOAD_BYTES  # noqa: E402

SCREENSHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
TABS = ("explore", "steer", "classify", "atlas")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(release: str, port: int):
    """The app on ``release``, served in this process on 127.0.0.1:``port``; close() stops it."""
    from revelio.app import create_demo

    demo = create_demo(release)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, max_file_size=MAX_UPLOAD_BYTES, quiet=True)
    return demo


@pytest.fixture(scope="module")
def app_url():
    port = _free_port()
    demo = start_app("bundled", port)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False, download_files=False)


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    """One held-out test image per class, as PNG files named by class."""
    import revelio

    release = revelio.load_release("bundled")
    images, labels = release.held_out_examples()
    folder = tmp_path_factory.mktemp("examples")
    found = {}
    for label, name in enumerate(release.class_names):
        path = folder / f"{label}.png"
        images[labels.index(label)].save(path)
        found[name] = path
    return found


def _save(image: Image.Image, name: str, **kwargs) -> str:
    path = Path(tempfile.mkdtemp()) / name
    image.save(path, **kwargs)
    return str(path)


def _confidences(label_output: dict) -> dict[str, float]:
    return {c["label"]: c["confidence"] for c in label_output["confidences"]}


def test_every_named_endpoint_is_listed(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/explore", "/feature", "/suggest_features", "/steer", "/classify", "/features"} <= set(endpoints)


def test_classify_puts_an_examples_class_on_top(client, examples):
    correct = 0
    for name in ("Trouser", "Dress", "Sneaker", "Bag"):
        result = client.predict(handle_file(examples[name]), "mid_block", 100, "diff-c", api_name="/classify")
        confidences = _confidences(result)
        assert len(confidences) == 5 and abs(sum(confidences.values()) - 1) < 0.3
        correct += result["label"] == name
    assert correct == 4
    # another cell and probe kind work too
    result = client.predict(handle_file(examples["Trouser"]), "up_blocks.0", 25, "linear", api_name="/classify")
    assert result["label"] == "Trouser"


def test_explore_finds_the_class_features_and_where_they_fire(client, examples):
    fvu, bars, table, heatmaps, feature = client.predict(handle_file(examples["Trouser"]), "mid_block", 100, "none", api_name="/explore")
    rows = table["data"]
    assert len(rows) == 8 and len(bars["value"]["data"]) == 8 and len(heatmaps) == 8
    activations = [row[2] for row in rows]
    assert activations == sorted(activations, reverse=True) and activations[-1] > 0
    assert sum("Trouser" in row[1] for row in rows) >= 5  # automatic labels agree with the image
    assert 0 < fvu < 0.6  # the SAE explains most of this image's activations
    assert feature["value"] == rows[0][0]
    # a pooled SAE: top features but no heatmaps (one code per image has no "where")
    _, _, pooled_table, pooled_heatmaps, _ = client.predict(handle_file(examples["Bag"]), "up_blocks.0", 300, "mean", api_name="/explore")
    assert len(pooled_table["data"]) >= 3 and pooled_heatmaps == []


def test_feature_view_shows_exemplars_histogram_and_timesteps(client):
    summary, exemplars, histogram, over_time = client.predict("mid_block", 100, "none", 36, api_name="/feature")
    assert summary.startswith("### #36") and "held-out test images" in summary
    fires = int(summary.split("Fires on **")[1].split(" of")[0])
    assert fires > 0 and sum(count for _, count in histogram["data"]) == fires
    assert len(exemplars) == 16
    assert [t for t, _ in over_time["data"]] == [25, 100, 300, 600]


def test_a_cleared_feature_choice_leaves_the_view_as_it_was(client):
    # changing block or timestep clears the feature dropdown, whose change event then sends None
    assert client.predict("up_blocks.0", 300, "none", None, api_name="/feature") is not None


def test_feature_list_is_sorted_by_purity(client):
    table = client.predict("up_blocks.0", 600, "mean", api_name="/features")
    purities = [row[2] for row in table["data"]]
    assert len(purities) > 10 and purities == sorted(purities, reverse=True)


def test_ablating_a_class_features_lowers_that_class_probability(client):
    # cells where the bundled model's class features matter most (measured: see the README's app section)
    for hook, timestep, class_id, name in (("up_blocks.1", 600, 4, "Coat"), ("up_blocks.1", 100, 9, "Ankle boot"),
                                           ("up_blocks.0", 100, 8, "Bag")):
        features = client.predict(hook, timestep, "none", class_id, 8, api_name="/suggest_features")
        assert 0 < len(features) <= 8
        baseline, steered, before, after, note = client.predict(
            class_id, 0, 25, 2.5, hook, timestep, "none", features, "value", class_id, 0, 999, 0, api_name="/steer")
        assert baseline["path"] != steered["path"] and "→ 0" in note
        assert _confidences(after)[name] < _confidences(before)[name] - 0.05, (hook, timestep, name)


def test_clamping_to_a_class_map_steers_towards_that_class(client):
    for source, target, name in ((5, 1, "Trouser"), (8, 4, "Coat")):
        features = client.predict("up_blocks.1", 100, "none", target, 16, api_name="/suggest_features")
        _, _, before, after, note = client.predict(
            source, 0, 25, 2.5, "up_blocks.1", 100, "none", features, "class-map", target, 2, 999, 0, api_name="/steer")
        assert f"2 × its {name} map" in note
        assert _confidences(after)[name] > _confidences(before)[name] + 0.2, name


def test_steering_nothing_moves_keeps_the_baseline(client):
    # a window no sampling step reaches: the steered image is the baseline, same seed
    features = client.predict("mid_block", 100, "none", 1, 4, api_name="/suggest_features")
    _, _, before, after, _ = client.predict(1, 3, 10, 2.5, "mid_block", 100, "none", features, "value", 1, 5, 1, 0, api_name="/steer")
    assert _confidences(before) == pytest.approx(_confidences(after), abs=1e-6)


@pytest.mark.parametrize("name, make, message", [
    ("notes.txt", lambda p: p.write_text("not an image"), "not an image"),
    ("empty.png", lambda p: p.write_bytes(b""), "not an image"),
    ("truncated.png", lambda p: p.write_bytes(_png_bytes(Image.new("RGB", (64, 64), "red"))[:60]), "could not read"),
    ("huge.png", lambda p: Image.new("L", (5000, 4000)).save(p), "downscale"),
])
def test_bad_uploads_get_a_message_and_the_app_keeps_serving(client, examples, tmp_path, name, make, message):
    path = tmp_path / name
    make(path)
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(str(path)), "mid_block", 100, "none", api_name="/explore")
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(str(path)), "mid_block", 100, "diff-c", api_name="/classify")
    assert client.predict(handle_file(examples["Bag"]), "mid_block", 100, "diff-c", api_name="/classify")["label"] == "Bag"


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_odd_image_modes_are_handled(client, examples):
    trouser = Image.open(examples["Trouser"])
    frames = [trouser.convert("P"), Image.new("P", trouser.size)]
    odd = [
        _save(trouser.convert("RGBA"), "rgba.png"),
        _save(trouser.convert("CMYK"), "cmyk.jpg"),
        _save(Image.fromarray(np.asarray(trouser, dtype=np.uint16) * 257), "sixteen.png"),
        _save(trouser.convert("P"), "palette.png"),
        _save(frames[0], "animated.gif", save_all=True, append_images=frames[1:], duration=100),
        _save(trouser.resize((300, 300)).convert("RGB"), "large.webp"),
    ]
    for path in odd:
        assert client.predict(handle_file(path), "mid_block", 100, "diff-c", api_name="/classify")["label"] == "Trouser", path


def test_bad_values_are_explained(client, examples):
    image = handle_file(examples["Bag"])
    with pytest.raises(AppError, match="unknown block"):
        client.predict(image, "down_blocks.9", 100, "none", api_name="/explore")
    with pytest.raises(AppError, match="choose one of"):
        client.predict(image, "mid_block", 7, "none", api_name="/explore")
    with pytest.raises(AppError, match="does not exist"):
        client.predict("mid_block", 100, "none", 99999, api_name="/feature")
    with pytest.raises(AppError, match="t high"):
        client.predict(0, 0, 5, 2.5, "mid_block", 100, "none", [1], "value", 0, 0, 100, 500, api_name="/steer")
    with pytest.raises(AppError, match="at least one feature"):
        client.predict(0, 0, 5, 2.5, "mid_block", 100, "none", [], "value", 0, 0, 999, 0, api_name="/steer")
    with pytest.raises(AppError, match="no image"):
        client.predict(None, "mid_block", 100, "none", api_name="/explore")
    with pytest.raises(AppError, match="list of feature ids"):
        client.predict(0, 0, 5, 2.5, "mid_block", 100, "none", 3.5, "value", 0, 0, 999, 0, api_name="/steer")
    with pytest.raises(AppError, match="clamp to one of"):
        client.predict(0, 0, 5, 2.5, "mid_block", 100, "none", [1], "sideways", 0, 0, 999, 0, api_name="/steer")
    with pytest.raises(AppError, match="steps must be"):
        client.predict(0, 0, 500, 2.5, "mid_block", 100, "none", [1], "value", 0, 0, 999, 0, api_name="/steer")
    with pytest.raises(AppError, match="needs a spatial SAE"):
        client.predict(0, 0, 5, 2.5, "mid_block", 100, "mean", [1], "class-map", 0, 2, 999, 0, api_name="/steer")


def test_uploads_over_the_size_limit_are_refused(client, examples, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(os.urandom(MAX_UPLOAD_BYTES + 1024))
    with pytest.raises(Exception, match="(?i)size|large|413"):
        client.predict(handle_file(str(big)), "mid_block", 100, "diff-c", api_name="/classify")
    assert client.predict(handle_file(examples["Bag"]), "mid_block", 100, "diff-c", api_name="/classify")["label"] == "Bag"


def test_eight_concurrent_clients(app_url, examples):
    def session(index: int) -> list[str]:
        own = Client(app_url, verbose=False, download_files=False)
        name = ("Trouser", "Bag")[index % 2]
        labels = []
        for request in range(5):
            if request % 2:
                table = own.predict(handle_file(examples[name]), "mid_block", 100, "none", api_name="/explore")[2]
                labels.append(name if sum(name in row[1] for row in table["data"]) >= 4 else "?")
            else:
                labels.append(own.predict(handle_file(examples[name]), "mid_block", 100, "diff-c", api_name="/classify")["label"])
        return [label == name for label in labels]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(session, range(8)))
    assert all(all(r) for r in results), results


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_every_tab_renders_in_a_real_browser(app_url):
    browser = _chromium()
    if browser is None:
        if os.environ.get("REVELIO_REQUIRE_BROWSER"):
            pytest.fail("chromium is required here (REVELIO_REQUIRE_BROWSER is set); apt-get install -y chromium")
        pytest.skip("no chromium; `make test` installs it (apt-get install -y chromium)")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    pictures = {}
    for tab in TABS:
        out = SCREENSHOTS / f"{tab}.png"
        out.unlink(missing_ok=True)
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run(
                [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--window-size=1280,1400",
                 f"--screenshot={out}", f"{app_url}?tab={tab}"],
                check=True, timeout=120, capture_output=True,
            )
        pixels = np.asarray(Image.open(out).convert("L"), dtype=np.float32)
        # a rendered page: text and widgets, not a blank or single-colour canvas
        assert pixels.std() > 15 and len(np.unique(pixels)) > 64, f"{tab} looks blank"
        pictures[tab] = pixels
    for first in TABS:  # each link opened its own tab
        for second in TABS:
            if first < second:
                assert np.abs(pictures[first] - pictures[second]).mean() > 1, (first, second)


def test_space_card_points_at_this_app():
    import gradio
    from huggingface_hub import SpaceCard

    root = Path(__file__).resolve().parent.parent
    card = SpaceCard.load(root / "hub_cards" / "space.md")
    assert card.data.sdk == "gradio" and card.data.sdk_version == gradio.__version__
    assert (root / card.data.app_file).is_file() and card.data.app_file == "app.py"
    assert len(card.data.short_description) <= 60  # the Hub's limit


def test_a_release_without_held_out_images_says_to_rebuild(tmp_path):
    """The held-out set is part of the release layout; a folder without it gets a message, not a fallback."""
    from revelio.app import create_demo
    from revelio.bundled import bundled_release_dir

    root = tmp_path / "release"
    root.mkdir()
    for item in bundled_release_dir().iterdir():  # link everything but the held-out file
        if item.name != "exemplars":
            (root / item.name).symlink_to(item)
    (root / "exemplars").mkdir()
    (root / "exemplars" / "thumbnails.safetensors").symlink_to(bundled_release_dir() / "exemplars" / "thumbnails.safetensors")
    with pytest.raises(FileNotFoundError, match="held_out.safetensors; rebuild it"):
        create_demo(str(root))
