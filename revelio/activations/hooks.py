"""Forward hooks as context managers that always clean up.

A hook left behind silently changes every later forward pass (and leaks memory through the
captured tensors), so every helper here removes its hooks in a ``finally`` block, also when the
body raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


class StopForward(Exception):
    """Raised inside a forward hook to end the forward pass once nothing more is needed."""


def get_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at a dotted path such as ``up_blocks.1``, with a helpful error if absent."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        blocks = [name for name, _ in model.named_children()]
        raise ValueError(
            f"{type(model).__name__} has no module {path!r}. Top-level modules: {blocks}. "
            "Use a dotted module path such as 'mid_block' or 'up_blocks.1'."
        ) from None


def hidden_state(output: object) -> torch.Tensor:
    """The hidden-state tensor of a block's output (diffusers down blocks return a tuple)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    sample = getattr(output, "sample", None)
    if isinstance(sample, torch.Tensor):
        return sample
    raise TypeError(f"cannot find a hidden-state tensor in a block output of type {type(output)}")


def _with_hidden_state(output: object, new: torch.Tensor) -> object:
    """The block output with its hidden state replaced, keeping the rest (e.g. skip states)."""
    if isinstance(output, torch.Tensor):
        return new
    if isinstance(output, tuple):
        return (new, *output[1:])
    if isinstance(output, list):
        return [new, *output[1:]]
    raise TypeError(f"cannot replace the hidden state of a block output of type {type(output)}")


@contextmanager
def capture_outputs(
    model: nn.Module, hook_points: Sequence[str], stop_when_done: bool = False
) -> Iterator[dict[str, torch.Tensor]]:
    """Record the hidden state each hook point outputs during forwards run in the body.

    With ``stop_when_done`` the forward raises :class:`StopForward` as soon as every hook point has
    fired, so nothing after the deepest requested block is computed; the caller catches it.
    The yielded dict is refilled on every forward.
    """
    captured: dict[str, torch.Tensor] = {}
    wanted = list(dict.fromkeys(hook_points))
    modules = {path: get_module(model, path) for path in wanted}

    def make_hook(path: str) -> Callable:
        def hook(module: nn.Module, args: object, output: object) -> None:
            captured[path] = hidden_state(output)
            if stop_when_done and len(captured) == len(wanted):
                raise StopForward

        return hook

    def start_forward(module: nn.Module, args: object) -> None:
        captured.clear()

    handles = [model.register_forward_pre_hook(start_forward)]
    handles += [module.register_forward_hook(make_hook(path)) for path, module in modules.items()]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def replace_outputs(
    model: nn.Module, replacements: Mapping[str, Callable[[torch.Tensor], torch.Tensor | None]]
) -> Iterator[None]:
    """Let ``fn(hidden_state)`` rewrite each named block's output while the body runs.

    ``fn`` returns the new hidden state, or ``None`` to leave the output unchanged. Any other parts
    of the output (the skip connections of a down block) pass through untouched.
    """
    modules = {path: get_module(model, path) for path in replacements}

    def make_hook(fn: Callable[[torch.Tensor], torch.Tensor | None]) -> Callable:
        def hook(module: nn.Module, args: object, output: object) -> object:
            new = fn(hidden_state(output))
            return None if new is None else _with_hidden_state(output, new)

        return hook

    handles = [
        modules[path].register_forward_hook(make_hook(fn)) for path, fn in replacements.items()
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def forward_timestep(args: tuple, kwargs: dict) -> Any:
    """The timestep a diffusers denoiser was called with (second positional or ``timestep=``),
    as a forward pre-hook registered ``with_kwargs=True`` sees it."""
    return args[1] if len(args) > 1 else kwargs.get("timestep")
