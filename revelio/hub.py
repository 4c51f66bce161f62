"""The on-disk and Hub format shared by SAEs and probes: config.json + safetensors, nothing else.

``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` work on a local folder or a Hub repo
id with an optional ``subfolder`` (one repo holds a whole grid of SAEs and probes). Loading reads
safetensors only, checks the weights' checksum and shapes against the config, and turns every
kind of bad file into an error that says what is wrong and what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

Artifact = TypeVar("Artifact", bound="HubArtifact")


class ArtifactFormatError(ValueError):
    """A saved artifact is missing, corrupt, tampered with, or disagrees with its config."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write through a temporary file and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        tmp.write(text)
        tmp.flush()
        os.fsync(tmp.fileno())
    os.replace(tmp.name, path)


def write_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write atomically (temp file + rename): a crash never leaves a half-written file in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata)
    with open(tmp, "rb") as file:
        os.fsync(file.fileno())
    os.replace(tmp, path)


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file; pickles and damaged files get a clear refusal."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        with open(path, "rb") as file:
            head = file.read(2)
        if head[:1] == b"\x80" or head == b"PK":  # pickle protocol 2+ / torch.save's zip
            raise ArtifactFormatError(
                f"{path} looks like a pickle / torch.save file. revelio never unpickles files; "
                "convert the weights to safetensors (safetensors.torch.save_file) in a trusted environment."
            ) from None
        raise ArtifactFormatError(
            f"{path} is not a valid safetensors file ({err}); it may be truncated or tampered "
            "with. Download or save it again."
        ) from None


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    """The string metadata in a safetensors header (call after read_safetensors validated it)."""
    with safe_open(str(path), "pt") as file:
        return dict(file.metadata() or {})


def write_json(data: dict[str, Any], path: Path) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def resolve_file(
    repo_id_or_dir: str | Path,
    filename: str,
    subfolder: str | None = None,
    revision: str | None = None,
    required: bool = True,
    **hub_kwargs: Any,
) -> Path | None:
    """A local path for ``filename`` from a folder or a Hub repo (downloaded into the HF cache)."""
    local = Path(repo_id_or_dir)
    if local.is_dir():
        path = local / (subfolder or "") / filename
        if path.is_file():
            return path
        if not required:
            return None
        where = local / (subfolder or "")
        hint = ""
        if not where.is_dir():
            found = sorted(str(p.parent.relative_to(local)) for p in local.rglob(CONFIG_NAME))[:20]
            hint = f" Folders with a {CONFIG_NAME} here: {found}." if found else ""
        raise ArtifactFormatError(f"no {filename} in {where}.{hint}")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError, RepositoryNotFoundError

    try:
        return Path(hf_hub_download(str(repo_id_or_dir), filename, subfolder=subfolder, revision=revision, **hub_kwargs))
    except EntryNotFoundError:
        if not required:
            return None
        raise ArtifactFormatError(
            f"{repo_id_or_dir!r} has no {filename}" + (f" in subfolder {subfolder!r}" if subfolder else "")
            + " (or it is not in the local cache while offline)."
        ) from None
    except (HFValidationError, RepositoryNotFoundError) as err:
        raise ArtifactFormatError(
            f"{str(repo_id_or_dir)!r} is neither a local folder nor a reachable Hub repo id ({err})."
        ) from None


# An extra safetensors file: its tensors and its header's string metadata.
ExtraFile = tuple[dict[str, torch.Tensor], dict[str, str]]


class HubArtifact:
    """Mixin: subclasses define ``config_dict``, ``from_config``, ``weight_shapes`` and ``state``.

    ``extra_files`` (name -> (tensors, metadata)) are written beside the weights and read back,
    checksummed like them, e.g. an SAE's feature statistics.
    """

    artifact_type: ClassVar[str]

    # --- what subclasses provide ---------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_config(cls: type[Artifact], config: dict[str, Any]) -> Artifact:
        raise NotImplementedError

    @classmethod
    def weight_shapes(cls, config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def state(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    extra_files: dict[str, ExtraFile]

    # --- shared behaviour --------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write config.json, model.safetensors and any extra safetensors files into ``directory``."""
        from revelio import __version__

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_safetensors(self.state(), directory / WEIGHTS_NAME)
        checksums = {WEIGHTS_NAME: _sha256(directory / WEIGHTS_NAME)}
        for name, (tensors, metadata) in getattr(self, "extra_files", {}).items():
            write_safetensors(tensors, directory / name, metadata)
            checksums[name] = _sha256(directory / name)
        config = {
            **self.config_dict(),
            "artifact_type": self.artifact_type,
            "revelio_version": __version__,
            "sha256": checksums,
        }
        write_json(config, directory / CONFIG_NAME)
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
        config_path = resolve_file(repo_id_or_dir, CONFIG_NAME, subfolder, revision, **hub_kwargs)
        try:
            config = json.loads(config_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ArtifactFormatError(f"{config_path} is not valid JSON ({err}).") from None
        found_type = config.get("artifact_type", cls.artifact_type)
        if found_type != cls.artifact_type:
            raise ArtifactFormatError(
                f"{config_path} describes a {found_type!r}, not a {cls.artifact_type!r}; "
                f"load it with the matching class."
            )
        checksums = config.get("sha256", {})
        files = {WEIGHTS_NAME: resolve_file(repo_id_or_dir, WEIGHTS_NAME, subfolder, revision, **hub_kwargs)}
        for name in checksums:
            if name != WEIGHTS_NAME:
                files[name] = resolve_file(repo_id_or_dir, name, subfolder, revision, **hub_kwargs)
        loaded = {name: read_safetensors(path) for name, path in files.items() if path is not None}
        for name, path in files.items():
            if path is not None and name in checksums and _sha256(path) != checksums[name]:
                raise ArtifactFormatError(
                    f"{path} does not match the checksum recorded in {CONFIG_NAME}: the file was "
                    "modified or only partly written. Download or save it again."
                )
        tensors = loaded.pop(WEIGHTS_NAME)
        try:
            expected = cls.weight_shapes(config)
        except (KeyError, TypeError, ValueError) as err:
            raise ArtifactFormatError(f"{config_path} is incomplete or malformed ({err!r}).") from None
        actual = {name: tuple(t.shape) for name, t in tensors.items()}
        if actual != expected:
            raise ArtifactFormatError(
                f"the weights in {files[WEIGHTS_NAME]} do not fit {config_path}: expected "
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
