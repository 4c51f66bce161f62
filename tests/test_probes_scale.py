"""Probes at scale: SAE-code probes train on sparse codes, the fast fitting paths keep the old math."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from revelio.probes import (
    DiffCProbe,
    LinearProbe,
    Probe,
    SparseFeatures,
    Split,
    split_train_validation,
)
from revelio.probes.diffc import _keep_mask, _relu_dropout
from revelio.probes.logistic import fit_logistic_regression
from revelio.sae import KSparseAutoencoder
from revelio.storage.files import read_safetensors

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["zero", "one", "two"]


def sae_codes(n: int = 900, d_in: int = 16, d_sae: int = 96, k: int = 6, seed: int = 0):
    """Class-dependent inputs, their SAE codes (sparse and dense) and labels."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    x = torch.randn(3, d_in, generator=g)[labels] * 2 + torch.randn(n, d_in, generator=g) + 5
    torch.manual_seed(seed)
    sae = KSparseAutoencoder(d_in, d_sae, k)
    with torch.no_grad():
        code = sae.encode(x)
    return SparseFeatures.from_code(code, d_sae), code.to_dense(d_sae), labels, sae, x


def test_sparse_features_index_and_multiply_like_the_dense_matrix():
    sparse, dense, *_ = sae_codes(n=50)
    rows = torch.tensor([3, 7, 7, 41])
    torch.testing.assert_close(sparse[rows].to_dense(), dense[rows])
    weight = torch.randn(96, 4)
    torch.testing.assert_close(sparse.matmul(weight), dense @ weight)
    torch.testing.assert_close(sparse.transposed_matmul(torch.ones(50, 2)), dense.t() @ torch.ones(50, 2))
    mean, std = sparse.column_moments()
    torch.testing.assert_close(mean, dense.double().mean(0))
    torch.testing.assert_close(std, dense.double().std(0, unbiased=False))
    scale = std.clamp_min(1e-3)
    centred = sparse.standardise(mean, scale)  # still sparse: the mean is subtracted implicitly
    assert centred.values.shape == sparse.values.shape
    torch.testing.assert_close(centred.to_dense(), ((dense.double() - mean) / scale).float())
    torch.testing.assert_close(centred.matmul(weight), ((dense.double() - mean) / scale).float() @ weight, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(centred.transposed_matmul(torch.ones(50, 2)), centred.to_dense().t() @ torch.ones(50, 2),
                               rtol=1e-4, atol=1e-4)


def test_probe_on_sparse_codes_equals_the_probe_on_dense_codes():
    sparse, dense, labels, _, _ = sae_codes()
    from_sparse = LinearProbe.fit(*split_train_validation(sparse[:700], labels[:700]), NAMES)
    from_dense = LinearProbe.fit(*split_train_validation(dense[:700], labels[:700]), NAMES)
    assert from_sparse.config == from_dense.config  # same C chosen, same validation accuracy
    for name, tensor in from_dense.state().items():
        torch.testing.assert_close(from_sparse.state()[name], tensor, rtol=0, atol=2e-3, msg=name)
    # one stored probe, either input: sparse or dense codes give the same probabilities
    torch.testing.assert_close(from_sparse.predict_proba(sparse[700:]), from_sparse.predict_proba(dense[700:]), rtol=1e-5, atol=1e-5)
    assert from_sparse.accuracy(sparse[700:], labels[700:]) > 0.9


def test_the_solver_reaches_scikit_learns_optimum():
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(1)
    x = torch.randn(400, 6, generator=g)
    y = (x[:, :3] + 0.7 * torch.randn(400, 3, generator=g)).argmax(dim=1)
    for c in (0.01, 1.0):
        ours, bias, _ = fit_logistic_regression(x, y, 3, c, max_iter=1000, tol=1e-6)
        theirs = LogisticRegression(C=c, tol=1e-8, max_iter=5000).fit(x.double().numpy(), y.numpy())
        torch.testing.assert_close(ours.double(), torch.from_numpy(theirs.coef_), rtol=0, atol=1e-3)
        torch.testing.assert_close(bias.double(), torch.from_numpy(theirs.intercept_), rtol=0, atol=1e-3)


def test_sparse_probe_format_is_the_linear_probes(tmp_path):
    sparse, dense, labels, _, _ = sae_codes()
    probe = LinearProbe.fit(*split_train_validation(sparse, labels), NAMES, hook="mid_block", timestep=25, pooling="mean", sae="mid_block/t25/mean")
    probe.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["probe_type"] == "linear" and config["d_in"] == 96
    tensors = read_safetensors(tmp_path / "model.safetensors")
    assert {name: tuple(t.shape) for name, t in tensors.items()} == {
        "mean": (96,), "scale": (96,), "linear.weight": (3, 96), "linear.bias": (3,)}
    loaded = Probe.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.predict_proba(dense), probe.predict_proba(sparse), rtol=1e-5, atol=1e-5)


