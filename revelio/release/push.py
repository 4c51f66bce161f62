"""Publishing a release folder to the Hugging Face Hub as one model repo, after checking it.

The folder must hold release.json and a README.md model card whose YAML front matter parses.
Everything else is uploaded as it is, except hidden and staging files; files already on the Hub
with the same content are skipped by ``upload_folder``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from revelio.config import option
from revelio.errors import ArtifactFormatError, ConfigError, RevelioError
from revelio.layout import RELEASE_FILE

log = logging.getLogger(__name__)

# Never uploaded: hidden files and folders at any depth (fnmatch's "*" also matches "/"), and the
# temporary files of interrupted atomic writes.
IGNORE_PATTERNS = [".*", "*/.*", "*.tmp"]
REQUIRED = {RELEASE_FILE: "the release manifest", "README.md": "the model card"}



@dataclass
class PushConfig:
    """Which release goes to which repo, and how."""

    release: Path = option(help="the release folder")
    repo: str = option(help="Hub model repo id, e.g. user/name")
    private: bool = option(False, "create the repo private (ignored if it exists)")
    revision: str = option("main", "branch to commit to (created from main if new)")
    commit_message: str = option("Upload revelio release")
    dry_run: bool = option(False, "list what would be uploaded, then stop")


def release_files(release: Path) -> dict[str, int]:
    """Validate the release folder; its uploadable files (repo path -> size in bytes)."""
    import yaml
    from huggingface_hub.repocard import metadata_load
    from huggingface_hub.utils import filter_repo_objects

    if not release.is_dir():
        raise ArtifactFormatError(f"release folder {release} does not exist (or is not a folder).")
    for name, what in REQUIRED.items():
        if not (release / name).is_file():
            raise ArtifactFormatError(
                f"{release} has no {name} ({what}); is it a release folder? "
                "Build one first (see train/), then push it."
            )
    try:
        json.loads((release / RELEASE_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactFormatError(f"{release / RELEASE_FILE} is not valid JSON ({err}).") from None
    try:
        metadata = metadata_load(release / "README.md")
    except (yaml.YAMLError, ValueError) as err:  # UnicodeDecodeError is a ValueError
        raise ArtifactFormatError(f"the YAML metadata at the top of {release / 'README.md'} is invalid ({err}).") from None
    if not metadata:
        log.warning(f"note: {release / 'README.md'} has no YAML metadata (license, tags, ...); the Hub will warn about it.")
    paths = {p.relative_to(release).as_posix(): p for p in sorted(release.rglob("*")) if p.is_file()}
    kept = filter_repo_objects(list(paths), ignore_patterns=IGNORE_PATTERNS)
    return {path: paths[path].stat().st_size for path in kept}


def human_size(size: float) -> str:
    for unit in ("B", "kB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def push_release(config: PushConfig) -> str | None:
    """Push the release; returns the commit URL (None for a dry run)."""
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(config.repo)
    except HFValidationError as err:
        raise ConfigError(f"repo {config.repo!r} is not a valid repo id ({err}).") from None
    files = release_files(config.release)
    width = max(len(path) for path in files)
    for path, size in files.items():
        log.info(f"  {path:<{width}}  {human_size(size):>9}")
    log.info(f"{len(files)} files, {human_size(sum(files.values()))} in total, for {config.repo}@{config.revision}")
    if config.dry_run:
        log.info("Dry run: nothing uploaded.")
        return None
    if get_token() is None:
        raise ConfigError("No Hugging Face token found: run `hf auth login` or set HF_TOKEN (a write token).")

    api = HfApi()
    try:
        url = api.create_repo(config.repo, repo_type="model", private=True if config.private else None, exist_ok=True)
        if config.revision != "main":
            api.create_branch(config.repo, branch=config.revision, repo_type="model", exist_ok=True)
        info = api.upload_folder(
            folder_path=config.release,
            repo_id=config.repo,
            repo_type="model",
            revision=config.revision,
            commit_message=config.commit_message,
            ignore_patterns=list(IGNORE_PATTERNS),  # upload_folder appends to the list it is given
        )
    except (HfHubHTTPError, ValueError) as err:  # ValueError: e.g. README.md's metadata is invalid
        raise RevelioError(f"pushing {config.release} to {config.repo} failed: {err}") from None
    log.info(f"Pushed to {url}\nCommit: {info.commit_url}")
    return info.commit_url
