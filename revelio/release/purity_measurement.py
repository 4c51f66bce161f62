"""Monosemanticity of a release's SAEs on its held-out images, against random directions and neurons.

For every SAE of the release, the held-out test images shipped in it (never seen by the SAEs,
probes or feature statistics) are noised with the release's seed and run through the backbone;
:func:`revelio.analysis.monosemanticity.purity_against_baselines` scores the SAE's features,
random directions and the block's channels on the same activations. Written to
``metrics/monosemanticity.json`` of the label set measured (shown in the Atlas and the card).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import torch

from revelio.activations.capture import extract
from revelio.analysis.monosemanticity import purity_against_baselines
from revelio.config import option, to_json
from revelio.formats.metrics import Monosemanticity
from revelio.grid import Cell
from revelio.layout import MONOSEMANTICITY, metrics_file
from revelio.models import Backbone
from revelio.release.load import Release, load_release

log = logging.getLogger(__name__)


@dataclass
class MonosemanticityConfig:
    """Which release, how many top images per direction; stored in monosemanticity.json."""

    release: str = option("bundled", "bundled or a release folder (the result is written into it)")
    top_k: int = option(20, "images per direction whose activation-weighted labels give its purity")
    seed: int = option(0, "random directions")
    device: str | None = option(None)
    label_set: str | None = option(None, "a further label set of the release (default: its first)")


def measure_monosemanticity(config: MonosemanticityConfig, release: Release | None = None,
                            backbone: Backbone | None = None) -> Monosemanticity:
    """Purity of every SAE cell and its baselines; writes and returns the table. A caller that
    holds the release and its backbone passes them."""
    release = release or load_release(config.release, label_set=config.label_set)
    images, labels = release.held_out_examples()
    labels = torch.tensor(labels)
    backbone = backbone or release.backbone(device=config.device)
    rows = []
    for pooling in release.poolings:
        activations = extract(backbone, images, release.hooks, release.timesteps, pooling=pooling,
                                      seed=release.info.seed, progress=False)
        for (hook, timestep), acts in activations.items():
            sae = release.sae(Cell(hook, timestep, pooling)).cpu()
            scores = purity_against_baselines(sae, acts.cpu(), labels, config.top_k, config.seed)
            rows.append({"hook": hook, "timestep": timestep, "pooling": pooling, **scores})
            log.info(json.dumps(rows[-1]))
    result = Monosemanticity.from_json({"images": len(labels), "top_k": config.top_k, "cells": rows, "config": to_json(config)})
    result.write(metrics_file(release.labels_root, MONOSEMANTICITY))
    return result

