"""The one place revelio unpickles: ``torch.load(weights_only=True)``, for explicit conversions only.

``weights_only`` lets a pickle build tensors, containers, numbers and strings and nothing else,
so loading cannot run code. A config object inside the pickle (the paper's ``SDSAERunnerConfig``)
is rebuilt as a :class:`Fields`, a plain record of its attributes with no behaviour of its own.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from revelio.errors import ArtifactFormatError


class Fields:
    """The attributes of a pickled config object, and nothing else."""

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def load_weights_only(path: Path, config_classes: tuple[str, ...] = ()) -> Any:
    """What ``path`` holds, loaded with ``weights_only=True`` onto the CPU; each full class name in
    ``config_classes`` is rebuilt as a :class:`Fields`."""
    allowed = [(Fields, name) for name in config_classes]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, TypeError) as err:
        raise ArtifactFormatError(f"{path} cannot be read as weights only ({str(err).splitlines()[0]:.300}); "
                                  "revelio loads pickles with torch.load(weights_only=True) and nothing else") from None
