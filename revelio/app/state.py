"""What the app holds while it serves: one release, its backbone, and what each cell needs again.

Forward hooks are attached to the one shared model, so two requests running forwards at once
would see each other's hooks (a steering edit leaking into someone else's image, a capture
stopping another forward). Every forward therefore runs under ``model_lock``; the CPU has few
cores anyway, so serialising model work costs little throughput.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import torch
from PIL import Image

from revelio.activations.capture import extract
from revelio.analysis.queries import feature_strengths
from revelio.sae.stats import FeatureStats
from revelio.steering.selection import ClassCodeMaps

if TYPE_CHECKING:
    from revelio.release import Release
    from revelio.sae import KSparseAutoencoder

REFERENCE_IMAGES = 200  # images for histograms when a release has no held-out set
POOLINGS = {"none": "spatial (one code per location)", "mean": "pooled (one code per image)"}


@dataclass(frozen=True)
class Cell:
    """One SAE of the release: a hook point, a timestep and a pooling."""

    hook: str
    timestep: int
    pooling: str = "none"

    def __str__(self) -> str:
        return f"{self.hook} at t={self.timestep} ({self.pooling})"


class AppState:
    """The release and its backbone, shared by every request, with per-cell caches."""

    def __init__(self, release: Release, device: str = "cpu") -> None:
        self.release = release
        self.backbone = release.backbone(device=device)
        self.model_lock = threading.RLock()
        self.class_names: list[str] = release.class_names or []
        self.seed = int(release.info.get("seed", 0))  # the noise seed the release's caches used

    @property
    def default_cell(self) -> Cell:
        hook, timestep = self.release.best_cell
        return Cell(hook, timestep, "none" if "none" in self.release.poolings else "mean")

    def cell(self, hook: str | None, timestep: int | str | None, pooling: str | None) -> Cell:
        """A validated cell; ValueError naming the choices for anything the release lacks."""
        default = self.default_cell
        hook = hook or default.hook
        pooling = pooling or default.pooling
        try:
            timestep = default.timestep if timestep in (None, "") else int(timestep)
        except (TypeError, ValueError):
            raise ValueError(f"timestep must be one of {self.release.timesteps}; got {timestep!r}") from None
        if hook not in self.release.hooks:
            raise ValueError(f"unknown block {hook!r}; choose one of {self.release.hooks}")
        if timestep not in self.release.timesteps:
            raise ValueError(f"no SAE at timestep {timestep}; choose one of {self.release.timesteps}")
        if pooling not in self.release.poolings:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {self.release.poolings}")
        return Cell(hook, timestep, pooling)

    def sae(self, cell: Cell) -> KSparseAutoencoder:
        return self.release.sae(cell.hook, cell.timestep, cell.pooling)

    def stats(self, cell: Cell) -> FeatureStats:
        stats = self.sae(cell).feature_stats
        if stats is None:
            raise ValueError(f"the SAE {cell} ships no feature statistics; rebuild the release")
        return stats

    def feature_label(self, cell: Cell, feature: int) -> str:
        label = self.stats(cell).labels[feature]
        return f"#{feature} {label}" if label else f"#{feature}"

    @cache  # noqa: B019 - one AppState lives as long as the server
    def feature_choices(self, cell: Cell) -> list[tuple[str, int]]:
        """(label, id) of every feature, for searchable dropdowns (a feature dead on the training
        images can still fire on an upload, so it must be selectable)."""
        return [(self.feature_label(cell, f), f) for f in range(self.sae(cell).d_sae)]

    def check_feature(self, cell: Cell, feature: int | str | None) -> int:
        d_sae = self.sae(cell).d_sae
        try:
            feature = int(feature)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"pick a feature id (a whole number in 0..{d_sae - 1}); got {feature!r}") from None
        if not 0 <= feature < d_sae:
            raise ValueError(f"feature {feature} does not exist: the SAE {cell} has features 0..{d_sae - 1}")
        return feature

    def tokens(self, images: list[Image.Image], hook: str, timestep: int) -> torch.Tensor:
        """[N, locations, C] activations of ``images`` at one cell, noised as the release's caches were."""
        with self.model_lock:
            acts = extract(self.backbone, images, [hook], [timestep], pooling="none", seed=self.seed, batch_size=50)
        return acts[(hook, timestep)]

    @cache  # noqa: B019
    def reference_images(self) -> tuple[list[Image.Image], list[int] | None]:
        """Images behind histograms, per-image FVU and class maps: the release's held-out test
        images, or for releases built without them the first training exemplars (no labels)."""
        try:
            return self.release.held_out_examples()
        except FileNotFoundError:
            indices = self.release.exemplar_indices()[:REFERENCE_IMAGES]
            return [image for image in self.release.exemplar_images(indices) if image is not None], None

    @cache  # noqa: B019
    def held_out_tokens(self, hook: str, timestep: int) -> torch.Tensor:
        return self.tokens(self.reference_images()[0], hook, timestep)

    @cache  # noqa: B019
    def held_out_strengths(self, cell: Cell) -> torch.Tensor:
        """[held-out images, d_sae]: each feature's activation per image (maximum over locations)."""
        tokens = self.held_out_tokens(cell.hook, cell.timestep)
        x = tokens if cell.pooling == "none" else tokens.mean(dim=1, keepdim=True)
        sae = self.sae(cell)
        with torch.no_grad():
            return feature_strengths(sae.encode(x), sae.d_sae)

    @cache  # noqa: B019
    def class_maps(self, cell: Cell) -> ClassCodeMaps:
        """Each feature's mean map per class on the held-out images (spatial SAEs only)."""
        if cell.pooling != "none":
            raise ValueError("clamping to a class's map needs a spatial SAE; choose the spatial SAE")
        _, labels = self.reference_images()
        if labels is None:
            raise ValueError("this release ships no labelled held-out images, which class maps need; "
                             "rebuild it with train/build_release.py or clamp to a value instead")
        tokens = self.held_out_tokens(cell.hook, cell.timestep)
        return ClassCodeMaps.from_tokens(self.sae(cell), tokens, labels, max(len(self.class_names), max(labels) + 1))

    @cache  # noqa: B019
    def held_out_mean(self, cell: Cell) -> torch.Tensor:
        """The mean activation vector on held-out images: the reference point of per-image FVU."""
        tokens = self.held_out_tokens(cell.hook, cell.timestep)
        return tokens.reshape(-1, tokens.shape[-1]).mean(0) if cell.pooling == "none" else tokens.mean(1).mean(0)
