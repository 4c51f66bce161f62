"""A release: one backbone's SAE grid, probes, statistics, exemplars and metrics, in one folder or Hub repo.

``load_release("bundled")`` opens the Fashion-MNIST release committed in this repository, so
everything works offline on a fresh machine; any other name is a local folder or a Hub repo id
(downloaded once with ``snapshot_download``). Artifacts are loaded lazily and kept, because the
app asks for the same few cells again and again.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import torch
from PIL import Image

from revelio.bundled import BUNDLED, bundled_release_dir, is_bundled
from revelio.errors import ArtifactFormatError, ConfigError
from revelio.formats.release import BestCell, ReleaseInfo
from revelio.formats.schema import JsonSchema
from revelio.grid import Cell, Pooling
from revelio.layout import (
    EXEMPLARS_FILE,
    HELD_OUT_FILE,
    METRICS_DIR,
    MODEL_DIR,
    MODEL_INDEX_FILE,
    PLOTS_DIR,
    REFERENCE_CLASSIFIER_DIR,
    RELEASE_FILE,
    STATS_FILE,
    label_set_dir,
    label_set_key,
    metrics_file,
    probe_subfolder,
    sae_subfolder,
)
from revelio.models import Backbone, load_backbone
from revelio.probes import Probe
from revelio.probes.reference_classifier import ReferenceClassifier
from revelio.sae import KSparseAutoencoder
from revelio.storage.files import read_json, read_safetensors, read_safetensors_metadata
from revelio.storage.resolve import resolve_folder

Schema = TypeVar("Schema", bound=JsonSchema)


def resolve_release_dir(name_or_path: str | Path, revision: str | None = None) -> Path:
    """A local folder for "bundled", a folder path, or a Hub repo id (snapshot-downloaded)."""
    if is_bundled(name_or_path):
        return bundled_release_dir(str(name_or_path))
    root = resolve_folder(name_or_path, revision, what="release folder", hint="use 'bundled' or 'bundled-text' for the committed defaults")
    if not (root / RELEASE_FILE).is_file():
        raise ArtifactFormatError(f"{root} has no {RELEASE_FILE}; build a release with train/build_release.py")
    return root


class Release:
    """Lazy access to the artifacts of one release folder (the layout is in :mod:`revelio.layout`).

    A release with several label sets (e.g. "class" and "colour") is seen through one at a time:
    :meth:`with_label_set` gives the same release whose class names, probes, metrics, plots,
    held-out labels and SAE feature statistics (labels, purity) are that set's; SAE weights,
    exemplars and the backbone are shared.
    """

    def __init__(self, root: str | Path, label_set: str | None = None) -> None:
        self.root = Path(root)
        self.info = ReleaseInfo.read(self.root / RELEASE_FILE)
        if label_set is not None and label_set not in self.info.label_sets:
            raise ConfigError(f"this release has no label set {label_set!r}; it has {self.label_sets or ['one (unnamed)']}")
        # None for the default label set, whose files are the release's own
        self.label_set = None if label_set == self.default_label_set else label_set
        self._views: dict[str | None, Release] = {self.label_set: self}

    def __repr__(self) -> str:
        view = f", label_set={self.label_set!r}" if self.label_set else ""
        return f"Release({str(self.root)!r}, hooks={self.hooks}, timesteps={self.timesteps}{view})"

    @property
    def label_sets(self) -> list[str]:
        """The release's label sets by name, the default one first ([] for one unnamed set)."""
        default = self.default_label_set
        return [default, *(s for s in self.info.label_sets if s != default)] if default else list(self.info.label_sets)

    @property
    def default_label_set(self) -> str | None:
        return self.info.default_label_set

    @property
    def label_set_name(self) -> str | None:
        """The label set this view shows (its name, also for the default set)."""
        return self.label_set or self.default_label_set

    def with_label_set(self, label_set: str | None) -> Release:
        """This release seen through ``label_set`` (None or the default set: the release itself)."""
        key = None if label_set == self.default_label_set else label_set
        if key not in self._views:
            view = Release(self.root, key)
            view._views = self._views  # one view per set, sharing what each loaded
            self._views[key] = view
        return self._views[key]

    @property
    def labels_root(self) -> Path:
        """Where this view's probes, metrics, plots and feature statistics are."""
        return label_set_dir(self.root, self.label_set)

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
        """The names of this view's labels (the default set: the dataset's classes)."""
        return self.info.label_sets[self.label_set] if self.label_set else self.info.class_names

    @property
    def best(self) -> BestCell:
        """This label set's best probe: where, which kind, its test accuracy."""
        return self.info.label_set_best_cells[self.label_set] if self.label_set else self.info.best_cell

    @property
    def best_cell(self) -> Cell:
        """The (hook, timestep) whose probe classified the test images best."""
        return self.best.cell

    def cell(self, cell: Cell | None = None, *, hook: str | None = None, timestep: int | None = None,
             pooling: Pooling | None = None) -> Cell:
        """A cell of this release, checked: ``cell``, or the best cell with any of its parts replaced."""
        best = self.best_cell
        pooling = cell.pooling if cell is not None else pooling
        if pooling is not None and pooling not in self.poolings:
            raise ConfigError(f"this release has SAEs for poolings {self.poolings}, not {pooling!r}")
        if cell is None:
            cell = Cell(hook or best.hook, best.timestep if timestep is None else int(timestep), pooling)
        if cell.hook not in self.hooks or cell.timestep not in self.timesteps:
            raise ConfigError(
                f"this release has no cell ({cell.hook!r}, t={cell.timestep}); hooks: {self.hooks}, timesteps: {self.timesteps}"
            )
        return cell

    def sae(self, cell: Cell | None = None, *, hook: str | None = None, timestep: int | None = None,
            pooling: Pooling | None = None) -> KSparseAutoencoder:
        """The SAE of one cell: ``release.sae(Cell("mid_block", 100, "none"))``, or by keywords with the
        best cell's hook and timestep as defaults (pooling: "mean" when the release has pooled SAEs, else its own)."""
        pooling = pooling or ("mean" if "mean" in self.poolings else self.poolings[0])
        cell = self.cell(cell, hook=hook, timestep=timestep, pooling=pooling)
        return self._load_sae(cell if cell.pooling else cell.with_pooling(pooling))

    def probe(self, cell: Cell | None = None, *, hook: str | None = None, timestep: int | None = None,
              kind: str | None = None) -> Probe:
        """The probe of one cell (default: the best cell, and the release's default probe kind)."""
        cell = self.cell(cell, hook=hook, timestep=timestep).with_pooling(None)
        kind = kind or self.best.probe
        if kind not in self.info.probe_kinds:
            raise ConfigError(f"this release has probe kinds {self.info.probe_kinds}, not {kind!r}")
        return self._load_probe(cell, kind)

    def probe_sae(self, probe: Probe) -> KSparseAutoencoder | None:
        """The SAE whose codes ``probe`` reads (sae-linear probes), else None."""
        cell = probe.config.cell
        return self.sae(cell.with_pooling(probe.config.pooling or "mean")) if probe.config.sae and cell else None

    def backbone(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Backbone:
        """The release's diffusion model: its ``model/`` folder when it ships one, else its Hub id."""
        local = self.root / MODEL_DIR
        if (local / MODEL_INDEX_FILE).is_file():
            return load_backbone(local, device, dtype)
        return load_backbone(self.info.backbone, device, dtype, revision=self.info.backbone_revision)

    @cache  # one Release lives as long as the app; loading each artifact once is the point
    def reference_classifier(self) -> ReferenceClassifier:
        """The independent classifier of this label set, trained on real images (quality gate, steering measurements)."""
        if self.info.quality_gate_skipped:
            raise FileNotFoundError(f"this release has no reference classifier: {self.info.quality_gate_skipped}")
        if not (self.labels_root / REFERENCE_CLASSIFIER_DIR).is_dir():
            raise FileNotFoundError(f"this release has no reference classifier of the label set {self.label_set!r}")
        return ReferenceClassifier.from_pretrained(self.labels_root, subfolder=REFERENCE_CLASSIFIER_DIR)

    def metrics(self, name: str) -> dict[str, Any]:
        """``metrics/<name>.json`` as parsed JSON, e.g. "probe_grid"; :meth:`read_metrics` gives it typed."""
        path = metrics_file(self.labels_root, name)
        if not path.is_file():
            raise FileNotFoundError(f"this release has no metrics {name!r}; it has {self.metric_names()}")
        return read_json(path)

    def read_metrics(self, name: str, schema: type[Schema]) -> Schema | None:
        """``metrics/<name>.json`` read with its schema (``revelio.formats.metrics``); None when the release has none."""
        path = metrics_file(self.labels_root, name)
        return schema.read(path) if path.is_file() else None

    def metric_names(self) -> list[str]:
        """The names :meth:`metrics` accepts for this release."""
        return sorted(p.stem for p in (self.labels_root / METRICS_DIR).glob("*.json"))

    def plots(self) -> dict[str, Path]:
        """Every picture in ``plots/``, by file stem."""
        return {p.stem: p for p in sorted((self.labels_root / PLOTS_DIR).glob("*.png"))}

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
        """A few test images per class and their labels in this view's label set: the app's examples and histogram sample."""
        path = self.root / HELD_OUT_FILE
        if not path.is_file():
            raise FileNotFoundError(f"this release has no {HELD_OUT_FILE}; rebuild it with train/build_release.py")
        tensors = read_safetensors(path)
        arrays = tensors["images"].numpy()
        images = [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arrays]
        key = label_set_key(self.label_set) if self.label_set else "labels"
        if key not in tensors:
            raise ArtifactFormatError(f"{path} has no labels of the label set {self.label_set!r}; rebuild the release")
        return images, tensors[key].tolist()

    @cache
    def _exemplars(self) -> tuple[torch.Tensor, dict[int, int]]:
        tensors = read_safetensors(self.root / EXEMPLARS_FILE)
        return tensors["images"], {int(i): row for row, i in enumerate(tensors["dataset_index"].tolist())}

    @cache
    def _load_sae(self, cell: Cell) -> KSparseAutoencoder:
        sae = KSparseAutoencoder.from_pretrained(self.root, subfolder=sae_subfolder(cell))
        if self.label_set:  # this label set's feature statistics in place of the default set's
            stats = self.labels_root / sae_subfolder(cell) / STATS_FILE
            sae.extra_files[STATS_FILE] = (read_safetensors(stats), read_safetensors_metadata(stats))
        return sae

    @cache
    def _load_probe(self, cell: Cell, kind: str) -> Probe:
        return Probe.from_pretrained(self.labels_root, subfolder=probe_subfolder(cell, kind))


def load_release(name_or_path: str | Path = BUNDLED, revision: str | None = None, label_set: str | None = None) -> Release:
    """Open a release: "bundled" (the committed Fashion-MNIST default), "bundled-text" (the
    text-to-image one, label sets "class" and "colour"), a folder, or a Hub repo id; seen through
    ``label_set`` (default: its first)."""
    return Release(resolve_release_dir(name_or_path, revision), label_set)
