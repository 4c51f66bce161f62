"""What the app holds while it serves: one release, its backbone, and what each cell needs again.

Forward hooks are attached to the one shared model, so two requests running forwards at once
would see each other's hooks (a steering edit leaking into someone else's image, a capture
stopping another forward). Every forward therefore runs under ``model_lock``; the CPU has few
cores anyway, so serialising model work costs little throughput. The forwards themselves are
``gpu``-decorated (ZeroGPU, see :mod:`revelio.app.gpu`); the lock and the caches stay outside.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch
from PIL import Image

from revelio.activations.capture import extract, pool
from revelio.analysis.labels import FeatureLabel, evidence_labels
from revelio.analysis.queries import feature_strengths
from revelio.app.gpu import FORWARD_SECONDS, gpu
from revelio.app.inputs import class_id, feature_id, feature_ids, whole
from revelio.errors import ArtifactFormatError
from revelio.formats.metrics import Steering
from revelio.grid import POOLING_NAMES, Cell
from revelio.layout import STEERING
from revelio.probes import Probe
from revelio.probes.classify_images import classify
from revelio.release import Release
from revelio.sae.evaluation import normalized_mse
from revelio.sae.model import KSparseAutoencoder
from revelio.sae.stats import FeatureStats
from revelio.steering.selection import ClassCodeMaps


@dataclass(frozen=True)
class Target:
    """What to steer towards: a concept of one of the release's label sets (None: its default set)."""

    label_set: str | None
    index: int


