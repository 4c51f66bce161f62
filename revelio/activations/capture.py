"""Activation capture: one denoiser forward per timestep serves every requested hook point.

The paper's reference code runs one full forward per (block, timestep). Here each timestep's
forward records all requested blocks at once and stops right after the last of them, so blocks
beyond the deepest hook are never computed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from revelio.activations.hooks import StopForward, capture_outputs
from revelio.data.images import count_images, iter_image_batches
from revelio.grid import Pooling
from revelio.models.backbone import Backbone

Activations = dict[tuple[str, int], torch.Tensor]


def to_tokens(hidden: torch.Tensor) -> torch.Tensor:
    """[B, T, C] tokens of a block output: UNet maps [B, C, H, W] flatten row-major to H*W tokens."""
    if hidden.ndim == 4:
        return hidden.flatten(2).transpose(1, 2)
    if hidden.ndim == 3:  # transformer tokens [B, T, C]
        return hidden
    raise ValueError(f"cannot read tokens from a block output of shape {tuple(hidden.shape)}")


def pool(hidden: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """[B, C] for "mean"; [B, tokens, C] for "none" (maps or tokens, see :func:`to_tokens`).

    Pass float32 hidden states: a float16 mean over many tokens loses precision.
    """
    tokens = to_tokens(hidden)
    if pooling == "mean":
        return tokens.mean(dim=1)
    if pooling == "none":
        return tokens
    raise ValueError(f"pooling must be 'mean' or 'none', got {pooling!r}")


def _per_image_conditions(condition: Any, count: int) -> list[Any] | None:
    """One condition per image as a list, or None when a single condition serves every image."""
    if condition is None or isinstance(condition, (str, int, np.integer)):
        return None
    if isinstance(condition, torch.Tensor) and condition.ndim == 0:
        return None
    conditions = list(condition)  # lists, arrays, tensors, datasets columns
    if len(conditions) != count:
        raise ValueError(
            f"got {len(conditions)} conditions for {count} images; pass one per image or a single one"
        )
    return conditions


def iter_extract(
    backbone: Backbone,
    images: Any,
    hook_points: Sequence[str],
    timesteps: Sequence[int],
    pooling: Pooling = "mean",
    seed: int | Sequence[int] = 0,
    batch_size: int = 16,
    condition: Any = None,
    image_column: str | None = None,
    progress: bool | None = None,
) -> Iterator[Activations]:
    """Like :func:`extract`, but yields one batch of images at a time (bounded memory)."""
    hook_points = backbone.check_hook_points(hook_points)
    timesteps = backbone.check_timesteps(timesteps)
    if not hook_points or not timesteps:
        raise ValueError("pass at least one hook point and one timestep")
    if pooling not in ("mean", "none"):
        raise ValueError(f"pooling must be 'mean' or 'none', got {pooling!r}")
    count = count_images(images)
    conditions = _per_image_conditions(condition, count)
    per_image_seed = not isinstance(seed, (int, np.integer))
    if per_image_seed and len(seed) != count:
        raise ValueError(f"got {len(seed)} seeds for {count} images; pass one per image or one int")

    bar = tqdm(
        total=math.ceil(count / batch_size) * len(timesteps),
        disable=(None if progress is None else not progress),
        desc="extract",
        unit="fwd",
    )
    start = 0
    with bar:
        for batch in iter_image_batches(images, batch_size, image_column):
            stop = start + len(batch)
            batch_condition = condition if conditions is None else conditions[start:stop]
            batch_seed = list(seed[start:stop]) if per_image_seed else seed
            # no_grad per batch, never across a yield (the caller's code keeps autograd), and not
            # inference_mode, whose tensors could not be used later to train on.
            with torch.no_grad():
                out = _extract_batch(backbone, batch, hook_points, timesteps, pooling, batch_seed, batch_condition, bar)
            start = stop
            yield out


def _extract_batch(
    backbone: Backbone, batch: list, hook_points: list[str], timesteps: list[int], pooling: Pooling,
    seed: int | list[int], condition: Any, bar: tqdm,
) -> Activations:
    x0 = backbone.encode_images(batch)
    noise = backbone.noise_like(x0, seed)
    out: Activations = {}
    for t in timesteps:
        x_t = backbone.add_noise(x0, t, noise=noise)
        with capture_outputs(backbone.denoiser, hook_points, stop_when_done=True) as acts:
            try:
                backbone.denoise(x_t, t, condition)
            except StopForward:
                pass
        missing = [hook for hook in hook_points if hook not in acts]
        if missing:
            raise RuntimeError(f"hook points {missing} never ran during the forward pass; pick modules the forward uses")
        for hook in hook_points:
            out[(hook, t)] = pool(acts[hook].float(), pooling).cpu()
        bar.update(1)
    return out


def extract(
    backbone: Backbone,
    images: Any,
    hook_points: Sequence[str],
    timesteps: Sequence[int],
    pooling: Pooling = "mean",
    seed: int | Sequence[int] = 0,
    batch_size: int = 16,
    condition: Any = None,
    image_column: str | None = None,
    progress: bool | None = None,
) -> Activations:
    """Activations of ``images`` at every (hook point, timestep): ``{(hook, t): tensor}``.

    Tensors are float32 on the CPU, [N, C] for ``pooling="mean"`` and [N, tokens, C] for
    ``"none"`` (one token per spatial location, row-major; DiT tokens likewise). Each image is
    noised to ``t`` with noise from ``seed`` alone (or ``seed[i]``), so the same image, seed and
    timestep give the same activations in any batch. ``condition`` is a class label / prompt for
    all images or one per image; ``None`` means unconditional (null class, empty prompt).
    ``images``: PIL images, arrays, tensors, file paths, or a ``datasets.Dataset``.
    """
    parts: dict[tuple[str, int], list[torch.Tensor]] = {}
    for batch in iter_extract(
        backbone, images, hook_points, timesteps, pooling, seed, batch_size, condition,
        image_column, progress,
    ):
        for key, value in batch.items():
            parts.setdefault(key, []).append(value)
    return {key: torch.cat(values) for key, values in parts.items()}
