"""The Gradio app (the Hugging Face Space): explore features, steer generation, classify, browse.

``create_demo("bundled")`` gives a ready Blocks (queue configured); ``app.py`` at the repository
root launches it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import gradio as gr

# Requests at once (model work is serialised by AppState.model_lock, the rest overlaps) and
# requests allowed to wait: beyond that a client is told the queue is full instead of hanging.
CONCURRENCY_LIMIT = 2
QUEUE_SIZE = 64


def create_demo(release: str = "bundled", device: str = "cpu") -> gr.Blocks:
    """Load a release (folder, Hub repo id or "bundled") and build the app around it."""
    # imported here, not at the top: importing revelio.app or a light part of it (uploads, gpu)
    # stays free of gradio, diffusers and the model stack until an app is built
    from revelio.app.state import AppState
    from revelio.app.ui import build_demo
    from revelio.release import load_release

    state = AppState(load_release(release), device=device)
    state.held_out_strengths(state.default_cell)  # warm the default cell before the first request
    demo = build_demo(state)
    demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_SIZE)
    return demo
