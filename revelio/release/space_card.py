"""The Space's README for the release it serves: hub_cards/space.md with that release's names.

The Hub links a Space to the models and datasets its card lists, so the card names the release
repo, the backbone and the dataset when they are Hub repos (a local model or image folder has no
page to link). ``python -m revelio.release.space_card RELEASE > space-README.md`` writes it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from revelio.bundled import bundled_release_dir, is_bundled
from revelio.data.datasets import FASHION_MNIST, FASHION_MNIST_HUB
from revelio.layout import MODEL_DIR, RELEASE_FILE
from revelio.release.load import Release
from revelio.storage.resolve import resolve_file

SPACE_TEMPLATE = Path(__file__).resolve().parents[2] / "hub_cards" / "space.md"
CONDITIONING_WORDS = {"text": "text-to-image", "class": "class-conditional", "none": "unconditional"}
STEER_CONDITION = {"text": "write a prompt (and a negative prompt)", "class": "pick one of the model's classes",
                   "none": "pick nothing (the model is unconditional)"}


def hub_id(name: str) -> bool:
    """Whether ``name`` reads as a Hub repo id rather than a local path or one of revelio's names."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not name or is_bundled(name) or name == MODEL_DIR or name.startswith((".", "/", "~")) or Path(name).exists():
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def hub_dataset(name: str) -> str | None:
    """The Hub dataset behind a release's dataset name (the Hub copy for "fashion-mnist"), if any."""

    if name == FASHION_MNIST:
        return FASHION_MNIST_HUB
    return name if hub_id(name) else None


def render_space_card(release_id: str, release: Release) -> str:
    """The Space README serving ``release`` (``release_id``: what REVELIO_RELEASE is set to)."""
    import jinja2
    from huggingface_hub import SpaceCard

    info = release.info
    card = SpaceCard.load(SPACE_TEMPLATE)
    models = [name for name in (release_id, info.backbone) if hub_id(name)]
    dataset = hub_dataset(info.dataset)
    card.data.models = models or None
    card.data.datasets = [dataset] if dataset else None
    backbone = info.backbone_name or info.backbone
    hardware = ("Everything runs on CPU." if info.backbone == MODEL_DIR else
                "This backbone wants a GPU: run the Space on GPU or ZeroGPU hardware (variable REVELIO_DEVICE=cuda).")
    card.text = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True).from_string(card.text).render(
        backbone=backbone,
        release=f"[{release_id}](https://huggingface.co/{release_id})" if hub_id(release_id) else f"`{release_id}`",
        release_arg=release_id,
        conditioning_words=CONDITIONING_WORDS.get(info.conditioning, info.conditioning),
        steer_condition=STEER_CONDITION.get(info.conditioning, "generate"),
        dataset=f"[{info.dataset}](https://huggingface.co/datasets/{dataset})" if dataset else info.dataset,
        class_count=len(info.class_names or []),
        hooks=len(info.hooks), timesteps=len(info.timesteps), hardware=hardware,
    )
    return str(card)


def open_release_info(name: str) -> Release:
    """A Release reading only release.json ("bundled", a folder, or a Hub repo: one small download)."""

    if is_bundled(name):
        return Release(bundled_release_dir(name))
    return Release(resolve_file(name, RELEASE_FILE).parent)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("release", help='what the Space serves (REVELIO_RELEASE): "bundled", a folder, or a Hub repo id')
    args = parser.parse_args(argv)
    print(render_space_card(args.release, open_release_info(args.release)), end="")


if __name__ == "__main__":
    main()
