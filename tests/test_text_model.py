"""The small text model's trainer: a kill -9 resumes to the same weights; a changed command is refused;
the output is a StableDiffusionPipeline folder that diffusers and revelio load and sample from."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import revelio
from revelio.storage.files import read_safetensors
from tests.helpers import ROOT, run

VAE_STEPS, STEPS = 20, 40
pytestmark = pytest.mark.training  # the model trains twice, for seconds each time

# The trainer SIGKILLs itself in global step 45 (its 45th gradient clip): in the UNet stage, after
# the save of step 40 (UNet step 20) and before the next one.
_KILLED_TRAINER = """
import os, runpy, signal, sys
import torch

clip, calls = torch.nn.utils.clip_grad_norm_, []

def clip_then_die(*args, **kwargs):
    calls.append(None)
    if len(calls) == 45:
        os.kill(os.getpid(), signal.SIGKILL)
    return clip(*args, **kwargs)

torch.nn.utils.clip_grad_norm_ = clip_then_die
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def command(folder: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "train/train_text_model.py", "--dataset", str(folder), "--out", str(out), "--resolution", "16",
            "--vae-channels", "8", "16", "16", "--vae-steps", str(VAE_STEPS), "--vae-batch-size", "8", "--text-width", "32",
            "--max-tokens", "8", "--channels", "16", "32", "--attention-heads", "2", "--steps", str(STEPS), "--batch-size", "8",
            "--warmup-steps", "5", "--save-every", "10", "--threads", "1", *extra]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A captioned image folder (train/ and test/ class folders, metadata.jsonl captions): red and
    blue squares and bars on black."""
    root = tmp_path_factory.mktemp("captioned")
    rng = np.random.default_rng(28)
    for split, count in (("train", 32), ("test", 4)):
        rows = []
        for i in range(count):
            colour, shape = ("red", "blue")[i % 2], ("square", "bar")[i // 2 % 2]
            pixels = np.zeros((16, 16, 3), dtype=np.uint8)
            top, left = rng.integers(2, 6, size=2)
            pixels[top : top + (8 if shape == "square" else 3), left : left + 8] = (220, 20, 20) if colour == "red" else (20, 20, 220)
            (root / split / colour).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / split / colour / f"{i}.png")
            rows.append(json.dumps({"file_name": f"{colour}/{i}.png", "caption": f"a {colour} {shape}"}))
        (root / split / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    return root


def weights(out: Path) -> dict[str, torch.Tensor]:
    return {f"{part}.{name}": tensor for part, file in (("unet", "diffusion_pytorch_model"), ("text_encoder", "model"),
                                                        ("vae", "diffusion_pytorch_model"))
            for name, tensor in read_safetensors(out / "pipeline" / part / f"{file}.safetensors").items()}


def trained_steps(out: Path) -> int:
    return json.loads((out / "pipeline" / "revelio.json").read_text())["trained_steps"]


@pytest.fixture(scope="module")
def reference(folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted-text-model")
    run(*command(folder, out))
    return out


@pytest.mark.kill
def test_a_killed_training_resumes_to_the_same_weights(folder, reference, tmp_path):
    out = tmp_path / "killed"
    killed = subprocess.run([sys.executable, "-c", _KILLED_TRAINER, *command(folder, out)[1:]], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert trained_steps(out) == 20, "the last save before the kill"
    run(*command(folder, out))
    assert trained_steps(out) == STEPS
    resumed, expected = weights(out), weights(reference)
    assert resumed.keys() == expected.keys()
    assert all(torch.equal(resumed[name], expected[name]) for name in expected)
    vae = json.loads((out / "pipeline" / "vae" / "config.json").read_text())["scaling_factor"]
    assert vae == json.loads((reference / "pipeline" / "vae" / "config.json").read_text())["scaling_factor"] != 0.18215
    steps = [json.loads(line)["step"] for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert steps == [50], "the log holds each step once"


def test_a_changed_command_refuses_to_resume(folder, reference):
    failed = subprocess.run(command(folder, reference, "--caption-dropout", "0.5"), cwd=ROOT, capture_output=True, text=True)
    assert failed.returncode != 0
    assert "started with other settings" in failed.stderr and "caption_dropout: 0.1 -> 0.5" in failed.stderr


def test_the_output_is_a_stable_diffusion_pipeline_that_revelio_loads(reference):
    from diffusers import StableDiffusionPipeline

    pipeline = StableDiffusionPipeline.from_pretrained(reference / "pipeline")
    assert pipeline.safety_checker is None and pipeline.tokenizer.tokenize("a red bar") == ["a</w>", "red</w>", "bar</w>"]
    backbone = revelio.load_backbone(reference / "pipeline", device="cpu")
    assert type(backbone).__name__ == "StableDiffusionBackbone" and backbone.resolution == 16
    images = backbone.generate("a blue square", seed=0, num_images=2, num_inference_steps=4, output_type="pt")
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()
    extras = json.loads((reference / "pipeline" / "revelio.json").read_text())
    assert extras["num_inference_steps"] == 25 and extras["config"]["caption_dropout"] == 0.1
