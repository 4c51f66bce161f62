"""Computing an SAE's per-feature statistics over an activation cache, streaming.

Everything streams over :meth:`ActivationCache.chunks` and works from the SAE's sparse codes (the
k active values per row), so memory stays bounded by one chunk's codes plus a [d_sae, top_n]
exemplar table: no dense [rows, d_sae] matrix is ever built.

The results do not depend on ``chunk_rows``: sums accumulate in float64, an image whose tokens
straddle two chunks waits for the rest of them, and ties between equal activations always go to
the lower image index.

The main monosemanticity score is *purity*: the share of a feature's activation-weighted label
distribution that falls on its dominant label. (The paper's score, the std of the labels of a
feature's top images, treats class ids as numbers and only looks at a handful of images.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from revelio.cache import ActivationCache
from revelio.sae.model import KSparseAutoencoder
from revelio.sae.stats import DEAD, FeatureStats


@dataclass
class _Entries:
    """Active latents as parallel 1-D tensors: one entry per (row or image, feature)."""

    feature: torch.Tensor  # int64
    value: torch.Tensor  # float32, > 0
    image: torch.Tensor  # int64
    location: torch.Tensor  # int32, -1 for pooled caches

    def select(self, index: torch.Tensor | slice) -> _Entries:
        return _Entries(*(column[index] for column in self.columns()))

    @staticmethod
    def cat(first: _Entries, second: _Entries) -> _Entries:
        return _Entries(*(torch.cat(pair) for pair in zip(first.columns(), second.columns())))

    def columns(self) -> tuple[torch.Tensor, ...]:
        return self.feature, self.value, self.image, self.location


def _active(sae: KSparseAutoencoder, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row, feature, value) of every active latent of the rows of ``x``, in row order."""
    x = x.to(sae.W_enc.device)
    code = sae.encode(x)
    values, indices = code.values.float(), code.indices
    active = values > 0
    rows = torch.arange(len(x), device=x.device)[:, None].expand_as(indices)
    return rows[active], indices[active], values[active]


def _chunk_entries(sae: KSparseAutoencoder, chunk: Mapping[str, torch.Tensor]) -> _Entries:
    rows, feature, value = _active(sae, chunk["activations"])
    image = chunk["image_index"].to(rows.device)[rows]
    if "location" in chunk:
        location = chunk["location"].to(rows.device)[rows]
    else:
        location = torch.full_like(rows, -1, dtype=torch.int32)
    return _Entries(feature, value, image, location)


