"""Where the embedded defaults live: the releases committed beside the package.

``load_backbone`` and ``load_release`` resolve the names here ("bundled": the class-conditional
Fashion-MNIST release; "bundled-text": the text-to-image one on colour Fashion-MNIST), so neither
layer has to import the other.
"""

from __future__ import annotations

from pathlib import Path

from revelio.layout import MODEL_DIR, RELEASE_FILE

BUNDLED = "bundled"
BUNDLED_TEXT = "bundled-text"
# Name -> folder under releases/ of the source tree.
BUNDLED_RELEASES = {BUNDLED: "fashion-mnist", BUNDLED_TEXT: "fashion-mnist-text"}


def is_bundled(name: str | Path) -> bool:
    return isinstance(name, str) and name in BUNDLED_RELEASES


def bundled_release_dir(name: str = BUNDLED) -> Path:
    """``releases/<folder>`` of the source tree, checked to hold a release."""
    root = Path(__file__).resolve().parent.parent / "releases" / BUNDLED_RELEASES[name]
    if not (root / RELEASE_FILE).is_file():
        raise FileNotFoundError(
            f"the bundled release {name!r} is not at {root}; it ships with the revelio source repository "
            "(git clone, then pip install -e .), or pass a release folder or Hub repo id instead."
        )
    return root


def bundled_model_dir(name: str = BUNDLED) -> Path:
    """The diffusers pipeline folder of a bundled release (present before its release is built)."""
    model = Path(__file__).resolve().parent.parent / "releases" / BUNDLED_RELEASES[name] / MODEL_DIR
    if not (model / "model_index.json").is_file():
        raise FileNotFoundError(f"the bundled model {name!r} is not at {model}; it ships with the revelio source repository")
    return model
