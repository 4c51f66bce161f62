"""Per-feature analysis of a trained SAE: firing statistics, top exemplars and automatic labels.

Everything streams over :meth:`ActivationCache.chunks` and works from the SAE's sparse codes (the
k active values per row), so memory stays bounded by one chunk's codes plus a [d_sae, top_n]
exemplar table: no dense [rows, d_sae] matrix is ever built, and the encoder's dense
pre-activations are made for a few thousand rows at a time.

The results do not depend on ``chunk_rows``: sums accumulate in float64, an image whose tokens
straddle two chunks waits for the rest of them, and ties between equal activations always go to
the lower image index.

The main monosemanticity score is *purity*: the share of a feature's activation-weighted label
distribution that falls on its dominant label. (The paper's score, the std of the labels of a
feature's top images, treats class ids as numbers and only looks at a handful of images.)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from revelio.cache import ActivationCache
from revelio.hub import ArtifactFormatError, read_safetensors, read_safetensors_metadata, write_safetensors
from revelio.sae import KSparseAutoencoder, SparseCode

# Key of the safetensors header metadata that holds the label strings (a JSON list), so that the
# labels live in the same file, under the same checksum, as the tensors they describe.
LABELS_METADATA_KEY = "feature_labels"
DEAD = "dead"
# At most this many dense pre-activations per encoder call (256 MB of float32): the TopK encoder
# computes a dense [rows, d_sae] matrix before keeping the top k.
_ENCODE_ELEMENTS = 2**26


@dataclass
class FeatureStats:
    """Per-feature statistics of an SAE over one cache; every tensor's first dimension is d_sae.

    ``firing_frequency`` is the share of rows (tokens, for spatial caches) where the feature is
    active (value > 0), ``image_frequency`` the share of images where it is active anywhere.
    ``mean_activation`` is the mean over the rows where it is active, ``overall_mean_activation``
    the mean over all rows (inactive rows count as 0). Exemplars are sorted by activation,
    padded with image -1 and activation 0; for spatial caches each image appears at most once
    (with its maximum over tokens and that token's ``top_locations``), for pooled ones the
    location is -1. ``label_distribution`` is [d_sae, n_classes] ([d_sae, 0] without labels).
    ``labels`` holds e.g. "sneaker (94%)", "dead" for features that never fire, and "" for live
    features when no image labels were given.
    """

    firing_frequency: torch.Tensor
    image_frequency: torch.Tensor
    mean_activation: torch.Tensor
    overall_mean_activation: torch.Tensor
    max_activation: torch.Tensor
    top_images: torch.Tensor
    top_activations: torch.Tensor
    top_locations: torch.Tensor
    label_distribution: torch.Tensor
    dominant_label: torch.Tensor
    purity: torch.Tensor
    labels: list[str]

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Every field but ``labels``, for ``stats.safetensors`` (labels go in its metadata)."""
        return {name: getattr(self, name).contiguous() for name in _tensor_fields()}

    def to_metadata(self) -> dict[str, str]:
        """The safetensors header metadata that carries ``labels``."""
        return {LABELS_METADATA_KEY: json.dumps(self.labels)}

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor], labels: Sequence[str]) -> FeatureStats:
        """Rebuild from :meth:`to_tensors` output and the label strings."""
        missing = [name for name in _tensor_fields() if name not in tensors]
        if missing:
            raise ArtifactFormatError(
                f"feature statistics lack the tensors {missing}; recompute them with revelio.features.feature_stats"
            )
        d_sae = len(tensors["firing_frequency"])
        if len(labels) != d_sae or any(len(tensors[name]) != d_sae for name in _tensor_fields()):
            raise ArtifactFormatError(
                f"feature statistics disagree on the number of features: {len(labels)} labels, "
                f"{ {name: len(tensors[name]) for name in _tensor_fields()} }; recompute them"
            )
        return cls(**{name: tensors[name] for name in _tensor_fields()}, labels=list(labels))

    def save(self, path: str | Path) -> None:
        """Write one safetensors file: the tensors, with the labels in its header metadata."""
        write_safetensors(self.to_tensors(), Path(path), self.to_metadata())

    @classmethod
    def load(cls, path: str | Path) -> FeatureStats:
        """Read a file written by :meth:`save` (never unpickles)."""
        tensors = read_safetensors(Path(path))  # validates the file, so its header reads below
        return cls.from_tensors(tensors, labels_from_metadata(read_safetensors_metadata(Path(path))))


