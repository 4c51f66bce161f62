"""Where the embedded default lives: the Fashion-MNIST release committed beside the package.

Both ``load_backbone("bundled")`` and ``load_release("bundled")`` resolve the name here, so
neither layer has to import the other.
"""

from __future__ import annotations

from pathlib import Path

from revelio.layout import RELEASE_FILE

BUNDLED = "bundled"


def bundled_release_dir() -> Path:
    """``releases/fashion-mnist`` of the source tree, checked to hold a release."""
    root = Path(__file__).resolve().parent.parent / "releases" / "fashion-mnist"
    if not (root / RELEASE_FILE).is_file():
        raise FileNotFoundError(
            f"the bundled release is not at {root}; it ships with the revelio source repository "
            "(git clone, then pip install -e .), or pass a release folder or Hub repo id instead."
        )
    return root
