"""Published SAEs instead of trained ones: each at its own hook point, at every timestep of a grid.

An SAE someone else trained (any format ``KSparseAutoencoder.from_pretrained`` reads) names the
hook point it reads in its config. Installed into an SAE grid folder it becomes one spatial cell
per timestep (``<hook>/t<timestep>/none``), with feature statistics computed on this cache's
images exactly as for a trained one, so everything after the SAE grid (evaluation, probes,
exemplars, the app) treats it like our own. Its config keeps where it came from.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from revelio.cache import ActivationCache
from revelio.cache.labels import CacheLabels
from revelio.config import option
from revelio.errors import ConfigError
from revelio.grid import Cell
from revelio.sae.model import KSparseAutoencoder
from revelio.steps.sae_grid import save_with_stats, stale_cell

log = logging.getLogger(__name__)


@dataclass
class ImportedSAEsConfig:
    """Which published SAEs, at which timesteps, described on which cache."""

    saes: list[str] = option(help="SOURCE[:SUBFOLDER]: a Hub repo id or folder, and the SAE's folder inside it")
    cache: Path = option(help="cache root of the training images (extracted at the SAEs' hook points)")
    out: Path = option(help="SAE grid folder: <hook>/t<timestep>/none/ per SAE and timestep")
    timesteps: list[int] = option(help="the timesteps each SAE is used at")
    revision: str | None = option(None, "the Hub revision of every source")


def split_source(spec: str) -> tuple[str, str | None]:
    """``"repo/name:unet.up_blocks.1.attentions.1"`` -> (source, subfolder); an existing path (``C:\\saes``
    included) or no colon: no subfolder."""
    if Path(spec).exists():
        return spec, None
    source, colon, subfolder = spec.rpartition(":") if ":" in spec else (spec, "", "")
    if not source:
        raise ConfigError(f"an SAE source is SOURCE[:SUBFOLDER] (a Hub repo id or folder); got {spec!r}")
    return source, (subfolder or None) if colon else None


def load_published(spec: str, revision: str | None = None) -> KSparseAutoencoder:
    """One published SAE, its hook point in canonical spelling (it must name one)."""
    source, subfolder = split_source(spec)
    sae = KSparseAutoencoder.from_pretrained(source, subfolder=subfolder, revision=revision)
    if not sae.config.hook:
        raise ConfigError(f"the SAE at {spec!r} does not say which hook point it reads; it cannot be placed in a grid")
    sae.config.hook = sae.config.hook_point
    return sae


def install_saes(config: ImportedSAEsConfig) -> list[Cell]:
    """Every SAE at every timestep, with statistics on the cache; cells already installed are kept."""
    labels = CacheLabels.read(config.cache)
    published = {spec: load_published(spec, config.revision) for spec in config.saes}
    hooks = [sae.config.hook for sae in published.values()]
    if len(set(hooks)) < len(hooks):
        raise ConfigError(f"two of the SAEs read the same hook point ({hooks}); a grid holds one SAE per hook point and timestep")
    cells = []
    for spec, sae_at_hook in published.items():
        installed_from = {"installed_from": spec, "revision": config.revision}
        for t in config.timesteps:
            cell = Cell(sae_at_hook.config.hook, t, "none")
            cells.append(cell)
            out = config.out / cell.path
            stale = stale_cell(out, config.cache, {**sae_at_hook.config.training, **installed_from})
            if stale == "":
                log.info(json.dumps({"cell": cell.path, "skipped": "installed earlier"}))
                continue
            shutil.rmtree(out, ignore_errors=True)
            cache = ActivationCache(config.cache / cell.path)
            if cache.d_in != sae_at_hook.d_in:
                raise ConfigError(f"the SAE at {spec!r} reads {sae_at_hook.d_in} channels, but {cell.hook} has {cache.d_in} here: "
                                  "it was trained on another model")
            sae = copy.deepcopy(sae_at_hook)
            sae.config.timestep, sae.config.pooling = t, "none"
            sae.config.training = {**sae.config.training, **installed_from}
            save_with_stats(sae, cache, labels, out)
            log.info(json.dumps({"cell": cell.path, "installed": spec}))
    return cells
