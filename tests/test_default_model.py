"""The bundled model's trainer: a kill -9 resumes to the same weights; a changed command is refused;
the recipe options (v prediction, attention) give a pipeline revelio loads and samples."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import revelio
from revelio.storage.files import read_safetensors
from tests.helpers import ROOT, run

STEPS = 120
pytestmark = pytest.mark.training  # the model trains twice, for seconds each time

# The crash point is deterministic: the trainer SIGKILLs itself in step 55 (its 55th gradient clip), after
# the save of step 50 and before the next one.
_KILLED_TRAINER = """
import os, runpy, signal, sys
import torch

clip, calls = torch.nn.utils.clip_grad_norm_, []

def clip_then_die(*args, **kwargs):
    calls.append(None)
    if len(calls) == 55:
        os.kill(os.getpid(), signal.SIGKILL)
    return clip(*args, **kwargs)

torch.nn.utils.clip_grad_norm_ = clip_then_die
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def command(folder: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "train/train_default_model.py", "--dataset", str(folder), "--out", str(out), "--resolution", "16",
            "--channels", "8", "16", "--attention", "--prediction-type", "v_prediction", "--steps", str(STEPS),
            "--batch-size", "8", "--warmup-steps", "5", "--save-every", "10", "--threads", "1", *extra]


@pytest.fixture(scope="module")
def folder(make_image_folder) -> Path:
    return make_image_folder({"dark": 40, "light": 200}, per_class=30, seed=5)


def weights(out: Path) -> dict[str, torch.Tensor]:
    return read_safetensors(out / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")


@pytest.fixture(scope="module")
def reference(folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted-model")
    run(*command(folder, out))
    return out


@pytest.mark.kill
def test_a_killed_training_resumes_to_the_same_weights(folder, reference, tmp_path):
    out = tmp_path / "killed"
    killed = subprocess.run([sys.executable, "-c", _KILLED_TRAINER, *command(folder, out)[1:]], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    trained = json.loads((out / "pipeline" / "revelio.json").read_text())["trained_steps"]
    assert trained == 50, "the last save before the kill"
    run(*command(folder, out))
    assert json.loads((out / "pipeline" / "revelio.json").read_text())["trained_steps"] == STEPS
    resumed, expected = weights(out), weights(reference)
    assert resumed.keys() == expected.keys()
    assert all(torch.equal(resumed[name], expected[name]) for name in expected)
    steps = [json.loads(line)["step"] for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert steps == list(range(50, STEPS + 1, 50)), "the log holds each step once"


def test_a_changed_command_refuses_to_resume(folder, reference):
    failed = subprocess.run(command(folder, reference, "--lr", "0.01"), cwd=ROOT, capture_output=True, text=True)
    assert failed.returncode != 0
    assert "started with other settings" in failed.stderr and "lr: 0.002 -> 0.01" in failed.stderr


def test_the_recipe_gives_a_v_prediction_model_with_attention_that_samples(reference):
    backbone = revelio.load_backbone(reference / "pipeline", device="cpu")
    assert backbone.pipeline.scheduler.config.prediction_type == "v_prediction"
    assert any("Attn" in type(block).__name__ for block in backbone.unet.down_blocks)
    assert backbone.class_names == ["dark", "light"]
    images = backbone.generate("light", seed=0, num_images=2, num_inference_steps=4, output_type="pt")
    assert images.shape == (2, 1, 16, 16) and torch.isfinite(images).all()
