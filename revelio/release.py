"""A release: one backbone's SAE grid, probes, statistics, exemplars and metrics, in one folder or Hub repo.

``load_release("bundled")`` opens the Fashion-MNIST release committed in this repository, so
everything works offline on a fresh machine; any other name is a local folder or a Hub repo id
(downloaded once with ``snapshot_download``). Artifacts are loaded lazily and kept, because the
app asks for the same few cells again and again.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from revelio.hub import ArtifactFormatError, read_safetensors

if TYPE_CHECKING:
    from revelio.backbones import Backbone
    from revelio.probes import Probe
    from revelio.reference_classifier import ReferenceClassifier
    from revelio.sae import KSparseAutoencoder

BUNDLED = "bundled"
RELEASE_FILE = "release.json"
EXEMPLARS_FILE = "exemplars/thumbnails.safetensors"
HELD_OUT_FILE = "exemplars/held_out.safetensors"


def bundled_release_dir() -> Path:
    """Where the committed default release lives: ``releases/fashion-mnist`` beside the package."""
    return Path(__file__).resolve().parent.parent / "releases" / "fashion-mnist"


def resolve_release_dir(name_or_path: str | Path, revision: str | None = None) -> Path:
    """A local folder for "bundled", a folder path, or a Hub repo id (snapshot-downloaded)."""
    if str(name_or_path) == BUNDLED:
        root = bundled_release_dir()
        if not (root / RELEASE_FILE).is_file():
            raise FileNotFoundError(
                f"the bundled release is not at {root}; it ships with the revelio source repository "
                "(git clone, then pip install -e .), or pass a release folder or Hub repo id instead."
            )
        return root
    path = Path(name_or_path)
    if path.is_dir():
        if not (path / RELEASE_FILE).is_file():
            raise ArtifactFormatError(f"{path} has no {RELEASE_FILE}; build a release with train/build_release.py")
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(str(name_or_path), revision=revision))
    except (HFValidationError, RepositoryNotFoundError, LocalEntryNotFoundError) as err:
        raise ArtifactFormatError(
            f"{str(name_or_path)!r} is neither a local release folder nor a reachable Hub repo id "
            f"({type(err).__name__}); use 'bundled' for the committed default."
        ) from None


class Release:
    """Lazy access to the artifacts of one release folder (see DESIGN.md's release layout)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        try:
            self.info: dict[str, Any] = json.loads((self.root / RELEASE_FILE).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ArtifactFormatError(f"cannot read {self.root / RELEASE_FILE} ({err}); rebuild the release") from None

    def __repr__(self) -> str:
        return f"Release({str(self.root)!r}, hooks={self.hooks}, timesteps={self.timesteps})"

    @property
    def hooks(self) -> list[str]:
        return list(self.info["hooks"])

    @property
    def timesteps(self) -> list[int]:
        return list(self.info["timesteps"])

    @property
    def poolings(self) -> list[str]:
        return list(self.info["poolings"])

    @property
    def class_names(self) -> list[str] | None:
        return self.info.get("class_names")

    @property
    def best_cell(self) -> tuple[str, int]:
        """The (hook, timestep) whose probe classified the test images best."""
        best = self.info["best_cell"]
        return best["hook"], int(best["timestep"])

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
        kind = kind or self.info["best_cell"]["probe"]
        if kind not in self.info["probe_kinds"]:
            raise ValueError(f"this release has probe kinds {self.info['probe_kinds']}, not {kind!r}")
        return self._load_probe(hook, timestep, kind)

    def backbone(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Backbone:
        """The release's diffusion model: its ``model/`` folder when it ships one, else its Hub id."""
        from revelio.backbones import load_backbone

        local = self.root / "model"
        return load_backbone(local if (local / "model_index.json").is_file() else self.info["backbone"], device, dtype)

    @cache  # one Release lives as long as the app; loading each artifact once is the point
    def reference_classifier(self) -> ReferenceClassifier:
        """The independent classifier trained on real images (quality gate, steering measurements)."""
        from revelio.reference_classifier import ReferenceClassifier

        return ReferenceClassifier.from_pretrained(self.root, subfolder="reference_classifier")

    def metrics(self, name: str) -> dict[str, Any]:
        """``metrics/<name>.json``, e.g. "probe_grid", "sae_grid", "quality_gate"."""
        path = self.root / "metrics" / f"{name}.json"
        if not path.is_file():
            found = sorted(p.stem for p in (self.root / "metrics").glob("*.json"))
            raise FileNotFoundError(f"this release has no metrics {name!r}; it has {found}")
        return json.loads(path.read_text())

    def plots(self) -> dict[str, Path]:
        """Every picture in ``plots/``, by file stem."""
        return {p.stem: p for p in sorted((self.root / "plots").glob("*.png"))}

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

    def exemplar_indices(self) -> list[int]:
        """Dataset indices of every training image that ships as an exemplar thumbnail."""
        return sorted(self._exemplars()[1])

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

        return KSparseAutoencoder.from_pretrained(self.root, subfolder=f"saes/{hook}/t{timestep}/{pooling}")

    @cache
    def _load_probe(self, hook: str, timestep: int, kind: str) -> Probe:
        from revelio.probes import Probe

        return Probe.from_pretrained(self.root, subfolder=f"probes/{hook}/t{timestep}/{kind}")


def load_release(name_or_path: str | Path = BUNDLED, revision: str | None = None) -> Release:
    """Open a release: "bundled" (the committed Fashion-MNIST default), a folder, or a Hub repo id."""
    return Release(resolve_release_dir(name_or_path, revision))
