"""Sparse probe inputs: SAE codes as (values, indices) rows, never a dense [N, d_sae] matrix.

A TopK SAE keeps ``k`` of ``d_sae`` latents per input, so its codes for N images are N x k
numbers, while the dense matrix is N x d_sae: 64x more for the bundled release (k 8 of 512),
2560x at the paper's scale (k 32 of 64 x 1280). Probes on codes take :class:`SparseFeatures`
and touch only the stored entries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from revelio.sae.kernels import SparseCodePattern


@dataclass
class SparseFeatures:
    """Rows of a sparse [N, num_features] matrix, ``k`` stored entries per row (SAE codes).

    ``values`` and ``indices`` are [N, k]; an index may repeat only with a zero value (TopK codes
    never repeat). ``center`` ([num_features], optional) is subtracted from every row implicitly:
    products with it cost one extra [num_features] vector product, never a dense matrix.
    Indexing with a tensor or slice selects rows, like a dense tensor.
    """

    values: torch.Tensor
    indices: torch.Tensor
    num_features: int
    center: torch.Tensor | None = None
    _pattern: SparseCodePattern | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.values.shape != self.indices.shape or self.values.ndim != 2:
            raise ValueError(f"values and indices must both be [N, k]; got {tuple(self.values.shape)} and {tuple(self.indices.shape)}")

    @classmethod
    def from_code(cls, code: Any, num_features: int) -> SparseFeatures:
        """From a :class:`revelio.sae.SparseCode` of any leading shape ([N, k] or [N, T, k] flattened)."""
        k = code.values.shape[-1]
        return cls(code.values.reshape(-1, k).float(), code.indices.reshape(-1, k).long(), int(num_features))

    @property
    def shape(self) -> tuple[int, int]:
        return (self.values.shape[0], self.num_features)

    def __len__(self) -> int:
        return self.values.shape[0]

    def __getitem__(self, rows: Any) -> SparseFeatures:
        return SparseFeatures(self.values[rows], self.indices[rows], self.num_features, self.center)

    @staticmethod
    def cat(parts: list[SparseFeatures]) -> SparseFeatures:
        first = parts[0].center
        if any((p.center is None) != (first is None) or (first is not None and not torch.equal(p.center, first)) for p in parts):
            raise ValueError("can only concatenate sparse features that share one center")
        return SparseFeatures(torch.cat([p.values for p in parts]), torch.cat([p.indices for p in parts]),
                              parts[0].num_features, parts[0].center)

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> SparseFeatures:
        center = None if self.center is None else self.center.to(device, dtype)
        return SparseFeatures(self.values.to(device, dtype), self.indices.to(device), self.num_features, center)

    def to_dense(self) -> torch.Tensor:
        dense = self.values.new_zeros(len(self), self.num_features).scatter_add_(1, self.indices, self.values)
        return dense if self.center is None else dense - self.center.to(dense.dtype)

    def column_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-feature mean and (population) standard deviation, in float64, from the entries only.

        (Of the stored entries, ignoring ``center``.)
        """
        flat_index, flat_value = self.indices.reshape(-1), self.values.reshape(-1).double()
        total = torch.zeros(self.num_features, dtype=torch.float64, device=self.values.device).index_add_(0, flat_index, flat_value)
        squares = torch.zeros_like(total).index_add_(0, flat_index, flat_value.square())
        mean = total / len(self)
        return mean, (squares / len(self) - mean.square()).clamp_min(0).sqrt()

    def standardise(self, mean: torch.Tensor, scale: torch.Tensor) -> SparseFeatures:
        """(x - mean) / scale, still sparse: entries divided by ``scale``, ``mean / scale`` as the center."""
        values = self.values / scale.to(self.values.dtype)[self.indices]
        center = mean if self.center is None else mean + self.center.to(mean.dtype)
        return SparseFeatures(values, self.indices, self.num_features, (center / scale).to(self.values.dtype))

    def matmul(self, weight_t: torch.Tensor) -> torch.Tensor:
        """This [N, num_features] matrix times ``weight_t`` [num_features, M]: [N, M], differentiable in the weight."""
        out = F.embedding_bag(self.indices, weight_t, per_sample_weights=self.values.to(weight_t.dtype), mode="sum")
        return out if self.center is None else out - self.center.to(weight_t.dtype) @ weight_t

    def transposed_matmul(self, rows: torch.Tensor) -> torch.Tensor:
        """This matrix's transpose times ``rows`` [N, M]: [num_features, M] (the weight's gradient)."""
        if self._pattern is None:  # the sort into feature order, done once for all products
            self._pattern = SparseCodePattern(self.indices, self.num_features)
        out = self._pattern.accumulate_(rows.new_empty(self.num_features, rows.shape[1]), self.values, rows, overwrite=True)
        if self.center is not None:
            out -= torch.outer(self.center.to(rows.dtype), rows.sum(dim=0))
        return out
