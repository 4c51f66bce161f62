"""Activation cache on disk: fp16/bf16 safetensors shards plus a JSON manifest, one folder per cell.

SAE training needs far more activation rows than fit in memory, and extraction (GPU time) should
happen once. So :func:`write_cache` streams :func:`revelio.iter_extract` batches into shards under
``root/<hook>/t<timestep>/<pooling>/``, and :class:`ActivationCache` streams shuffled batches back
with a bounded shuffle buffer.

Crash safety: every file is written under a temporary name, fsynced and ``os.replace``d into
place, and the manifest is rewritten only after the shard it lists is in place. A shard exists
for readers only once the manifest lists it, so a crash never leaves a half-written shard that
looks complete. ``"complete": true`` is set only when the writer closes without error.

Spatial caches ("none" pooling) store one row per token: ``image_index`` and ``location`` (the
token's row-major index) say where each row came from.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

# Same values as revelio.activations.Pooling; not imported from there because that module pulls
# in diffusers (seconds), which a trainer reading a cache does not need.
Pooling = Literal["mean", "none"]

FORMAT = "revelio-activation-cache"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# 16384 rows is 40 MB at d_in 1280 in fp16: small enough that a writer holding one pending
# shard per cell of a large grid stays in memory, large enough that reads are sequential.
DEFAULT_SHARD_ROWS = 16384
# 262144 rows is 640 MB at d_in 1280 in fp16, and mixes rows of 16 shards per buffer.
DEFAULT_BUFFER_ROWS = 262144

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
_REWRITE_HINT = "re-run the extraction with write_cache(..., overwrite=True)"


class CacheError(Exception):
    """A cache folder that is missing, damaged, unfinished, or would be overwritten."""


def cell_path(root: str | os.PathLike, hook: str, timestep: int, pooling: Pooling) -> Path:
    """The folder that holds one (hook, timestep, pooling) cell of a cache root."""
    return Path(root) / hook / f"t{int(timestep)}" / pooling


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
    ) -> None:
        if pooling not in ("mean", "none"):
            raise ValueError(f"pooling must be 'mean' or 'none', got {pooling!r}")
        if dtype not in _DTYPES.values():
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
        self._cells: dict[tuple[str, int], _CellWriter] = {}
        self._closed = False

    @property
    def paths(self) -> dict[tuple[str, int], Path]:
        """The folder of each cell written so far."""
        return {key: cell.folder for key, cell in self._cells.items()}

    def add(self, batch: Mapping[tuple[str, int], torch.Tensor]) -> None:
        """Append one batch: the same images for every cell, [N, C] ("mean") or [N, T, C]."""
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
            self._cells[key].add(value)

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
        folders = {key: cell_path(self.root, key[0], key[1], self.pooling) for key in keys}
        if not self.overwrite:
            for folder in folders.values():
                if _is_complete(folder):
                    raise CacheError(
                        f"{folder} already holds a complete activation cache; pass overwrite=True "
                        "to replace it, or write to another root"
                    )
        for (hook, t), folder in folders.items():
            self._cells[(hook, t)] = _CellWriter(
                folder, hook, t, self.pooling, self.dtype, self.shard_rows, self.metadata
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
    ) -> None:
        _clear(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.dtype = dtype
        self.shard_rows = shard_rows
        self.manifest: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "hook": hook,
            "timestep": timestep,
            "pooling": pooling,
            "d_in": None,
            "dtype": next(name for name, value in _DTYPES.items() if value == dtype),
            "tokens_per_image": None,
            "grid_side": None,
            "num_rows": 0,
            "num_images": 0,
            "complete": False,
            "shards": [],
            "metadata": metadata,
        }
        self._pending: list[torch.Tensor] = []
        self._pending_rows = 0

    def check(self, value: torch.Tensor) -> None:
        """Refuse a tensor whose width or token count differs from the earlier batches'."""
        if self.manifest["d_in"] is None:
            return
        d_in, per_image = value.shape[-1], 1 if value.ndim == 2 else value.shape[1]
        where = f"{self.manifest['hook']!r} at t={self.manifest['timestep']}"
        if d_in != self.manifest["d_in"]:
            raise ValueError(
                f"d_in of {where} changed from {self.manifest['d_in']} to {d_in} between batches"
            )
        if per_image != self.manifest["tokens_per_image"]:
            raise ValueError(
                f"tokens per image of {where} changed from {self.manifest['tokens_per_image']} "
                f"to {per_image} between batches; use one image size per cache"
            )

    def add(self, value: torch.Tensor) -> None:
        count, d_in = value.shape[0], value.shape[-1]
        per_image = 1 if value.ndim == 2 else value.shape[1]
        if self.manifest["d_in"] is None:
            self._start(d_in, per_image)
        rows = value.detach().to("cpu", self.dtype).reshape(count * per_image, d_in)
        if not torch.isfinite(rows).all():
            raise ValueError(
                f"activations of {self.manifest['hook']!r} at t={self.manifest['timestep']} are not finite in "
                f"{self.dtype} (overflow beyond its range, or NaN from the model); store them as bfloat16"
            )
        self._pending.append(rows)
        self._pending_rows += count * per_image
        if self._pending_rows >= self.shard_rows:
            rows = torch.cat(self._pending)
            full = len(rows) - len(rows) % self.shard_rows
            for start in range(0, full, self.shard_rows):
                self._write_shard(rows[start : start + self.shard_rows])
            self._pending = [rows[full:].clone()] if full < len(rows) else []
            self._pending_rows = len(rows) - full

    def finish(self) -> None:
        if self._pending_rows:
            self._write_shard(torch.cat(self._pending))
            self._pending, self._pending_rows = [], 0
        self.manifest["complete"] = True
        self._write_manifest()

    def _start(self, d_in: int, per_image: int) -> None:
        side = math.isqrt(per_image)
        self.manifest["d_in"] = d_in
        self.manifest["tokens_per_image"] = per_image
        spatial = self.manifest["pooling"] == "none"
        self.manifest["grid_side"] = side if spatial and side * side == per_image else None
        self._write_manifest()  # an unfinished cache is recognisable as such from the start

    def _write_shard(self, rows: torch.Tensor) -> None:
        manifest = self.manifest
        name = f"shard-{len(manifest['shards']):05d}.safetensors"
        row = torch.arange(manifest["num_rows"], manifest["num_rows"] + len(rows))
        per_image = manifest["tokens_per_image"]
        tensors = {"activations": rows.contiguous(), "image_index": row // per_image}
        if manifest["pooling"] == "none":
            tensors["location"] = (row % per_image).to(torch.int32)
        data = save(tensors)
        _write_atomic(self.folder / name, data)
        manifest["shards"].append({"file": name, "rows": len(rows), "bytes": len(data)})
        manifest["num_rows"] += len(rows)
        manifest["num_images"] = manifest["num_rows"] // per_image
        self._write_manifest()

    def _write_manifest(self) -> None:
        _write_atomic(self.folder / MANIFEST, json.dumps(self.manifest, indent=1).encode())


def _write_atomic(path: Path, data: bytes) -> None:
    """Write, fsync, then rename, so ``path`` holds either its old bytes or all the new ones."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)


def _is_complete(folder: Path) -> bool:
    try:
        return bool(json.loads((folder / MANIFEST).read_text()).get("complete"))
    except (OSError, ValueError, AttributeError):
        return False


def _clear(folder: Path) -> None:
    """Remove this format's files only; the manifest goes first so no stale shard stays listed."""
    if not folder.is_dir():
        return
    (folder / MANIFEST).unlink(missing_ok=True)
    for pattern in ("shard-*.safetensors", "shard-*.safetensors.tmp", MANIFEST + ".tmp"):
        for path in folder.glob(pattern):
            path.unlink()


@dataclass(frozen=True)
class _Piece:
    """Rows [start, stop) of one shard: the unit the shuffle buffer is filled with."""

    shard: int
    start: int
    stop: int


class ActivationCache:
    """Reads one cache cell, streaming shuffled batches with bounded memory.

    ``allow_incomplete=True`` opens a cache whose writer has not finished (or crashed), reading
    only the shards its manifest lists.
    """

    def __init__(self, path: str | os.PathLike, *, allow_incomplete: bool = False) -> None:
        self.path = Path(path)
        self._manifest = _read_manifest(self.path)
        if not self._manifest["complete"] and not allow_incomplete:
            raise CacheError(
                f"the activation cache in {self.path} is unfinished ({self.num_rows} rows in "
                f"{len(self._manifest['shards'])} shards so far): its writer is still running or "
                f"was interrupted; wait for it, {_REWRITE_HINT}, or pass allow_incomplete=True"
            )
        self._shard_rows = [int(shard["rows"]) for shard in self._manifest["shards"]]
        for shard in self._manifest["shards"]:
            _check_size(self.path / shard["file"], shard["bytes"])

    @property
    def manifest(self) -> dict[str, Any]:
        return copy.deepcopy(self._manifest)

    @property
    def hook(self) -> str:
        return self._manifest["hook"]

    @property
    def timestep(self) -> int:
        return self._manifest["timestep"]

    @property
    def pooling(self) -> Pooling:
        return self._manifest["pooling"]

    @property
    def d_in(self) -> int:
        return self._manifest["d_in"]

    @property
    def dtype(self) -> torch.dtype:
        """The storage dtype; every reader method returns float32."""
        return _DTYPES[self._manifest["dtype"]]

    @property
    def tokens_per_image(self) -> int:
        return self._manifest["tokens_per_image"]

    @property
    def grid_side(self) -> int | None:
        return self._manifest["grid_side"]

    @property
    def num_rows(self) -> int:
        return self._manifest["num_rows"]

    @property
    def num_images(self) -> int:
        return self._manifest["num_images"]

    @property
    def num_shards(self) -> int:
        return len(self._shard_rows)

    @property
    def columns(self) -> tuple[str, ...]:
        spatial = ("location",) if self.pooling == "none" else ()
        return ("activations", "image_index", *spatial)

    def __repr__(self) -> str:
        return (
            f"ActivationCache({str(self.path)!r}, hook={self.hook!r}, timestep={self.timestep}, "
            f"pooling={self.pooling!r}, rows={self.num_rows}, d_in={self.d_in})"
        )

    def batches(
        self,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        start: int = 0,
        drop_last: bool = True,
        buffer_rows: int = DEFAULT_BUFFER_ROWS,
    ) -> Iterator[torch.Tensor]:
        """Endless float32 [batch_size, d_in] batches, epoch after epoch.

        Each epoch visits every row once: shard pieces in an order drawn from (seed, epoch) fill
        a buffer of at most ``buffer_rows`` rows, which is shuffled and cut into batches (the
        remainder carries into the next buffer). ``start=k`` yields what a fresh iterator yields
        after k batches, but loads only from the buffer that batch k begins in, so resuming a
        training run is cheap. ``drop_last`` drops each epoch's final short batch.
        """
        if batch_size < 1 or buffer_rows < 1 or start < 0 or seed < 0:
            raise ValueError(
                f"need batch_size >= 1, buffer_rows >= 1, start >= 0 and seed >= 0; got "
                f"batch_size={batch_size}, buffer_rows={buffer_rows}, start={start}, seed={seed}"
            )
        per_epoch = (self.num_rows if drop_last else self.num_rows + batch_size - 1) // batch_size
        if per_epoch == 0:
            raise ValueError(
                f"{self.path} holds {self.num_rows} rows, fewer than one batch of {batch_size}; "
                "use a smaller batch_size or drop_last=False"
            )
        epoch, skipped = divmod(start, per_epoch)
        return self._endless(
            batch_size, seed, shuffle, epoch, skipped * batch_size, drop_last, buffer_rows
        )

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """float32 [n, d_in] rows drawn without replacement from as few random shards as hold n.

        Meant for statistics such as the SAE's pre-bias (data mean) and input scale. Returns every
        row when the cache holds fewer than n.
        """
        n = min(n, self.num_rows)
        rng = np.random.default_rng([seed])
        chosen: list[int] = []
        available = 0
        for shard in rng.permutation(self.num_shards).tolist():
            if available >= n:
                break
            chosen.append(shard)
            available += self._shard_rows[shard]
        offsets = np.cumsum([0] + [self._shard_rows[i] for i in chosen])
        picks = np.sort(rng.choice(offsets[-1], size=n, replace=False))
        parts = []
        for shard, low, high in zip(chosen, offsets[:-1], offsets[1:]):
            rows = picks[(picks >= low) & (picks < high)] - low
            if len(rows):
                part = self._read(shard, int(rows[0]), int(rows[-1]) + 1, ("activations",))
                parts.append(part["activations"][torch.from_numpy(rows - rows[0])].float())
        return torch.cat(parts) if parts else torch.empty(0, self.d_in)

    def chunks(
        self, rows: int = 65536, columns: Sequence[str] | None = None
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Every row in order, as dicts of up to ``rows`` rows (activations as float32).

        Columns: ``activations``, ``image_index`` and, for spatial caches, ``location``. Chunks
        never span shards, so each holds at most one shard's worth of data.
        """
        names = self._columns(columns)
        if rows < 1:
            raise ValueError(f"rows must be at least 1, got {rows}")
        for shard, count in enumerate(self._shard_rows):
            for start in range(0, count, rows):
                yield self._read(shard, start, min(start + rows, count), names, as_float=True)

    def read_all(self, columns: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """The whole cache in memory, for small caches (analysis of a probe set, tests)."""
        names = self._columns(columns)
        if not self.num_rows:
            raise ValueError(f"{self.path} holds no rows yet: its writer has not written a shard")
        parts = list(self.chunks(columns=names))
        return {name: torch.cat([part[name] for part in parts]) for name in names}

    def _columns(self, columns: Sequence[str] | None) -> tuple[str, ...]:
        names = self.columns if columns is None else tuple(columns)
        unknown = [name for name in names if name not in self.columns]
        if unknown:
            raise ValueError(f"unknown columns {unknown}; this cache has {list(self.columns)}")
        return names

    def _endless(
        self, batch_size: int, seed: int, shuffle: bool, epoch: int, first_row: int,
        drop_last: bool, buffer_rows: int,
    ) -> Iterator[torch.Tensor]:
        # One buffer for the iterator's life: refilling it in place avoids faulting in fresh pages.
        buffer = torch.empty(min(buffer_rows, self.num_rows), self.d_in, dtype=self.dtype)
        while True:
            yield from self._epoch(
                buffer, batch_size, seed, shuffle, epoch, first_row, drop_last, buffer_rows
            )
            epoch, first_row = epoch + 1, 0

    def _epoch(
        self, buffer: torch.Tensor, batch_size: int, seed: int, shuffle: bool, epoch: int,
        first_row: int, drop_last: bool, buffer_rows: int,
    ) -> Iterator[torch.Tensor]:
        """One epoch's batches from row ``first_row`` of its stream (a batch boundary) on."""
        carry: list[torch.Tensor] = []  # rows waiting to complete the next batch
        carried = 0
        group_start = 0
        for pieces, group_seed in self._plan(seed, epoch, shuffle, buffer_rows):
            size = sum(piece.stop - piece.start for piece in pieces)
            if group_start + size > first_row:  # groups wholly before the start are never read
                rows = self._load(pieces, buffer)
                order = (
                    torch.from_numpy(np.random.default_rng(group_seed).permutation(size))
                    if shuffle else torch.arange(size)
                )
                position = max(first_row - group_start, 0)
                while position < size:
                    take = min(batch_size - carried, size - position)
                    # a copy, so refilling the buffer never changes rows already taken
                    carry.append(rows.index_select(0, order[position : position + take]))
                    carried += take
                    position += take
                    if carried == batch_size:
                        yield _join(carry)
                        carry, carried = [], 0
            group_start += size
        if carried and not drop_last:
            yield _join(carry)

    def _plan(
        self, seed: int, epoch: int, shuffle: bool, buffer_rows: int
    ) -> list[tuple[list[_Piece], int]]:
        """The epoch's buffers (lists of shard pieces) and shuffle seeds, from the manifest."""
        pieces = [
            _Piece(shard, start, min(start + buffer_rows, count))
            for shard, count in enumerate(self._shard_rows)
            for start in range(0, count, buffer_rows)
        ]
        rng = np.random.default_rng([seed, epoch])
        if shuffle:
            pieces = [pieces[i] for i in rng.permutation(len(pieces)).tolist()]
        groups: list[list[_Piece]] = []
        filled = buffer_rows  # "full", so the first piece opens the first group
        for piece in pieces:
            rows = piece.stop - piece.start
            if filled + rows > buffer_rows:
                groups.append([])
                filled = 0
            groups[-1].append(piece)
            filled += rows
        group_seeds = rng.integers(2**63, size=len(groups)).tolist()
        return list(zip(groups, group_seeds))

    def _load(self, pieces: list[_Piece], buffer: torch.Tensor) -> torch.Tensor:
        """The pieces' rows, one after another, in the front of ``buffer``."""
        filled = 0
        for piece in pieces:
            rows = self._read(piece.shard, piece.start, piece.stop, ("activations",))["activations"]
            buffer[filled : filled + len(rows)] = rows
            filled += len(rows)
        return buffer[:filled]

    def _read(
        self, shard: int, start: int, stop: int, columns: Sequence[str], as_float: bool = False
    ) -> dict[str, torch.Tensor]:
        """Rows [start, stop) of some columns of one shard, reading only those bytes."""
        path = self.path / self._manifest["shards"][shard]["file"]
        rows = self._shard_rows[shard]
        try:
            with safe_open(path, framework="pt") as file:
                out = {}
                for name in columns:
                    column = file.get_slice(name)
                    expected = [rows, self.d_in] if name == "activations" else [rows]
                    if column.get_shape() != expected:
                        raise CacheError(
                            f"{path}: column {name!r} has shape {column.get_shape()} but the "
                            f"manifest says {expected}; {_REWRITE_HINT}"
                        )
                    out[name] = column[start:stop]
        except (SafetensorError, OSError) as error:
            raise CacheError(f"cannot read shard {path} ({error}); {_REWRITE_HINT}") from None
        if as_float and "activations" in out:
            out["activations"] = out["activations"].float()
        return out


def _join(rows: list[torch.Tensor]) -> torch.Tensor:
    return (rows[0] if len(rows) == 1 else torch.cat(rows)).float()


def _read_manifest(path: Path) -> dict[str, Any]:
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        found = sorted(str(p.parent.relative_to(path)) for p in path.glob(f"*/t*/*/{MANIFEST}"))
        inside = f" It holds cache cells {found}: open one of those." if found else ""
        raise CacheError(
            f"{path} is not an activation cache (no {MANIFEST}).{inside} Create one with "
            "revelio.write_cache(root, revelio.iter_extract(...), pooling=...), which writes "
            "root/<hook>/t<timestep>/<pooling>/."
        )
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != FORMAT:
            raise ValueError(f"format is {manifest.get('format')!r}, not {FORMAT!r}")
    except (ValueError, AttributeError, OSError) as error:
        raise CacheError(
            f"{manifest_path} is not a readable cache manifest ({error}); {_REWRITE_HINT}"
        ) from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CacheError(
            f"{manifest_path} has cache format version {manifest.get('format_version')}, but this "
            f"revelio reads version {FORMAT_VERSION}; {_REWRITE_HINT} or use a matching revelio"
        )
    return manifest


def _check_size(path: Path, expected: int) -> None:
    """Catch missing and truncated shards when the cache is opened, not hours into training."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CacheError(
            f"shard {path} is listed in the manifest but missing; {_REWRITE_HINT}"
        ) from None
    if size != expected:
        raise CacheError(
            f"shard {path} is {size} bytes but the manifest says {expected} (truncated or "
            f"replaced); {_REWRITE_HINT}"
        )
