"""The committed Fashion-MNIST release: complete, consistent, loadable offline, and useful."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from huggingface_hub import ModelCard

import revelio
from revelio.bundled import bundled_release_dir
from revelio.data.datasets import FASHION_MNIST_CLASSES, load_image_dataset
from tests.helpers import run

ROOT = bundled_release_dir().parent.parent


@pytest.fixture(scope="module")
def release():
    return revelio.load_release("bundled")


@pytest.fixture(scope="module")
def backbone(release):
    return release.backbone(device="cpu")


def test_the_release_is_complete_and_small(release):
    root = bundled_release_dir()
    assert release.class_names == FASHION_MNIST_CLASSES
    assert len(release.hooks) >= 4 and len(release.timesteps) >= 4
    assert any(h.startswith("down_blocks") for h in release.hooks) and "mid_block" in release.hooks
    assert any(h.startswith("up_blocks") for h in release.hooks)
    assert min(release.timesteps) <= 50 and max(release.timesteps) >= 500
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert size <= 60 * 2**20, f"the committed release is {size / 2**20:.1f} MiB"
    for name in ("probe_grid", "sae_grid", "quality_gate"):
        assert release.metrics(name)
    assert {"samples", "sae_normalized_mse_mean", "probe_accuracy_diffusion_linear"} <= set(release.plots())


def test_the_release_keeps_its_promises_on_held_out_images(release):
    """What the README claims of the bundled release, read from its own metrics."""
    dead = {(r["hook"], r["timestep"], r["pooling"]): r["dead_fraction"] for r in release.metrics("sae_grid")["rows"]}
    assert len(dead) == 2 * len(release.hooks) * len(release.timesteps)
    assert max(dead.values()) <= 0.05, f"dead features on the test images: {max(dead.items(), key=lambda kv: kv[1])}"
    grid = release.metrics("probe_grid")
    pixels = max(r["test_accuracy"] for r in grid["rows"] if r["features"] == "pixels")
    assert grid["best"]["test_accuracy"] >= pixels + 0.02, "the best probe beats logistic regression on raw pixels by 2 points"
    purity = release.metrics("monosemanticity")["cells"]
    best = max(purity, key=lambda c: c["sae"])
    assert best["sae"] > max(best["random_directions"], best["neurons"])


def test_every_sae_agrees_with_its_config_and_the_model(release, backbone):
    for hook in release.hooks:
        for t in release.timesteps:
            for pooling in release.poolings:
                sae = release.sae(hook=hook, timestep=t, pooling=pooling)  # verifies shapes against config.json and checksums
                assert (sae.config.hook, sae.config.timestep, sae.config.pooling) == (hook, t, pooling)
                assert sae.d_in == backbone.hook_channels[hook]
                stats = sae.feature_stats
                assert stats is not None and len(stats.labels) == sae.d_sae
                assert sae.config.metrics["test"]["normalized_mse"] < 0.5, f"{hook} t={t} {pooling} reconstructs poorly"


def test_load_backbone_bundled_generates_offline(release):
    bb = revelio.load_backbone("bundled", device="cpu")
    assert bb.class_names == FASHION_MNIST_CLASSES and bb.resolution == 28
    images = bb.generate(7, seed=0, num_images=2, num_inference_steps=10, output_type="pt")
    assert images.shape == (2, 1, 28, 28) and images.std() > 0.1


def test_best_probe_beats_chance_by_a_wide_margin(release, backbone):
    data = load_image_dataset("fashion-mnist", "test", limit=300)
    hook, t = release.best_cell.hook, release.best_cell.timestep
    probe = release.probe(hook=hook, timestep=t)
    sae = release.sae(hook=hook, timestep=t, pooling="mean") if probe.config.sae else None
    probabilities = revelio.classify(backbone, probe, data.dataset, sae=sae)
    accuracy = float((probabilities.argmax(-1) == torch.tensor(data.labels)).float().mean())
    assert accuracy >= 0.7, f"best probe accuracy {accuracy:.3f} (chance 0.1)"


def test_quality_gate_and_card(release):
    gate = release.metrics("quality_gate")
    real, samples = gate["reference_accuracy_on_real_test"], gate["reference_accuracy_on_samples"]
    assert real >= 8 * gate["chance"], "the reference classifier reads real test images"
    assert samples >= real - 0.05, "the model's samples are about as recognisable as real images"
    assert f"**{100 * samples:.1f}%**" in (ROOT / "README.md").read_text(), "the README states the measured figure"
    card = ModelCard.load(bundled_release_dir() / "README.md")
    assert card.data.library_name == "revelio" and card.data.datasets == ["zalando-datasets/fashion_mnist"]
    assert 'revelio.load_release("bundled")' in card.text and "{{" not in card.text
    assert all(f"| {hook} |" in card.text for hook in release.hooks)
    info = json.loads((bundled_release_dir() / "release.json").read_text())
    assert info["commands"][0].startswith("python train/build_release.py")


@pytest.mark.slow
def test_steering_measurement_runs_on_the_release(tmp_path):
    run(sys.executable, "train/measure_steering.py", "--release", "bundled", "--cells", "mid_block:100",
        "--features-per-class", "2", "--per-source", "1", "--steps", "2", "--strengths", "1", "4", "--budget", "1",
        "--out", str(tmp_path))
    result = json.loads((tmp_path / "steering.json").read_text())
    assert set(result["per_class"]) == set(FASHION_MNIST_CLASSES)
    successes = [c["success"] for c in result["per_class"].values()]
    assert result["mean_success"] == pytest.approx(sum(successes) / len(successes)), "the mean over target classes"
    assert [row["strength"] for row in result["sweep"]] == [1, 4] and result["within_budget"]
    best = max(result["sweep"], key=lambda row: row["mean_success"])
    assert result["mean_success"] == best["mean_success"], "the most successful strength within the budget is chosen"
    assert set(result["sweep"][0]["success_per_class"]) == set(FASHION_MNIST_CLASSES)
    chosen = [len(f) for c in result["per_class"].values() for f in c["features"]]
    assert chosen and max(chosen) == 2, "at most the two most selective features per class and SAE"
    assert result["side_effect"]["unrelated_mean_abs_pixel_change"] > 0


@pytest.mark.slow
def test_steering_measurement_with_constant_clamps_and_its_errors(tmp_path):
    run(sys.executable, "train/measure_steering.py", "--release", "bundled", "--cells", "up_blocks.0:300", "--pooling", "mean",
        "--clamp-to", "max", "--features-per-class", "1", "--per-source", "1", "--steps", "2", "--out", str(tmp_path))
    result = json.loads((tmp_path / "steering.json").read_text())
    assert result["clamp_to"] == "max" and result["pooling"] == "mean"
    failed = subprocess.run([sys.executable, "train/measure_steering.py", "--pooling", "mean", "--steps", "2"],
                            capture_output=True, text=True, cwd=ROOT)
    assert failed.returncode != 0 and "needs spatial SAEs" in failed.stderr
