"""Each SAE's feature statistics in a further label set, beside the default set's.

Firing, exemplars and activations do not depend on labels, but a feature's label distribution,
purity and name do ("red (92%)" in the colour set, "sneaker (40%)" in the class set). They are
computed over the same training cache as the default set's, with that set's labels, and written to
``label_sets/<set>/saes/<cell>/stats.safetensors``; a copy newer than its SAE is kept on a rerun.
"""

from __future__ import annotations

import logging
from pathlib import Path

from revelio.analysis.statistics import feature_stats
from revelio.cache import ActivationCache
from revelio.cache.labels import CacheLabels
from revelio.grid import Cell
from revelio.layout import CONFIG_FILE, STATS_FILE, label_set_dir, sae_subfolder
from revelio.sae.model import KSparseAutoencoder
from revelio.storage.files import write_safetensors

log = logging.getLogger(__name__)


def write_label_set_stats(release: Path, cells: list[Cell], caches: dict[str, Path], label_set: str) -> None:
    """``caches``: the training cache root each pooling's SAEs were trained on."""
    labels = {pooling: CacheLabels.read(root, label_set) for pooling, root in caches.items()}
    for cell in cells:
        target = label_set_dir(release, label_set) / sae_subfolder(cell) / STATS_FILE
        weights = release / sae_subfolder(cell) / CONFIG_FILE
        if target.is_file() and target.stat().st_mtime >= weights.stat().st_mtime:
            continue
        sae = KSparseAutoencoder.from_pretrained(release, subfolder=sae_subfolder(cell))
        read = labels[cell.pooling]
        stats = feature_stats(sae, ActivationCache(caches[cell.pooling] / cell.path), labels=read.labels,
                              class_names=read.class_names, image_ids=read.rows)
        write_safetensors(stats.to_tensors(), target, metadata=stats.to_metadata())
        log.info("%s: %s feature statistics written", cell, label_set)
