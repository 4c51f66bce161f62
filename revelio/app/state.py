"""What the app holds while it serves: one release, its backbone, and what each cell needs again.

Forward hooks are attached to the one shared model, so two requests running forwards at once
would see each other's hooks (a steering edit leaking into someone else's image, a capture
stopping another forward). Every forward therefore runs under ``model_lock``; the CPU has few
cores anyway, so serialising model work costs little throughput. The forwards themselves are
``gpu``-decorated (ZeroGPU, see :mod:`revelio.app.gpu`); the lock and the caches stay outside.
"""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

import torch
from PIL import Image

from revelio.activations.capture import extract, pool
from revelio.analysis.labels import FeatureLabel, evidence_labels
from revelio.analysis.queries import feature_strengths
from revelio.app.gpu import FORWARD_SECONDS, gpu
from revelio.app.inputs import class_id, feature_id, feature_ids, whole
from revelio.grid import POOLING_NAMES, Cell
from revelio.probes.classify_images import classify
from revelio.release import Release
from revelio.sae.evaluation import normalized_mse
from revelio.sae.model import KSparseAutoencoder
from revelio.sae.stats import FeatureStats
from revelio.steering.selection import ClassCodeMaps


class AppState:
    """The release and its backbone, shared by every request, with per-cell caches."""

    def __init__(self, release: Release, device: str = "cpu") -> None:
        self.release = release
        self.backbone = release.backbone(device=device)
        self.model_lock = threading.RLock()
        self.class_names: list[str] = release.class_names or []
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

    def stats(self, cell: Cell) -> FeatureStats:
        stats = self.sae(cell).feature_stats
        if stats is None:
            raise ValueError(f"the SAE {cell} ships no feature statistics; rebuild the release")
        return stats

    @cache  # noqa: B019 - one AppState lives as long as the server
    def labels(self, cell: Cell) -> list[FeatureLabel]:
        """Every feature's label with its evidence (:mod:`revelio.analysis.labels`): the one
        definition Explore, Atlas, the feature panel, suggestions and Steer's summary show."""
        return evidence_labels(self.stats(cell), self.class_names)

    def feature_label(self, cell: Cell, feature: int, short: bool = False) -> str:
        """"#12 Trouser (72%)", "#12 mixed: Pullover 22%, Shirt 21%" ("#12 mixed" when ``short``)."""
        found = self.labels(cell)[feature]
        label = found.short if short else str(found)
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

    def tokens(self, images: list[Image.Image], hook: str, timestep: int) -> torch.Tensor:
        """[N, locations, C] activations of ``images`` at one cell, noised as the release's caches were."""
        with self.model_lock:
            return self._extract(images, hook, timestep)

    def _extract_tokens(self, images: list[Image.Image], hook: str, timestep: int) -> torch.Tensor:
        acts = extract(self.backbone, images, [hook], [timestep], pooling="none", seed=self.seed, batch_size=50)
        return acts[(hook, timestep)]

    def probabilities(self, images: list[Image.Image], hook: str | None = None, timestep: int | None = None,
                      kind: str | None = None) -> list[dict[str, float]]:
        """The release probe's class probabilities for each image (default: the best cell's probe)."""
        probe = self.release.probe(hook=hook, timestep=timestep, kind=kind)  # checked here: a bad kind is a message, not a GPU call
        with self.model_lock:
            probabilities = self._classify(images, hook, timestep, kind)
        return [dict(zip(probe.class_names, row.tolist())) for row in probabilities]

    def _classify_images(self, images: list[Image.Image], hook: str | None, timestep: int | None,
                         kind: str | None) -> torch.Tensor:
        probe = self.release.probe(hook=hook, timestep=timestep, kind=kind)
        return classify(self.backbone, probe, images, sae=self.release.probe_sae(probe), seed=self.seed)

    def reference_images(self) -> tuple[list[Image.Image], list[int]]:
        """The release's labelled held-out test images: behind histograms, per-image FVU, class maps
        and the examples (FileNotFoundError, saying to rebuild, for a release without them)."""
        return self.release.held_out_examples()

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
    def class_maps(self, cell: Cell) -> ClassCodeMaps:
        """Each feature's mean map per class on the held-out images (spatial SAEs only)."""
        if cell.pooling != "none":
            raise ValueError("clamping to a class's map needs a spatial SAE; choose the spatial SAE")
        _, labels = self.reference_images()
        tokens = self.held_out_tokens(cell.hook, cell.timestep)
        return ClassCodeMaps.from_tokens(self.sae(cell), tokens, labels, max(len(self.class_names), max(labels) + 1))

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
