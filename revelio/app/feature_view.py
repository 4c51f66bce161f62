"""One feature in detail (label, statistics, exemplars, histogram, timesteps): Explore and Atlas show it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from revelio.app.events import wire
from revelio.app.feature_icon import FeatureIcons
from revelio.app.rendering import heatmap_overlay, histogram_frame, timesteps_frame, to_display
from revelio.app.state import AppState
from revelio.grid import Cell
from revelio.layout import TIMESTEPS_FILE

EMPTY_HISTOGRAM = (np.zeros(0), np.zeros(1))
STATISTICS_HELP = ("*Firing frequency*: the share of training tokens (locations; images for a pooled SAE) where the "
                   "feature is active. *Image frequency*: the share of training images where it is active anywhere. "
                   "*Purity*: the share of its activation (summed over images, each at its strongest location) that "
                   "falls on its top class; the *share* rows give every class's.")
ICON_HELP = ("**What does this feature draw?** The model generates from {condition} twice with one seed: as is, and "
             "with only this feature pushed up where it usually fires (peak {strength:g} × its largest training "
             "activation). The third picture shows where the image changed.")
ICON_SIDE = 160


@dataclass
class FeatureView:
    """What the app shows about one feature of one SAE."""

    feature: int
    label: str
    evidence: str  # why it is named, or mixed
    summary: dict[str, float]
    exemplars: list[tuple[Image.Image, str]]  # training images, strongest first, with captions
    histogram: tuple[np.ndarray, np.ndarray]  # (counts, bin edges) over held-out images where it fires
    held_out_firing: tuple[int, int]  # (images it fires on, held-out images)
    timesteps: list[tuple[int, float]]  # (timestep, mean activation) at the SAE's hook


def feature_view(state: AppState, cell: Cell, feature: int, bins: int = 12) -> FeatureView:
    """Gather one feature's label, statistics, exemplars, histogram and timestep curve."""
    stats = state.stats(cell)
    names = state.class_names
    exemplars = []
    found = state.release.exemplar_images(stats.top_images[feature])
    for image, index, activation in zip(found, stats.top_images[feature].tolist(), stats.top_activations[feature].tolist()):
        if image is None or index < 0:
            continue
        exemplars.append((image, f"train #{index} · {activation:.2f}"))
    strengths = state.held_out_strengths(cell)[:, feature].numpy()
    firing = strengths[strengths > 0]
    histogram = np.histogram(firing, bins=bins, range=(0.0, float(max(firing.max(initial=0.0), 1e-6))))
    sae = state.sae(cell)
    timesteps: list[tuple[int, float]] = []
    if TIMESTEPS_FILE in sae.extra_files:
        tensors = sae.extra_files[TIMESTEPS_FILE][0]
        timesteps = list(zip(tensors["timesteps"].tolist(), tensors["mean_activation"][:, feature].tolist()))
    summary = {
        "firing frequency": float(stats.firing_frequency[feature]),
        "image frequency": float(stats.image_frequency[feature]),
        "max activation": float(stats.max_activation[feature]),
        "purity": float(stats.purity[feature]),
    }
    if names and stats.label_distribution.shape[1] == len(names):
        summary |= {f"share: {names[c]}": float(stats.label_distribution[feature, c]) for c in range(len(names))}
    evidence = state.labels(cell)[feature].evidence(1 / max(1, len(names)))
    for label_set in state.further_label_sets:  # e.g. "red (92%)" in the colour set beside "sneaker (40%)"
        set_names, shares = state.names(label_set), state.stats(cell, label_set).label_distribution[feature]
        summary |= {f"share ({label_set}): {name}": float(shares[c]) for c, name in enumerate(set_names)}
        found = state.labels(cell, label_set)[feature]
        evidence += f"\n\n{label_set}: **{found}**. {found.evidence(1 / max(1, len(set_names)))}"
    return FeatureView(feature, state.feature_label(cell, feature), evidence, summary, exemplars,
                       (histogram[0], histogram[1]), (len(firing), len(strengths)), timesteps)


