"""Resumable steps: a rerun continues only the command that started its output folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from revelio.config import to_json
from revelio.errors import ConfigError
from revelio.storage.files import read_json, write_json


def check_same_command(config: Any, path: Path, what: str, ignore: tuple[str, ...] = (), record: bool = True) -> None:
    """Record ``config`` in ``path``, or refuse (a ConfigError naming each changed setting) when the
    recorded one differs: resuming with other settings would mix two runs in one output.
    ``ignore`` names settings that do not change the result (``--overwrite``, thread counts)."""
    wanted = {k: v for k, v in to_json(config).items() if k not in ignore}
    if path.is_file():
        started = read_json(path)
        changed = sorted(k for k in set(started) | set(wanted) if started.get(k) != wanted.get(k))
        if changed:
            settings = ", ".join(f"{k}: {started.get(k)!r} -> {wanted.get(k)!r}" for k in changed)
            raise ConfigError(
                f"{path.parent} holds {what} started with other settings ({settings}); "
                "rerun the same command to resume it, set overwrite to start over, or write elsewhere (out)"
            )
    elif record:
        write_json(wanted, path)
