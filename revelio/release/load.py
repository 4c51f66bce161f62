"""A release: one backbone's SAE grid, probes, statistics, exemplars and metrics, in one folder or Hub repo.

``load_release("bundled")`` opens the Fashion-MNIST release committed in this repository, so
everything works offline on a fresh machine; any other name is a local folder or a Hub repo id
(downloaded once with ``snapshot_download``). Artifacts are loaded lazily and kept, because the
app asks for the same few cells again and again.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from revelio.bundled import BUNDLED, bundled_release_dir
from revelio.grid import Cell
from revelio.release.layout import (
    EXEMPLARS_FILE,
    HELD_OUT_FILE,
    METRICS_DIR,
    MODEL_DIR,
    PLOTS_DIR,
    REFERENCE_CLASSIFIER_DIR,
    RELEASE_FILE,
    ReleaseInfo,
    probe_subfolder,
    sae_subfolder,
)
from revelio.storage.files import ArtifactFormatError, read_json, read_safetensors
from revelio.storage.resolve import resolve_folder

if TYPE_CHECKING:
    from revelio.models import Backbone
    from revelio.probes import Probe
    from revelio.probes.reference_classifier import ReferenceClassifier
    from revelio.sae import KSparseAutoencoder


def resolve_release_dir(name_or_path: str | Path, revision: str | None = None) -> Path:
    """A local folder for "bundled", a folder path, or a Hub repo id (snapshot-downloaded)."""
    if str(name_or_path) == BUNDLED:
        return bundled_release_dir()
    root = resolve_folder(name_or_path, revision, what="release folder", hint="use 'bundled' for the committed default")
    if not (root / RELEASE_FILE).is_file():
        raise ArtifactFormatError(f"{root} has no {RELEASE_FILE}; build a release with train/build_release.py")
    return root


class Release:
    """Lazy access to the artifacts of one release folder (see DESIGN.md's release layout)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.info = ReleaseInfo.from_json(read_json(self.root / RELEASE_FILE), str(self.root / RELEASE_FILE))

    def __repr__(self) -> str:
        return f"Release({str(self.root)!r}, hooks={self.hooks}, timesteps={self.timesteps})"

    @property
    def hooks(self) -> list[str]:
        return list(self.info.hooks)

    @property
    def timesteps(self) -> list[int]:
        return list(self.info.timesteps)

    @property
    def poolings(self) -> list[str]:
        return list(self.info.poolings)

    @property
    def class_names(self) -> list[str] | None:
        return self.info.class_names

    @property
    def best_cell(self) -> tuple[str, int]:
        """The (hook, timestep) whose probe classified the test images best."""
        return self.info.best_cell.hook, int(self.info.best_cell.timestep)

    def _cell(self, hook: str | None, timestep: int | None) -> tuple[str, int]:
        best_hook, best_t = self.best_cell
        hook, timestep = hook or best_hook, best_t if timestep is None else int(timestep)
        if hook not in self.hooks or timestep not in self.timesteps:
            raise ValueError(
                f"this release has no cell ({hook!r}, t={timestep}); hooks: {self.hooks}, timesteps: {self.timesteps}"
            )
        return hook, timestep

    def sae(self, hook: str | None = None, timestep: int | None = None, pooling: str = "mean") -> KSparseAutoencoder:
        """The SAE of one cell (default: the best cell); ``pooling`` "mean" or "none" (spatial)."""
        hook, timestep = self._cell(hook, timestep)
        if pooling not in self.poolings:
            raise ValueError(f"this release has SAEs for poolings {self.poolings}, not {pooling!r}")
        return self._load_sae(hook, timestep, pooling)

    def probe(self, hook: str | None = None, timestep: int | None = None, kind: str | None = None) -> Probe:
        """The probe of one cell (default: the best cell, and the release's default probe kind)."""
        hook, timestep = self._cell(hook, timestep)
        kind = kind or self.info.best_cell.probe
        if kind not in self.info.probe_kinds:
            raise ValueError(f"this release has probe kinds {self.info.probe_kinds}, not {kind!r}")
        return self._load_probe(hook, timestep, kind)

    def backbone(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Backbone:
        """The release's diffusion model: its ``model/`` folder when it ships one, else its Hub id."""
        from revelio.models import load_backbone

        local = self.root / MODEL_DIR
        if (local / "model_index.json").is_file():
            return load_backbone(local, device, dtype)
        return load_backbone(self.info.backbone, device, dtype, revision=self.info.backbone_revision)

    @cache  # one Release lives as long as the app; loading each artifact once is the point
    def reference_classifier(self) -> ReferenceClassifier:
        """The independent classifier trained on real images (quality gate, steering measurements)."""
        from revelio.probes.reference_classifier import ReferenceClassifier

        if self.info.quality_gate_skipped:
            raise FileNotFoundError(f"this release has no reference classifier: {self.info.quality_gate_skipped}")
        return ReferenceClassifier.from_pretrained(self.root, subfolder=REFERENCE_CLASSIFIER_DIR)

    def metrics(self, name: str) -> dict[str, Any]:
        """``metrics/<name>.json``, e.g. "probe_grid", "sae_grid", "quality_gate"."""
        path = self.root / METRICS_DIR / f"{name}.json"
        if not path.is_file():
            raise FileNotFoundError(f"this release has no metrics {name!r}; it has {self.metric_names()}")
        return read_json(path)

    def metric_names(self) -> list[str]:
        """The names :meth:`metrics` accepts for this release."""
        return sorted(p.stem for p in (self.root / METRICS_DIR).glob("*.json"))

    def plots(self) -> dict[str, Path]:
        """Every picture in ``plots/``, by file stem."""
        return {p.stem: p for p in sorted((self.root / PLOTS_DIR).glob("*.png"))}

    def exemplar_images(self, dataset_indices: torch.Tensor | list[int]) -> list[Image.Image | None]:
        """Thumbnails of training images by dataset index (as in an SAE's ``top_images``); None for -1 or absent."""
        images, position = self._exemplars()
        found: list[Image.Image | None] = []
        for index in torch.as_tensor(dataset_indices).tolist():
            row = position.get(int(index))
            if row is None:
                found.append(None)
                continue
            array = images[row].numpy()
            found.append(Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array))
        return found

    @cache
    def held_out_examples(self) -> tuple[list[Image.Image], list[int]]:
        """A few test images per class and their labels: the app's examples and histogram sample."""
        path = self.root / HELD_OUT_FILE
        if not path.is_file():
            raise FileNotFoundError(f"this release has no {HELD_OUT_FILE}; rebuild it with train/build_release.py")
        tensors = read_safetensors(path)
        arrays = tensors["images"].numpy()
        images = [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arrays]
        return images, tensors["labels"].tolist()

    @cache
    def _exemplars(self) -> tuple[torch.Tensor, dict[int, int]]:
        tensors = read_safetensors(self.root / EXEMPLARS_FILE)
        return tensors["images"], {int(i): row for row, i in enumerate(tensors["dataset_index"].tolist())}

    @cache
    def _load_sae(self, hook: str, timestep: int, pooling: str) -> KSparseAutoencoder:
        from revelio.sae import KSparseAutoencoder

        return KSparseAutoencoder.from_pretrained(self.root, subfolder=sae_subfolder(Cell(hook, timestep, pooling)))

    @cache
    def _load_probe(self, hook: str, timestep: int, kind: str) -> Probe:
        from revelio.probes import Probe

        return Probe.from_pretrained(self.root, subfolder=probe_subfolder(hook, timestep, kind))


def load_release(name_or_path: str | Path = BUNDLED, revision: str | None = None) -> Release:
    """Open a release: "bundled" (the committed Fashion-MNIST default), a folder, or a Hub repo id."""
    return Release(resolve_release_dir(name_or_path, revision))