def test_constant_features_are_left_unscaled():
    """A latent dead on the training split but alive later must not be divided by ~0."""
    _, dense, labels, _, _ = sae_codes()
    dead = int((dense[:600] != 0).sum(0).argmin())
    dense[:600, dead] = 0
    dense[600:, dead] = 5.0
    probe = LinearProbe.fit(Split(dense[:600], labels[:600]), Split(dense[600:], labels[600:]), NAMES)
    assert float(probe.scale[dead]) == 1.0
    assert probe.predict_proba(dense[600:]).isfinite().all()


def test_classes_missing_from_training_never_win():
    _, dense, labels, _, _ = sae_codes()
    seen = labels != 2
    probe = LinearProbe.fit(*split_train_validation(dense[seen], labels[seen]), NAMES)
    assert (probe.predict(dense) != 2).all()
    assert float(probe.linear.bias.detach()[2]) == -1e4


def test_a_sparse_probe_never_builds_the_dense_code_matrix():
    """8192 images x 131072 latents: 4 GiB dense in float32; the sparse fit stays far below it."""
    script = r"""
import resource, torch
from revelio.probes import LinearProbe, SparseFeatures, split_train_validation
n, d_sae, k = 8192, 131072, 8
g = torch.Generator().manual_seed(0)
labels = torch.arange(n) % 4
indices = (torch.randint(0, d_sae // 4, (n, k), generator=g) * 4 + labels[:, None]) % d_sae  # class-coded latents
codes = SparseFeatures(torch.rand(n, k, generator=g) + 0.5, indices, d_sae)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
probe = LinearProbe.fit(*split_train_validation(codes, labels), ["a", "b", "c", "d"], max_iter=30)
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 2**10
assert probe.accuracy(codes, labels) > 0.9
print(f"peak RSS grew by {grown:.0f} MiB")
assert grown < 1024, grown
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def test_fused_relu_dropout_matches_relu_then_a_mask():
    torch.manual_seed(0)
    x = torch.randn(64, 8, 5, 5).to(memory_format=torch.channels_last).requires_grad_()
    torch.manual_seed(1)
    out = _relu_dropout(x, 0.25)
    torch.manual_seed(1)
    keep = _keep_mask(x, 0.25)
    expected = x.relu() * keep / 0.75
    torch.testing.assert_close(out, expected)
    (grad,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(grad, ((x > 0) & keep).float() / 0.75)
    assert abs(float(keep.float().mean()) - 0.75) < 0.02
    big = _keep_mask(torch.empty(1000, 1000), 0.1)
    assert abs(float(big.float().mean()) - 0.9) < 0.002
    with torch.no_grad():
        torch.testing.assert_close(_relu_dropout(x, 0.0), x.relu())


def _sequential_forward(probe: DiffCProbe, features: torch.Tensor) -> torch.Tensor:
    """Diff-C as the previous code applied it: the body as one nn.Sequential."""
    maps = features.transpose(1, 2).reshape(features.shape[0], probe.d_in, probe.grid_side, probe.grid_side)
    return probe.head(probe.body(probe.input_norm(maps)).mean(dim=(2, 3)))


def test_diff_c_forward_is_the_sequential_head():
    torch.manual_seed(0)
    probe = DiffCProbe.create(8, 4, NAMES)
    x = torch.randn(10, 16, 8)
    probe.train()  # dropout off: the fused path must equal ReLU modules then Dropout(0)
    probe.dropout = 0.0
    for module in probe.body:
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    torch.testing.assert_close(probe(x), _sequential_forward(probe, x))
    probe.eval()
    torch.testing.assert_close(probe(x), _sequential_forward(probe, x))
    torch.testing.assert_close(probe.predict_proba(torch.cat([x] * 60), batch_size=64),
                               F.softmax(_sequential_forward(probe, torch.cat([x] * 60)), dim=-1))


@pytest.mark.parametrize("kind", ["linear", "sae-linear", "diff-c"])
def test_the_bundled_releases_probes_still_load_and_apply(kind):
    """Probes written by the previous code (the committed release) load and predict as before."""
    release = ROOT / "releases" / "fashion-mnist"
    subfolder = f"probes/mid_block/t100/{kind}"
    if not (release / subfolder / "config.json").is_file():
        pytest.skip("the bundled release is not in this checkout")
    probe = Probe.from_pretrained(release, subfolder=subfolder)
    g = torch.Generator().manual_seed(0)
    if kind == "diff-c":
        x = torch.randn(6, probe.grid_side**2, probe.d_in, generator=g)
        torch.testing.assert_close(probe(x), _sequential_forward(probe, x))
    else:
        x = torch.randn(6, probe.d_in, generator=g).relu()
        if kind == "sae-linear":
            values, indices = x.topk(8, dim=1)
            sparse = SparseFeatures(values, indices, probe.d_in)
            x = sparse.to_dense()
            torch.testing.assert_close(probe(sparse), probe(x), rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(probe(x), probe.linear((x - probe.mean) / probe.scale))
