"""Explore: which SAE features fire on one image, where, and how well the SAE explains it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd
import torch
from PIL import Image

from revelio.analysis.queries import feature_strengths, feature_values, strongest
from revelio.app.cell_picker import cell_inputs, follow_cell
from revelio.app.feature_view import FeatureDetail
from revelio.app.rendering import heatmap_overlay
from revelio.app.state import AppState
from revelio.app.uploads import read_upload
from revelio.app.validation import wire
from revelio.grid import Cell
from revelio.sae.metrics import normalized_mse

TOP_FEATURES = 8


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
    tokens = state.tokens([image], cell.hook, cell.timestep)[0]  # [locations, C]
    x = tokens if cell.pooling == "none" else tokens.mean(0, keepdim=True)
    sae, stats = state.sae(cell), state.stats(cell)
    code = sae.encode(x[None])  # one encode serves the reconstruction, the ranking and the heatmaps
    # variance around the held-out mean: one image has too few locations (or one vector) for its own
    fvu = normalized_mse(x, sae.decode(code)[0], mean=state.held_out_mean(cell))
    hits = []
    for feature, activation in strongest(feature_strengths(code, sae.d_sae)[0], count):
        peak = float(stats.max_activation[feature])
        hits.append(FeatureHit(feature, stats.labels[feature], activation, activation / peak if peak > 0 else 0.0))
    heatmaps: dict[int, torch.Tensor] = {}
    if cell.pooling == "none":
        side = round(tokens.shape[0] ** 0.5)
        heatmaps = {hit.feature: feature_values(code, hit.feature)[0].reshape(side, side) for hit in hits}
    return Exploration(hits, heatmaps, fvu)


class ExploreTab:
    """The Explore tab: its event and its layout."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    def explore(self, upload: Any, hook: str, timestep: Any, pooling: str) -> tuple:
        """FVU, bar chart, table and heatmaps of the image's top features; the first one picked."""
        cell = self.state.cell(hook, timestep, pooling)
        image = read_upload(upload)
        found = explore_image(self.state, image, cell)
        labels = {h.feature: self.state.feature_label(cell, h.feature) for h in found.hits}
        table = pd.DataFrame(
            [(h.feature, h.label, round(h.activation, 4), round(100 * h.relative, 1)) for h in found.hits],
            columns=["feature", "label", "activation", "% of its max"],
        )
        bars = pd.DataFrame({"feature": list(labels.values()), "activation": [h.activation for h in found.hits]})
        peaks = self.state.stats(cell).max_activation
        overlays = [(heatmap_overlay(image, found.heatmaps[h.feature], float(peaks[h.feature])),
                     f"{labels[h.feature]} · {h.activation:.2f}")
                    for h in found.hits if h.feature in found.heatmaps]
        top = max((h.activation for h in found.hits), default=1.0)
        first = found.hits[0].feature if found.hits else None
        return (round(found.fvu, 4), gr.BarPlot(bars, y_lim=[0, top * 1.05]),  # bars from zero: heights compare honestly
                table, overlays, gr.Dropdown(choices=self.state.feature_choices(cell), value=first))

    def build(self, demo: gr.Blocks, examples: list[str]) -> None:
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(examples[0], label="Image", type="filepath", sources=["upload", "clipboard"], height=256)
                gr.Examples(examples, inputs=image, label="Examples: test images and photos")
                cell = cell_inputs(self.state)
                button = gr.Button("Explore", variant="primary")
            with gr.Column(scale=2):
                fvu = gr.Number(label="FVU on this image (share of activation variance the SAE misses; 0 is perfect)")
                bars = gr.BarPlot(x="feature", y="activation", label="Top features", sort="-y", height=260, x_label_angle=-25)
                table = gr.Dataframe(label="Top features", interactive=False)
                heatmaps = gr.Gallery(label="Where each top feature fires (spatial SAE)", columns=4, height=300)
        feature = gr.Dropdown(self.state.feature_choices(self.state.default_cell),
                              label="Feature (type to search by label or id)", filterable=True)
        outputs = [fvu, bars, table, heatmaps, feature]
        wire(button.click, self.explore, [image, *cell], outputs, api_name="explore")
        wire(demo.load, self.explore, [image, *cell], outputs, api_visibility="private")  # a first look, no click needed
        FeatureDetail(self.state).build(feature.change, [*cell, feature], api_name="feature")
        follow_cell(self.state, feature, cell)
