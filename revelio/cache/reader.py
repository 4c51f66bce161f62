"""Reading one activation-cache cell: shuffled batches with bounded memory, exact resumption.

SAE training needs far more rows than fit in memory, so :meth:`ActivationCache.batches` streams
shard pieces through a bounded shuffle buffer, and ``start=k`` resumes at batch k cheaply.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from revelio.cache.format import (
    DTYPES,
    REWRITE_HINT,
    CacheError,
    check_size,
    read_manifest,
)
from revelio.formats.cache import CacheManifest
from revelio.grid import Pooling

# 262144 rows is 640 MB at d_in 1280 in fp16, and mixes rows of 16 shards per buffer.
DEFAULT_BUFFER_ROWS = 262144

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
        self._manifest = read_manifest(self.path)
        if not self._manifest.complete and not allow_incomplete:
            raise CacheError(
                f"the activation cache in {self.path} is unfinished ({self.num_rows} rows in "
                f"{len(self._manifest.shards)} shards so far): its writer is still running or "
                f"was interrupted; wait for it, {REWRITE_HINT}, or pass allow_incomplete=True"
            )
        self._shard_rows = [shard.rows for shard in self._manifest.shards]
        for shard in self._manifest.shards:
            check_size(self.path / shard.file, shard.bytes)

    @property
    def manifest(self) -> CacheManifest:
        return copy.deepcopy(self._manifest)

    @property
    def hook(self) -> str:
        return self._manifest.hook

    @property
    def timestep(self) -> int:
        return self._manifest.timestep

    @property
    def pooling(self) -> Pooling:
        return self._manifest.pooling

    @property
    def d_in(self) -> int:
        return self._manifest.d_in

    @property
    def dtype(self) -> torch.dtype:
        """The storage dtype; every reader method returns float32."""
        return DTYPES[self._manifest.dtype]

    @property
    def tokens_per_image(self) -> int:
        return self._manifest.tokens_per_image

    @property
    def grid_side(self) -> int | None:
        return self._manifest.grid_side

    @property
    def num_rows(self) -> int:
        return self._manifest.num_rows

    @property
    def num_images(self) -> int:
        return self._manifest.num_images

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
        path = self.path / self._manifest.shards[shard].file
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
                            f"manifest says {expected}; {REWRITE_HINT}"
                        )
                    out[name] = column[start:stop]
        except (SafetensorError, OSError) as error:
            raise CacheError(f"cannot read shard {path} ({error}); {REWRITE_HINT}") from None
        if as_float and "activations" in out:
            out["activations"] = out["activations"].float()
        return out


def _join(rows: list[torch.Tensor]) -> torch.Tensor:
    return (rows[0] if len(rows) == 1 else torch.cat(rows)).float()