def labels_from_metadata(metadata: Mapping[str, str]) -> list[str]:
    """The label strings stored by :meth:`FeatureStats.to_metadata`."""
    try:
        labels = json.loads(metadata[LABELS_METADATA_KEY])
    except (KeyError, ValueError):
        raise ArtifactFormatError(
            f"the stats file's metadata has no readable {LABELS_METADATA_KEY!r} entry; "
            "save the statistics with FeatureStats.save or FeatureStats.to_metadata"
        ) from None
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise ArtifactFormatError(f"{LABELS_METADATA_KEY!r} must be a JSON list of strings")
    return labels


def _tensor_fields() -> list[str]:
    return [field.name for field in fields(FeatureStats) if field.name != "labels"]


# --- streaming ---------------------------------------------------------------------------------
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
    step = max(1, _ENCODE_ELEMENTS // sae.d_sae)
    codes = [sae.encode(x[start : start + step]) for start in range(0, len(x), step)]
    values = torch.cat([code.values for code in codes]).float()
    indices = torch.cat([code.indices for code in codes])
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
    hook = sae.metadata.get("hook")
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
    chunk_rows: int = 65536,
) -> FeatureStats:
    """Firing statistics, top-``top_n`` exemplar images and (given labels) automatic labels.

    ``labels`` holds one class id per image index of the cache. A feature's label distribution
    weights each image where it fires by the feature's activation there (its maximum over tokens
    for spatial caches), so a strong firing counts more than an incidental weak one, and each
    image counts once however many of its tokens fire.
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
    return accumulator.result(cache.num_images, class_names)


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


def _check_feature(sae: KSparseAutoencoder, feature: int) -> None:
    if not 0 <= feature < sae.d_sae:
        raise ValueError(f"feature must be in 0..{sae.d_sae - 1}; got {feature}")


def feature_strengths(code: SparseCode, d_sae: int) -> torch.Tensor:
    """[N, d_sae]: each feature's strongest activation per image in a code of [N, T, k] (or [N, k]) values."""
    values = code.values.float().reshape(code.values.shape[0], -1)
    indices = code.indices.reshape(code.indices.shape[0], -1)
    return values.new_zeros(values.shape[0], d_sae).scatter_reduce(1, indices, values, "amax")


def feature_values(code: SparseCode, feature: int) -> torch.Tensor:
    """One feature's value in every row of a code (0 where it is not among the kept k): shape [...]."""
    return torch.where(code.indices == feature, code.values.float(), 0.0).sum(-1)


@torch.no_grad()
def feature_heatmap(sae: KSparseAutoencoder, tokens: torch.Tensor, feature: int, grid_side: int) -> torch.Tensor:
    """[grid_side, grid_side]: one feature's activation at every location of one image.

    ``tokens`` are the image's [T, d_in] spatial activations, row-major (T = grid_side**2), as a
    spatial cache or ``extract(..., pooling="none")`` holds them. Zero where the feature is not
    among a token's top k.
    """
    if tokens.ndim != 2 or tokens.shape[0] != grid_side * grid_side:
        raise ValueError(
            f"tokens must be [grid_side**2, d_in] = [{grid_side * grid_side}, {sae.d_in}]; got {tuple(tokens.shape)}"
        )
    _check_feature(sae, feature)
    return feature_values(sae.encode(tokens.to(sae.W_enc.device)), feature).reshape(grid_side, grid_side).cpu()


@torch.no_grad()
def top_features(sae: KSparseAutoencoder, x: torch.Tensor, n: int = 10) -> list[tuple[int, float]]:
    """The (feature, activation) pairs of the up to ``n`` strongest active features of one image.

    ``x`` is one pooled vector [d_in] or one image's tokens [T, d_in]; for tokens a feature's
    strength is its maximum over locations. Ties go to the lower feature index.
    """
    if x.ndim not in (1, 2):
        raise ValueError(f"x must be one image: [d_in] or [T, d_in]; got shape {tuple(x.shape)}")
    return strongest(feature_strengths(sae.encode(x.reshape(1, -1, x.shape[-1]).to(sae.W_enc.device)), sae.d_sae)[0], n)


def strongest(strength: torch.Tensor, n: int) -> list[tuple[int, float]]:
    """The up to ``n`` (feature, strength) pairs with the largest positive strength; ties to the lower index."""
    values, order = strength.sort(descending=True, stable=True)
    return [(feature, value) for feature, value in zip(order[:n].tolist(), values[:n].tolist()) if value > 0]


