"""SAE quality metrics used everywhere (training logs, model cards, the app, benchmarks).

Normalized MSE is the MSE over the MSE of always predicting the data mean (Gao et al.), so 1.0
means "no better than the mean" whatever the activations' scale; a wrong hook point or scale
shows up at once as a value near or above 1.
"""

from __future__ import annotations

import numpy as np
import torch

from revelio.sae.model import KSparseAutoencoder, SparseCode


def normalized_mse(x: torch.Tensor, x_hat: torch.Tensor, mean: torch.Tensor | None = None) -> float:
    """Sum of squared errors over the sum of squared deviations from ``mean`` (default: x's own).

    Also the fraction of variance unexplained (FVU); for one image, pass the dataset mean.
    """
    x, x_hat = x.reshape(-1, x.shape[-1]).double(), x_hat.reshape(-1, x.shape[-1]).double()
    centre = x.mean(dim=0) if mean is None else mean.double()
    total = (x - centre).pow(2).sum()
    return float((x - x_hat).pow(2).sum() / total.clamp_min(1e-30))


def fraction_variance_explained(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    return 1.0 - normalized_mse(x, x_hat)


def density_histogram(firing_frequency: torch.Tensor, bins: int = 30) -> dict[str, list[float]]:
    """Histogram of log10 feature firing frequency (dead features counted apart)."""
    freq = firing_frequency.double().numpy()
    alive = freq[freq > 0]
    counts, edges = np.histogram(np.log10(alive), bins=bins) if alive.size else (np.zeros(0), np.zeros(0))
    return {"log10_frequency_edges": edges.tolist(), "counts": counts.tolist(), "dead": int((freq == 0).sum())}


class SAEEvaluator:
    """Streams batches through an SAE and accumulates exact dataset-level metrics."""

    def __init__(self, sae: KSparseAutoencoder) -> None:
        self.sae = sae
        self.tokens = 0
        self.sum_x = torch.zeros(sae.d_in, dtype=torch.float64)
        self.sum_sq_x = torch.zeros((), dtype=torch.float64)
        self.sum_sq_err = torch.zeros((), dtype=torch.float64)
        self.active = 0
        self.fires = torch.zeros(sae.d_sae, dtype=torch.long)

    @torch.no_grad()
    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, self.sae.d_in).to(self.sae.W_enc.device, torch.float32)
        code = self.sae.encode(x)
        err = (x - self.sae.decode(code)).double().cpu()
        x, code = x.cpu(), SparseCode(code.values.cpu(), code.indices.cpu())
        active = code.values > 0
        self.tokens += x.shape[0]
        self.sum_x += x.double().sum(dim=0)
        self.sum_sq_x += x.double().pow(2).sum()
        self.sum_sq_err += err.pow(2).sum()
        self.active += int(active.sum())
        self.fires += torch.bincount(code.indices[active], minlength=self.sae.d_sae)

    def result(self) -> dict[str, float]:
        """normalized_mse, fraction_variance_explained, l0, dead_fraction over everything added."""
        if self.tokens == 0:
            raise ValueError("no data was evaluated")
        total = self.sum_sq_x - self.sum_x.pow(2).sum() / self.tokens
        nmse = float(self.sum_sq_err / total.clamp_min(1e-30))
        return {
            "normalized_mse": nmse,
            "fraction_variance_explained": 1.0 - nmse,
            "l0": self.active / self.tokens,
            "dead_fraction": float((self.fires == 0).float().mean()),
            "tokens": self.tokens,
        }

    @property
    def firing_frequency(self) -> torch.Tensor:
        return self.fires.double() / max(self.tokens, 1)

