"""Activation cache: round trips, crash safety, resumable shuffled streaming, bounded memory."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import revelio
from revelio.cache import (
    ActivationCache,
    CacheError,
    CacheWriter,
    write_cache,
)
from revelio.cache import writer as cache_module
from revelio.grid import Cell

KEY = ("mid_block", 10)


def _spatial_batches(sizes: list[int], tokens: int = 16, d_in: int = 8) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    return [{KEY: torch.randn(size, tokens, d_in, generator=generator)} for size in sizes]


def _id_cache(root: Path, rows: int = 300, shard_rows: int = 23) -> ActivationCache:
    """A mean-pooled cache whose column 0 is each row's index (exact in fp16 below 2048)."""
    ids = torch.arange(rows, dtype=torch.float32)[:, None]
    data = torch.cat([ids, torch.randn(rows, 3)], dim=1)
    batches = [{KEY: data[i : i + 17]} for i in range(0, rows, 17)]
    return ActivationCache(write_cache(root, batches, pooling="mean", shard_rows=shard_rows)[KEY])


def _ids(batch: torch.Tensor) -> list[int]:
    return batch[:, 0].long().tolist()


def _take(iterator, count: int) -> list[torch.Tensor]:
    return [next(iterator) for _ in range(count)]


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """Every (shard, start, stop) the reader decodes, in order."""
    log: list[tuple[int, int, int]] = []
    original = ActivationCache._read

    def logged(self, shard, start, stop, *args, **kwargs):
        log.append((shard, start, stop))
        return original(self, shard, start, stop, *args, **kwargs)

    monkeypatch.setattr(ActivationCache, "_read", logged)
    return log


def test_mean_round_trip_keeps_values_image_index_and_metadata(tmp_path):
    generator = torch.Generator().manual_seed(1)
    batches = [
        {
            KEY: torch.randn(n, 8, generator=generator),
            ("up_blocks.0", 500): torch.randn(n, 6, generator=generator),
        }
        for n in (3, 5, 4)
    ]
    metadata = {"backbone": "tiny", "dataset": "noise"}
    paths = write_cache(tmp_path, iter(batches), pooling="mean", shard_rows=5, metadata=metadata)

    assert paths == {key: tmp_path / Cell(*key, "mean").path for key in batches[0]}
    for key in batches[0]:
        cache = ActivationCache(paths[key])
        expected = torch.cat([batch[key] for batch in batches])
        manifest = cache.manifest
        assert (cache.hook, cache.timestep, cache.pooling) == (*key, "mean")
        assert (cache.d_in, cache.num_rows, cache.num_images) == (expected.shape[1], 12, 12)
        assert manifest.format_version == 1 and manifest.dtype == "float16"
        assert manifest.complete and manifest.metadata == metadata
        assert [shard.rows for shard in manifest.shards] == [5, 5, 2]
        everything = cache.read_all()
        assert set(everything) == {"activations", "image_index"}
        torch.testing.assert_close(everything["activations"], expected, atol=1e-2, rtol=1e-3)
        assert torch.equal(everything["image_index"], torch.arange(12))


@pytest.mark.parametrize(
    ("dtype", "tokens", "side"), [(torch.float16, 16, 4), (torch.bfloat16, 6, None)]
)
def test_spatial_round_trip_stores_one_row_per_token(tmp_path, dtype, tokens, side):
    batches = _spatial_batches([2, 3], tokens=tokens)
    paths = write_cache(tmp_path, batches, pooling="none", dtype=dtype, shard_rows=7)
    cache = ActivationCache(paths[KEY])
    expected = torch.cat([batch[KEY] for batch in batches]).reshape(-1, 8)

    assert cache.manifest.dtype == str(dtype).removeprefix("torch.")
    assert (cache.tokens_per_image, cache.grid_side, cache.num_images) == (tokens, side, 5)
    assert cache.num_rows == 5 * tokens
    everything = cache.read_all()
    assert torch.equal(everything["activations"], expected.to(dtype).float())
    assert torch.equal(everything["image_index"], torch.arange(5).repeat_interleave(tokens))
    assert everything["location"].dtype == torch.int32
    assert torch.equal(everything["location"], torch.arange(tokens, dtype=torch.int32).repeat(5))
    chunks = list(cache.chunks(rows=5, columns=["location", "activations"]))
    assert all(set(chunk) == {"location", "activations"} for chunk in chunks)
    assert max(len(chunk["location"]) for chunk in chunks) <= 5
    joined = torch.cat([chunk["activations"] for chunk in chunks])
    assert torch.equal(joined, everything["activations"])


