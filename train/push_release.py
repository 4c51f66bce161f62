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

from revelio.config import parse, run_script
from revelio.release.push import PushConfig, push_release


def main(argv: list[str] | None = None) -> str | None:
    """Push the release; returns the commit URL (None for --dry-run)."""
    return push_release(parse(PushConfig, argv, __doc__))


if __name__ == "__main__":
    run_script(main)
