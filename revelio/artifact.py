"""The on-disk and Hub format shared by SAEs, probes and classifiers: config.json + safetensors.

``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` work on a local folder or a Hub repo
id with an optional ``subfolder`` (one repo holds a whole grid of SAEs and probes). Loading reads
safetensors only, checks the weights' checksum and shapes against the config, and turns every
kind of bad file into an error that says what is wrong and what to do.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import torch

from revelio import __version__
from revelio.errors import ArtifactFormatError
from revelio.formats.schema import JsonSchema
from revelio.layout import CONFIG_FILE, WEIGHTS_FILE
from revelio.storage.files import (
    read_json,
    read_safetensors,
    read_safetensors_metadata,
    sha256,
    write_json,
    write_safetensors,
)
from revelio.storage.resolve import resolve_file

Artifact = TypeVar("Artifact", bound="HubArtifact")
ConfigType = TypeVar("ConfigType", bound=JsonSchema)

# An extra safetensors file: its tensors and its header's string metadata.
ExtraFile = tuple[dict[str, torch.Tensor], dict[str, str]]


class HubArtifact(Generic[ConfigType]):
    """Mixin: subclasses hold a typed ``config`` (of ``config_class``) and define ``from_config``,
    ``weight_shapes``, ``state`` and ``load_state``.

    ``extra_files`` (name -> (tensors, metadata)) are written beside the weights and read back,
    checksummed like them, e.g. an SAE's feature statistics.
    """

    artifact_type: ClassVar[str]
    config_class: ClassVar[type[JsonSchema]]
    config: ConfigType

    # --- what subclasses provide ---------------------------------------------------------------
    @classmethod
    def from_config(cls: type[Artifact], config: Any) -> Artifact:
        raise NotImplementedError

    @classmethod
    def weight_shapes(cls, config: Any) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def state(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    extra_files: dict[str, ExtraFile]

    # --- shared behaviour --------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write config.json, model.safetensors and any extra safetensors files into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_safetensors(self.state(), directory / WEIGHTS_FILE)
        checksums = {WEIGHTS_FILE: sha256(directory / WEIGHTS_FILE)}
        for name, (tensors, metadata) in getattr(self, "extra_files", {}).items():
            write_safetensors(tensors, directory / name, metadata)
            checksums[name] = sha256(directory / name)
        config = {
            **self.config.to_json(),
            "artifact_type": self.artifact_type,
            "revelio_version": __version__,
            "sha256": checksums,
        }
        write_json(config, directory / CONFIG_FILE)
        return directory

    @classmethod
    def from_pretrained(
        cls: type[Artifact],
        repo_id_or_dir: str | Path,
        subfolder: str | None = None,
        revision: str | None = None,
        **hub_kwargs: Any,
    ) -> Artifact:
        """Load from a local folder or a Hub repo id (``subfolder`` picks one cell of a grid)."""
        config_path = resolve_file(repo_id_or_dir, CONFIG_FILE, subfolder, revision, **hub_kwargs)
        raw = read_json(config_path)
        if not isinstance(raw, dict):
            raise ArtifactFormatError(f"{config_path} must hold a JSON object")
        found_type = raw.get("artifact_type", cls.artifact_type)
        if found_type != cls.artifact_type:
            raise ArtifactFormatError(
                f"{config_path} describes a {found_type!r}, not a {cls.artifact_type!r}; "
                f"load it with the matching class."
            )
        config = cls.config_class.from_json(raw, str(config_path))  # sizes checked before any allocation
        checksums = raw.get("sha256", {})
        files = {WEIGHTS_FILE: resolve_file(repo_id_or_dir, WEIGHTS_FILE, subfolder, revision, **hub_kwargs)}
        for name in checksums:
            if name != WEIGHTS_FILE:
                files[name] = resolve_file(repo_id_or_dir, name, subfolder, revision, **hub_kwargs)
        loaded = {name: read_safetensors(path) for name, path in files.items() if path is not None}
        for name, path in files.items():
            if path is not None and name in checksums and sha256(path) != checksums[name]:
                raise ArtifactFormatError(
                    f"{path} does not match the checksum recorded in {CONFIG_FILE}: the file was "
                    "modified or only partly written. Download or save it again."
                )
        tensors = loaded.pop(WEIGHTS_FILE)
        expected = cls.weight_shapes(config)
        actual = {name: tuple(t.shape) for name, t in tensors.items()}
        if actual != expected:
            raise ArtifactFormatError(
                f"the weights in {files[WEIGHTS_FILE]} do not fit {config_path}: expected "
                f"{expected}, found {actual}."
            )
        artifact = cls.from_config(config)
        artifact.load_state(tensors)
        artifact.extra_files = {
            name: (tensors, read_safetensors_metadata(files[name])) for name, tensors in loaded.items()
        }
        return artifact

    def push_to_hub(
        self,
        repo_id: str,
        subfolder: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        commit_message: str | None = None,
        revision: str | None = None,
    ) -> str:
        """Create the repo if needed and upload this artifact (into ``subfolder``); returns the commit URL."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp)
            info = api.upload_folder(
                repo_id=repo_id,
                folder_path=tmp,
                path_in_repo=subfolder or "",
                commit_message=commit_message or f"Upload {self.artifact_type}" + (f" {subfolder}" if subfolder else ""),
                revision=revision,
            )
        return str(info)
