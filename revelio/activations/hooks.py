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

# FluxTransformer2DModel multiplies the timestep it is given by this (diffusers 0.42, transformer_flux.py).
FLUX_TIMESTEP_SCALE = 1000
# The top of revelio's 0..999 timestep grid, which names pure noise on every model.
PURE_NOISE_TIMESTEP = 999


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


# diffusers 0.42 blocks that return ``(encoder_hidden_states, hidden_states)``: the text stream first,
# the image stream second (SD3's last joint block returns ``None`` for the text). Reading the first
# tensor there would give the prompt's tokens, with shapes that may fit just as well.
TEXT_FIRST_BLOCKS = frozenset({"FluxTransformerBlock", "FluxSingleTransformerBlock", "JointTransformerBlock"})


def image_stream_index(module: nn.Module) -> int:
    """Where a module's output tuple holds the image (hidden) stream: 1 for joint text/image blocks, else 0."""
    return 1 if type(module).__name__ in TEXT_FIRST_BLOCKS else 0


def hidden_state(output: object, index: int = 0) -> torch.Tensor:
    """The hidden-state tensor of a block's output: the tensor itself, or item ``index`` of a tuple
    (diffusers down blocks return (hidden, skips); joint blocks (text, image), see :func:`image_stream_index`)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and len(output) > index and isinstance(output[index], torch.Tensor):
        return output[index]
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


def _with_hidden_state(output: object, new: torch.Tensor, index: int = 0) -> object:
    """The block output with its hidden state (item ``index`` of a tuple) replaced, keeping the rest
    (skip states, a joint block's text stream) in place."""
    if isinstance(output, torch.Tensor):
        return new
    if isinstance(output, (tuple, list)):
        items = list(output)
        items[index] = new
        return tuple(items) if isinstance(output, tuple) else items
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
        hook, index = parsed[spec], image_stream_index(modules[spec])

        def read(args: tuple, kwargs: dict, output: object) -> None:
            state = hidden_state(output, index)
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
        index = image_stream_index(modules[hook])

        def rewrite(args: tuple, kwargs: dict, output: object) -> object:
            state = hidden_state(output, index)
            if hook.read == "output":
                new = fn(state)
                return None if new is None else _with_hidden_state(output, new, index)
            update = _residual(hook, args, kwargs, state)
            new = fn(update)
            return None if new is None else _with_hidden_state(output, state + (new - update), index)

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
    """The timestep a diffusers denoiser was called with (second positional or ``timestep=``), as a
    forward pre-hook registered ``with_kwargs=True`` sees it, on the 0..1000 scale of every other model.

    FLUX-family transformers (recognised by their ``img_ids`` argument) are called with sigma =
    timestep / 1000 and multiply it back inside; this gives the timestep, so steering windows name
    the same noise level on every model. Flow-matching samplers start at pure noise, timestep 1000
    (sigma 1), one past the 0..999 grid whose top steering windows and the app call pure noise; it
    reads as 999, so a window reaching 999 steers the first step.
    """
    timestep = args[1] if len(args) > 1 else kwargs.get("timestep")
    if timestep is None:
        return None
    if "img_ids" in kwargs:
        timestep = timestep * FLUX_TIMESTEP_SCALE
    if isinstance(timestep, torch.Tensor):
        return timestep.clamp(max=PURE_NOISE_TIMESTEP)
    return min(timestep, PURE_NOISE_TIMESTEP)
