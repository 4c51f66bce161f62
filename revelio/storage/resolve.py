"""Folder or Hub repo: one place that turns a name into local files, with errors that say why not.

Everything revelio loads (SAEs, probes, releases, backbones' extra files) is addressed the same
way: a local folder, or a Hub repo id downloaded into the HF cache. Names inside it (a subfolder,
a file name a config lists) are data from possibly hostile files, so none may leave the folder:
no absolute paths, no ``..``, no symlinks pointing out of it.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath
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
    check_inside(subfolder or "", "subfolder")
    check_inside(filename, "file name")
    local = Path(repo_id_or_dir)
    if local.is_dir():
        path = local / (subfolder or "") / filename
        if path.is_file():
            return contained(path, local)
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


def check_inside(name: str, what: str) -> None:
    """A relative name that stays inside its folder: no absolute path, drive or ``..`` part."""
    if not isinstance(name, str):
        raise ArtifactFormatError(f"the {what} must be a string; got {name!r}")
    parts = [*PurePosixPath(name.replace("\\", "/")).parts]
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive or ".." in parts:
        raise ArtifactFormatError(f"the {what} {name!r} leaves the folder (absolute path or '..'); name a path inside it")


def contained(path: Path, folder: Path) -> Path:
    """``path`` when it (after following symlinks) lies inside ``folder``; else an error.

    A folder inside the HF cache (``models--org--name/snapshots/<rev>/``) holds symlinks into the
    same repo's ``blobs/``: those stay inside the repo's cache folder, so that is the boundary.
    """
    root = _cache_repo(folder.resolve()) or folder.resolve()
    target = path.resolve()
    if not target.is_relative_to(root):
        raise ArtifactFormatError(f"{path} is a symlink to {target}, outside {folder}; refusing to read it")
    return path


def _cache_repo(folder: Path) -> Path | None:
    """The HF cache folder of the repo whose snapshot holds ``folder``, if it lies in one."""
    for parent in (folder, *folder.parents):
        if parent.parent.name == "snapshots" and parent.parent.parent.name.split("--")[0] in ("models", "datasets", "spaces"):
            return parent.parent.parent
    return None
