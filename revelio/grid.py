"""The grid every artifact is laid out on: cells of (hook point, timestep, pooling).

One definition of "cell" and of its folder, ``<hook>/t<timestep>/<pooling>``, shared by the
activation cache, the SAE grid, the probe grid (which has no pooling level) and the app.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

Pooling = Literal["mean", "none"]
# "mean": one vector per image (spatially mean-pooled, as the paper); "none": one per location.
POOLINGS: tuple[Pooling, ...] = ("mean", "none")
POOLING_NAMES = {"none": "spatial (one code per location)", "mean": "pooled (one code per image)"}


def check_pooling(pooling: str) -> Pooling:
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be 'mean' or 'none', got {pooling!r}")
    return pooling  # type: ignore[return-value]


@dataclass(frozen=True, order=True)
class Cell:
    """One (hook point, timestep[, pooling]) of the grid; ``pooling`` None for per-block artifacts (probes)."""

    hook: str
    timestep: int
    pooling: Pooling | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "timestep", int(self.timestep))
        if self.pooling is not None:
            check_pooling(self.pooling)

    @property
    def path(self) -> str:
        """The cell's folder relative to a grid root: ``<hook>/t<timestep>[/<pooling>]``."""
        return f"{self.hook}/t{self.timestep}" + (f"/{self.pooling}" if self.pooling else "")

    @classmethod
    def from_path(cls, path: str | PurePosixPath, with_pooling: bool = True) -> Cell:
        """The inverse of :attr:`path`, for folders found on disk."""
        parts = PurePosixPath(path).parts
        try:
            if with_pooling:
                hook, step, pooling = parts[-3:]
            else:
                (hook, step), pooling = parts[-2:], None
            if not step.startswith("t"):
                raise ValueError
            return cls(hook, int(step[1:]), pooling)  # type: ignore[arg-type]
        except ValueError:
            layout = "<hook>/t<timestep>" + ("/<pooling>" if with_pooling else "")
            raise ValueError(f"{str(path)!r} is not a grid cell folder ({layout})") from None

    @property
    def spec(self) -> str:
        """``hook:t``: how a cell is written on a command line and in steering.json."""
        return f"{self.hook}:{self.timestep}"

    @classmethod
    def parse(cls, spec: str, pooling: Pooling | None = None) -> Cell:
        """The inverse of :attr:`spec` (``"mid_block:100"``); the one place a ``hook:t`` string is read."""
        hook, _, step = str(spec).rpartition(":")
        if not hook or not step.isdigit():
            raise ValueError(f"a cell is written HOOK:T (e.g. mid_block:100); got {spec!r}")
        return cls(hook, int(step), pooling)

    def with_pooling(self, pooling: Pooling | None) -> Cell:
        return Cell(self.hook, self.timestep, pooling)

    def __str__(self) -> str:
        return f"{self.hook} at t={self.timestep}" + (f" ({POOLING_NAMES[self.pooling].split(' ')[0]})" if self.pooling else "")
