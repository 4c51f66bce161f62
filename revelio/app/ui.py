"""The page: a header about the release, then the Explore, Steer, Classify and Atlas tabs.

Each tab lays itself out and wires its own events (``revelio.app.tabs``); ``?tab=steer`` in the
address opens a tab directly (links, screenshots; ``?tab=remove`` opens Steer's Remove mode).
:class:`AppBlocks` launches with the app's stylesheet, error messages for API clients
(``show_error``: Gradio's own refusals, such as a missing argument, then say what was wrong) and
the upload limit, whoever launches it.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from revelio.app.examples import example_files
from revelio.app.state import AppState
from revelio.app.tabs.atlas import AtlasTab
from revelio.app.tabs.classify import ClassifyTab
from revelio.app.tabs.explore import ExploreTab
from revelio.app.tabs.steer import SteerTab
from revelio.app.uploads import MAX_UPLOAD_BYTES
from revelio.release import Release

TABS = ("explore", "steer", "classify", "atlas")
MODES = {"remove": ("steer", "remove")}  # ?tab= names of a tab's mode: (the tab, its mode)


# Small images (28 px) fill their box with crisp pixels; gallery captions wrap instead of being cut.
CSS = """
.revelio-input img { width: 100% !important; height: 100% !important; object-fit: contain !important; }
.revelio-pixels img, .revelio-heatmaps img, .revelio-exemplars img { image-rendering: pixelated; }
.revelio-heatmaps .caption-label, .revelio-exemplars .caption-label { white-space: normal !important; overflow: visible !important; }
.revelio-gallery .grid-wrap { height: auto !important; max-height: none !important; overflow-y: visible !important; }
.revelio-gallery { height: auto !important; }
.revelio-status, .revelio-remove-status { min-height: 4.5em; }
.revelio-note { min-height: 2.5em; }
.revelio-help p { font-size: var(--text-sm); color: var(--body-text-color-subdued); }
"""


class AppBlocks(gr.Blocks):
    """The app's Blocks: launched with its stylesheet, error messages shown to API clients, and the
    upload size limit, unless the caller says otherwise."""

    def launch(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("css", CSS)
        kwargs.setdefault("show_error", True)
        kwargs.setdefault("max_file_size", MAX_UPLOAD_BYTES)
        return super().launch(*args, **kwargs)


def header(release: Release) -> str:
    info, best = release.info, release.info.best_cell
    return (
        f"# revelio\nSparse-autoencoder features and probes of **{info.backbone_name or info.backbone}** "
        f"({info.dataset_name or info.dataset}): {len(release.hooks)} blocks × {len(release.timesteps)} timesteps. "
        f"Best cell: **{best.hook} at t={best.timestep}** ({best.probe} probe, test accuracy {best.test_accuracy:.3f})."
    )


def open_tab(request: gr.Request) -> tuple[Any, Any]:
    """The tab named by ``?tab=`` (``?tab=remove``: Steer's Remove mode), else Explore; and Steer's mode."""
    wanted = request.query_params.get("tab", "explore") if request else "explore"
    tab, mode = MODES.get(wanted, (wanted, "towards"))
    return gr.Tabs(selected=tab if tab in TABS else "explore"), gr.Tabs(selected=mode)


def build_demo(state: AppState) -> gr.Blocks:
    examples = example_files(state)
    with AppBlocks(title="revelio") as demo:
        gr.Markdown(header(state.release))
        with gr.Tabs() as tabs:
            with gr.Tab("Explore", id="explore"):
                ExploreTab(state).build(demo, examples)
            with gr.Tab("Steer", id="steer"):
                steer = SteerTab(state)
                steer.build()
            with gr.Tab("Classify", id="classify"):
                ClassifyTab(state).build(examples)
            with gr.Tab("Atlas", id="atlas"):
                AtlasTab(state).build()
        demo.load(open_tab, None, [tabs, steer.modes], api_visibility="private")
        demo.load(steer.load_defaults, None, steer.also, api_visibility="private", queue=False)
    return demo
