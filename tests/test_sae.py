"""The k-SAE: sparsity, the Hub format and its failure modes, and a trainer that resumes exactly."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from revelio.analysis.statistics import feature_stats
from revelio.cache import ActivationCache, write_cache
from revelio.sae import KSparseAutoencoder
from revelio.sae.evaluation import SAEEvaluator
from revelio.sae.training import FusedStep, SAETrainConfig, TensorSource, train_sae
from revelio.storage.files import ArtifactFormatError, read_safetensors
from tests.sae_reference import NoStep, autograd_of_the_dense_loss, double_sae_with_biases

ROOT = Path(__file__).resolve().parents[1]


def synthetic(n: int = 40_000, d: int = 32, m: int = 64, active: int = 3, seed: int = 0):
    """Data made of known sparse directions: each row mixes ``active`` of ``m`` unit vectors."""
    g = torch.Generator().manual_seed(seed)
    directions = torch.randn(m, d, generator=g)
    directions /= directions.norm(dim=1, keepdim=True)
    chosen = torch.stack([torch.randperm(m, generator=g)[:active] for _ in range(n)])
    weights = torch.rand(n, active, generator=g) + 0.5
    data = torch.zeros(n, m).scatter_(1, chosen, weights) @ directions + 0.3
    return data, directions


def small_config(**overrides) -> SAETrainConfig:
    settings = dict(expansion=4, k=3, batch_size=512, total_tokens=300_000, dead_tokens=20_000,
                    warmup_steps=20, lr=4e-3, checkpoint_every=1000, log_every=10)
    return SAETrainConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[KSparseAutoencoder, torch.Tensor, Path]:
    data, directions = synthetic()
    out = tmp_path_factory.mktemp("sae")
    config = small_config(metadata={"backbone": "tiny", "hook": "mid_block", "timestep": 25, "pooling": "mean"})
    return train_sae(TensorSource(data), config, out, progress=False), directions, out


@pytest.mark.training  # the module's SAE trains for seconds
def test_trainer_recovers_known_sparse_directions(trained):
    sae, directions, _ = trained
    best_cosine = (directions @ sae.W_dec.detach().T).max(dim=1).values
    assert (best_cosine > 0.9).float().mean() >= 0.9
    assert sae.config.metrics["fraction_variance_explained"] > 0.9


def test_encode_keeps_exactly_k_latents():
    sae = KSparseAutoencoder(d_in=16, d_sae=64, k=5)
    with torch.no_grad():
        sae.b_enc.fill_(10.0)  # every pre-activation positive, so ReLU drops none of the top k
    x = torch.randn(7, 16)
    code = sae.encode(x)
    assert code.values.shape == code.indices.shape == (7, 5)
    assert all(len(set(row.tolist())) == 5 for row in code.indices)
    dense = sae.encode(x, dense=True)
    assert ((dense != 0).sum(dim=1) == 5).all()
    torch.testing.assert_close(sae.decode(code), sae.decode(dense))


def test_spatial_tokens_keep_their_shape():
    sae = KSparseAutoencoder(d_in=8, d_sae=32, k=4)
    x = torch.randn(2, 9, 8)
    assert sae.encode(x).values.shape == (2, 9, 4)
    assert sae(x).shape == (2, 9, 8)
    with pytest.raises(ValueError, match="takes inputs with 8 channels"):
        sae.encode(torch.randn(2, 7))


@pytest.mark.training
def test_decoder_rows_stay_unit_norm(trained):
    sae, _, _ = trained
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(sae.d_sae))


@pytest.mark.training
def test_training_writes_logs_plot_and_metrics(trained):
    sae, _, out = trained
    rows = [json.loads(line) for line in (out / "training" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["tokens"] == sae.config.training_tokens
    assert rows[-1]["normalized_mse"] < rows[0]["normalized_mse"]
    assert (out / "training" / "training_curves.png").stat().st_size > 1000
    config = json.loads((out / "config.json").read_text())
    assert config["hook"] == "mid_block" and config["timestep"] == 25 and config["input_scale"] > 0
    assert set(config["metrics"]) >= {"normalized_mse", "fraction_variance_explained", "l0", "dead_fraction"}


@pytest.mark.training
def test_save_and_load_are_bit_exact(trained, tmp_path):
    sae, _, _ = trained
    data, _ = synthetic(n=600, seed=1)
    labels = torch.arange(600) % 3
    (cell,) = write_cache(tmp_path / "cache", [{("mid_block", 25): data}], pooling="mean").values()
    sae.feature_stats = feature_stats(sae, ActivationCache(cell), labels=labels, class_names=["a", "b", "c"])
    sae.save_pretrained(tmp_path / "cell")
    loaded = KSparseAutoencoder.from_pretrained(tmp_path, subfolder="cell")
    for name, param in sae.named_parameters():
        assert torch.equal(param, getattr(loaded, name)), name
    assert loaded.input_scale == sae.input_scale and loaded.config == sae.config
    assert loaded.feature_stats.labels == sae.feature_stats.labels
    assert torch.equal(loaded.feature_stats.top_images, sae.feature_stats.top_images)


@pytest.mark.training
def test_from_pretrained_by_repo_id_from_the_offline_cache(trained, tmp_path):
    sae, _, _ = trained
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--tiny-saes"
    sae.save_pretrained(repo / "snapshots" / commit / "mid_block" / "t25" / "mean")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    code = (
        "import sys, torch; from revelio.sae import KSparseAutoencoder;"
        "sae = KSparseAutoencoder.from_pretrained('someone/tiny-saes', subfolder='mid_block/t25/mean');"
        "print(sae.d_sae, float(sae.W_dec.sum()))"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(sae.d_sae), str(float(sae.W_dec.detach().sum()))]


@pytest.fixture
def saved(tmp_path) -> Path:
    """A saved SAE; untrained, since the format checks need only its files."""
    torch.manual_seed(0)
    KSparseAutoencoder(d_in=32, d_sae=128, k=3, hook="mid_block", timestep=25, pooling="mean").save_pretrained(tmp_path / "sae")
    return tmp_path / "sae"


def test_truncated_weights_are_refused(saved):
    weights = saved / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ArtifactFormatError, match="not a valid safetensors file.*truncated"):
        KSparseAutoencoder.from_pretrained(saved)


def test_tampered_weights_are_refused(saved):
    weights = saved / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF  # one flipped byte in the tensor data: the file still parses
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactFormatError, match="does not match the checksum"):
        KSparseAutoencoder.from_pretrained(saved)


def test_config_that_disagrees_with_the_weights_is_refused(saved):
    config = json.loads((saved / "config.json").read_text())
    config["d_sae"] *= 2
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactFormatError, match="do not fit .*expected"):
        KSparseAutoencoder.from_pretrained(saved)


def test_pickles_are_never_loaded(saved):
    (saved / "model.safetensors").write_bytes(pickle.dumps({"W_enc": [1.0, 2.0]}))
    with pytest.raises(ArtifactFormatError, match="looks like a pickle.*never unpickles"):
        KSparseAutoencoder.from_pretrained(saved)


def test_missing_subfolder_lists_what_exists(saved):
    with pytest.raises(ArtifactFormatError, match=r"no config.json in .*up_blocks.*Folders with a config.json here: \['.'\]"):
        KSparseAutoencoder.from_pretrained(saved, subfolder="up_blocks.0/t25/mean")


# The crash point is deterministic: the process SIGKILLs itself when the trainer asks for batch 71,
# between the checkpoints of steps 60 and 80, with log rows up to step 70 written.
_KILLED_TRAINER = """
import json, os, signal, sys
from safetensors.torch import load_file
from revelio.sae.training import SAETrainConfig, TensorSource, train_sae

