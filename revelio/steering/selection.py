"""Which features steer towards class c: the one selection policy of the app and the measurements.

Two rankings, both from held-out or training statistics:

- :class:`ClassCodeMaps` (spatial SAEs): each feature's mean activation map per class; a feature
  is selective for c where it fires more on c's images than on average, summed over locations.
  Clamping those features to c's maps moves generation towards c.
- :func:`class_selective_features` (any SAE): the features carrying most activation on c among
  those whose dominant label is c.

:func:`steering_features` picks between them the way every caller should.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import torch

from revelio.sae.model import KSparseAutoencoder
from revelio.sae.stats import FeatureStats


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


def unrelated_features(
    stats: FeatureStats, n: int, min_frequency: float = 0.001, exclude: Collection[int] = (),
    mass: torch.Tensor | None = None,
) -> list[int]:
    """The ``n`` heaviest live features outside ``exclude`` (the features steering picks for any
    class): clamping them changes the activation as much as features tied to no class can, the
    control for the side effects of steering.

    ``mass`` ([d_sae]) ranks them, by default each feature's mean activation. Lowest label purity is
    no such control: the features every class shares (fired on all of them, so of low purity)
    are among the ones clamping to a class map uses most.
    """
    weight = stats.overall_mean_activation if mass is None else mass
    live = (stats.image_frequency >= min_frequency) & (weight > 0)
    excluded = set(exclude)
    return [int(f) for f in weight.argsort(descending=True, stable=True) if live[f] and int(f) not in excluded][:n]


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
        code = sae.encode(tokens)  # sparse [N, T, k]: summed into the class maps without a dense code
        locations = torch.arange(tokens.shape[1]).view(1, -1, 1)
        cells = ((labels.view(-1, 1, 1) * tokens.shape[1] + locations) * sae.d_sae + code.indices.cpu()).flatten()
        sums = torch.zeros(n_classes * tokens.shape[1] * sae.d_sae)
        sums.index_add_(0, cells, code.values.detach().float().cpu().flatten())
        sums = sums.view(n_classes, tokens.shape[1], sae.d_sae)
        counts = torch.bincount(labels, minlength=n_classes).clamp_min(1).view(-1, 1, 1)
        overall = sums.sum(0) / len(labels)
        return cls((sums / counts).view(n_classes, side, side, -1), overall.view(side, side, -1))

    def selective(self, target: int, n: int) -> list[int]:
        """The ``n`` features with the most extra activation on class ``target``, over all locations."""
        if not 0 <= target < self.maps.shape[0]:
            raise ValueError(f"class id {target} is out of range 0..{self.maps.shape[0] - 1}")
        excess = (self.maps[target] - self.overall).clamp_min(0).sum(dim=(0, 1))
        return [int(f) for f in excess.argsort(descending=True, stable=True)[:n] if excess[f] > 0]

    def mass(self) -> torch.Tensor:
        """[d_sae]: each feature's mean activation summed over locations, on all images."""
        return self.overall.sum(dim=(0, 1))

    def map(self, target: int, feature: int) -> torch.Tensor:
        """[side, side]: the feature's mean activation at each location on class ``target``."""
        return self.maps[target, :, :, feature].clone()


def steering_features(
    stats: FeatureStats, target: int, n: int, maps: ClassCodeMaps | None = None,
    min_frequency: float = 0.001, min_purity: float = 0.5,
) -> list[int]:
    """The ``n`` features to clamp to steer towards class ``target``.

    With class maps (spatial SAEs) the features with the most extra activation on the class; without,
    the features carrying most activation on it among those whose dominant label it is.
    """
    if maps is not None:
        return maps.selective(target, n)
    return class_selective_features(stats, target, n, min_frequency, min_purity)


def value_unit(sae: KSparseAutoencoder) -> torch.Tensor:
    """[d_sae]: what a clamp "value" multiplies: the publisher's typical activation x k when the SAE
    brings one (SDXL-unbox's app clamps to strength x mean x k), else the largest training activation."""
    typical = sae.typical_activation
    return typical * sae.k if typical is not None else sae.feature_stats.max_activation


def clamp_targets(
    features: Sequence[int], strength: float, stats: FeatureStats, maps: ClassCodeMaps | None = None,
    target: int | None = None, unit: torch.Tensor | None = None,
) -> dict[int, float | torch.Tensor]:
    """What each chosen feature is clamped to: ``strength`` x its map on class ``target`` (with maps;
    ``target`` None: its mean map over all images), else ``strength`` x ``unit`` (default: its largest
    training activation; :func:`value_unit` gives an SAE's own)."""
    if maps is None:
        unit = stats.max_activation if unit is None else unit
        return {f: strength * float(unit[f]) for f in features}
    return {f: strength * (maps.overall[..., f].clone() if target is None else maps.map(target, f)) for f in features}




def nth_of_each_class(labels: Sequence[int], n_classes: int, n: int) -> list[int]:
    """The row of the ``n``-th image (from 0) of each class, by class: one real image per class whose
    maps a class's features can be clamped to instead of the class's mean maps.

    A mean map spreads a class whose layout varies (a sandal's straps, a pullover's shading) over
    every place any of its images has it; clamping to it pushes activations out of distribution
    (over-bright, speckled images a classifier calls Shirt). One real image's maps are in distribution.
    """
    rows = []
    for c in range(n_classes):
        own = [i for i, label in enumerate(labels) if label == c]
        if len(own) <= n:
            raise ValueError(f"class {c} has {len(own)} images; it has no image number {n} to take maps from")
        rows.append(own[n])
    return rows
