"""The parts of an extraction: each a complete small cache, written once, merged into one at the end.

Parts are what make extraction resumable (a killed run redoes only its unfinished part) and
shardable (process r of n writes parts r, r + n, ...), with the same rows in the same order as a
single uninterrupted run. Within a part, decoding the next batch (a background thread) and
writing the last one (another) overlap the forward pass.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from revelio.activations.capture import iter_extract
from revelio.cache import CacheWriter
from revelio.cache.format import merge_parts
from revelio.config import to_json
from revelio.data.datasets import ImageDataset
from revelio.data.images import load_image
from revelio.errors import IncompleteRunError
from revelio.formats.cache import CacheDataset
from revelio.grid import Cell
from revelio.layout import DATASET_FILE, DONE_FILE, LABELS_FILE, PARTS_DIR, label_set_key
from revelio.models import Backbone
from revelio.steps.extraction_config import ExtractionConfig
from revelio.storage.files import read_json, read_safetensors, write_json, write_safetensors

log = logging.getLogger(__name__)

PART_LABELS = LABELS_FILE  # each part's labels, merged into the root's at the end
PREFETCH_BATCHES = 2  # decoded batches waiting for the model: bounded memory


def extraction_conditions(template: str | None, conditioning: str, labels: list[int] | None, class_names: list[str] | None) -> list[str] | None:
    """One prompt per image from ``template`` and the labels, or None: unconditional (empty prompt / null class)."""
    if template is None:
        return None
    if conditioning != "text":
        raise ValueError(f"--prompt-template needs a text-conditioned backbone; this one is conditioned on {conditioning!r}")
    if labels is None or class_names is None or "{}" not in template:
        raise ValueError('--prompt-template needs a labelled dataset and a "{}" where the class name goes, e.g. "a photo of a {}"')
    return [template.format(class_names[label]) for label in labels]


def part_dir(root: Path, index: int) -> Path:
    return root / PARTS_DIR / f"part-{index:05d}"


def finished_parts(root: Path) -> dict[int, dict[str, Any]]:
    """The parts whose done marker exists (written last, after every shard and manifest)."""
    return {int(p.parent.name.split("-")[1]): read_json(p) for p in sorted((root / PARTS_DIR).glob(f"part-*/{DONE_FILE}"))}


def _parts(data: ImageDataset, size: int) -> Iterator[tuple[int, Sequence[Any]]]:
    """(part index, its examples) in dataset order; a stream is read once, a table only where asked."""
    import datasets

    if isinstance(data.dataset, datasets.IterableDataset):
        chunk: list[Any] = []
        index = 0
        for example in data.dataset:  # images stay undecoded bytes until a part is extracted
            chunk.append(example)
            if len(chunk) == size:
                yield index, chunk
                chunk, index = [], index + 1
        if chunk:
            yield index, chunk
        return
    total = len(data.dataset)
    for index, start in enumerate(range(0, total, size)):
        yield index, _Rows(data.dataset, start, min(start + size, total))


class _Rows(Sequence):
    """Rows [start, stop) of a table, read one at a time."""
    def __init__(self, table: Any, start: int, stop: int) -> None:
        self.table, self.start, self.stop = table, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int) -> Any:
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.table[self.start + i]


def prefetch(items: Iterable[Any], depth: int = PREFETCH_BATCHES) -> Iterator[Any]:
    """``items`` produced by a background thread at most ``depth`` ahead (errors re-raised here)."""
    waiting: queue.Queue = queue.Queue(maxsize=depth)
    end = object()

    def produce() -> None:
        try:
            for item in items:
                waiting.put(item)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            waiting.put(err)
        waiting.put(end)

    threading.Thread(target=produce, daemon=True).start()
    while (item := waiting.get()) is not end:
        if isinstance(item, BaseException):
            raise item
        yield item


def sample_locations(tokens: torch.Tensor, images: Sequence[int], count: int, seed: int) -> torch.Tensor:
    """[B, count] sorted token indices per image, drawn from (seed, image number) alone."""
    total = tokens.shape[1]
    if not 0 < count < total:
        raise ValueError(f"--tokens-per-image must be in 1..{total - 1} for a grid of {total} locations; got {count}")
    picks = [np.sort(np.random.default_rng([seed, image]).choice(total, count, replace=False)) for image in images]
    return torch.from_numpy(np.stack(picks))


def write_parts(config: ExtractionConfig, backbone: Backbone, data: ImageDataset, hooks: list[str],
                mine: Callable[[int], bool]) -> int:
    """Extract and write every part ``mine`` accepts, in one pass over the data; returns how many."""
    written = 0
    for index, examples in _parts(data, config.part_images):
        if mine(index):
            _write_part(config, backbone, data, hooks, index, examples)
            written += 1
    return written


def _write_part(config: ExtractionConfig, backbone: Backbone, data: ImageDataset, hooks: list[str], index: int,
                examples: Sequence[Any]) -> None:

    folder, first = part_dir(config.out, index), index * config.part_images
    metadata = {"backbone": config.backbone, "dataset": config.dataset, "split": config.split, "seed": config.seed,
                "random_weights": config.random_weights}
    writers = {p: CacheWriter(folder, pooling=p, dtype=getattr(torch, config.dtype), metadata=metadata, overwrite=True,
                              image_offset=first) for p in config.poolings}

    extra_sets = [column for column in data.label_sets if column != data.label_column]

    def decoded() -> Iterator[tuple[int, list, list[int] | None]]:
        for start in range(0, len(examples), config.batch_size):
            batch = [examples[i] for i in range(start, min(start + config.batch_size, len(examples)))]
            labels = [int(e[data.label_column]) for e in batch] if data.label_column else None
            for column in extra_sets:
                set_labels[column] += [int(e[column]) for e in batch]
            yield first + start, [load_image(e[data.image_column]) for e in batch], labels

    labels: list[int] = []
    set_labels: dict[str, list[int]] = {column: [] for column in extra_sets}
    with ThreadPoolExecutor(max_workers=1) as writing:
        pending: Future | None = None
        for start, images, batch_labels in prefetch(decoded()):
            conditions = extraction_conditions(config.prompt_template, backbone.conditioning, batch_labels, data.class_names)
            (acts,) = iter_extract(backbone, images, hooks, config.timesteps, pooling="none", seed=config.seed,
                                   batch_size=len(images), condition=conditions)
            if pending is not None:
                pending.result()  # one batch being written while the next is extracted
            pending = writing.submit(_add, writers, acts, list(range(start, start + len(images))), config)
            labels += batch_labels or []
        if pending is not None:
            pending.result()
    for writer in writers.values():
        writer.close()
    rows = torch.arange(first, first + len(examples))
    if data.indices is not None:  # a subset: cache image i is dataset row indices[i]
        rows = torch.tensor(data.indices)[rows]
    write_safetensors({**({"labels": torch.tensor(labels)} if data.label_column else {}), "dataset_index": rows,
                       **{label_set_key(column): torch.tensor(values) for column, values in set_labels.items()}},
                      folder / PART_LABELS)
    write_json({"first_image": first, "images": len(examples)}, folder / DONE_FILE)


def _add(writers: dict, acts: dict[tuple[str, int], torch.Tensor], images: list[int], config: ExtractionConfig) -> None:
    """One batch into every pooling's writer: pooled over all locations, spatial (optionally) sampled."""
    for pooling, writer in writers.items():
        if pooling == "mean":
            writer.add({key: tokens.mean(dim=1) for key, tokens in acts.items()})
        elif config.tokens_per_image is None:
            writer.add(acts)
        else:
            kept = {key: sample_locations(tokens, images, config.tokens_per_image, config.seed) for key, tokens in acts.items()}
            sampled = {key: tokens.gather(1, kept[key][..., None].expand(-1, -1, tokens.shape[-1])) for key, tokens in acts.items()}
            writer.add(sampled, locations=kept, grid_tokens=next(iter(acts.values())).shape[1])


