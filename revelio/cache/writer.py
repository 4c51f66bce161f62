"""Writing activation caches: batches of ``{(hook, t): tensor}`` appended to shards, crash-safe.

Extraction (GPU time) should happen once, and a crash must never leave a half-written shard that
looks complete: every file is written atomically, and the manifest is rewritten only after the
shard it lists is in place.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from safetensors.torch import save

from revelio.cache.format import DTYPES, FORMAT, FORMAT_VERSION, is_complete
from revelio.errors import CacheError
from revelio.formats.cache import CacheManifest, Shard
from revelio.grid import Cell, Pooling, check_pooling
from revelio.layout import MANIFEST_FILE
from revelio.storage.files import write_atomic

# 16384 rows is 40 MB at d_in 1280 in fp16: small enough that a writer holding one pending
# shard per cell of a large grid stays in memory, large enough that reads are sequential.
DEFAULT_SHARD_ROWS = 16384

def write_cache(
    root: str | os.PathLike,
    batches: Iterable[Mapping[tuple[str, int], torch.Tensor]],
    *,
    pooling: Pooling,
    dtype: torch.dtype = torch.float16,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[tuple[str, int], Path]:
    """Write ``{(hook, t): tensor}`` batches (e.g. from ``iter_extract``) to one cache per cell.

    Returns the folder of each cell, to open with :class:`ActivationCache`. If the iterable
    raises, the shards written so far stay listed but the caches stay marked unfinished.
    """
    with CacheWriter(
        root, pooling=pooling, dtype=dtype, shard_rows=shard_rows, metadata=metadata,
        overwrite=overwrite,
    ) as writer:
        for batch in batches:
            writer.add(batch)
    if not writer.paths:
        raise ValueError("no batches to write: the iterable passed to write_cache was empty")
    return writer.paths


class CacheWriter:
    """Appends batches of activations to the caches of every (hook, timestep) in them.

    Use as a context manager: leaving it normally marks every cache complete; leaving it with an
    exception keeps what was written but leaves the caches marked unfinished.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        pooling: Pooling,
        dtype: torch.dtype = torch.float16,
        shard_rows: int = DEFAULT_SHARD_ROWS,
        metadata: Mapping[str, Any] | None = None,
        overwrite: bool = False,
        image_offset: int = 0,
    ) -> None:
        """``image_offset`` numbers this writer's images from there on: one part of a larger cache."""
        check_pooling(pooling)
        if dtype not in DTYPES.values():
            raise ValueError(f"dtype must be torch.float16 or torch.bfloat16, got {dtype}")
        if shard_rows < 1:
            raise ValueError(f"shard_rows must be at least 1, got {shard_rows}")
        metadata = dict(metadata or {})
        try:
            json.dumps(metadata)
        except TypeError as error:
            raise ValueError(f"metadata must be JSON-serialisable: {error}") from None
        self.root = Path(root)
        self.pooling: Pooling = pooling
        self.dtype = dtype
        self.shard_rows = shard_rows
        self.metadata = metadata
        self.overwrite = overwrite
        self.image_offset = image_offset
        self._cells: dict[tuple[str, int], _CellWriter] = {}
        self._closed = False

    @property
    def paths(self) -> dict[tuple[str, int], Path]:
        """The folder of each cell written so far."""
        return {key: cell.folder for key, cell in self._cells.items()}

    def add(self, batch: Mapping[tuple[str, int], torch.Tensor],
            locations: Mapping[tuple[str, int], torch.Tensor] | None = None, grid_tokens: int | None = None) -> None:
        """Append one batch: the same images for every cell, [N, C] ("mean") or [N, T, C].

        For spatial caches that keep only some of each image's tokens, ``locations`` gives each
        kept token's row-major index ([N, T] per cell) and ``grid_tokens`` the full grid's size.
        """
        if self._closed:
            raise RuntimeError("this CacheWriter is closed; open a new one to write more")
        batch = {(str(hook), int(t)): value for (hook, t), value in batch.items()}
        if not batch:
            raise ValueError("a batch must hold at least one (hook, timestep) cell")
        counts = {key: self._check(key, value) for key, value in batch.items()}
        if len(set(counts.values())) > 1:
            raise ValueError(f"every cell of a batch must hold the same images; got {counts}")
        if not self._cells:
            self._open_cells(list(batch))
        elif set(batch) != set(self._cells):
            raise ValueError(
                f"a batch has cells {sorted(batch)} but earlier batches had {sorted(self._cells)}; "
                "pass the same hook points and timesteps in every batch"
            )
        for key, value in batch.items():  # check every cell before any grows, to keep them in step
            self._cells[key].check(value)
        for key, value in batch.items():
            self._cells[key].add(value, None if locations is None else locations[key], grid_tokens)

    def close(self) -> dict[tuple[str, int], Path]:
        """Write the last partial shards and mark every cache complete."""
        if not self._closed:
            for cell in self._cells.values():
                cell.finish()
            self._closed = True
        return self.paths

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()
        else:  # keep the listed shards, but never mark an interrupted cache complete
            self._closed = True

    def _check(self, key: tuple[str, int], value: torch.Tensor) -> int:
        """The number of images in one cell's tensor, after checking its shape fits the pooling."""
        expected = 2 if self.pooling == "mean" else 3
        if not isinstance(value, torch.Tensor) or value.ndim != expected:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            layout = "[N, C]" if self.pooling == "mean" else "[N, T, C]"
            raise ValueError(
                f"pooling={self.pooling!r} expects {layout} tensors, but {key} is {shape}; "
                "pass the pooling the activations were extracted with"
            )
        return value.shape[0]

    def _open_cells(self, keys: list[tuple[str, int]]) -> None:
        """Check every folder before clearing any, so a refusal leaves all of them untouched."""
        folders = {key: self.root / Cell(*key, self.pooling).path for key in keys}
        if not self.overwrite:
            for folder in folders.values():
                if is_complete(folder):
                    raise CacheError(
                        f"{folder} already holds a complete activation cache; pass overwrite=True "
                        "to replace it, or write to another root"
                    )
        for (hook, t), folder in folders.items():
            self._cells[(hook, t)] = _CellWriter(
                folder, hook, t, self.pooling, self.dtype, self.shard_rows, self.metadata, self.image_offset
            )


