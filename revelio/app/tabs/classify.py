"""Classify: the release probe's class probabilities for an image, at the best cell or a chosen one."""

from __future__ import annotations

from typing import Any

import gradio as gr

from revelio.app.cell_picker import cell_inputs
from revelio.app.events import wire
from revelio.app.rendering import PROBE_KINDS
from revelio.app.state import AppState
from revelio.app.uploads import read_upload

TOP_CLASSES = 5


def top_classes(probabilities: dict[str, float], count: int = TOP_CLASSES) -> dict[str, float]:
    """The ``count`` most probable classes, most probable first."""
    return dict(sorted(probabilities.items(), key=lambda item: -item[1])[:count])


class ClassifyTab:
    """The Classify tab: its event and its layout."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    def classify(self, upload: Any, hook: str, timestep: Any, kind: str) -> dict[str, float]:
        cell = self.state.cell(hook, timestep, None)
        image = read_upload(upload)
        return top_classes(self.state.probabilities([image], cell.hook, cell.timestep, kind)[0])

    def build(self, examples: list[str]) -> None:
        
        info = self.state.release.info
        small = self.state.backbone.resolution < 128
        with gr.Row():
            with gr.Column():
                image = gr.Image(label="Image", type="filepath", sources=["upload", "clipboard"], height=256,
                                 elem_classes=["revelio-input", "revelio-pixels"] if small else ["revelio-input"])
                button = gr.Button("Classify", variant="primary")
                gallery = gr.Examples(examples, inputs=image, label="Examples (click one to classify it)", examples_per_page=12)
                cell = cell_inputs(self.state, with_pooling=False)
                kind = gr.Dropdown(info.probe_kinds, value=info.best_cell.probe, label="Probe")
                gr.Markdown(f"Default: the best cell, {info.best_cell.hook} at t={info.best_cell.timestep} with the "
                            f"{info.best_cell.probe} probe. " + PROBE_KINDS, elem_classes=["revelio-help"])
            prediction = gr.Label(label=f"Top-{TOP_CLASSES} classes", num_top_classes=TOP_CLASSES)
        inputs = [image, *cell, kind]
        wire(button.click, self.classify, inputs, prediction, api_name="classify")
        wire(gallery.load_input_event.then, self.classify, inputs, prediction, api_visibility="private")
        wire(image.upload, self.classify, inputs, prediction, api_visibility="private")