class DyingSource(TensorSource):
    def batches(self, batch_size, *, seed=0, start=0):
        for count, batch in enumerate(super().batches(batch_size, seed=seed, start=start)):
            if count == 70:
                os.kill(os.getpid(), signal.SIGKILL)
            yield batch

config = SAETrainConfig(**json.loads(sys.argv[1]))
train_sae(DyingSource(load_file(sys.argv[2])["data"]), config, sys.argv[3], progress=False)
"""


@pytest.mark.kill
@pytest.mark.training
def test_killed_training_resumes_to_the_same_weights(tmp_path):
    data, _ = synthetic(n=8192)
    save_file({"data": data}, str(tmp_path / "data.safetensors"))
    config = small_config(total_tokens=200 * 256, batch_size=256, checkpoint_every=20, dead_tokens=2048)
    uninterrupted = train_sae(TensorSource(data), config, tmp_path / "straight", progress=False)

    settings = {k: v for k, v in config.__dict__.items()}
    out = tmp_path / "killed"
    killed = subprocess.run([sys.executable, "-c", _KILLED_TRAINER, json.dumps(settings), str(tmp_path / "data.safetensors"),
                             str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert json.loads((out / "training" / "checkpoints" / "latest.json").read_text())["step"] == 60
    logged = [json.loads(line)["step"] for line in (out / "training" / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1] == 70, "the killed run logged past its last checkpoint"
    assert not (out / "model.safetensors").exists()

    resumed = train_sae(TensorSource(data), config, out, progress=False)
    for name, param in uninterrupted.named_parameters():
        assert torch.equal(param, getattr(resumed, name)), name
    steps = [json.loads(line)["step"] for line in (out / "training" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)), "the log reads as one run after resuming"
    shutil.rmtree(tmp_path / "straight")


@pytest.mark.parametrize("with_auxk", [False, True])
def test_fused_step_gradients_equal_autograd_of_the_dense_loss(with_auxk):
    sae = double_sae_with_biases(d_in=12, d_sae=48, k=4, input_scale=1.5)
    x = torch.randn(32, 12, dtype=torch.float64)
    dead = (torch.arange(48) % 3 == 0) if with_auxk else None
    k_aux, coef = 6, 0.25

    nmse, expected = autograd_of_the_dense_loss(sae, x, dead, k_aux, coef)

    out = FusedStep(sae, NoStep(), batch_size=32)(x, dead, k_aux, coef)
    torch.testing.assert_close(out["normalized_mse"], nmse)
    for name, grad in expected.items():
        torch.testing.assert_close(getattr(sae, name).grad, grad, msg=name)


def test_encode_is_differentiable_with_the_dense_gradients():
    sae = double_sae_with_biases(d_in=16, d_sae=64, k=4, input_scale=2.0)
    x = torch.randn(10, 16, dtype=torch.float64)
    params = list(sae.parameters())
    sparse_grads = torch.autograd.grad(sae(x).pow(2).sum(), params)
    pre = (x * 2 - sae.b_pre) @ sae.W_enc.t() + sae.b_enc
    values, indices = pre.topk(4)
    dense = torch.zeros_like(pre).scatter(1, indices, values.relu())
    dense_grads = torch.autograd.grad(((dense @ sae.W_dec + sae.b_pre) / 2).pow(2).sum(), params)
    for sparse, dense_grad in zip(sparse_grads, dense_grads):
        torch.testing.assert_close(sparse, dense_grad)


def test_a_valid_file_is_never_mistaken_for_a_pickle(tmp_path):
    """The first byte of a safetensors file is its header length's low byte: 0x80 is legal."""
    path = tmp_path / "weights.safetensors"
    for padding in range(256):
        save_file({"w": torch.ones(2)}, str(path), {"pad": "x" * padding})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    assert torch.equal(read_safetensors(path)["w"], torch.ones(2))


