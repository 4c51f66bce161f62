"""Questions about one image's code: which features fire, how strongly, and where.

Shared by the app (Explore), scripts and users' notebooks; all work from a :class:`SparseCode`
or the SAE itself, never a dense [rows, d_sae] matrix.
"""

from __future__ import annotations

import torch

from revelio.sae.model import KSparseAutoencoder, SparseCode


def _check_feature(sae: KSparseAutoencoder, feature: int) -> None:
    if not 0 <= feature < sae.d_sae:
        raise ValueError(f"feature must be in 0..{sae.d_sae - 1}; got {feature}")


def feature_strengths(code: SparseCode, d_sae: int) -> torch.Tensor:
    """[N, d_sae]: each feature's strongest activation per image in a code of [N, T, k] (or [N, k]) values."""
    values = code.values.float().reshape(code.values.shape[0], -1)
    indices = code.indices.reshape(code.indices.shape[0], -1)
    return values.new_zeros(values.shape[0], d_sae).scatter_reduce(1, indices, values, "amax")


def feature_values(code: SparseCode, feature: int) -> torch.Tensor:
    """One feature's value in every row of a code (0 where it is not among the kept k): shape [...]."""
    return torch.where(code.indices == feature, code.values.float(), 0.0).sum(-1)


@torch.no_grad()
def feature_heatmap(sae: KSparseAutoencoder, tokens: torch.Tensor, feature: int, grid_side: int) -> torch.Tensor:
    """[grid_side, grid_side]: one feature's activation at every location of one image.

    ``tokens`` are the image's [T, d_in] spatial activations, row-major (T = grid_side**2), as a
    spatial cache or ``extract(..., pooling="none")`` holds them. Zero where the feature is not
    among a token's top k.
    """
    if tokens.ndim != 2 or tokens.shape[0] != grid_side * grid_side:
        raise ValueError(
            f"tokens must be [grid_side**2, d_in] = [{grid_side * grid_side}, {sae.d_in}]; got {tuple(tokens.shape)}"
        )
    _check_feature(sae, feature)
    return feature_values(sae.encode(tokens.to(sae.W_enc.device)), feature).reshape(grid_side, grid_side).cpu()


@torch.no_grad()
def top_features(sae: KSparseAutoencoder, x: torch.Tensor, n: int = 10) -> list[tuple[int, float]]:
    """The (feature, activation) pairs of the up to ``n`` strongest active features of one image.

    ``x`` is one pooled vector [d_in] or one image's tokens [T, d_in]; for tokens a feature's
    strength is its maximum over locations. Ties go to the lower feature index.
    """
    if x.ndim not in (1, 2):
        raise ValueError(f"x must be one image: [d_in] or [T, d_in]; got shape {tuple(x.shape)}")
    return strongest(feature_strengths(sae.encode(x.reshape(1, -1, x.shape[-1]).to(sae.W_enc.device)), sae.d_sae)[0], n)


def strongest(strength: torch.Tensor, n: int) -> list[tuple[int, float]]:
    """The up to ``n`` (feature, strength) pairs with the largest positive strength; ties to the lower index."""
    values, order = strength.sort(descending=True, stable=True)
    return [(feature, value) for feature, value in zip(order[:n].tolist(), values[:n].tolist()) if value > 0]
