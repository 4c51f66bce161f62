"""Joint text/image transformers (FLUX, SD3): hook points must read the image stream.

Their blocks carry two token streams. At a block, :mod:`revelio.activations.hooks` reads the
image stream of the ``(text, image)`` pair the block returns. Below block level some modules work
on the text stream only (``ff_context``, the ``add_*`` projections), and every module inside a
FLUX single-stream block sees the text and image tokens as one sequence; reading them would give
features of the prompt (or of both), with shapes that may fit. Those hook points are refused.
"""

from __future__ import annotations

from collections.abc import Sequence

from revelio.errors import ConfigError
from revelio.hook_points import HookPoint
from revelio.models.backbone import Backbone

# Module names diffusers 0.42 gives the text-stream parts of joint blocks and attention.
TEXT_STREAM_MODULES = frozenset({
    "context_embedder", "norm1_context", "norm2_context", "ff_context",
    "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out", "norm_added_q", "norm_added_k",
})
# Blocks whose inside runs on the concatenated [text; image] sequence.
SINGLE_STREAM_BLOCKS = "single_transformer_blocks"


def text_stream_reason(module: str) -> str | None:
    """Why a module path does not read the image stream alone, or None when it does."""
    parts = module.split(".")
    text = [p for p in parts if p in TEXT_STREAM_MODULES]
    if text:
        return f"{text[0]!r} works on the text (prompt) stream"
    if parts[0] == SINGLE_STREAM_BLOCKS and len(parts) > 2:
        return "modules inside a single-stream block see the text and image tokens as one sequence"
    return None


class ImageStreamHooks(Backbone):
    """Refuses hook points that would read a joint transformer's text stream."""

    def check_hook_points(self, hook_points: Sequence[str]) -> list[str]:
        checked = super().check_hook_points(hook_points)
        for spec in checked:
            reason = text_stream_reason(HookPoint.parse(spec).module)
            if reason is not None:
                raise ConfigError(
                    f"hook point {spec!r} does not read the image stream: {reason}. Use a block "
                    f"({self.hook_points[0]!r} ... {self.hook_points[-1]!r}), or an image-stream module inside a double-stream block"
                )
        return checked
