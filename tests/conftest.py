"""Tiny models of every supported kind, built once per session into a temp folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
