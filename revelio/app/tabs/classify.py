"""Classify: the release probe's class probabilities for an image, at the best cell or a chosen one."""

from __future__ import annotations

from typing import Any

import gradio as gr

from revelio.app.cell_picker import cell_inputs
from revelio.app.events import wire
from revelio.app.familiarity import classify_note
from revelio.app.rendering import PROBE_KINDS
from revelio.app.state import AppState
from revelio.app.uploads import read_upload

TOP_CLASSES = 5
PICK_IMAGE = "Pick an image (upload one, or click an example) to classify it."


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

    def refresh(self, upload: Any, hook: str, timestep: Any, kind: str) -> dict[str, float] | None:
        """The classes for the controls now on screen (block, timestep or probe changed): the current
        image's, or, with no image, none (the previous probe's answer cleared)."""
        return None if upload in (None, "") else self.classify(upload, hook, timestep, kind)

    def other_label_sets(self, upload: Any) -> list[dict[str, float] | None]:
        """Each further label set's reading of the image (its own best probe), e.g. the colour of a garment."""
        if upload in (None, ""):
            return [None] * len(self.state.further_label_sets)
        image = read_upload(upload)
        return [top_classes(self.state.probabilities([image], label_set=s)[0]) for s in self.state.further_label_sets]

    def note(self, upload: Any, prediction: Any) -> str:
        """What to do without an image, or why the classes may mean little (:mod:`revelio.app.familiarity`)."""
        confidences = prediction.get("confidences") if isinstance(prediction, dict) else None
        if upload in (None, "") or not confidences:
            return PICK_IMAGE
        top = max(float(c.get("confidence", 0.0)) for c in confidences)
        return classify_note(self.state, top, read_upload(upload))

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
            with gr.Column():
                status = gr.Markdown(PICK_IMAGE, elem_classes=["revelio-note"])  # progress, what to do, notes on the image
                prediction = gr.Label(label=f"Top-{TOP_CLASSES} classes", num_top_classes=TOP_CLASSES)
                others = [gr.Label(label=f"{name} (its best probe: {self.state.view(name).best_cell})", num_top_classes=TOP_CLASSES)
                          for name in self.state.further_label_sets]
        inputs = [image, *cell, kind]
        status_on = {"show_progress_on": [status]}
        changed = wire(lambda *args, **kwargs: gr.on([*(c.change for c in cell), kind.change, image.clear], *args, **kwargs),
                       self.refresh, inputs, prediction, api_visibility="private", trigger_mode="always_last", **status_on)
        for event in (wire(button.click, self.classify, inputs, prediction, api_name="classify", **status_on),
                      wire(gallery.load_input_event.then, self.classify, inputs, prediction, api_visibility="private", **status_on),
                      wire(image.upload, self.classify, inputs, prediction, api_visibility="private", **status_on),
                      changed):
            wire(event.success, self.note, [image, prediction], status, api_visibility="private", show_progress="hidden")
            if others:
                wire(event.success, self.other_label_sets, [image], others, api_visibility="private", show_progress="hidden")
