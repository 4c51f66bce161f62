"""Extraction at scale: a kill -9 resumes to the same cache, two processes write one cache, streaming
reads, and spatial caches can keep a seeded sample of locations."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from revelio.cache import ActivationCache, find_cells
from revelio.steps.probe_grid import ProbeGridConfig, train_probe_grid
from revelio.storage.files import read_safetensors
from tests.helpers import ROOT, run

HOOKS, TIMESTEPS = ["down_blocks.1", "mid_block"], ["50", "400"]
pytestmark = pytest.mark.slow  # every test runs the extraction command line, a few seconds each


@pytest.fixture(scope="module")
def folder(make_image_folder) -> Path:
    return make_image_folder({"dark": 40, "light": 200}, per_class={"train": 30, "test": 4}, seed=5)


def command(model: Path, folder: Path, out: Path, *extra: str) -> list[str]:
    return ["train/extract_activations.py", "--backbone", str(model), "--dataset", str(folder), "--hooks", *HOOKS,
            "--timesteps", *TIMESTEPS, "--batch-size", "4", "--part-images", "8", "--out", str(out), *extra]


def rows(root: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Every column of every cell, and the labels: what must be equal between two caches."""
    found = {cell.path: ActivationCache(root / cell.path).read_all() for cell in find_cells(root)}
    found["labels"] = read_safetensors(root / "labels.safetensors")
    return found


def assert_same(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for cell in first:
        for column in first[cell]:
            assert torch.equal(first[cell][column], second[cell][column]), (cell, column)


@pytest.fixture(scope="module")
def reference(model_dirs, folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    run(sys.executable, *command(model_dirs["pixel-class"], folder, out), OMP_NUM_THREADS="1")
    return out


def test_parts_merge_into_one_cache_of_every_image(reference):
    assert len(list((reference / "parts").glob("part-*/done.json"))) == 8  # 60 images in parts of 8
    cache = ActivationCache(reference / "mid_block" / "t50" / "mean")
    assert cache.num_images == 60 and cache.read_all()["image_index"].tolist() == list(range(60))
    assert read_safetensors(reference / "labels.safetensors")["labels"].bincount().tolist() == [30, 30]


# The crash point is deterministic: the extraction SIGKILLs itself when it starts writing its 6th batch
# (batches of 4, parts of 8 images): two parts finished, the third half written.
_KILLED_EXTRACTION = """
import os, runpy, signal, sys
from revelio.steps import extract_parts

add, calls = extract_parts._add, []

def add_then_die(*args, **kwargs):
    calls.append(None)
    if len(calls) == 6:
        os.kill(os.getpid(), signal.SIGKILL)
    return add(*args, **kwargs)

extract_parts._add = add_then_die
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.kill
def test_a_killed_extraction_resumes_to_the_same_cache(model_dirs, folder, reference, tmp_path):
    out = tmp_path / "killed"
    killed = subprocess.run([sys.executable, "-c", _KILLED_EXTRACTION, *command(model_dirs["pixel-class"], folder, out)],
                            cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    finished = len(list((out / "parts").glob("part-*/done.json")))
    assert finished == 2 and (out / "parts" / "part-00002").is_dir(), "killed inside the third part"
    resumed = run(sys.executable, *command(model_dirs["pixel-class"], folder, out), OMP_NUM_THREADS="1")
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["parts_written_here"] == 8 - finished
    assert_same(rows(out), rows(reference))


def test_a_changed_command_refuses_to_resume(model_dirs, folder, reference):
    failed = subprocess.run([sys.executable, *command(model_dirs["pixel-class"], folder, reference, "--seed", "3")],
                            cwd=ROOT, capture_output=True, text=True)
    assert failed.returncode != 0 and "started with other settings" in failed.stderr and "seed: 0 -> 3" in failed.stderr


@pytest.mark.multiprocess
def test_two_processes_write_one_cache_equal_to_one_process(model_dirs, folder, reference, tmp_path):
    out = tmp_path / "two"
    run(sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", *command(model_dirs["pixel-class"], folder, out), OMP_NUM_THREADS="1")
    assert_same(rows(out), rows(reference))


def test_a_streamed_dataset_gives_the_same_cache(model_dirs, folder, reference, tmp_path):
    out = tmp_path / "streamed"
    run(sys.executable, *command(model_dirs["pixel-class"], folder, out, "--streaming"), OMP_NUM_THREADS="1")
    assert_same(rows(out), rows(reference))


def test_spatial_caches_keep_a_seeded_sample_of_locations(model_dirs, folder, reference, tmp_path):
    out = tmp_path / "sampled"
    run(sys.executable, *command(model_dirs["pixel-class"], folder, out, "--tokens-per-image", "3"), OMP_NUM_THREADS="1")
    full, sampled = (ActivationCache(root / "mid_block" / "t50" / "none") for root in (reference, out))
    assert sampled.tokens_per_image == 3 and sampled.num_rows == 3 * 60 and sampled.grid_side == full.grid_side
    got, every = sampled.read_all(), full.read_all()
    per_image = full.tokens_per_image
    for row in (0, 7, 100):  # each kept token is the full cache's token at its stored location
        image, location = int(got["image_index"][row]), int(got["location"][row])
        assert torch.equal(got["activations"][row], every["activations"][image * per_image + location])
    assert len(set(got["location"].view(60, 3).tolist()[0])) == 3
    assert_same({"pooled": ActivationCache(out / "mid_block" / "t50" / "mean").read_all()},
                {"pooled": ActivationCache(reference / "mid_block" / "t50" / "mean").read_all()})
    disk = {root.name: sum(p.stat().st_size for p in (root / "parts").rglob("shard-*")) for root in (out, reference)}
    assert disk[out.name] < disk[reference.name]
    # Diff-C needs whole maps: the probe grid says so instead of reading the sample as a tiny grid
    with pytest.raises(ValueError, match="Diff-C probes need whole maps"):
        train_probe_grid(ProbeGridConfig(cache=out, out=tmp_path / "probes", kinds=["diff-c"]))