def _per_image_max(entries: _Entries, d_sae: int) -> _Entries:
    """One entry per (image, feature): the maximum over tokens, at its lowest such location.

    Entries come out ordered by (image, feature), which keeps exemplar ties deterministic.
    """
    if not len(entries.value):
        return entries
    first = entries.image.min()
    keys, inverse = torch.unique((entries.image - first) * d_sae + entries.feature, return_inverse=True)
    best = entries.value.new_zeros(len(keys)).scatter_reduce(0, inverse, entries.value, "amax")
    at_best = entries.value == best[inverse]
    location = torch.full_like(keys, torch.iinfo(torch.int32).max, dtype=torch.int32).scatter_reduce(
        0, inverse[at_best], entries.location[at_best], "amin"
    )
    return _Entries(keys % d_sae, best, keys // d_sae + first, location)


class _Accumulator:
    """Running per-feature sums, maxima, label mass and top-n exemplars."""

    def __init__(
        self, d_sae: int, top_n: int, labels: torch.Tensor | None, n_classes: int, device: torch.device
    ) -> None:
        self.d_sae, self.top_n, self.labels, self.n_classes = d_sae, top_n, labels, n_classes
        self.num_rows = 0
        self.row_count = torch.zeros(d_sae, dtype=torch.int64, device=device)
        self.image_count = torch.zeros(d_sae, dtype=torch.int64, device=device)
        self.value_sum = torch.zeros(d_sae, dtype=torch.float64, device=device)
        self.max_value = torch.zeros(d_sae, device=device)
        self.label_mass = torch.zeros(d_sae, n_classes, dtype=torch.float64, device=device)
        self.top_values = torch.full((d_sae, top_n), float("-inf"), device=device)
        self.top_images = torch.full((d_sae, top_n), -1, dtype=torch.int64, device=device)
        self.top_locations = torch.full((d_sae, top_n), -1, dtype=torch.int32, device=device)

    def add_rows(self, entries: _Entries, num_rows: int) -> None:
        """Per-row statistics: every active (row, feature) entry counts."""
        self.num_rows += num_rows
        self.row_count += torch.bincount(entries.feature, minlength=self.d_sae)
        self.value_sum.index_add_(0, entries.feature, entries.value.double())
        self.max_value.scatter_reduce_(0, entries.feature, entries.value, "amax")

    def add_images(self, entries: _Entries) -> None:
        """Per-image statistics from one entry per (image, feature), images in increasing order."""
        self.image_count += torch.bincount(entries.feature, minlength=self.d_sae)
        if self.labels is not None:
            cells = entries.feature * self.n_classes + self.labels[entries.image]
            self.label_mass.view(-1).index_add_(0, cells, entries.value.double())
        self._merge_exemplars(entries.select(entries.value > self.top_values[entries.feature, -1]))

    def _merge_exemplars(self, entries: _Entries) -> None:
        """Keep each feature's top n of (running table, new candidates).

        Stable sorts with the running table first give ties to the lower image index, since
        candidates arrive in image order and always after the images already in the table.
        """
        if not len(entries.value):
            return
        # one sort by (feature, activation descending): positive floats order like their bits
        descending = torch.iinfo(torch.int32).max - entries.value.view(torch.int32).long()
        entries = entries.select(torch.sort(entries.feature * 2**31 + descending, stable=True).indices)
        counts = torch.bincount(entries.feature, minlength=self.d_sae)
        first_of_feature = counts.cumsum(0) - counts
        rank = torch.arange(len(entries.feature), device=counts.device) - first_of_feature[entries.feature]
        keep = rank < self.top_n
        where = (entries.feature[keep], rank[keep])
        values = torch.full_like(self.top_values, float("-inf")).index_put_(where, entries.value[keep])
        images = torch.full_like(self.top_images, -1).index_put_(where, entries.image[keep])
        locations = torch.full_like(self.top_locations, -1).index_put_(where, entries.location[keep])
        merged, position = torch.cat([self.top_values, values], 1).sort(dim=1, descending=True, stable=True)
        position = position[:, : self.top_n]
        self.top_values = merged[:, : self.top_n]
        self.top_images = torch.cat([self.top_images, images], 1).gather(1, position)
        self.top_locations = torch.cat([self.top_locations, locations], 1).gather(1, position)

    def result(self, num_images: int, class_names: Sequence[str] | None) -> FeatureStats:
        live = self.row_count > 0
        mass = self.label_mass
        distribution = (mass / mass.sum(1, keepdim=True).clamp_min(torch.finfo(mass.dtype).tiny)).float()
        purity = torch.zeros_like(self.max_value)
        dominant = torch.full_like(self.row_count, -1)
        if self.n_classes:
            best, label = distribution.max(1)
            purity, dominant = torch.where(live, best, 0.0), torch.where(live, label, -1)
        tensors = {
            "firing_frequency": (self.row_count / self.num_rows).float(),
            "image_frequency": (self.image_count / num_images).float(),
            "mean_activation": (self.value_sum / self.row_count.clamp_min(1)).float(),
            "overall_mean_activation": (self.value_sum / self.num_rows).float(),
            "max_activation": self.max_value,
            "top_images": self.top_images,
            "top_activations": torch.where(self.top_images >= 0, self.top_values, 0.0),
            "top_locations": self.top_locations,
            "label_distribution": distribution,
            "dominant_label": dominant,
            "purity": purity,
        }
        tensors = {name: tensor.cpu() for name, tensor in tensors.items()}
        labels = _label_strings(live.tolist(), dominant.tolist(), purity.tolist(), class_names)
        return FeatureStats(**tensors, labels=labels)


def _label_strings(
    live: list[bool], dominant: list[int], purity: list[float], class_names: Sequence[str] | None
) -> list[str]:
    """Each feature's label: "sneaker (94%)" (the class id without names), "dead", or "" without labels."""
    labels = []
    for alive, label, share in zip(live, dominant, purity):
        if not alive:
            labels.append(DEAD)
        elif label < 0:
            labels.append("")
        else:
            name = class_names[label] if class_names is not None else str(label)
            labels.append(f"{name} ({round(100 * share)}%)")
    return labels


def _check_cache(sae: KSparseAutoencoder, cache: ActivationCache) -> None:
    if cache.d_in != sae.d_in:
        raise ValueError(
            f"the SAE takes {sae.d_in} channels but the cache {cache.path} holds {cache.d_in}; "
            "use the SAE trained on this cache's hook point"
        )
    hook = sae.config.hook
    if hook is not None and hook != cache.hook:
        raise ValueError(
            f"the SAE was trained on {hook!r} but the cache {cache.path} holds {cache.hook!r}; "
            "pass the cache of the SAE's own hook point"
        )
    if cache.num_rows == 0:
        raise ValueError(f"the cache {cache.path} holds no rows yet")


def _check_labels(
    labels: Sequence[int] | np.ndarray | torch.Tensor, class_names: Sequence[str] | None, num_images: int
) -> tuple[torch.Tensor, int]:
    """Labels as an int64 tensor, and the number of classes."""
    labels = torch.as_tensor(np.asarray(labels))
    if labels.ndim != 1 or len(labels) != num_images or labels.is_floating_point():
        raise ValueError(
            f"labels must be one integer per image of the cache ({num_images}); got "
            f"{labels.dtype} of shape {tuple(labels.shape)}"
        )
    labels = labels.long()
    n_classes = len(class_names) if class_names is not None else int(labels.max()) + 1
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(
            f"labels must lie in 0..{n_classes - 1} (one per class name); got "
            f"{int(labels.min())}..{int(labels.max())}"
        )
    return labels, n_classes


@torch.no_grad()
def feature_stats(
    sae: KSparseAutoencoder,
    cache: ActivationCache,
    *,
    top_n: int = 16,
    labels: Sequence[int] | np.ndarray | torch.Tensor | None = None,
    class_names: Sequence[str] | None = None,
    image_ids: torch.Tensor | None = None,
    chunk_rows: int = 65536,
) -> FeatureStats:
    """Firing statistics, top-``top_n`` exemplar images and (given labels) automatic labels.

    ``labels`` holds one class id per image index of the cache. A feature's label distribution
    weights each image where it fires by the feature's activation there (its maximum over tokens
    for spatial caches), so a strong firing counts more than an incidental weak one, and each
    image counts once however many of its tokens fire. ``image_ids`` (the dataset row of each
    cache image, e.g. a subset's) makes ``top_images`` name dataset rows instead of cache images.
    """
    if top_n < 1:
        raise ValueError(f"top_n must be at least 1, got {top_n}")
    if class_names is not None and labels is None:
        raise ValueError("class_names name the classes of `labels`; pass labels as well")
    _check_cache(sae, cache)
    device = sae.W_enc.device
    label_tensor, n_classes = (None, 0) if labels is None else _check_labels(labels, class_names, cache.num_images)
    if label_tensor is not None:
        label_tensor = label_tensor.to(device)
    accumulator = _Accumulator(sae.d_sae, top_n, label_tensor, n_classes, device)
    spatial = cache.tokens_per_image > 1
    # an image whose tokens may continue in the next chunk waits there before its maxima are taken
    pending: _Entries | None = None
    for chunk in cache.chunks(rows=chunk_rows):
        entries = _chunk_entries(sae, chunk)
        accumulator.add_rows(entries, len(chunk["image_index"]))
        if spatial:
            if pending is not None:
                entries = _Entries.cat(pending, entries)
            # entries are in image order, so the last image's entries are a suffix
            split = int(torch.searchsorted(entries.image, chunk["image_index"][-1:].to(entries.image.device)))
            pending = entries.select(slice(split, None))
            entries = _per_image_max(entries.select(slice(None, split)), sae.d_sae)
        accumulator.add_images(entries)
    if pending is not None:
        accumulator.add_images(_per_image_max(pending, sae.d_sae))
    stats = accumulator.result(cache.num_images, class_names)
    if image_ids is not None:
        top = stats.top_images
        stats.top_images = torch.where(top >= 0, torch.as_tensor(image_ids)[top.clamp_min(0)], -1)
    return stats


@torch.no_grad()
def activation_by_timestep(
    sae: KSparseAutoencoder, caches: Mapping[int, ActivationCache], *, chunk_rows: int = 65536
) -> torch.Tensor:
    """[len(caches), d_sae]: each feature's mean activation over all rows at each timestep.

    Rows come in increasing timestep order (``sorted(caches)``), ready to plot. One SAE applied
    to its hook at other timesteps shows at which noise levels a feature is present.
    """
    if not caches:
        raise ValueError("pass at least one {timestep: ActivationCache}")
    hooks = sorted({cache.hook for cache in caches.values()})
    if len(hooks) > 1:
        raise ValueError(f"the caches hold different hook points {hooks}; pass caches of one hook")
    means = []
    for timestep in sorted(caches):
        cache = caches[timestep]
        if cache.timestep != timestep:
            raise ValueError(f"the cache {cache.path} holds timestep {cache.timestep} but is keyed {timestep}")
        _check_cache(sae, cache)
        total = torch.zeros(sae.d_sae, dtype=torch.float64, device=sae.W_enc.device)
        for chunk in cache.chunks(rows=chunk_rows, columns=("activations",)):
            _, feature, value = _active(sae, chunk["activations"])
            total.index_add_(0, feature, value.double())
        means.append(total / cache.num_rows)
    return torch.stack(means).float().cpu()
