"""Probes: light classifiers (linear, Diff-C) on frozen diffusion features, and ``classify``.

Importing the package registers both kinds, so ``Probe.from_pretrained`` can load either.
"""

from revelio.probes.diffc import DiffCProbe
from revelio.probes.linear import LinearProbe
from revelio.probes.probe import Probe, Split, split_train_validation
from revelio.probes.sparse import SparseFeatures

__all__ = ["DiffCProbe", "LinearProbe", "Probe", "SparseFeatures", "Split", "split_train_validation"]
