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

from revelio.hook_points import HookPoint


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


def _input_state(args: tuple, kwargs: dict) -> torch.Tensor:
    """The hidden state a block was called with: its first positional argument or ``hidden_states=``."""
    value = args[0] if args else kwargs.get("hidden_states", kwargs.get("input_tensor", kwargs.get("sample")))
    if not isinstance(value, torch.Tensor):
        raise TypeError("cannot find the hidden-state input of this module; read its output instead of its residual update")
    return value


def _residual(hook: HookPoint, args: tuple, kwargs: dict, output: torch.Tensor) -> torch.Tensor:
    """What a block adds to its input: output minus input (same shape, or a clear error)."""
    before = _input_state(args, kwargs)
    if before.shape != output.shape:
        raise ValueError(
            f"{hook.module} maps {tuple(before.shape)} to {tuple(output.shape)}: it has no residual update; "
            f"read its output ({hook.module!r}) instead of {hook.spec!r}"
        )
    return output - before


def _register(module: nn.Module, hook: HookPoint, read: Callable[[tuple, dict, object], object]) -> torch.utils.hooks.RemovableHandle:
    """A forward hook that hands ``read(args, kwargs, output)`` what the hook point reads."""
    return module.register_forward_hook(lambda _module, args, kwargs, output: read(args, kwargs, output), with_kwargs=True)


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
    parsed = {spec: HookPoint.parse(spec) for spec in wanted}
    modules = {spec: get_module(model, hook.module) for spec, hook in parsed.items()}  # all found before any hook

    def make_hook(spec: str) -> Callable[[tuple, dict, object], None]:
        hook = parsed[spec]

        def read(args: tuple, kwargs: dict, output: object) -> None:
            state = hidden_state(output)
            captured[spec] = _residual(hook, args, kwargs, state) if hook.read == "residual" else state
            if stop_when_done and len(captured) == len(wanted):
                raise StopForward

        return read

    def start_forward(module: nn.Module, args: object) -> None:
        captured.clear()

    handles = [model.register_forward_pre_hook(start_forward)]
    handles += [_register(modules[spec], hook, make_hook(spec)) for spec, hook in parsed.items()]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def replace_outputs(
    model: nn.Module, replacements: Mapping[str, Callable[[torch.Tensor], torch.Tensor | None]]
) -> Iterator[None]:
    """Let ``fn(what the hook point reads)`` rewrite each hook point's block output while the body runs.

    ``fn`` returns the new value, or ``None`` to leave the output unchanged. At a residual-update
    hook point ``fn`` rewrites the update, so the block's output moves by exactly as much. Any
    other parts of the output (the skip connections of a down block) pass through untouched.
    """

    def make_hook(hook: HookPoint, fn: Callable[[torch.Tensor], torch.Tensor | None]) -> Callable[[tuple, dict, object], object]:
        def rewrite(args: tuple, kwargs: dict, output: object) -> object:
            state = hidden_state(output)
            if hook.read == "output":
                new = fn(state)
                return None if new is None else _with_hidden_state(output, new)
            update = _residual(hook, args, kwargs, state)
            new = fn(update)
            return None if new is None else _with_hidden_state(output, state + (new - update))

        return rewrite

    parsed = {HookPoint.parse(spec): fn for spec, fn in replacements.items()}
    modules = {hook: get_module(model, hook.module) for hook in parsed}  # all found before any hook
    handles = [_register(modules[hook], hook, make_hook(hook, fn)) for hook, fn in parsed.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def forward_timestep(args: tuple, kwargs: dict) -> Any:
    """The timestep a diffusers denoiser was called with (second positional or ``timestep=``),
    as a forward pre-hook registered ``with_kwargs=True`` sees it."""
    return args[1] if len(args) > 1 else kwargs.get("timestep")
