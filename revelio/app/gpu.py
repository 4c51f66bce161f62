"""ZeroGPU support: model forwards run under ``spaces.GPU`` when the ``spaces`` package is there.

On a Hugging Face ZeroGPU Space a GPU is attached only while a ``spaces.GPU`` function runs, in
a forked worker that gets its arguments and returns its result by pickling. So the decorated
functions are the forwards themselves (images, prompts and numbers in; images and CPU tensors
out), the app's caches and its model lock stay outside them, in the server process. Anywhere
else (no ``spaces`` package) the function is returned unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

# Upper bounds in seconds per call (ZeroGPU queues shorter requests first): one extraction or
# probe forward (up to the 200 held-out images, once per cell), and one generation of up to 100
# steps (a Steer request makes two: its baseline, unless cached, and the steered image).
FORWARD_SECONDS = 30
GENERATE_SECONDS = 120


def gpu(duration: int = 60) -> Callable[[F], F]:
    """``spaces.GPU(duration=duration)`` when ``import spaces`` works, else the identity."""
    try:
        import spaces
    except ImportError:
        return lambda fn: fn
    return spaces.GPU(duration=duration)
