"""Publish a release folder to the Hugging Face Hub as one model repo.

  python train/push_release.py --release release/ --repo user/name [--private] [--revision main] \
      [--commit-message "..."] [--dry-run]

The folder must hold a release.json and a README.md model card (the repo's front page; its YAML
front matter must parse). Everything else in it (saes/, probes/, model/, exemplars/, metrics/,
plots/) is uploaded as it is, except hidden and staging files (".*" at any depth, "*.tmp"). The
files and the total size are listed first; --dry-run stops there, without network or token.

Otherwise the repo is created if needed (--private only applies when it is created), --revision
is created from main if it is a new branch, and the folder is uploaded in one call to
upload_folder: files already on the Hub with the same content are skipped. The token is the one
huggingface_hub finds by itself (HF_TOKEN, or the file `hf auth login` writes); HF_ENDPOINT picks
another Hub. Afterwards artifacts load by repo id, e.g.
KSparseAutoencoder.from_pretrained("user/name", subfolder="saes/mid_block/t250/mean").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# Never uploaded: hidden files and folders at any depth (fnmatch's "*" also matches "/"), and the
# temporary files of interrupted atomic writes.
IGNORE_PATTERNS = [".*", "*/.*", "*.tmp"]
REQUIRED = {"release.json": "the release manifest", "README.md": "the model card"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--release", required=True, type=Path, help="the release folder")
    parser.add_argument("--repo", required=True, help="Hub model repo id, e.g. user/name")
    parser.add_argument("--private", action="store_true", help="create the repo private (ignored if it exists)")
    parser.add_argument("--revision", default="main", help="branch to commit to (created from main if new)")
    parser.add_argument("--commit-message", default="Upload revelio release")
    parser.add_argument("--dry-run", action="store_true", help="list what would be uploaded, then stop")
    return parser.parse_args(argv)


def release_files(release: Path) -> dict[str, int]:
    """Validate the release folder; its uploadable files (repo path -> size in bytes)."""
    import yaml
    from huggingface_hub.repocard import metadata_load
    from huggingface_hub.utils import filter_repo_objects

    if not release.is_dir():
        raise SystemExit(f"release folder {release} does not exist (or is not a folder).")
    for name, what in REQUIRED.items():
        if not (release / name).is_file():
            raise SystemExit(
                f"{release} has no {name} ({what}); is it a release folder? "
                "Build one first (see train/), then push it."
            )
    try:
        json.loads((release / "release.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SystemExit(f"{release / 'release.json'} is not valid JSON ({err}).") from None
    try:
        metadata = metadata_load(release / "README.md")
    except (yaml.YAMLError, ValueError) as err:  # UnicodeDecodeError is a ValueError
        raise SystemExit(f"the YAML metadata at the top of {release / 'README.md'} is invalid ({err}).") from None
    if not metadata:
        print(f"note: {release / 'README.md'} has no YAML metadata (license, tags, ...); the Hub will warn about it.")
    paths = {p.relative_to(release).as_posix(): p for p in sorted(release.rglob("*")) if p.is_file()}
    kept = filter_repo_objects(list(paths), ignore_patterns=IGNORE_PATTERNS)
    return {path: paths[path].stat().st_size for path in kept}


def human_size(size: float) -> str:
    for unit in ("B", "kB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def main(argv: list[str] | None = None) -> str | None:
    """Push the release; returns the commit URL (None for --dry-run)."""
    args = parse_args(argv)
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(args.repo)
    except HFValidationError as err:
        raise SystemExit(f"--repo {args.repo!r} is not a valid repo id ({err}).") from None
    files = release_files(args.release)
    width = max(len(path) for path in files)
    for path, size in files.items():
        print(f"  {path:<{width}}  {human_size(size):>9}")
    print(f"{len(files)} files, {human_size(sum(files.values()))} in total, for {args.repo}@{args.revision}")
    if args.dry_run:
        print("Dry run: nothing uploaded.")
        return None
    if get_token() is None:
        raise SystemExit("No Hugging Face token found: run `hf auth login` or set HF_TOKEN (a write token).")

    api = HfApi()
    try:
        url = api.create_repo(args.repo, repo_type="model", private=True if args.private else None, exist_ok=True)
        if args.revision != "main":
            api.create_branch(args.repo, branch=args.revision, repo_type="model", exist_ok=True)
        info = api.upload_folder(
            folder_path=args.release,
            repo_id=args.repo,
            repo_type="model",
            revision=args.revision,
            commit_message=args.commit_message,
            ignore_patterns=list(IGNORE_PATTERNS),  # upload_folder appends to the list it is given
        )
    except (HfHubHTTPError, ValueError) as err:  # ValueError: e.g. README.md's metadata is invalid
        raise SystemExit(f"pushing {args.release} to {args.repo} failed: {err}") from None
    print(f"Pushed to {url}\nCommit: {info.commit_url}")
    return info.commit_url


if __name__ == "__main__":
    main()
