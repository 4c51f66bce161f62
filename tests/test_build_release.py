"""train/build_release.py end to end on a tiny model and an image folder, then loaded with load_release."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image

import revelio
from revelio.errors import ArtifactFormatError
from revelio.storage.files import read_safetensors
from tests import tiny_models
from tests.helpers import ROOT, run

HOOKS, TIMESTEPS, CLASSES = ["down_blocks.1", "mid_block", "up_blocks.1"], [50, 400], ["dark", "light"]
pytestmark = pytest.mark.build  # the module builds a release with train/build_release.py


@pytest.fixture(scope="module")
def split_folder(make_image_folder) -> Path:
    """train/ and test/ splits of two easy classes (dark and light noise images)."""
    return make_image_folder({"dark": 50, "light": 200}, per_class={"train": 40, "test": 16}, seed=1)


def build_command(model: Path, split_folder: Path, out: Path, work: Path) -> list[str]:
    return [sys.executable, "train/build_release.py", "--model", str(model), "--dataset", str(split_folder), "--hooks", *HOOKS,
            "--timesteps", *map(str, TIMESTEPS), "--train-images", "80", "--test-images", "32", "--random-images", "80",
            "--pooled-sae-expansion", "2", "--pooled-sae-k", "4", "--pooled-sae-tokens", "800", "--pooled-sae-batch-size", "64",
            "--spatial-sae-expansion", "2", "--spatial-sae-k", "4", "--spatial-sae-tokens", "4000", "--spatial-sae-batch-size", "64",
            "--spatial-sae-checkpoint-every", "20", "--probe-epochs", "2", "--probe-diffc-precision", "float32", "--gate-per-class", "4", "--gate-epochs", "2",
            "--steering-per-source", "1", "--steering-steps", "2", "--steering-strengths", "2", "--repo-id", "someone/tiny-release",
            "--work", str(work), "--out", str(out)]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_models.build_pixel_unet(tmp_path_factory.mktemp("model") / "model-src", CLASSES)


@pytest.fixture(scope="module")
def release_dir(model, split_folder, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("release")
    run(*build_command(model, split_folder, tmp / "release", tmp / "work"), OMP_NUM_THREADS="1")
    return tmp / "release"


def test_release_has_every_artifact_of_the_layout(release_dir):
    info = json.loads((release_dir / "release.json").read_text())
    assert info["hooks"] == HOOKS and info["timesteps"] == TIMESTEPS and info["class_names"] == CLASSES
    assert info["commands"][0].startswith("python train/build_release.py") and len(info["commands"]) >= 8
    for hook in HOOKS:
        for t in TIMESTEPS:
            for pooling in ("mean", "none"):
                files = {p.name for p in (release_dir / "saes" / hook / f"t{t}" / pooling).iterdir()}
                assert files == {"config.json", "model.safetensors", "stats.safetensors", "timesteps.safetensors"}
            for kind in ("linear", "diff-c", "sae-linear"):
                assert (release_dir / "probes" / hook / f"t{t}" / kind / "model.safetensors").is_file()
    assert not list(release_dir.rglob("checkpoints")), "training checkpoints stay in the work folder"
    for name in ("probe_grid", "sae_grid", "quality_gate"):
        assert json.loads((release_dir / "metrics" / f"{name}.json").read_text())
    purity = json.loads((release_dir / "metrics" / "monosemanticity.json").read_text())
    assert {(r["hook"], r["timestep"], r["pooling"]) for r in purity["cells"]} == {
        (h, int(t), p) for h in HOOKS for t in TIMESTEPS for p in ("mean", "none")}
    assert all(0 < r[k] <= 1 for r in purity["cells"] for k in ("sae", "random_directions", "neurons"))
    for plot in ("samples", "sae_normalized_mse_mean", "sae_dead_fraction_none", "probe_accuracy_diffusion_linear"):
        assert (release_dir / "plots" / f"{plot}.png").stat().st_size > 1000


def test_card_renders_metadata_tables_and_loading_code(release_dir):
    card = ModelCard.load(release_dir / "README.md")
    assert card.data.library_name == "revelio" and "sparse-autoencoder" in card.data.tags
    assert card.data.metrics == ["accuracy", "normalized_mse"]
    text = card.text
    assert 'revelio.load_release("someone/tiny-release")' in text
    assert all(f"| {hook} |" in text for hook in HOOKS), "grid tables list every block"
    assert "{{" not in text and "python train/build_release.py" in text
    assert "Monosemanticity" in text and "random directions" in text, "the card shows the purity baselines"
    assert "## Steering and concept removal" in text and "**mean success" in text, "the card shows the steering measurement"
    assert "activations of **model-src**" in text, "a local model is named by its folder, not the path it was built at"


def test_load_release_gives_working_artifacts(release_dir, split_folder):
    release = revelio.load_release(release_dir)
    hook, timestep = release.best_cell.hook, release.best_cell.timestep
    assert hook in HOOKS and timestep in TIMESTEPS
    backbone = release.backbone(device="cpu")
    for pooling in ("mean", "none"):
        sae = release.sae(hook=hook, timestep=timestep, pooling=pooling)
        assert sae.d_in == backbone.hook_channels[hook] and sae.config.pooling == pooling
        held_out = sae.config.metrics["test"]  # measured on the test split
        assert held_out["normalized_mse"] < 1 and held_out["dead_fraction"] < 1, "better than the mean, some features live"
        by_t = sae.extra_files["timesteps.safetensors"][0]
        assert by_t["timesteps"].tolist() == TIMESTEPS and by_t["mean_activation"].shape == (2, sae.d_sae)
    assert release.sae(hook=hook, timestep=timestep) is release.sae(hook=hook, timestep=timestep), "artifacts load once"
    probe = release.probe(kind="linear")
    images = [Image.open(p) for p in sorted((split_folder / "test" / "light").glob("*.png"))[:4]]
    assert revelio.classify(backbone, probe, images).argmax(-1).tolist() == [1, 1, 1, 1]
    stats = release.sae(hook=hook, timestep=timestep).feature_stats
    top = stats.top_images[stats.firing_frequency.argmax()]
    thumbnails = release.exemplar_images(top)
    assert all(isinstance(t, Image.Image) and t.size == (16, 16) for t, i in zip(thumbnails, top) if i >= 0)
    assert release.exemplar_images([-1]) == [None]
    classifier = release.reference_classifier()
    assert classifier.class_names == CLASSES
    assert set(release.plots()) >= {"samples", "sae_normalized_mse_mean"}


def test_load_release_errors_say_what_to_do(release_dir, tmp_path):
    release = revelio.load_release(release_dir)
    with pytest.raises(ValueError, match="no cell"):
        release.sae(hook="up_blocks.2", timestep=TIMESTEPS[0])
    with pytest.raises(ValueError, match="poolings"):
        release.sae(pooling="max")
    with pytest.raises(FileNotFoundError, match="has no metrics 'nope'"):
        release.metrics("nope")
    with pytest.raises(ArtifactFormatError, match="release.json"):
        revelio.load_release(tmp_path)
    with pytest.raises(ArtifactFormatError, match="neither a local release folder"):
        revelio.load_release("not a repo id!")


def test_rerun_reuses_finished_steps(release_dir, split_folder, tmp_path):
    sae_dir = release_dir / "saes" / HOOKS[0] / f"t{TIMESTEPS[0]}" / "mean"
    before = revelio.KSparseAutoencoder.from_pretrained(sae_dir).W_dec.clone()
    info = json.loads((release_dir / "release.json").read_text())
    argv = shlex.split(info["commands"][0])[2:]
    result = run(sys.executable, "train/build_release.py", *argv, OMP_NUM_THREADS="1")
    assert result.stdout.count("finished earlier: reusing its output") == 7, "the gate, 4 caches, the probes, steering"
    assert torch.equal(revelio.KSparseAutoencoder.from_pretrained(sae_dir).W_dec, before), "finished SAEs are kept"
    # other probe settings (or newer SAEs or caches) retrain the probes instead of keeping stale ones
    epochs = argv.index("--probe-epochs")
    changed = [*argv[: epochs + 1], "1", *argv[epochs + 2 :]]
    result = run(sys.executable, "train/build_release.py", *changed, OMP_NUM_THREADS="1")
    assert result.stdout.count("finished earlier: reusing its output") == 5, "the gate and 4 caches, not the probes or steering"
    grid = json.loads((release_dir / "metrics" / "probe_grid.json").read_text())
    assert grid["config"]["epochs"] == 1


# The crash point is deterministic: the build SIGKILLs itself at its 100th SAE training step, in the
# SAE grid stage (after the quality gate, the caches and the pooled SAEs, 12 steps per cell), in the
# middle of the second spatial SAE, between its checkpoints of steps 20 and 40.
_KILLED_BUILD = """
import os, runpy, signal, sys
from revelio.sae import fused_step

