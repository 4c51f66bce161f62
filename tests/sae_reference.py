"""The SAE training step written the slow, obvious way, for tests on CPU and CUDA to compare against."""

from __future__ import annotations

import torch

from revelio.sae import KSparseAutoencoder


def double_sae_with_biases(**shape) -> KSparseAutoencoder:
    """A float64 SAE with non-zero biases, so gradient checks cover every parameter."""
    torch.manual_seed(0)
    sae = KSparseAutoencoder(**shape).double()
    with torch.no_grad():
        sae.b_pre.normal_()
        sae.b_enc.normal_(std=0.1)
    return sae


class NoStep:
    """An optimiser that leaves parameters alone, so the step's gradients can be inspected."""

    param_groups: list = []

    def step(self) -> None:
        pass


def autograd_of_the_dense_loss(sae: KSparseAutoencoder, x: torch.Tensor, dead: torch.Tensor | None, k_aux: int, coef: float):
    """The loss written densely ([N, d_sae] codes), differentiated by autograd; decoder grads made row-orthogonal."""
    target = x * sae.input_scale
    pre = (target - sae.b_pre) @ sae.W_enc.t() + sae.b_enc
    values, indices = pre.topk(sae.k)
    dense = torch.zeros_like(pre).scatter(1, indices, values.relu())
    err = dense @ sae.W_dec + sae.b_pre - target
    total = (target - target.mean(0)).pow(2).sum()
    loss = err.pow(2).sum() / total
    if dead is not None:
        aux_values, aux_indices = pre.masked_fill(~dead, float("-inf")).topk(k_aux)
        aux_dense = torch.zeros_like(pre).scatter(1, aux_indices, aux_values.relu())
        loss = loss + coef * (aux_dense @ sae.W_dec + err.detach()).pow(2).sum() / total
    names = ["W_dec", "W_enc", "b_enc", "b_pre"]
    grads = dict(zip(names, torch.autograd.grad(loss, [getattr(sae, n) for n in names])))
    grads["W_dec"] = grads["W_dec"] - (grads["W_dec"] * sae.W_dec).sum(1, keepdim=True) * sae.W_dec
    return (err.pow(2).sum() / total).detach(), {name: g.detach() for name, g in grads.items()}
