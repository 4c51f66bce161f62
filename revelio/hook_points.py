"""Hook points: which module of the denoiser is read, and what is read there.

A hook point is written ``<module path>[@<read>]``: ``mid_block`` reads that block's output,
``up_blocks.1.attentions.1@residual`` reads the attention block's residual update (its output
minus its input, what SDXL-unbox's SAEs are trained on). At a block that returns a text and an
image stream (FLUX's double- and single-stream blocks, SD3's joint blocks) both reads are of the
image stream (:func:`revelio.activations.hooks.image_stream_index`). Module paths are relative to the
denoiser (the UNet or transformer); the ``unet.`` / ``transformer.`` prefixes foreign SAE
formats use are accepted and dropped, so ``unet.up_blocks.1.attentions.1`` and
``up_blocks.1.attentions.1`` name one hook point. The canonical spelling (:attr:`HookPoint.spec`)
is what caches, SAE configs, release folders and the app use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Read = Literal["output", "residual"]
READS: tuple[Read, ...] = ("output", "residual")
FOREIGN_PREFIXES = ("unet.", "transformer.")
SEPARATOR = "@"
MODULE_PATH = re.compile(r"\w+(\.\w+)*")  # also what keeps a hook point a safe folder name


@dataclass(frozen=True)
class HookPoint:
    """A module path of the denoiser and what is read there: its output, or its residual update."""

    module: str
    read: Read = "output"

    def __post_init__(self) -> None:
        if not MODULE_PATH.fullmatch(self.module):
            raise ValueError(f"a hook point names a module path such as 'mid_block' or 'up_blocks.1.attentions.0'; got {self.module!r}")
        if self.read not in READS:
            raise ValueError(f"a hook point reads one of {list(READS)}; got {self.read!r}")

    @classmethod
    def parse(cls, spec: str) -> HookPoint:
        """``"unet.up_blocks.1.attentions.1@residual"`` -> HookPoint("up_blocks.1.attentions.1", "residual")."""
        module, _, read = str(spec).partition(SEPARATOR)
        for prefix in FOREIGN_PREFIXES:
            module = module.removeprefix(prefix)
        return cls(module, read or "output")  # type: ignore[arg-type]

    @property
    def spec(self) -> str:
        return self.module if self.read == "output" else f"{self.module}{SEPARATOR}{self.read}"

    def __str__(self) -> str:
        return self.spec


def canonical(spec: str) -> str:
    """The canonical spelling of a hook point written any accepted way."""
    return HookPoint.parse(spec).spec
