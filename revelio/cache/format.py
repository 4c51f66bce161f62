"""The activation cache's on-disk format: one folder per grid cell, fp16/bf16 shards + a manifest.

``root/<hook>/t<timestep>/<pooling>/`` holds ``shard-NNNNN.safetensors`` files (columns
``activations``, ``image_index`` and, for spatial caches, ``location``: the token's row-major
index) and ``manifest.json``, which lists the finished shards. A shard exists for readers only
once the manifest lists it, and ``"complete": true`` is set only when its writer closed cleanly.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import torch

from revelio.errors import CacheError
from revelio.formats.cache import CacheManifest
from revelio.grid import Cell
from revelio.layout import MANIFEST_FILE
from revelio.storage.files import write_atomic

FORMAT = "revelio-activation-cache"
FORMAT_VERSION = 1
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
REWRITE_HINT = "re-run the extraction with write_cache(..., overwrite=True)"


def find_cells(root: str | os.PathLike) -> list[Cell]:
    """Every cell with a manifest under a cache root, in a stable order."""
    root = Path(root)
    return sorted(Cell.from_path(m.parent.relative_to(root).as_posix()) for m in root.glob(f"*/t*/*/{MANIFEST_FILE}"))


def is_complete(folder: Path) -> bool:
    try:
        return bool(json.loads((folder / MANIFEST_FILE).read_text()).get("complete"))
    except (OSError, ValueError, AttributeError):
        return False




def read_manifest(path: Path) -> CacheManifest:
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        found = [cell.path for cell in find_cells(path)]
        inside = f" It holds cache cells {found}: open one of those." if found else ""
        raise CacheError(
            f"{path} is not an activation cache (no {MANIFEST_FILE}).{inside} Create one with "
            "revelio.write_cache(root, revelio.iter_extract(...), pooling=...), which writes "
            "root/<hook>/t<timestep>/<pooling>/."
        )
    try:
        data = json.loads(manifest_path.read_text())
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"format is {data.get('format') if isinstance(data, dict) else data!r}, not {FORMAT!r}")
        if data.get("format_version") != FORMAT_VERSION:
            raise CacheError(
                f"{manifest_path} has cache format version {data.get('format_version')}, but this "
                f"revelio reads version {FORMAT_VERSION}; {REWRITE_HINT} or use a matching revelio"
            )
        return CacheManifest.from_json(data, str(manifest_path))
    except (ValueError, OSError) as error:  # ArtifactFormatError is a ValueError
        raise CacheError(f"{manifest_path} is not a readable cache manifest ({error}); {REWRITE_HINT}") from None




def check_size(path: Path, expected: int) -> None:
    """Catch missing and truncated shards when the cache is opened, not hours into training."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CacheError(
            f"shard {path} is listed in the manifest but missing; {REWRITE_HINT}"
        ) from None
    if size != expected:
        raise CacheError(
            f"shard {path} is {size} bytes but the manifest says {expected} (truncated or "
            f"replaced); {REWRITE_HINT}"
        )


def merge_parts(folder: Path, parts: list[Path]) -> CacheManifest:
    """Write ``folder/manifest.json``: one cell made of the same cell of several complete parts, in order.

    Parts are caches written separately (by resumed runs or other processes) with consecutive
    image numbers; the merged manifest lists their shards by relative path, so readers see one
    cache and nothing is copied.
    """
    manifests = [read_manifest(part) for part in parts]
    unfinished = [str(part) for part, manifest in zip(parts, manifests) if not manifest.complete]
    if unfinished:
        raise CacheError(f"cannot merge unfinished parts {unfinished}; finish the extraction first")
    merged = replace(manifests[0], first_image=0, shards=[], num_rows=0, num_images=0,
                     parts=[os.path.relpath(p, folder) for p in parts])
    for part, manifest in zip(parts, manifests):
        if manifest.first_image != merged.num_images:
            raise CacheError(f"{part} starts at image {manifest.first_image}, not {merged.num_images}: parts must be consecutive")
        for key in ("d_in", "dtype", "tokens_per_image", "grid_side", "hook", "timestep", "pooling"):
            if getattr(manifest, key) != getattr(merged, key):
                raise CacheError(f"{part} has {key}={getattr(manifest, key)!r} but the first part has {getattr(merged, key)!r}")
        merged.shards += [replace(shard, file=os.path.relpath(part / shard.file, folder)) for shard in manifest.shards]
        merged.num_rows += manifest.num_rows
        merged.num_images += manifest.num_images
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / MANIFEST_FILE, json.dumps(merged.to_json(), indent=1).encode())
    return merged
