"""The SAE trainer on CUDA: the fused step's gradients equal autograd's there too, and train_sae runs.

Skipped without a CUDA device (CI is CPU-only); on a GPU machine run ``pytest tests/test_sae_cuda.py``.
"""

from __future__ import annotations

import pytest
import torch

from revelio.sae import KSparseAutoencoder
from revelio.sae.kernels import SparseCodePattern
from revelio.sae.training import (
    FusedStep,
    SAETrainConfig,
    TensorSource,
    make_optimizer,
    train_sae,
)
from tests.sae_reference import NoStep, autograd_of_the_dense_loss, double_sae_with_biases

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() is False)")
CUDA = torch.device("cuda")


@pytest.mark.parametrize("with_auxk", [False, True])
def test_fused_step_on_cuda_equals_autograd_of_the_dense_loss(with_auxk):
    sae = double_sae_with_biases(d_in=12, d_sae=48, k=4, input_scale=1.5).to(CUDA)
    x = torch.randn(32, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(CUDA)
    dead = (torch.arange(48, device=CUDA) % 3 == 0) if with_auxk else None
    k_aux, coef = 6, 0.25
    nmse, expected = autograd_of_the_dense_loss(sae, x, dead, k_aux, coef)

    out = FusedStep(sae, NoStep(), batch_size=32)(x, dead, k_aux, coef)
    assert out["indices"].device.type == "cuda"
    torch.testing.assert_close(out["normalized_mse"], nmse)
    for name, grad in expected.items():
        assert getattr(sae, name).grad.device.type == "cuda", name
        torch.testing.assert_close(getattr(sae, name).grad, grad, msg=name)


def test_sparse_kernel_on_cuda_matches_cpu():
    g = torch.Generator().manual_seed(0)
    indices = torch.stack([torch.randperm(300, generator=g)[:16] for _ in range(64)])
    coeffs, rows = torch.randn(64, 16, generator=g), torch.randn(64, 40, generator=g)
    expected = SparseCodePattern(indices, 300).accumulate_(torch.empty(300, 40), coeffs, rows, overwrite=True)
    on_gpu = SparseCodePattern(indices.to(CUDA), 300).accumulate_(torch.full((300, 40), float("nan"), device=CUDA),
                                                                  coeffs.to(CUDA), rows.to(CUDA), overwrite=True)
    torch.testing.assert_close(on_gpu.cpu(), expected, rtol=1e-5, atol=1e-5)


def test_fused_adam_steps_on_cuda_follow_the_cpu_trajectory():
    """Real steps (fused Adam, decoder renorm, AuxK) on CUDA follow the same steps on CPU."""
    data = torch.randn(2048, 24, generator=torch.Generator().manual_seed(0))
    losses, params = {}, {}
    for device in ("cpu", CUDA):
        torch.manual_seed(0)
        sae = KSparseAutoencoder(24, 96, 4).to(device)
        step = FusedStep(sae, make_optimizer(sae, 1e-3), batch_size=256)
        dead = torch.arange(96, device=device) % 4 == 0
        losses[str(device)] = [float(step(batch.to(device), dead, 8, 1 / 32)["normalized_mse"]) for batch in data.split(256)]
        params[str(device)] = {name: p.detach().cpu() for name, p in sae.named_parameters()}
    torch.testing.assert_close(losses["cuda"], losses["cpu"], rtol=1e-4, atol=0)
    for name, value in params["cpu"].items():  # 8 steps of lr 1e-3 move a weight by at most 8e-3
        torch.testing.assert_close(params["cuda"][name], value, rtol=0, atol=2e-3, msg=name)


def test_train_sae_runs_on_cuda(tmp_path):
    data = torch.randn(4096, 16, generator=torch.Generator().manual_seed(0))
    config = SAETrainConfig(expansion=4, k=3, batch_size=256, total_tokens=20 * 256, dead_tokens=512, warmup_steps=2,
                            checkpoint_every=8, log_every=4, eval_tokens=1024)
    sae = train_sae(TensorSource(data), config, tmp_path, progress=False, device="cuda")
    assert sae.W_enc.device.type == "cpu", "the trained SAE comes back on the CPU, ready to save and share"
    assert torch.isfinite(sae.W_enc).all() and sae.config.training_tokens == 20 * 256
    reloaded = KSparseAutoencoder.from_pretrained(tmp_path)
    torch.testing.assert_close(reloaded.W_dec, sae.W_dec)
