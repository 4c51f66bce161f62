"""Feature analysis: statistics over a cache (exemplars, labels, purity) and per-image queries."""

from revelio.analysis.statistics import activation_by_timestep, feature_stats

__all__ = ["activation_by_timestep", "feature_stats"]