def merge(config: ExtractionConfig, data: ImageDataset, hooks: list[str], backbone: Backbone) -> dict[str, Any]:
    """Check every part is there, then write the root's merged manifests, labels and dataset.json."""
    done = finished_parts(config.out)
    order = sorted(done)
    starts = [done[i]["first_image"] for i in order]
    if order != list(range(len(order))) or starts != [i * config.part_images for i in order] or any(
            done[i]["images"] != config.part_images for i in order[:-1]):
        raise IncompleteRunError(f"parts {order} of {config.out} are not all there; rerun the same command to finish them")
    total = sum(done[i]["images"] for i in order)
    if not config.streaming and total != len(data.dataset):
        raise IncompleteRunError(f"the parts hold {total} of {len(data.dataset)} images; rerun the same command to finish them")
    folders = [part_dir(config.out, i) for i in order]
    for pooling in config.poolings:
        for hook in hooks:
            for t in config.timesteps:
                cell = Cell(hook, t, pooling).path
                merge_parts(config.out / cell, [folder / cell for folder in folders])
    columns = [read_safetensors(folder / PART_LABELS) for folder in folders]
    write_safetensors({name: torch.cat([c[name] for c in columns]) for name in columns[0]}, config.out / LABELS_FILE)
    CacheDataset(backbone=config.backbone, dataset=config.dataset, split=config.split, seed=config.seed,
                 random_weights=config.random_weights, image_column=data.image_column, label_column=data.label_column,
                 class_names=data.class_names, label_sets=data.label_sets, num_images=total, hooks=hooks, timesteps=config.timesteps,
                 poolings=list(config.poolings), resolution=backbone.resolution, image_channels=backbone.image_channels,
                 parts=len(order), config=to_json(config)).write(config.out / DATASET_FILE)
    return {"images": total, "parts": len(order), "cells": len(hooks) * len(config.timesteps) * len(config.poolings)}