class AppState:
    """The release and its backbone, shared by every request, with per-cell caches.

    A release with several label sets (say "class" and "colour") is one set of SAEs whose features
    are labelled in each: :meth:`labels`, :meth:`stats`, :meth:`class_maps` and probes take the
    label set (None: the default one), and Steer's targets are every set's concepts.
    """

    def __init__(self, release: Release, device: str = "cpu") -> None:
        self.release = release
        self.backbone = release.backbone(device=device)
        self.model_lock = threading.RLock()
        self.class_names: list[str] = release.class_names or []
        self.further_label_sets: list[str] = release.label_sets[1:]
        self.seed = int(release.info.seed)  # the noise seed the release's caches used
        self._extract = gpu(FORWARD_SECONDS)(self._extract_tokens)
        self._classify = gpu(FORWARD_SECONDS)(self._classify_images)

    @property
    def default_cell(self) -> Cell:
        return self.release.best_cell.with_pooling("none" if "none" in self.release.poolings else "mean")

    def cell(self, hook: Any, timestep: Any, pooling: Any) -> Cell:
        """A validated cell (None or "" picks the default's part); ValueError naming the choices
        for anything the release lacks."""
        default = self.default_cell
        release = self.release
        if hook not in (None, "") and hook not in release.hooks:
            raise ValueError(f"unknown block {hook!r:.60}; choose one of {release.hooks}")
        hook = hook or default.hook
        timestep = default.timestep if timestep in (None, "") else whole(timestep, "timestep")
        if timestep not in release.timesteps:
            raise ValueError(f"no SAE at timestep {timestep}; choose one of {release.timesteps}")
        pooling = default.pooling if pooling in (None, "") else pooling
        if pooling not in release.poolings:
            names = ", ".join(f"{p!r} ({POOLING_NAMES[p].split(' ')[0]})" for p in release.poolings)
            raise ValueError(f"unknown SAE {pooling!r:.60}; choose one of {names}")
        return Cell(hook, timestep, pooling)

    def sae(self, cell: Cell) -> KSparseAutoencoder:
        return self.release.sae(cell)

    def view(self, label_set: str | None) -> Release:
        """The release seen through one label set (its names, probes, statistics, held-out labels)."""
        return self.release.with_label_set(label_set)

    def names(self, label_set: str | None = None) -> list[str]:
        return self.view(label_set).class_names or []

    def stats(self, cell: Cell, label_set: str | None = None) -> FeatureStats:
        stats = self.view(label_set).sae(cell).feature_stats
        if stats is None:
            raise ValueError(f"the SAE {cell} ships no feature statistics; rebuild the release")
        return stats

    @cache  # noqa: B019 - one AppState lives as long as the server
    def labels(self, cell: Cell, label_set: str | None = None) -> list[FeatureLabel]:
        """Every feature's label with its evidence (:mod:`revelio.analysis.labels`): the one
        definition Explore, Atlas, the feature panel, suggestions and Steer's summary show."""
        return evidence_labels(self.stats(cell, label_set), self.names(label_set))

    def feature_label(self, cell: Cell, feature: int, short: bool = False) -> str:
        """"#12 Trouser (72%)", "#12 mixed: Pullover 22%, Shirt 21%" ("#12 mixed" when ``short``); with
        several label sets, each set's label that has evidence: "#12 top (40%) · red (92%)"."""
        found = [self.labels(cell, s)[feature] for s in [None, *self.further_label_sets]]
        shown = [f.short if short else str(f) for f in found[:1]]
        shown += [f.short if short else str(f) for f in found[1:] if f.name]
        label = " · ".join(s for s in shown if s)
        return f"#{feature} {label}" if label else f"#{feature}"

    @cache  # noqa: B019 - one AppState lives as long as the server
    def feature_choices(self, cell: Cell) -> list[tuple[str, int]]:
        """(label, id) of every feature, for searchable dropdowns (a feature dead on the training
        images can still fire on an upload, so it must be selectable)."""
        return [(self.feature_label(cell, f), f) for f in range(self.sae(cell).d_sae)]

    def check_feature(self, cell: Cell, feature: Any) -> int:
        """A feature id of ``cell``'s SAE (a whole number, or one written as text)."""
        return feature_id(feature, cell, self.sae(cell).d_sae)

    def check_features(self, cell: Cell, features: Any) -> list[int]:
        """Feature ids of ``cell``'s SAE from a list (or one id, or None for none), each once, in order."""
        return feature_ids(features, cell, self.sae(cell).d_sae)

    def check_class(self, value: Any) -> int:
        """A class of the release (the dataset's labels: what probes predict), given by name or id."""
        return class_id(self.class_names, value)

    def target_choices(self) -> list[tuple[str, int | str]]:
        """Steer's targets: the default set's classes by id; each further set's concepts as "set:id"."""
        choices: list[tuple[str, int | str]] = [(name, i) for i, name in enumerate(self.class_names)]
        for label_set in self.further_label_sets:
            choices += [(f"{name} ({label_set})", f"{label_set}:{i}") for i, name in enumerate(self.names(label_set))]
        return choices

    def check_target(self, value: Any) -> Target:
        """A concept to steer towards: a class (name or id) of the default label set, or "set:id" /
        "set:name" of a further one (ValueError naming the choices otherwise)."""
        if isinstance(value, str) and ":" in value:
            label_set, concept = value.split(":", 1)
            if label_set in self.further_label_sets:
                return Target(label_set, class_id(self.names(label_set), concept))
            if label_set != self.release.label_set_name:
                sets = [self.release.label_set_name, *self.further_label_sets] if self.further_label_sets else []
                raise ValueError(f"unknown label set {label_set!r:.40}; " + (f"this release has {sets}" if sets else
                                 "this release has one label set: send a class name or id"))
            value = concept
        return Target(None, self.check_class(value))

    def tokens(self, images: list[Image.Image], hook: str, timestep: int) -> torch.Tensor:
        """[N, locations, C] activations of ``images`` at one cell, noised as the release's caches were."""
        with self.model_lock:
            return self._extract(images, hook, timestep)

    def _extract_tokens(self, images: list[Image.Image], hook: str, timestep: int) -> torch.Tensor:
        acts = extract(self.backbone, images, [hook], [timestep], pooling="none", seed=self.seed, batch_size=50)
        return acts[(hook, timestep)]

    def probabilities(self, images: list[Image.Image], hook: str | None = None, timestep: int | None = None,
                      kind: str | None = None, label_set: str | None = None) -> list[dict[str, float]]:
        """A probe's class probabilities for each image (default: the best cell's probe of the label set)."""
        view = self.view(label_set)
        probe = view.probe(hook=hook, timestep=timestep, kind=kind)  # checked here: a bad kind is a message, not a GPU call
        with self.model_lock:
            probabilities = self._classify(images, probe, view.probe_sae(probe))
        return [dict(zip(probe.class_names, row.tolist())) for row in probabilities]

    def _classify_images(self, images: list[Image.Image], probe: Probe, sae: KSparseAutoencoder | None) -> torch.Tensor:
        return classify(self.backbone, probe, images, sae=sae, seed=self.seed)

    def reference_images(self, label_set: str | None = None) -> tuple[list[Image.Image], list[int]]:
        """The release's labelled held-out test images (labels of ``label_set``): behind histograms,
        per-image FVU, class maps and the examples (FileNotFoundError, saying to rebuild, for a
        release without them)."""
        return self.view(label_set).held_out_examples()

    @cache  # noqa: B019
    def held_out_tokens(self, hook: str, timestep: int) -> torch.Tensor:
        return self.tokens(self.reference_images()[0], hook, timestep)

    @cache  # noqa: B019
    def held_out_strengths(self, cell: Cell) -> torch.Tensor:
        """[held-out images, d_sae]: each feature's activation per image (maximum over locations)."""
        x = pool(self.held_out_tokens(cell.hook, cell.timestep), cell.pooling)
        sae = self.sae(cell)
        with torch.no_grad():
            return feature_strengths(sae.encode(x), sae.d_sae)

    @cache  # noqa: B019
    def class_maps(self, cell: Cell, label_set: str | None = None) -> ClassCodeMaps:
        """Each feature's mean map per class (of ``label_set``) on the held-out images (spatial SAEs only)."""
        if cell.pooling != "none":
            raise ValueError("clamping to a class's map needs a spatial SAE; choose the spatial SAE")
        _, labels = self.reference_images(label_set)
        tokens = self.held_out_tokens(cell.hook, cell.timestep)
        return ClassCodeMaps.from_tokens(self.sae(cell), tokens, labels, max(len(self.names(label_set)), max(labels) + 1))

    @cache  # noqa: B019
    def exemplar_rows(self, label_set: str | None = None) -> tuple[int, ...] | None:
        """The held-out image of each concept of ``label_set`` whose maps the release's steering
        measurement clamped its features to (``--exemplars``: one real image per class, chosen on
        separate seeds), by concept; None where it clamped to mean maps or measured nothing."""
        try:
            measured = self.view(label_set).read_metrics(STEERING, Steering)
        except ArtifactFormatError:
            return None
        if not measured or not measured.exemplars:
            return None
        rows = [measured.per_class[name].exemplar if name in measured.per_class else None for name in self.names(label_set)]
        return None if None in rows else tuple(rows)

    @cache  # noqa: B019
    def exemplar_maps(self, cell: Cell, label_set: str | None = None) -> ClassCodeMaps:
        """Each feature's map on each concept's exemplar image (:meth:`exemplar_rows`; spatial SAEs only)."""
        if cell.pooling != "none":
            raise ValueError("clamping to an exemplar's map needs a spatial SAE; choose the spatial SAE")
        rows = self.exemplar_rows(label_set)
        if rows is None:
            raise ValueError(f"this release's steering measurement chose no exemplar images for the {label_set or 'default'} "
                             "label set; clamp to the class map instead")
        tokens = self.held_out_tokens(cell.hook, cell.timestep)[list(rows)]
        return ClassCodeMaps.from_tokens(self.sae(cell), tokens, list(range(len(rows))), len(rows))

    @cache  # noqa: B019
    def held_out_mean(self, cell: Cell) -> torch.Tensor:
        """The mean activation vector on held-out images: the reference point of per-image FVU."""
        x = pool(self.held_out_tokens(cell.hook, cell.timestep), cell.pooling)
        return x.reshape(-1, x.shape[-1]).mean(0)

    @cache  # noqa: B019
    def held_out_fvu(self, cell: Cell) -> torch.Tensor:
        """[held-out images]: each one's FVU under the SAE, computed as Explore computes an upload's:
        the range an image like the training data falls in."""
        x = pool(self.held_out_tokens(cell.hook, cell.timestep), cell.pooling)
        sae, mean = self.sae(cell), self.held_out_mean(cell)
        with torch.no_grad():
            x_hat = sae.decode(sae.encode(x))
        return torch.tensor([normalized_mse(x[i], x_hat[i], mean=mean) for i in range(len(x))])