class _CellWriter:
    """The shards and manifest of one cell; rows wait in memory until a shard is full."""

    def __init__(
        self,
        folder: Path,
        hook: str,
        timestep: int,
        pooling: Pooling,
        dtype: torch.dtype,
        shard_rows: int,
        metadata: dict[str, Any],
        image_offset: int = 0,
    ) -> None:
        _clear(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.dtype = dtype
        self.shard_rows = shard_rows
        self.manifest = CacheManifest(
            format=FORMAT, format_version=FORMAT_VERSION, hook=hook, timestep=timestep, pooling=pooling,
            dtype=next(name for name, value in DTYPES.items() if value == dtype), first_image=image_offset, metadata=metadata,
        )
        self._pending: list[torch.Tensor] = []
        self._pending_locations: list[torch.Tensor] = []
        self._pending_rows = 0

    def check(self, value: torch.Tensor) -> None:
        """Refuse a tensor whose width or token count differs from the earlier batches'."""
        if self.manifest.d_in is None:
            return
        d_in, per_image = value.shape[-1], 1 if value.ndim == 2 else value.shape[1]
        where = f"{self.manifest.hook!r} at t={self.manifest.timestep}"
        if d_in != self.manifest.d_in:
            raise ValueError(
                f"d_in of {where} changed from {self.manifest.d_in} to {d_in} between batches"
            )
        if per_image != self.manifest.tokens_per_image:
            raise ValueError(
                f"tokens per image of {where} changed from {self.manifest.tokens_per_image} "
                f"to {per_image} between batches; use one image size per cache"
            )

    def add(self, value: torch.Tensor, locations: torch.Tensor | None = None, grid_tokens: int | None = None) -> None:
        count, d_in = value.shape[0], value.shape[-1]
        per_image = 1 if value.ndim == 2 else value.shape[1]
        if self.manifest.d_in is None:
            self._start(d_in, per_image, grid_tokens or per_image)
        if locations is not None:
            self._pending_locations.append(locations.reshape(-1).to(torch.int32))
        rows = value.detach().to("cpu", self.dtype).reshape(count * per_image, d_in)
        if not torch.isfinite(rows).all():
            raise ValueError(
                f"activations of {self.manifest.hook!r} at t={self.manifest.timestep} are not finite in "
                f"{self.dtype} (overflow beyond its range, or NaN from the model); store them as bfloat16"
            )
        self._pending.append(rows)
        self._pending_rows += count * per_image
        if self._pending_rows >= self.shard_rows:
            rows = torch.cat(self._pending)
            kept = torch.cat(self._pending_locations) if self._pending_locations else None
            full = len(rows) - len(rows) % self.shard_rows
            for start in range(0, full, self.shard_rows):
                part = slice(start, start + self.shard_rows)
                self._write_shard(rows[part], None if kept is None else kept[part])
            self._pending = [rows[full:].clone()] if full < len(rows) else []
            self._pending_locations = [kept[full:].clone()] if kept is not None and full < len(rows) else []
            self._pending_rows = len(rows) - full

    def finish(self) -> None:
        if self._pending_rows:
            kept = torch.cat(self._pending_locations) if self._pending_locations else None
            self._write_shard(torch.cat(self._pending), kept)
            self._pending, self._pending_locations, self._pending_rows = [], [], 0
        self.manifest.complete = True
        self._write_manifest()

    def _start(self, d_in: int, per_image: int, grid_tokens: int) -> None:
        side = math.isqrt(grid_tokens)
        self.manifest.d_in = d_in
        self.manifest.tokens_per_image = per_image
        spatial = self.manifest.pooling == "none"
        self.manifest.grid_side = side if spatial and side * side == grid_tokens else None
        if grid_tokens != per_image:
            self.manifest.grid_tokens = grid_tokens
        self._write_manifest()  # an unfinished cache is recognisable as such from the start

    def _write_shard(self, rows: torch.Tensor, locations: torch.Tensor | None = None) -> None:
        manifest = self.manifest
        name = f"shard-{len(manifest.shards):05d}.safetensors"
        row = torch.arange(manifest.num_rows, manifest.num_rows + len(rows))
        per_image = manifest.tokens_per_image
        tensors = {"activations": rows.contiguous(), "image_index": manifest.first_image + row // per_image}
        if manifest.pooling == "none":
            tensors["location"] = (row % per_image).to(torch.int32) if locations is None else locations.contiguous()
        data = save(tensors)
        write_atomic(self.folder / name, data)
        manifest.shards.append(Shard(name, len(rows), len(data)))
        manifest.num_rows += len(rows)
        manifest.num_images = manifest.num_rows // per_image
        self._write_manifest()

    def _write_manifest(self) -> None:
        write_atomic(self.folder / MANIFEST_FILE, json.dumps(self.manifest.to_json(), indent=1).encode())



def _clear(folder: Path) -> None:
    """Remove this format's files only; the manifest goes first so no stale shard stays listed."""
    if not folder.is_dir():
        return
    (folder / MANIFEST_FILE).unlink(missing_ok=True)
    for pattern in ("shard-*.safetensors", "*.tmp"):  # shards, and temporaries of interrupted writes
        for path in folder.glob(pattern):
            path.unlink()
