"""The k-sparse autoencoder: model, sparse kernels, statistics format, metrics and training."""

from revelio.sae.model import KSparseAutoencoder, SparseCode
from revelio.sae.stats import FeatureStats

__all__ = ["FeatureStats", "KSparseAutoencoder", "SparseCode"]
