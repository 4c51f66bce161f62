"""Which SAE format a folder or Hub repo holds, read into revelio's terms, and written back out.

Detection is by file names, the way each project writes them; a pickle is refused here, with the
command that converts it once (``train/convert_saes.py``).
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

import torch

import revelio.interop.saelens as saelens
import revelio.interop.sdxl_unbox as sdxl_unbox
import revelio.interop.sparsify as sparsify
from revelio.errors import ArtifactFormatError
from revelio.formats.artifacts import SAEConfig, SAESource
from revelio.interop.files import ForeignSAE
from revelio.interop.folding import fold_input_scale
from revelio.layout import CARD_FILE
from revelio.storage.resolve import resolve_file

PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".ckpt", ".bin", ".gz")
CONVERT = "train/convert_saes.py SOURCE OUT"
WRITERS = {"sparsify": sparsify.write, "saelens": saelens.write}


def read_foreign_sae(repo_id_or_dir: str | Path, subfolder: str | None = None, revision: str | None = None,
                     **hub_kwargs: Any) -> ForeignSAE | None:
    """The sparsify/SAeUron or SAELens SAE at ``repo_id_or_dir``/``subfolder``; None when it holds
    revelio's own format (or nothing this module knows, which revelio's loader then reports)."""
    local = Path(repo_id_or_dir)
    if local.is_file() or (not local.exists() and str(repo_id_or_dir).endswith(PICKLE_SUFFIXES)):
        raise ArtifactFormatError(f"{repo_id_or_dir} is a file, not an SAE folder; if it is a pickled SAE (the paper's .pt), "
                                  f"convert it once with {CONVERT}")

    def find(name: str) -> Path | None:
        return resolve_file(repo_id_or_dir, name, subfolder, revision, required=False, **hub_kwargs)

    where = f"{repo_id_or_dir}" + (f" (subfolder {subfolder})" if subfolder else "")
    if find(sdxl_unbox.WEIGHTS) is not None:
        raise ArtifactFormatError(f"{where} is an SDXL-unbox folder, whose weights are a pickle (state_dict.pth) that "
                                  f"revelio never opens while loading; convert it once with {CONVERT}")
    if find(sparsify.CONFIG) is None:
        if local.is_dir() and any(p.suffix in PICKLE_SUFFIXES for p in (local / (subfolder or "")).glob("*")):
            if find("config.json") is None:
                raise ArtifactFormatError(f"{where} holds pickled files but no SAE config; if they are pickled SAEs, "
                                          f"convert them once with {CONVERT}")
        return None
    config_path = find(sparsify.CONFIG)
    name = PurePosixPath(subfolder).name if subfolder else (local.name if local.is_dir() else "")
    if (weights := find(sparsify.WEIGHTS)) is not None:
        return sparsify.read(config_path, weights, _source("sparsify", repo_id_or_dir, subfolder, revision, hub_kwargs), name or None)
    if (weights := find(saelens.WEIGHTS)) is not None:
        return saelens.read(config_path, weights, _source("saelens", repo_id_or_dir, subfolder, revision, hub_kwargs))
    raise ArtifactFormatError(f"{config_path} has no weights beside it: sparsify folders hold {sparsify.WEIGHTS}, "
                              f"SAELens folders {saelens.WEIGHTS}")


def write_foreign_sae(format: str, config: SAEConfig, tensors: dict[str, torch.Tensor], folder: Path) -> Path:
    """``folder`` holding the SAE in ``format`` ("sparsify" or "saelens"), its input scale folded in."""
    if format not in WRITERS:
        raise ValueError(f"format must be 'revelio' or one of {sorted(WRITERS)}; got {format!r}")
    folder.mkdir(parents=True, exist_ok=True)
    return WRITERS[format](*fold_input_scale(config, tensors), folder)


def _source(format: str, repo: str | Path, subfolder: str | None, revision: str | None, hub_kwargs: dict[str, Any]) -> SAESource:
    card = resolve_file(repo, CARD_FILE, None, revision, required=False, **hub_kwargs)
    return SAESource(format, str(repo), subfolder or "", license_of(card) if card else "")


def license_of(card: Path) -> str:
    """The ``license:`` of a model card's YAML front matter, or ""."""
    text = card.read_text(errors="replace")[:20000]
    front = re.match(r"---\n(.*?)\n---", text, re.S)
    found = re.search(r"^license:\s*['\"]?([\w.+-]+)", front[1], re.M) if front else None
    return found[1] if found else ""