def test_caches_what_iter_extract_yields(tmp_path, backbones):
    bb = backbones["pixel-class"]
    rng = np.random.default_rng(0)
    images = [(rng.random((24, 24, 3)) * 255).astype(np.uint8) for _ in range(3)]
    stream = revelio.iter_extract(bb, images, ["mid_block"], [10], pooling="none", batch_size=2)
    paths = write_cache(tmp_path, stream, pooling="none", metadata={"backbone": "pixel-class"})
    cache = ActivationCache(paths[KEY])
    reference = revelio.extract(bb, images, ["mid_block"], [10], pooling="none")[KEY]

    assert cache.num_images == 3 and cache.tokens_per_image == reference.shape[1]
    assert cache.grid_side ** 2 == reference.shape[1]
    everything = cache.read_all()
    tokens = reference.shape[1]
    expected = reference.reshape(-1, reference.shape[2])
    torch.testing.assert_close(everything["activations"], expected, atol=1e-3, rtol=1e-2)
    assert torch.equal(everything["image_index"], torch.arange(3).repeat_interleave(tokens))
    assert torch.equal(everything["location"], torch.arange(tokens, dtype=torch.int32).repeat(3))


class _Crash(Exception):
    pass


@pytest.mark.parametrize("crash_at", range(1, 7))
def test_a_crash_never_leaves_a_shard_that_looks_complete(tmp_path, monkeypatch, crash_at):
    """Dies at each file write: before a shard's rename (odd) or before the manifest lists it."""
    writes = []
    original = cache_module.write_atomic

    def dying(path: Path, data: bytes) -> None:
        writes.append(path.name)
        if len(writes) == crash_at + 1:  # the first write is the empty manifest
            path.with_name(path.name + ".tmp").write_bytes(data[: len(data) // 2])  # half written
            raise _Crash
        original(path, data)

    monkeypatch.setattr(cache_module, "write_atomic", dying)
    batches = _spatial_batches([1] * 10, tokens=4)
    with pytest.raises(_Crash):
        write_cache(tmp_path, batches, pooling="none", shard_rows=6)
    folder = tmp_path / Cell(*KEY, "none").path

    with pytest.raises(CacheError, match="unfinished"):
        ActivationCache(folder)
    cache = ActivationCache(folder, allow_incomplete=True)
    listed = (crash_at - 1) // 2
    assert cache.num_shards == listed and cache.num_rows == 6 * listed
    on_disk = sorted(path.name for path in folder.glob("shard-*.safetensors"))
    assert len(on_disk) == listed + (crash_at % 2 == 0)  # an unlisted shard is ignored
    if listed:
        expected = torch.cat([batch[KEY] for batch in batches]).reshape(-1, 8)[: 6 * listed]
        torch.testing.assert_close(cache.read_all()["activations"], expected, atol=1e-2, rtol=1e-3)

    monkeypatch.setattr(cache_module, "write_atomic", original)
    write_cache(tmp_path, batches, pooling="none", shard_rows=6)  # an unfinished cache is replaced
    assert ActivationCache(folder).num_rows == 40
    assert sorted(path.name for path in folder.iterdir() if "tmp" in path.name) == []


_KILLED_WRITER = """
import sys, torch
from revelio.cache import write_cache
def batches():
    generator = torch.Generator().manual_seed(0)
    while True:
        yield {("mid_block", 10): torch.randn(3, 16, 64, generator=generator)}
write_cache(sys.argv[1], batches(), pooling="none", shard_rows=40)
"""


@pytest.mark.kill
def test_sigkill_mid_write_leaves_every_listed_shard_loadable(tmp_path):
    command = [sys.executable, "-c", _KILLED_WRITER, str(tmp_path)]
    writer = subprocess.Popen(command, stderr=subprocess.PIPE)
    manifest = tmp_path / Cell(*KEY, "none").path / "manifest.json"
    deadline = time.monotonic() + 60
    try:
        while not (manifest.exists() and len(json.loads(manifest.read_text())["shards"]) >= 5):
            assert writer.poll() is None, writer.stderr.read().decode()
            assert time.monotonic() < deadline, "the writer wrote no shards within 60 s"
            time.sleep(0.01)
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        writer.stderr.close()

    cache = ActivationCache(manifest.parent, allow_incomplete=True)
    everything = cache.read_all()  # every listed shard opens and has its listed rows
    assert cache.num_shards >= 5
    assert len(everything["activations"]) == cache.num_rows == 40 * cache.num_shards
    assert torch.equal(everything["image_index"], torch.arange(cache.num_rows) // 16)


def test_resuming_at_batch_k_equals_skipping_k_batches_without_reading_them(tmp_path, reads):
    cache = _id_cache(tmp_path)  # 300 rows in shards of 23
    for options in ({}, {"drop_last": False}, {"shuffle": False}, {"seed": 7}):
        fresh = _take(cache.batches(16, buffer_rows=50, **options), 60)  # more than three epochs
        for k in (1, 5, 17, 18, 19, 31, 45):
            resumed = _take(cache.batches(16, buffer_rows=50, start=k, **options), 10)
            assert all(torch.equal(a, b) for a, b in zip(resumed, fresh[k : k + 10])), (options, k)

    reads.clear()
    next(cache.batches(16, buffer_rows=50, start=45))  # 3 epochs and 9 batches in
    assert sum(stop - start for _, start, stop in reads) <= 2 * 50  # its buffer and maybe the next


def test_each_epoch_covers_every_row_once_in_a_new_order(tmp_path):
    cache = _id_cache(tmp_path)
    batches = _take(cache.batches(16, drop_last=False, buffer_rows=50), 38)  # 19 per epoch
    first, second = ([i for b in part for i in _ids(b)] for part in (batches[:19], batches[19:]))
    assert sorted(first) == sorted(second) == list(range(300))
    assert first != second
    assert len({i // 23 for i in _ids(batches[0])}) > 1, "a batch mixes rows of several shards"

    dropped = _take(cache.batches(16, buffer_rows=50), 18)  # 300 // 16 per epoch
    ids = [i for batch in dropped for i in _ids(batch)]
    assert all(len(batch) == 16 for batch in dropped) and len(set(ids)) == len(ids) == 288
    again = _take(cache.batches(16, buffer_rows=50), 18)
    other_seed = _take(cache.batches(16, buffer_rows=50, seed=1), 18)
    assert all(torch.equal(a, b) for a, b in zip(dropped, again))
    assert not all(torch.equal(a, b) for a, b in zip(dropped, other_seed))


@pytest.mark.parametrize("shard_rows", [25, 100])  # shards smaller and larger than the buffer
def test_reader_never_holds_more_than_buffer_rows(tmp_path, reads, shard_rows):
    cache = _id_cache(tmp_path, rows=1000, shard_rows=shard_rows)
    reads.clear()
    iterator = cache.batches(8, buffer_rows=60, shuffle=True)
    loaded_between_batches = []
    for _ in range(2 * 125):  # two epochs
        before = len(reads)
        next(iterator)
        loaded_between_batches.append(sum(stop - start for _, start, stop in reads[before:]))
    assert max(loaded_between_batches) <= 60
    assert sum(loaded_between_batches) == 2 * 1000, "each epoch reads every row exactly once"


def test_sample_reads_only_the_shards_it_needs(tmp_path, reads):
    cache = _id_cache(tmp_path, rows=1000, shard_rows=50)
    reads.clear()
    sample = cache.sample(120, seed=3)
    ids = _ids(sample)
    assert sample.shape == (120, 4) and sample.dtype == torch.float32
    assert len(set(ids)) == 120 and len({shard for shard, _, _ in reads}) <= 3
    assert torch.equal(sample, cache.sample(120, seed=3))
    assert not torch.equal(sample, cache.sample(120, seed=4))
    assert sorted(_ids(cache.sample(5000))) == list(range(1000))


def test_a_folder_without_a_manifest_is_not_a_cache(tmp_path):
    message = f"{re.escape(str(tmp_path))}.*not an activation cache.*write_cache"
    with pytest.raises(CacheError, match=message):
        ActivationCache(tmp_path)
    write_cache(tmp_path, [{KEY: torch.randn(2, 4)}], pooling="mean")
    with pytest.raises(CacheError, match="mid_block/t10/mean"):  # the root: points at its cells
        ActivationCache(tmp_path)


@pytest.mark.parametrize("damage", ["delete", "truncate", "scramble"])
def test_a_missing_or_damaged_shard_is_named(tmp_path, damage):
    folder = write_cache(tmp_path, _spatial_batches([4]), pooling="none", shard_rows=20)[KEY]
    shard = folder / "shard-00001.safetensors"
    if damage == "delete":
        shard.unlink()
    elif damage == "truncate":
        shard.write_bytes(shard.read_bytes()[:-10])
    else:  # same size, so only reading it can tell
        shard.write_bytes(b"\0" * shard.stat().st_size)
    with pytest.raises(CacheError, match="shard-00001.safetensors.*re-run the extraction"):
        ActivationCache(folder).read_all()


def test_writer_refuses_inconsistent_batches(tmp_path):
    with pytest.raises(ValueError, match="d_in of 'mid_block' at t=10 changed from 8 to 9"):
        write_cache(tmp_path, [{KEY: torch.randn(2, 8)}, {KEY: torch.randn(2, 9)}], pooling="mean")
    with pytest.raises(ValueError, match=r"pooling='mean' expects \[N, C\]"):
        write_cache(tmp_path / "b", [{KEY: torch.randn(2, 4, 8)}], pooling="mean")
    other = ("up_blocks.1", 10)
    with CacheWriter(tmp_path / "c", pooling="mean") as writer:
        writer.add({KEY: torch.randn(2, 8), other: torch.randn(2, 4)})
        with pytest.raises(ValueError, match="same hook points and timesteps"):
            writer.add({other: torch.randn(2, 4)})
        with pytest.raises(ValueError, match="changed from 4 to 5"):
            writer.add({KEY: torch.randn(3, 8), other: torch.randn(3, 5)})
    assert ActivationCache(writer.paths[KEY]).num_rows == 2, "a refused batch adds to no cell"


def test_a_complete_cache_is_only_replaced_with_overwrite(tmp_path):
    folder = write_cache(tmp_path, [{KEY: torch.randn(30, 4)}], pooling="mean", shard_rows=10)[KEY]
    with pytest.raises(CacheError, match="already holds a complete .* pass overwrite=True"):
        write_cache(tmp_path, [{KEY: torch.randn(5, 4)}], pooling="mean")
    assert ActivationCache(folder).num_rows == 30

    new = torch.randn(5, 4)
    write_cache(tmp_path, [{KEY: new}], pooling="mean", shard_rows=10, overwrite=True)
    names = sorted(path.name for path in folder.iterdir())
    assert names == ["manifest.json", "shard-00000.safetensors"]  # no stale shards left
    replaced = ActivationCache(folder).read_all()["activations"]
    torch.testing.assert_close(replaced, new, atol=1e-2, rtol=1e-3)


def test_a_training_state_round_trips_through_safetensors_without_pickle(tmp_path):
    from revelio.storage.files import read_state, write_state

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "generator": torch.Generator().manual_seed(1).get_state(), "step": 7, "note": None}
    write_state(state, tmp_path / "state.safetensors")
    back = read_state(tmp_path / "state.safetensors")
    assert back["step"] == 7 and back["note"] is None and torch.equal(back["generator"], state["generator"])
    assert list(back["optimizer"]["state"]) == [0, 1], "int keys stay ints (the optimizer needs them)"
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    fresh = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=0.1)
    fresh.load_state_dict(back["optimizer"])
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
