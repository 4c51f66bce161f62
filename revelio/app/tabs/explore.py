"""Explore: which SAE features fire on one image, where, and how well the SAE explains it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd
import torch
from PIL import Image

from revelio.activations.capture import pool
from revelio.analysis.labels import RULE
from revelio.analysis.queries import feature_strengths, feature_values, strongest
from revelio.app.cell_picker import cell_inputs
from revelio.app.events import wire
from revelio.app.familiarity import explore_note
from revelio.app.feature_view import FeatureDetail
from revelio.app.rendering import heatmap_overlay, table_csv
from revelio.app.state import AppState
from revelio.app.uploads import read_upload
from revelio.grid import Cell
from revelio.sae.evaluation import normalized_mse

TOP_FEATURES = 8
TABLE_COLUMNS = ["feature", "label", "activation", "% of its max"]


@dataclass
class FeatureHit:
    feature: int
    label: str
    activation: float
    relative: float  # activation / the feature's largest activation on the training images


@dataclass
class Exploration:
    hits: list[FeatureHit]
    heatmaps: dict[int, torch.Tensor]  # feature -> [side, side] activations (spatial SAEs only)
    fvu: float  # fraction of this image's activation variance the SAE leaves unexplained


@torch.no_grad()
def explore_image(state: AppState, image: Image.Image, cell: Cell, count: int = TOP_FEATURES) -> Exploration:
    """The ``count`` strongest features of ``image`` at ``cell``, their heatmaps and the image's FVU."""
    tokens = state.tokens([image], cell.hook, cell.timestep)  # [1, locations, C]
    x = pool(tokens, cell.pooling)  # [1, locations, C] (spatial) or [1, C] (pooled)
    sae, stats, labels = state.sae(cell), state.stats(cell), state.labels(cell)
    code = sae.encode(x)  # one encode serves the reconstruction, the ranking and the heatmaps
    # variance around the held-out mean: one image has too few locations (or one vector) for its own
    fvu = normalized_mse(x[0], sae.decode(code)[0], mean=state.held_out_mean(cell))
    hits = []
    for feature, activation in strongest(feature_strengths(code, sae.d_sae)[0], count):
        peak = float(stats.max_activation[feature])
        hits.append(FeatureHit(feature, str(labels[feature]), activation, activation / peak if peak > 0 else 0.0))
    heatmaps: dict[int, torch.Tensor] = {}
    if cell.pooling == "none":
        side = round(tokens.shape[1] ** 0.5)
        heatmaps = {hit.feature: feature_values(code, hit.feature)[0].reshape(side, side) for hit in hits}
    return Exploration(hits, heatmaps, fvu)


HEATMAPS = "Where each top feature fires"
NO_HEATMAPS = ("No heatmaps with the pooled SAE: it has one code per image, so it cannot say where a feature "
               "fires. Choose the spatial SAE to see where.")


def heatmap_label(pooling: Any) -> Any:
    """The heatmap panel's title and the note under it, for the chosen SAE (UI only)."""
    pooled = pooling == "mean"
    return gr.Gallery(label=HEATMAPS + (" (spatial SAEs only)" if pooled else ""), visible=not pooled), gr.Markdown(visible=pooled)


PICK_IMAGE = "Pick an image (upload one, or click an example) to explore this SAE."
FVU_HELP = ("Fraction of variance unexplained: the share of this image's activation variance (around the held-out "
            "images' mean) that the SAE's reconstruction misses; 0 is perfect.")