step, calls = fused_step.FusedStep.__call__, []

def step_then_die(self, *args, **kwargs):
    calls.append(None)
    if len(calls) == 100:
        os.kill(os.getpid(), signal.SIGKILL)
    return step(self, *args, **kwargs)

fused_step.FusedStep.__call__ = step_then_die
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _tensors(root: Path, folder: str) -> dict[str, dict[str, torch.Tensor]]:
    return {p.relative_to(root).as_posix(): read_safetensors(p) for p in sorted((root / folder).rglob("*.safetensors"))}


def _results(root: Path) -> dict[str, object]:
    """What a release measured, without the paths its configs name."""
    metrics = {name: json.loads((root / "metrics" / f"{name}.json").read_text())
               for name in ("probe_grid", "sae_grid", "quality_gate", "monosemanticity", "steering")}
    for data in metrics.values():
        data.pop("config", None)
        data.pop("release", None)
        data.pop("model", None)
    return metrics


@pytest.mark.kill
def test_a_build_killed_mid_stage_finishes_with_the_same_release(model, split_folder, tmp_path):
    straight_dir = tmp_path / "straight"  # not the module's release: other tests rebuild parts of it
    run(*build_command(model, split_folder, straight_dir / "release", straight_dir / "work"), OMP_NUM_THREADS="1")
    command = build_command(model, split_folder, tmp_path / "release", tmp_path / "work")
    killed = subprocess.run([sys.executable, "-c", _KILLED_BUILD, *command[1:]], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-2000:]
    assert not (tmp_path / "release" / "release.json").exists(), "the kill came before the release was written"
    assert list((tmp_path / "work" / "saes").rglob("checkpoints/latest.json")), "a spatial SAE was killed mid-training"
    run(*command, OMP_NUM_THREADS="1")
    for folder in ("saes", "probes"):
        resumed, straight = _tensors(tmp_path / "release", folder), _tensors(straight_dir / "release", folder)
        assert resumed.keys() == straight.keys()
        for name in straight:
            for key, tensor in straight[name].items():
                torch.testing.assert_close(resumed[name][key], tensor, rtol=0, atol=0, equal_nan=True, msg=f"{name} {key}")
    assert _results(tmp_path / "release") == _results(straight_dir / "release")
