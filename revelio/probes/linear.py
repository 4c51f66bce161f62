"""Linear probe: multinomial logistic regression on pooled [N, C] features or SAE codes.

Standardised inputs, L2 strength chosen on a validation split; fitted with scikit-learn, stored
and applied as plain tensors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from revelio.probes.base import Probe, Split

# Inverse L2 strengths tried, picked on the validation split.
C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)

class LinearProbe(Probe):
    """Standardise, then a linear layer: logistic regression on pooled features or SAE codes."""

    kind = "linear"

    def __init__(self, d_in: int, class_names: list[str], **metadata: Any) -> None:
        super().__init__(class_names, **metadata)
        self.d_in = d_in
        self.register_buffer("mean", torch.zeros(d_in))
        self.register_buffer("scale", torch.ones(d_in))
        self.linear = nn.Linear(d_in, len(class_names))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self._check_features(features, self.d_in, "pooled features [N, C]")
        return self.linear((x - self.mean) / self.scale)

    def shape_config(self) -> dict[str, Any]:
        return {"d_in": self.d_in, "input_normalization": "standardize: (x - mean) / scale, both in model.safetensors"}

    @classmethod
    def build(cls, config: dict[str, Any], metadata: dict[str, Any]) -> LinearProbe:
        return cls(int(config["d_in"]), list(config["class_names"]), **metadata)

    @classmethod
    def fit(
        cls, train: Split, validation: Split, class_names: list[str], max_iter: int = 300, **metadata: Any
    ) -> LinearProbe:
        """Fit for each C in :data:`C_GRID`, keep the best on ``validation``, refit on both splits."""
        from sklearn.linear_model import LogisticRegression

        x_train, x_val = train.features.double().numpy(), validation.features.double().numpy()
        mean, scale = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
        scores = {}
        for c in C_GRID:
            model = LogisticRegression(C=c, max_iter=max_iter)
            model.fit((x_train - mean) / scale, train.labels.numpy())
            scores[c] = model.score((x_val - mean) / scale, validation.labels.numpy())
        best_c = max(scores, key=lambda c: (scores[c], -c))
        x_all = np.concatenate([x_train, x_val])
        y_all = np.concatenate([train.labels.numpy(), validation.labels.numpy()])
        model = LogisticRegression(C=best_c, max_iter=max_iter).fit((x_all - mean) / scale, y_all)
        probe = cls(x_train.shape[1], class_names, **metadata)
        weight, bias = _full_weights(model, len(class_names))
        with torch.no_grad():
            probe.mean.copy_(torch.from_numpy(mean))
            probe.scale.copy_(torch.from_numpy(scale))
            probe.linear.weight.copy_(torch.from_numpy(weight))
            probe.linear.bias.copy_(torch.from_numpy(bias))
        probe.metadata.setdefault("metrics", {}).update(validation_accuracy=scores[best_c], l2_inverse_strength=best_c)
        return probe.eval()


def _full_weights(model: Any, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's coefficients expanded to every class (absent classes never win)."""
    weight = np.zeros((num_classes, model.coef_.shape[1]))
    bias = np.full(num_classes, -1e4)
    classes = model.classes_.astype(int)
    if len(classes) == 2 and model.coef_.shape[0] == 1:  # binary: sklearn keeps one row
        weight[classes[1]], bias[classes[1]] = model.coef_[0], model.intercept_[0]
        bias[classes[0]] = 0.0
    else:
        weight[classes], bias[classes] = model.coef_, model.intercept_
    return weight, bias