class ExploreTab:
    """The Explore tab: its events and its layout."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    def explore(self, upload: Any, hook: str, timestep: Any, pooling: str) -> tuple:
        """FVU, bar chart, table and heatmaps of the image's top features; the first one picked.

        Every output is built from the one exploration of this request, and the bar chart's value
        is all that changes between responses (see ``build``), so chart, table and heatmaps always
        describe the same image and SAE.
        """
        cell = self.state.cell(hook, timestep, pooling)
        image = read_upload(upload)
        found = explore_image(self.state, image, cell)
        labels = {h.feature: self.state.feature_label(cell, h.feature) for h in found.hits}
        table = pd.DataFrame(
            [(h.feature, h.label, round(h.activation, 4), round(100 * h.relative, 1)) for h in found.hits],
            columns=TABLE_COLUMNS,
        )
        bars = pd.DataFrame({"feature": [self.state.feature_label(cell, h.feature, short=True) for h in found.hits],
                             "activation": [h.activation for h in found.hits]})
        peaks = self.state.stats(cell).max_activation
        overlays = [(heatmap_overlay(image, found.heatmaps[h.feature], float(peaks[h.feature])),
                     f"{labels[h.feature]} · {h.activation:.2f}")
                    for h in found.hits if h.feature in found.heatmaps]
        first = found.hits[0].feature if found.hits else None
        return (round(found.fvu, 4), gr.BarPlot(bars), table, overlays,
                gr.Dropdown(choices=self.state.feature_choices(cell), value=first))

    def refresh(self, upload: Any, hook: str, timestep: Any, pooling: str) -> tuple:
        """The exploration for the controls now on screen (block, timestep or SAE changed): the
        current image's, or, with no image, every result of the previous SAE cleared."""
        if upload in (None, ""):
            cell = self.state.cell(hook, timestep, pooling)
            empty = pd.DataFrame({"feature": [], "activation": []})
            return (None, gr.BarPlot(empty), pd.DataFrame(columns=TABLE_COLUMNS), [],
                    gr.Dropdown(choices=self.state.feature_choices(cell), value=None))
        return self.explore(upload, hook, timestep, pooling)

    def note(self, upload: Any, hook: str, timestep: Any, pooling: str, fvu: Any) -> str:
        """The line under the results: what to do without an image, or why an upload's features
        may mean little (:mod:`revelio.app.familiarity`)."""
        if upload in (None, "") or fvu is None:
            return PICK_IMAGE
        cell = self.state.cell(hook, timestep, pooling)
        return explore_note(self.state, cell, float(fvu), read_upload(upload))

    def pick_row(self, evt: gr.SelectData) -> Any:
        """A click on a table row picks that row's feature (its id is the first column)."""
        row = evt.row_value if isinstance(evt.row_value, list) else None
        return gr.Dropdown(value=int(row[0])) if row and isinstance(row[0], (int, float)) else gr.skip()

    def build(self, demo: gr.Blocks, examples: list[str]) -> None:
        small = self.state.backbone.resolution < 128
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                image = gr.Image(examples[0], label="Image", type="filepath", sources=["upload", "clipboard"], height=256,
                                 elem_classes=["revelio-input", "revelio-pixels"] if small else ["revelio-input"])
                button = gr.Button("Explore", variant="primary")
                gallery = gr.Examples(examples, inputs=image, label="Examples (click one to explore it): test images and photos",
                                      examples_per_page=12)
                cell = cell_inputs(self.state)
            with gr.Column(scale=2):
                status = gr.Markdown(elem_classes=["revelio-note"])  # progress, what to do, notes on the image
                fvu = gr.Number(label="FVU on this image", info=FVU_HELP)
                # y_lim is set once here and never in a response: a response that changes it makes the
                # chart rebuild from the previous value (Gradio's plot redraws before its data updates)
                bars = gr.BarPlot(x="feature", y="activation", label="Top features (strongest activation on this image)",
                                  sort="-y", height=280, x_label_angle=-30, y_lim=[0, None])
                table = gr.Dataframe(label="Top features: click a row for its details below", interactive=False,
                                     wrap=True, column_widths=["14%", "46%", "20%", "20%"])
                gr.Markdown(f"Labels: {RULE}.", elem_classes=["revelio-help"])
                download = gr.DownloadButton("Download the table (CSV)", size="sm", variant="secondary")
                heatmaps = gr.Gallery(label=HEATMAPS, columns=4, object_fit="contain",
                                      elem_classes=["revelio-heatmaps", "revelio-gallery"], visible=self.state.default_cell.pooling == "none")
                no_heatmaps = gr.Markdown(NO_HEATMAPS, visible=self.state.default_cell.pooling != "none")
        feature = gr.Dropdown(self.state.feature_choices(self.state.default_cell),
                              label="Feature (type to search by label or id)", filterable=True)
        outputs = [fvu, bars, table, heatmaps, feature]
        inputs = [image, *cell]
        # progress and errors show on the status line: the last result and the help texts stay readable
        status_on = {"show_progress_on": [status]}
        changed = wire(lambda *args, **kwargs: gr.on([*(c.change for c in cell), image.clear], *args, **kwargs), self.refresh, inputs,
                       outputs, api_visibility="private", trigger_mode="always_last", **status_on)
        for event in (wire(button.click, self.explore, inputs, outputs, api_name="explore", **status_on),
                      wire(gallery.load_input_event.then, self.explore, inputs, outputs, api_visibility="private", **status_on),
                      wire(image.upload, self.explore, inputs, outputs, api_visibility="private", **status_on),
                      wire(demo.load, self.explore, inputs, outputs, api_visibility="private", **status_on),  # a first look
                      changed):
            wire(event.success, table_csv, table, download, api_visibility="private", show_progress="hidden")
            wire(event.success, self.note, [*inputs, fvu], status, api_visibility="private", show_progress="hidden")
        table.select(self.pick_row, None, feature, api_visibility="private")
        FeatureDetail(self.state).build(feature.change, [*cell, feature], icon_api_name="feature_icon", api_name="feature")
        cell[2].change(heatmap_label, cell[2], [heatmaps, no_heatmaps], api_visibility="private", queue=False)
