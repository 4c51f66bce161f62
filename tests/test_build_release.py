"""train/build_release.py end to end on a tiny model and an image folder, then loaded with load_release."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image

import revelio
from revelio.storage.files import ArtifactFormatError
from tests import tiny_models
from tests.helpers import run

HOOKS, TIMESTEPS, CLASSES = ["down_blocks.1", "mid_block", "up_blocks.1"], [50, 400], ["dark", "light"]
pytestmark = pytest.mark.build  # the module builds a release with train/build_release.py


@pytest.fixture(scope="module")
def split_folder(make_image_folder) -> Path:
    """train/ and test/ splits of two easy classes (dark and light noise images)."""
    return make_image_folder({"dark": 50, "light": 200}, per_class={"train": 40, "test": 16}, seed=1)


@pytest.fixture(scope="module")
def release_dir(split_folder, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("release")
    model = tiny_models.build_pixel_unet(tmp / "model-src", CLASSES)
    out = tmp / "release"
    run(sys.executable, "train/build_release.py", "--model", str(model), "--dataset", str(split_folder), "--hooks", *HOOKS,
        "--timesteps", *map(str, TIMESTEPS), "--train-images", "80", "--test-images", "32", "--random-images", "80",
        "--expansion", "2", "--k", "4", "--mean-tokens", "800", "--spatial-tokens", "4000", "--sae-batch-size", "64",
        "--probe-epochs", "2", "--per-class", "4", "--classifier-epochs", "2", "--repo-id", "someone/tiny-release",
        "--work", str(tmp / "work"), "--out", str(out), OMP_NUM_THREADS="1")
    return out


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
    assert result.stdout.count("finished earlier: reusing its output") == 5, "4 caches and the probes"
    assert torch.equal(revelio.KSparseAutoencoder.from_pretrained(sae_dir).W_dec, before), "finished SAEs are kept"
    # other probe settings (or newer SAEs or caches) retrain the probes instead of keeping stale ones
    epochs = argv.index("--probe-epochs")
    changed = [*argv[: epochs + 1], "1", *argv[epochs + 2 :]]
    result = run(sys.executable, "train/build_release.py", *changed, OMP_NUM_THREADS="1")
    assert result.stdout.count("finished earlier: reusing its output") == 4, "4 caches, not the probes"
    grid = json.loads((release_dir / "metrics" / "probe_grid.json").read_text())
    assert grid["config"]["epochs"] == 1
