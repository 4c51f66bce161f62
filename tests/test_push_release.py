"""train/push_release.py against a local Hub imitation (tests/hub_server.py), then loading back by repo id."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import revelio
from revelio.errors import RevelioError
from revelio.grid import Cell
from revelio.sae import KSparseAutoencoder
from tests.hub_server import LocalHub

ROOT = Path(__file__).resolve().parents[1]
SAE_DIR = "saes/mid_block/t250/mean"

# train/ is a folder of scripts, not a package: load the script as a module to call its main().
_spec = importlib.util.spec_from_file_location("push_release", ROOT / "train" / "push_release.py")
push_release = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(push_release)


@pytest.fixture
def release(tmp_path: Path) -> Path:
    """A small release folder: one SAE, the manifest, a model card, a plot, and two hidden leftovers."""
    root = tmp_path / "release"
    torch.manual_seed(0)
    sae = KSparseAutoencoder(d_in=8, d_sae=32, k=4, hook="mid_block", timestep=250, pooling="mean")
    sae.save_pretrained(root / SAE_DIR)
    manifest = {"backbone": "tiny", "hooks": ["mid_block"], "timesteps": [250], "poolings": ["mean"], "probe_kinds": ["linear"],
                "best_cell": {"hook": "mid_block", "timestep": 250, "probe": "linear", "test_accuracy": 0.9}}
    (root / "release.json").write_text(json.dumps(manifest))
    (root / "README.md").write_text("---\nlicense: apache-2.0\ntags: [revelio, sae]\n---\n# Tiny release\n")
    (root / "plots").mkdir()
    (root / "plots" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (root / SAE_DIR / ".model.safetensors.123.tmp").write_bytes(b"half-written")  # never uploaded
    (root / ".staging").mkdir()
    (root / ".staging" / "notes.txt").write_text("scratch")
    return root


def visible_files(folder: Path) -> set[str]:
    return {
        p.relative_to(folder).as_posix() for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    }


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A running LocalHub that huggingface_hub in this process talks to, with a fresh cache.

    conftest.py sets HF_HUB_OFFLINE=1 for the session, and huggingface_hub reads its settings into
    module constants at import time, so both the environment and those constants are patched
    (monkeypatch restores them after the test). No real token file is read.
    """
    from huggingface_hub import constants

    cache, home = tmp_path / "hf-cache", tmp_path / "hf-home"
    with LocalHub() as server:
        env = {"HF_ENDPOINT": server.endpoint, "HF_TOKEN": "dummy", "HF_HUB_OFFLINE": "0",
               "HF_HUB_CACHE": str(cache), "HF_HOME": str(home), "HF_HUB_DISABLE_TELEMETRY": "1"}
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
        monkeypatch.setattr(constants, "ENDPOINT", server.endpoint)
        template = server.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
        yield server
    assert not server._thread.is_alive()


def test_push_then_load_by_repo_id(release, hub, caplog):
    caplog.set_level(logging.INFO)
    url = push_release.main(["--release", str(release), "--repo", "user/name", "--commit-message", "first release"])
    out = caplog.text
    assert f"{SAE_DIR}/model.safetensors" in out and "files," in out and url in out
    assert url.startswith(f"{hub.endpoint}/user/name/commit/")
    assert set(hub.files("user/name")) == visible_files(release)
    head = hub.repos[("model", "user/name")].branches["main"]
    assert hub.repos[("model", "user/name")].messages[head] == "first release"

    # Pushing again: the repo exists already and every file is unchanged, so no new commit is made.
    assert push_release.main(["--release", str(release), "--repo", "user/name"]) == url
    assert hub.repos[("model", "user/name")].branches["main"] == head

    original = KSparseAutoencoder.from_pretrained(release, subfolder=SAE_DIR)
    loaded = KSparseAutoencoder.from_pretrained("user/name", subfolder=SAE_DIR)
    assert loaded.config == original.config
    for name, tensor in original.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name

    from huggingface_hub import snapshot_download

    snapshot = Path(snapshot_download("user/name"))
    assert visible_files(snapshot) == visible_files(release)
    assert (snapshot / "release.json").read_bytes() == (release / "release.json").read_bytes()
    whole = revelio.load_release("user/name")
    assert whole.best_cell == Cell("mid_block", 250) and torch.equal(whole.sae().W_dec, original.W_dec)


def test_cli_pushes_with_environment_only(release, tmp_path):
    """The script as users run it: a fresh process, configured by HF_ENDPOINT / HF_TOKEN alone."""
    with LocalHub() as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_TOKEN": "dummy", "HF_HUB_OFFLINE": "0",
               "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_DISABLE_TELEMETRY": "1"}
        command = [sys.executable, "train/push_release.py", "--release", str(release), "--repo", "user/cli",
                   "--revision", "dev"]
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert set(hub.files("user/cli", revision="dev")) == visible_files(release)
        assert hub.files("user/cli", revision="main") == {}  # the branch was made from the empty main


def test_dry_run_uploads_nothing(release, hub, caplog):
    caplog.set_level(logging.INFO)
    assert push_release.main(["--release", str(release), "--repo", "user/dry", "--dry-run"]) is None
    out = caplog.text
    assert "README.md" in out and "Dry run" in out and ".staging" not in out and ".tmp" not in out
    assert hub.repos == {}


def test_missing_token_is_a_clear_error(release, hub, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    with pytest.raises(RevelioError, match="hf auth login"):
        push_release.main(["--release", str(release), "--repo", "user/name"])
    assert hub.repos == {}


@pytest.mark.parametrize("missing", ["release.json", "README.md"])
def test_not_a_release_folder(release, missing):
    (release / missing).unlink()
    with pytest.raises(RevelioError, match=f"has no {missing}"):
        push_release.main(["--release", str(release), "--repo", "user/name", "--dry-run"])
    with pytest.raises(RevelioError, match="does not exist"):
        push_release.main(["--release", str(release / "nope"), "--repo", "user/name", "--dry-run"])


def test_invalid_card_metadata_is_caught_before_any_upload(release):
    (release / "README.md").write_text("---\nlicense: [apache-2.0\n---\n# Tiny release\n")
    with pytest.raises(RevelioError, match="YAML metadata .* is invalid"):
        push_release.main(["--release", str(release), "--repo", "user/name", "--dry-run"])
