"""The train/ command lines end to end on a tiny model and a local image folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import revelio
from revelio.cache import ActivationCache
from revelio.sae import KSparseAutoencoder
from revelio.storage.files import read_safetensors
from tests.helpers import run

HOOKS, TIMESTEPS = ["down_blocks.1", "mid_block"], ["50", "400"]
pytestmark = pytest.mark.slow  # every test runs command lines, seconds each


@pytest.fixture(scope="module")
def image_folder(make_image_folder) -> Path:
    return make_image_folder({"dark": 40, "light": 200}, per_class=24)


@pytest.fixture(scope="module")
def cache(model_dirs, image_folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cache")
    run(sys.executable, "train/extract_activations.py", "--backbone", str(model_dirs["pixel-class"]),
        "--dataset", str(image_folder), "--hooks", *HOOKS, "--timesteps", *TIMESTEPS,
        "--batch-size", "16", "--out", str(out), "--overwrite")
    return out


def test_extraction_writes_every_cell_with_labels(cache, image_folder, model_dirs):
    info = json.loads((cache / "dataset.json").read_text())
    # a flat folder of 24 images per class is split 80/20, stratified: its train split holds 19 of each
    assert info["class_names"] == ["dark", "light"] and info["num_images"] == 38
    assert read_safetensors(cache / "labels.safetensors")["labels"].bincount().tolist() == [19, 19]
    for hook in HOOKS:
        for t in TIMESTEPS:
            pooled = ActivationCache(cache / hook / f"t{t}" / "mean")
            spatial = ActivationCache(cache / hook / f"t{t}" / "none")
            assert pooled.num_rows == 38 and spatial.num_rows == 38 * spatial.tokens_per_image
            assert pooled.manifest.metadata["dataset"] == str(image_folder)
            assert pooled.manifest.metadata["backbone"] == str(model_dirs["pixel-class"])


@pytest.mark.multiprocess
@pytest.mark.training
def test_grid_trains_across_two_processes(cache, tmp_path):
    out = tmp_path / "saes"
    result = run(
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "train/train_sae.py", "--cache", str(cache), "--out", str(out), "--poolings", "mean",
        "--expansion", "2", "--k", "4", "--batch-size", "16", "--tokens", "1600", "--warmup-steps", "5",
        OMP_NUM_THREADS="1",
    )
    reports = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert sorted(r["rank"] for r in reports) == [0, 0, 1, 1], "4 cells split over 2 ranks"
    for hook in HOOKS:
        for t in TIMESTEPS:
            sae = KSparseAutoencoder.from_pretrained(out, subfolder=f"{hook}/t{t}/mean")
            assert sae.config.hook == hook and sae.config.timestep == int(t)
            assert sae.config.training_tokens == 1600 and sae.k == 4
            assert torch.isfinite(sae.W_enc).all()
            stats = sae.feature_stats
            assert stats is not None and len(stats.labels) == sae.d_sae
            assert all(label == "dead" or label.split(" (")[0] in ("dark", "light") for label in stats.labels)
    again = run(sys.executable, "train/train_sae.py", "--cache", str(cache), "--out", str(out), "--poolings", "mean",
                "--expansion", "2", "--k", "4", "--batch-size", "16", "--tokens", "1600", "--warmup-steps", "5")
    assert again.stdout.count('"skipped": "finished earlier"') == 4, "a rerun keeps finished cells"


@pytest.mark.training
def test_probe_grid_with_baselines(cache, model_dirs, image_folder, tmp_path):
    random_cache = tmp_path / "random-cache"
    run(sys.executable, "train/extract_activations.py", "--backbone", str(model_dirs["pixel-class"]),
        "--dataset", str(image_folder), "--hooks", *HOOKS, "--timesteps", *TIMESTEPS, "--poolings", "mean", "none",
        "--batch-size", "16", "--out", str(random_cache), "--random-weights")
    saes = tmp_path / "saes"
    run(sys.executable, "train/train_sae.py", "--cache", str(cache), "--out", str(saes), "--poolings", "mean",
        "--expansion", "2", "--k", "4", "--batch-size", "16", "--tokens", "800", "--warmup-steps", "5")
    out = tmp_path / "release"
    result = run(sys.executable, "train/train_probes.py", "--cache", str(cache), "--random-cache", str(random_cache),
                 "--saes", str(saes), "--epochs", "3", "--out", str(out))
    summary = json.loads((out / "metrics" / "probe_grid.json").read_text())
    kinds = {(r["features"], r["probe"]) for r in summary["rows"]}
    assert kinds == {("diffusion", "linear"), ("diffusion", "diff-c"), ("diffusion", "sae-linear"),
                     ("random-weights", "linear"), ("random-weights", "diff-c"), ("pixels", "linear")}
    assert len(summary["rows"]) == 3 * 4 + 2 * 4 + 1
    assert summary["best"]["test_accuracy"] >= 0.8, "dark vs light images are easy to tell apart"
    assert "best cell:" in result.stdout
    with open(out / "metrics" / "probe_grid.csv") as file:
        assert len(file.read().strip().splitlines()) == 1 + len(summary["rows"])
    for name in ("diffusion_linear", "diffusion_diff-c", "diffusion_sae-linear", "random-weights_linear"):
        assert (out / "plots" / f"probe_accuracy_{name}.png").stat().st_size > 2000
    probe = revelio.Probe.from_pretrained(out, subfolder=f"probes/mid_block/t{TIMESTEPS[0]}/linear")
    assert probe.class_names == ["dark", "light"] and probe.config.metrics["test_accuracy"] >= 0.5