class _CrashingSource(TensorSource):
    """Raises after ``limit`` batches, leaving the run's last checkpoint behind."""

    def __init__(self, activations: torch.Tensor, limit: int) -> None:
        super().__init__(activations)
        self.limit = limit

    def batches(self, batch_size, *, seed=0, start=0):
        for count, batch in enumerate(super().batches(batch_size, seed=seed, start=start)):
            if count == self.limit:
                raise RuntimeError("simulated crash")
            yield batch


def test_resuming_with_other_settings_is_refused(tmp_path):
    data, _ = synthetic(n=2048)
    config = small_config(total_tokens=40 * 256, batch_size=256, checkpoint_every=10)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_sae(_CrashingSource(data, limit=25), config, tmp_path, progress=False)
    with pytest.raises(ValueError, match="checkpoint of a run with other settings"):
        train_sae(TensorSource(data), small_config(total_tokens=40 * 256, batch_size=256, checkpoint_every=10, k=4), tmp_path, progress=False)
    resumed = train_sae(TensorSource(data), config, tmp_path, progress=False)
    assert resumed.config.training_tokens == 40 * 256


@pytest.mark.training
def test_pruning_drops_only_latents_the_data_never_uses(tmp_path):
    # low-rank data (4 directions in 16 dimensions) leaves most of a 64-latent dictionary unused
    data, _ = synthetic(n=8000, d=16, m=4, active=2)
    config = small_config(expansion=4, k=2, total_tokens=100_000, eval_tokens=8000)
    full = train_sae(TensorSource(data), config, tmp_path / "full", progress=False)
    pruned = train_sae(TensorSource(data), small_config(expansion=4, k=2, total_tokens=100_000, eval_tokens=8000,
                                                        prune_below=1e-9), tmp_path / "pruned", progress=False)
    fires = SAEEvaluator(full)
    fires.add(data)
    live = int((fires.fires > 0).sum())
    assert pruned.d_sae == live < full.d_sae
    assert pruned.config.metrics["pruned_latents"] == full.d_sae - live
    assert pruned.config.metrics["dead_fraction"] == 0.0
    torch.testing.assert_close(pruned(data), full(data))  # dropped latents were never in a top-k
    reloaded = KSparseAutoencoder.from_pretrained(tmp_path / "pruned")
    assert reloaded.d_sae == live
    with pytest.raises(ValueError, match="fewer than k"):
        full.keep_latents(torch.zeros(full.d_sae, dtype=torch.bool))
