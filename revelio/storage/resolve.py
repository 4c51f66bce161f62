"""Folder or Hub repo: one place that turns a name into local files, with errors that say why not.

Everything revelio loads (SAEs, probes, releases, backbones' extra files) is addressed the same
way: a local folder, or a Hub repo id downloaded into the HF cache. Names inside it (a subfolder,
a file name a config lists) are data from possibly hostile files, so none may leave the folder:
no absolute paths, no ``..``, no symlinks pointing out of it.
"""

from __future__ import annotations

import functools
import socket
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any
from urllib.parse import urlsplit

from revelio.storage.files import ArtifactFormatError

CONNECT_SECONDS = 3.0


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
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    problem = hub_unreachable()
    try:
        return Path(hf_hub_download(str(repo_id_or_dir), filename, subfolder=subfolder, revision=revision,
                                    local_files_only=bool(problem), **hub_kwargs))
    except LocalEntryNotFoundError:
        if not required:
            return None
        raise ArtifactFormatError(
            f"{str(repo_id_or_dir)!r} is not a local folder, and {problem or 'the Hub download failed'}: only files already "
            "in the local Hugging Face cache can be used. Pass a local folder, or go online once."
        ) from None
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

    problem = hub_unreachable()
    try:
        return Path(snapshot_download(str(repo_id_or_dir), revision=revision, local_files_only=bool(problem)))
    except (HFValidationError, RepositoryNotFoundError, LocalEntryNotFoundError) as err:
        why = f"{problem}, and it is not in the local Hugging Face cache" if problem else type(err).__name__
        raise ArtifactFormatError(
            f"{str(repo_id_or_dir)!r} is neither a local {what} nor a Hub repo id we can reach ({why})"
            f"{'; ' + hint if hint else ''}."
        ) from None


def hub_unreachable() -> str | None:
    """Why the Hub cannot be asked (HF_HUB_OFFLINE, or no connection to its endpoint within
    :data:`CONNECT_SECONDS`), or None. Asked once per endpoint and process, so a name that is not
    a local folder fails in seconds offline instead of after the Hub client's retries."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "Hub access is off (HF_HUB_OFFLINE is set)"
    return _unreachable(constants.ENDPOINT)


@functools.cache
def _unreachable(url: str) -> str | None:
    endpoint = urlsplit(url)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=CONNECT_SECONDS).close()
    except OSError as err:
        return f"the Hub at {url} cannot be reached from here ({err})"
    return None


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
