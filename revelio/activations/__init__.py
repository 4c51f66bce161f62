"""Activations: forward hooks that always clean up, and ``extract`` over a grid of cells."""

from revelio.activations.capture import extract, iter_extract
from revelio.activations.hooks import capture_outputs, replace_outputs

__all__ = ["capture_outputs", "extract", "iter_extract", "replace_outputs"]