def class_selective_features(
    stats: FeatureStats, target: int, n: int, min_frequency: float = 0.001, min_purity: float = 0.5
) -> list[int]:
    """The ``n`` features carrying the most activation on class ``target`` among those mostly active on it.

    A feature's activation mass on class c is its label-distribution share for c times its mean
    activation over all images. Only features whose dominant label is c count; those firing on
    fewer than ``min_frequency`` of the images or with less than ``min_purity`` of their mass on c
    are skipped too (so fewer than n may come back).
    """
    if stats.label_distribution.shape[1] == 0:
        raise ValueError("these feature statistics have no labels; compute them with labels to rank features by class")
    if not 0 <= target < stats.label_distribution.shape[1]:
        raise ValueError(f"class id {target} is out of range 0..{stats.label_distribution.shape[1] - 1}")
    share = stats.label_distribution[:, target]
    eligible = (stats.dominant_label == target) & (stats.image_frequency >= min_frequency) & (share >= min_purity)
    mass = share * stats.overall_mean_activation * eligible
    return [int(f) for f in mass.argsort(descending=True, stable=True)[:n] if mass[f] > 0]


def unrelated_features(stats: FeatureStats, n: int, min_frequency: float = 0.001) -> list[int]:
    """The ``n`` live features with the flattest label distribution (lowest purity): tied to no class."""
    purity = torch.where(stats.image_frequency >= min_frequency, stats.purity, torch.inf)
    return [int(f) for f in purity.argsort(stable=True)[:n]]


@dataclass
class ClassCodeMaps:
    """Each feature's mean activation at every location on the images of each class (spatial SAEs).

    ``maps`` is [n_classes, side, side, d_sae] and ``overall`` [side, side, d_sae] (all images). A
    feature is selective for class c where it fires more on c's images than on average, summed over
    locations; clamping those features to c's maps during generation moves images towards c, which
    a constant clamp does not (class shape lives in where features fire).
    """

    maps: torch.Tensor
    overall: torch.Tensor

    @classmethod
    @torch.no_grad()
    def from_tokens(cls, sae: KSparseAutoencoder, tokens: torch.Tensor, labels: Sequence[int], n_classes: int) -> ClassCodeMaps:
        """From the spatial activations [N, side*side, d_in] of labelled images (e.g. ``extract(..., pooling="none")``)."""
        if tokens.ndim != 3:
            raise ValueError(f"tokens must be [images, locations, d_in]; got shape {tuple(tokens.shape)}")
        side = int(round(tokens.shape[1] ** 0.5))
        if side * side != tokens.shape[1]:
            raise ValueError(f"class maps need a square grid of locations; got {tokens.shape[1]}")
        labels = torch.as_tensor(list(labels))
        if len(labels) != tokens.shape[0]:
            raise ValueError(f"{len(labels)} labels for {tokens.shape[0]} images")
        if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < n_classes:
            raise ValueError(f"labels must be class ids in 0..{n_classes - 1}; got {int(labels.min())}..{int(labels.max())}")
        sums = torch.zeros(n_classes, tokens.shape[1], sae.d_sae)
        for start in range(0, tokens.shape[0], 64):  # dense codes for a few images at a time
            codes = sae.encode(tokens[start : start + 64], dense=True).float().cpu()
            sums.index_add_(0, labels[start : start + 64], codes)
        counts = torch.bincount(labels, minlength=n_classes).clamp_min(1).view(-1, 1, 1)
        overall = sums.sum(0) / len(labels)
        return cls((sums / counts).view(n_classes, side, side, -1), overall.view(side, side, -1))

    def selective(self, target: int, n: int) -> list[int]:
        """The ``n`` features with the most extra activation on class ``target``, over all locations."""
        if not 0 <= target < self.maps.shape[0]:
            raise ValueError(f"class id {target} is out of range 0..{self.maps.shape[0] - 1}")
        excess = (self.maps[target] - self.overall).clamp_min(0).sum(dim=(0, 1))
        return [int(f) for f in excess.argsort(descending=True, stable=True)[:n] if excess[f] > 0]

    def map(self, target: int, feature: int) -> torch.Tensor:
        """[side, side]: the feature's mean activation at each location on class ``target``."""
        return self.maps[target, :, :, feature].clone()
