"""Linear probe: multinomial logistic regression on pooled [N, C] features or SAE codes.

Standardised inputs, L2 strength chosen on a validation split; fitted with L-BFGS in torch
(:mod:`revelio.probes.logistic`), stored and applied as plain tensors. SAE codes can stay sparse
(:class:`revelio.probes.sparse.SparseFeatures`) in both fitting and prediction.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from revelio.formats.artifacts import ProbeConfig
from revelio.probes.logistic import fit_logistic_regression, logits
from revelio.probes.probe import Probe, Split
from revelio.probes.sparse import SparseFeatures

# Inverse L2 strengths tried, picked on the validation split.
C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
# A feature whose training std is at most this counts as constant and is left unscaled (scale 1,
# as scikit-learn's StandardScaler does): dividing by a tiny std turned the rare validation or
# test rows where it is non-zero (SAE latents dead on the training split) into 1e5-sized inputs.
SCALE_EPS = 1e-6


class LinearProbe(Probe):
    """Standardise, then a linear layer: logistic regression on pooled features or SAE codes.

    Takes dense [N, d_in] features or :class:`SparseFeatures` (SAE codes: only their k entries
    per row are read); both give the same logits.
    """

    kind = "linear"

    @classmethod
    def create(cls, d_in: int, class_names: list[str], **fields: Any) -> LinearProbe:
        """A new (untrained) probe; ``fields`` are the rest of its :class:`ProbeConfig`."""
        return cls(ProbeConfig(probe_type=cls.kind, class_names=list(class_names), d_in=d_in,
                               input_normalization="standardize: (x - mean) / scale, both in model.safetensors", **fields))

    def __init__(self, config: ProbeConfig) -> None:
        super().__init__(config)
        d_in, class_names = config.d_in, config.class_names
        self.register_buffer("mean", torch.zeros(d_in))
        self.register_buffer("scale", torch.ones(d_in))
        self.linear = nn.Linear(d_in, len(class_names))

    def forward(self, features: torch.Tensor | SparseFeatures) -> torch.Tensor:
        if isinstance(features, SparseFeatures):  # (x - mean) / scale with x kept sparse
            if features.num_features != self.d_in:
                raise ValueError(f"this probe takes SAE codes with {self.d_in} latents; got {features.num_features} "
                                 f"(codes of the SAE {self.config.sae!r}?)")
            codes = features.to(self.scale.device, self.scale.dtype).standardise(self.mean, self.scale)
            return codes.matmul(self.linear.weight.t().contiguous()) + self.linear.bias
        x = self._check_features(features, self.d_in, "pooled features [N, C]")
        return self.linear((x - self.mean) / self.scale)

    @classmethod
    def fit(
        cls, train: Split, validation: Split, class_names: list[str], max_iter: int = 300, tol: float = 1e-4, **metadata: Any
    ) -> LinearProbe:
        """Fit for each C in :data:`C_GRID`, keep the best on ``validation``, refit on both splits.

        The C values run from strongest to weakest L2, each starting from the previous solution,
        and the refit starts from the chosen C's: the optima are unique, so warm starts change
        only the iteration count. Features are standardised with the training split's mean and
        std; sparse ones (SAE codes) stay sparse: their entries are divided by the std and the
        mean is subtracted implicitly (one [d_sae] vector product per evaluation).
        """
        sparse = isinstance(train.features, SparseFeatures)
        if sparse:
            mean, std = train.features.column_moments()
        else:
            mean, std = _dense_moments(train.features)
        scale = torch.where(std > SCALE_EPS, std, torch.ones_like(std))
        x_train, x_val = (_standardise(part.features, mean, scale) for part in (train, validation))
        present = torch.unique(train.labels)  # classes never seen in training never win
        remap = torch.full((len(class_names),), -1, dtype=torch.long)
        remap[present] = torch.arange(len(present))
        y_train, y_val = remap[train.labels], remap[validation.labels]
        scores, solutions, solution = {}, {}, None
        for c in sorted(C_GRID):
            *solution, _ = fit_logistic_regression(x_train, y_train, len(present), c, solution, max_iter, tol)
            scores[c] = float((logits(x_val, *solution).argmax(dim=0) == y_val).double().mean())
            solutions[c] = solution
        best_c = max(scores, key=lambda c: (scores[c], -c))
        x_all = SparseFeatures.cat([x_train, x_val]) if sparse else torch.cat([x_train, x_val])
        weight, bias, _ = fit_logistic_regression(
            x_all, torch.cat([y_train, y_val]), len(present), best_c, solutions[best_c], max_iter, tol)
        probe = cls.create(train.features.shape[1], class_names, **metadata)
        full_bias = torch.full((len(class_names),), -1e4, dtype=torch.float64)
        full_bias[present] = bias.double()
        full_weight = torch.zeros(len(class_names), weight.shape[1], dtype=torch.float64)
        full_weight[present] = weight.double()
        with torch.no_grad():
            probe.mean.copy_(mean)
            probe.scale.copy_(scale)
            probe.linear.weight.copy_(full_weight)
            probe.linear.bias.copy_(full_bias)
        probe.config.metrics.update(validation_accuracy=scores[best_c], l2_inverse_strength=best_c)
        return probe.eval()


def _dense_moments(features: torch.Tensor, chunk: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and population std in float64, a chunk of rows at a time (no float64 copy)."""
    mean = sum(part.double().sum(dim=0) for part in features.split(chunk)) / len(features)
    var = sum((part.double() - mean).square().sum(dim=0) for part in features.split(chunk)) / len(features)
    return mean, var.sqrt()


def _standardise(features: torch.Tensor | SparseFeatures, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor | SparseFeatures:
    """(x - mean) / scale in float32; sparse features stay sparse (their mean is subtracted implicitly)."""
    if isinstance(features, SparseFeatures):
        return features.to(dtype=torch.float32).standardise(mean, scale)
    return (features.float() - mean.float()) / scale.float()
