"""Monosemanticity of a release's SAEs on its held-out images, against random directions and neurons.

For every SAE of the release, the held-out test images shipped in it (never seen by the SAEs,
probes or feature statistics) are noised with the release's seed and run through the backbone;
:func:`revelio.analysis.monosemanticity.purity_against_baselines` scores the SAE's features,
random directions and the block's channels on the same activations. Written to
``metrics/monosemanticity.json`` (shown in the Atlas and the card).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from revelio.config import option, to_json


@dataclass
class MonosemanticityConfig:
    """Which release, how many top images per direction; stored in monosemanticity.json."""

    release: str = option("bundled", "bundled or a release folder (the result is written into it)")
    top_k: int = option(20, "images per direction whose activation-weighted labels give its purity")
    seed: int = option(0, "random directions")
    device: str | None = option(None)


def measure_monosemanticity(config: MonosemanticityConfig) -> dict[str, Any]:
    """Purity of every SAE cell and its baselines; writes and returns the table."""
    import torch

    import revelio
    from revelio.analysis.monosemanticity import purity_against_baselines
    from revelio.layout import METRICS_DIR
    from revelio.storage.files import write_json

    release = revelio.load_release(config.release)
    images, labels = release.held_out_examples()
    labels = torch.tensor(labels)
    backbone = release.backbone(device=config.device)
    rows = []
    for pooling in release.poolings:
        activations = revelio.extract(backbone, images, release.hooks, release.timesteps, pooling=pooling,
                                      seed=release.info.seed, progress=False)
        for (hook, timestep), acts in activations.items():
            sae = release.sae(hook, timestep, pooling).cpu()
            scores = purity_against_baselines(sae, acts.cpu(), labels, config.top_k, config.seed)
            rows.append({"hook": hook, "timestep": timestep, "pooling": pooling, **scores})
            print(json.dumps(rows[-1]), flush=True)
    result = {"images": len(labels), "top_k": config.top_k, "cells": rows, "config": to_json(config)}
    write_json(result, release.root / METRICS_DIR / "monosemanticity.json")
    return result

