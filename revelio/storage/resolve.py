"""Folder or Hub repo: one place that turns a name into local files, with errors that say why not.

Everything revelio loads (SAEs, probes, releases, backbones' extra files) is addressed the same
way: a local folder, or a Hub repo id downloaded into the HF cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from revelio.storage.files import ArtifactFormatError


def resolve_file(
    repo_id_or_dir: str | Path,
    filename: str,
    subfolder: str | None = None,
    revision: str | None = None,
    required: bool = True,
    **hub_kwargs: Any,
) -> Path | None:
    """A local path for ``filename`` from a folder or a Hub repo (downloaded into the HF cache).

    ``required=False`` returns None for a missing file instead of raising.
    """
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
            found = sorted(str(p.parent.relative_to(local)) for p in local.rglob("config.json"))[:20]
            hint = f" Folders with a config.json here: {found}." if found else ""
        raise ArtifactFormatError(f"no {filename} in {where}.{hint}")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HFValidationError,
        RepositoryNotFoundError,
    )

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
            f"{str(repo_id_or_dir)!r} is neither a local folder nor a Hub repo id we can reach ({err})."
        ) from None


def resolve_folder(repo_id_or_dir: str | Path, revision: str | None = None, what: str = "folder", hint: str = "") -> Path:
    """A local folder as it is, or a whole Hub repo snapshot-downloaded into the HF cache."""
    local = Path(repo_id_or_dir)
    if local.is_dir():
        return local
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        return Path(snapshot_download(str(repo_id_or_dir), revision=revision))
    except (HFValidationError, RepositoryNotFoundError, LocalEntryNotFoundError) as err:
        raise ArtifactFormatError(
            f"{str(repo_id_or_dir)!r} is neither a local {what} nor a Hub repo id we can reach "
            f"({type(err).__name__}){'; ' + hint if hint else ''}."
        ) from None
