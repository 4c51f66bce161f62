"""Are SAE features more monosemantic than the space they decompose? Purity against two baselines.

A direction's *label purity* on labelled images: take the ``top_k`` images where it is most
active and weight each by its activation; purity is the share of that weight on their most
common class (1: one class only; about 1/classes for a direction blind to class). Comparing the
SAE's features with (a) random directions of the same activation space and (b) the backbone's
own channels (neurons), on the same images with the same top-k and weighting, says how much the
SAE adds: a feature set no purer than random directions has found no semantic axes.

Spatial activations ([N, tokens, d]) are scored per image by their largest value over locations,
the way an exemplar is chosen. Baselines use activations centred on the images' mean, so a
direction's score is its deviation (SAE codes are already relative to the SAE's bias).
"""

from __future__ import annotations

import torch

from revelio.sae.model import KSparseAutoencoder


def label_purity(activations: torch.Tensor, labels: torch.Tensor, top_k: int) -> torch.Tensor:
    """Purity of every direction ([N, D] activations, one row per image) that fires on some image
    of its top ``top_k``; directions that never fire are left out (dead features have no label)."""
    weights, rows = activations.clamp_min(0).topk(min(top_k, len(activations)), dim=0)  # [k, D]
    mass = torch.zeros(int(labels.max()) + 1, activations.shape[1]).scatter_add_(0, labels[rows], weights)
    total = weights.sum(0)
    live = total > 0
    return mass[:, live].max(0).values / total[live]


def _per_image(values: torch.Tensor) -> torch.Tensor:
    """[N, D] from pooled [N, D] or spatial [N, tokens, D] (largest value over locations)."""
    return values.amax(dim=1) if values.ndim == 3 else values


@torch.no_grad()
def purity_against_baselines(
    sae: KSparseAutoencoder, activations: torch.Tensor, labels: torch.Tensor, top_k: int, seed: int = 0
) -> dict[str, float]:
    """Mean purity of the SAE's live features, of as many random unit directions, and of the
    backbone's channels, on the same images (``activations`` as the SAE was trained on)."""
    x = activations.float()
    centred = x - x.flatten(0, -2).mean(0)
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(x.shape[-1], sae.d_sae, generator=generator)
    directions /= directions.norm(dim=0, keepdim=True)
    codes = sae.encode(x, dense=True)
    scores = {
        "sae": label_purity(_per_image(codes), labels, top_k),
        "random_directions": label_purity(_per_image(centred @ directions), labels, top_k),
        "neurons": label_purity(_per_image(centred), labels, top_k),
    }
    result = {name: float(values.mean()) for name, values in scores.items()}
    result["sae_live_features"] = len(scores["sae"])
    result["chance"] = 1 / (int(labels.max()) + 1)
    return result
