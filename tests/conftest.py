"""Shared fixtures: tiny models of every supported kind (built once per session into a temp folder),
labelled image folders, the app served on a release, and the system chromium for browser tests."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Tests never touch the network: everything is built locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests import tiny_models  # noqa: E402

CLASS_NAMES = ["shirt", "sneaker", "bag"]
KINDS = ["pixel-class", "pixel-uncond", "sd", "sdxl", "dit"]


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "pixel-class": tiny_models.build_pixel_unet(root / "pixel-class", CLASS_NAMES),
        "pixel-uncond": tiny_models.build_pixel_unet(root / "pixel-uncond"),
        "sd": tiny_models.build_stable_diffusion(root / "sd"),
        "sdxl": tiny_models.build_sdxl(root / "sdxl"),
        "dit": tiny_models.build_dit(root / "dit", CLASS_NAMES),
    }


@pytest.fixture(scope="session")
def backbones(model_dirs: dict[str, Path]) -> dict:
    import revelio

    return {kind: revelio.load_backbone(path, device="cpu") for kind, path in model_dirs.items()}


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


# --- Labelled image folders ----------------------------------------------------------------------------------

ImageFolder = Callable[..., Path]


@pytest.fixture(scope="session")
def make_image_folder(tmp_path_factory: pytest.TempPathFactory) -> ImageFolder:
    """Builds a labelled image folder of noisy flat images, one subfolder per class; same arguments, same folder.

    ``classes`` maps each class name to its mean pixel: a grey level (greyscale PNGs) or an RGB
    triple. ``per_class`` is a count (a flat folder) or ``{"train": n, "test": m}`` (split folders).
    Image ``i`` of a class has size ``sizes[i % len(sizes)]`` (width, height). Pixels are the mean
    plus Gaussian noise of std ``noise`` from ``numpy.random.default_rng(seed)``, drawn split by
    split, class by class, image by image.
    """
    built: dict[str, Path] = {}

    def make(classes: dict[str, float | tuple[float, float, float]], per_class: int | dict[str, int], *, seed: int = 0,
             noise: float = 30.0, sizes: tuple[tuple[int, int], ...] = ((16, 16),)) -> Path:
        key = repr((list(classes.items()), per_class, seed, noise, sizes))
        if key in built:
            return built[key]
        root = tmp_path_factory.mktemp("images")
        rng = np.random.default_rng(seed)
        splits = per_class.items() if isinstance(per_class, dict) else [("", per_class)]
        for split, count in splits:
            for name, mean in classes.items():
                folder = root / split / name
                folder.mkdir(parents=True)
                for i in range(count):
                    width, height = sizes[i % len(sizes)]
                    shape = (height, width, 3) if isinstance(mean, tuple) else (height, width)
                    pixels = np.clip(np.asarray(mean, dtype=np.float64) + rng.normal(0, noise, shape), 0, 255)
                    Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
        built[key] = root
        return root

    return make


# --- The app, served -----------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def serve_app() -> Iterator[Callable[[str], str]]:
    """Serves the app on a release (``"bundled"``, a folder or a Hub id) in this process on a free port of
    127.0.0.1 and returns its URL; every app started is closed at the end of the module."""
    from revelio.app import create_demo
    from revelio.app.uploads import MAX_UPLOAD_BYTES

    started = []

    def serve(release: str) -> str:
        port = _free_port()
        demo = create_demo(release)
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, max_file_size=MAX_UPLOAD_BYTES,
                    quiet=True)
        started.append(demo)
        return f"http://127.0.0.1:{port}/"

    yield serve
    for demo in started:
        demo.close()


@pytest.fixture(scope="module")
def app_url(serve_app: Callable[[str], str]) -> str:
    """The app on the bundled release."""
    return serve_app("bundled")


# --- Browsers ------------------------------------------------------------------------------------------------

def _missing(what: str) -> None:
    """Skip, or fail where REVELIO_REQUIRE_BROWSER is set (a machine that must run the browser tests)."""
    if os.environ.get("REVELIO_REQUIRE_BROWSER"):
        pytest.fail(f"{what} is required here (REVELIO_REQUIRE_BROWSER is set); `make test` installs it")
    pytest.skip(f"no {what}; `make test` installs it")


@pytest.fixture(scope="session")
def chromium() -> str:
    """The system chromium's path (skips without one, fails without one under REVELIO_REQUIRE_BROWSER=1)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if path is None:
        _missing("chromium (apt-get install -y chromium)")
    return path


@pytest.fixture(scope="module")
def browser(chromium: str):
    """Playwright driving the system chromium, launched once per module."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright (pip install -r requirements.txt)")
    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu",
                                          "--disable-background-networking", "--disable-component-update"])
        yield launched
        launched.close()