class FeatureDetail:
    """The detail view's components and the event that fills them for a (cell, feature)."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.icons = FeatureIcons(state)

    def build(self, trigger: Callable[..., Any], inputs: list[gr.components.Component], icon_api_name: str | None = None,
              **kwargs: Any) -> Any:
        """Lay the view out and fill it on ``trigger`` from ``inputs`` (block, timestep, pooling, feature);
        the feature's picture on its button (an API endpoint named ``icon_api_name``, else private)."""
        with gr.Row(equal_height=False):
            summary = gr.Markdown(elem_classes=["revelio-summary"])
            histogram = gr.BarPlot(x="activation", y="images", label="Activation on held-out test images (where it fires)",
                                   height=240, x_label_angle=-45)
            over_time = gr.LinePlot(x="timestep", y="mean activation", label="Mean activation across timesteps", height=240)
        exemplars = gr.Gallery(label="Top training exemplars (strongest first)", columns=8,
                               object_fit="contain", elem_classes=["revelio-exemplars", "revelio-gallery"])
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=240):
                gr.Markdown(ICON_HELP.format(condition=self.icons.condition, strength=self.icons.strength),
                            elem_classes=["revelio-help"])
                draw = gr.Button("Draw what this feature adds", size="sm")
            icon = gr.Gallery(label="What it draws", columns=3, object_fit="contain", scale=2, height=ICON_SIDE + 100,
                              elem_classes=["revelio-icon", "revelio-gallery"])
        endpoint = {"api_name": icon_api_name} if icon_api_name else {"api_visibility": "private"}
        wire(draw.click, self.icon, inputs, icon, show_progress_on=[icon], **endpoint)
        wire(trigger, self.no_icon, inputs, icon, api_visibility="private", show_progress="hidden")
        return wire(trigger, self.feature, inputs, [summary, exemplars, histogram, over_time],
                    show_progress_on=[summary], **kwargs)

    def icon(self, hook: str, timestep: Any, pooling: str, feature: Any) -> list[tuple[Image.Image, str]]:
        """The neutral condition's image, the same with only ``feature`` pushed up, and where they differ."""
        cell = self.state.cell(hook, timestep, pooling)
        if feature is None:
            raise ValueError(f"pick a feature of the SAE {cell} first")
        feature = self.state.check_feature(cell, feature)
        found = self.icons.icon(cell, feature)
        moved = found.difference()
        peak = float(moved.max())
        return [(to_display(found.baseline, ICON_SIDE), "as is (same seed)"),
                (to_display(found.drawn, ICON_SIDE), f"#{feature} pushed up"),
                (heatmap_overlay(found.drawn, moved, peak, ICON_SIDE), f"where it changed: up to {peak:.0f}/255")]

    def no_icon(self, *_: Any) -> list:
        """Another feature or SAE: the previous feature's picture goes."""
        return []

    def feature(self, hook: str, timestep: Any, pooling: str, feature: Any) -> tuple:
        """Summary markdown, exemplar gallery, histogram and timestep curve of one feature."""
        cell = self.state.cell(hook, timestep, pooling)
        if feature is None:  # the dropdown was cleared (another SAE): nothing of the old SAE's feature stays
            return (f"Pick a feature of the SAE {cell} above to see its details.", [], histogram_frame(*EMPTY_HISTOGRAM),
                    timesteps_frame([]))
        view = feature_view(self.state, cell, self.state.check_feature(cell, feature))
        fires, total = view.held_out_firing
        lines = [f"### {view.label}", view.evidence, "", f"Fires on **{fires} of {total}** held-out test images.", "",
                 "| statistic (training images) | value |", "|---|---|"]
        lines += [f"| {name} | {value:.4g} |" for name, value in view.summary.items()]
        lines += ["", STATISTICS_HELP]
        exemplars = [(to_display(image, 112), caption) for image, caption in view.exemplars]
        return "\n".join(lines), exemplars, histogram_frame(*view.histogram), timesteps_frame(view.timesteps)
