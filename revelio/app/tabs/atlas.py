"""Atlas: the release's grid at a glance (probe accuracy, SAE error, pictures) and a feature browser."""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from revelio.app.cell_picker import cell_inputs
from revelio.app.feature_view import FeatureDetail
from revelio.app.state import AppState
from revelio.app.validation import wire
from revelio.grid import POOLING_NAMES


def grid_frame(rows: list[dict], value: str, hooks: list[str], timesteps: list[int], **match: Any) -> pd.DataFrame:
    """One metric of the rows matching ``match`` as a block x timestep table (NaN where missing)."""
    picked = {(r["hook"], r["timestep"]): r[value] for r in rows if all(r.get(k) == v for k, v in match.items())}
    return pd.DataFrame([[hook, *(round(picked.get((hook, t), float("nan")), 3) for t in timesteps)] for hook in hooks],
                        columns=["block", *(f"t={t}" for t in timesteps)])


class AtlasTab:
    """The Atlas tab: grid tables and pictures, and a feature browser."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    def features(self, hook: str, timestep: Any, pooling: str) -> pd.DataFrame:
        """The SAE's live features, purest first."""
        stats = self.state.stats(self.state.cell(hook, timestep, pooling))
        live = (stats.firing_frequency > 0).nonzero().flatten().tolist()
        rows = [(f, stats.labels[f], round(float(stats.purity[f]), 3), round(float(stats.image_frequency[f]), 4),
                 round(float(stats.max_activation[f]), 3)) for f in live]
        table = pd.DataFrame(rows, columns=["feature", "label", "purity", "image frequency", "max activation"])
        return table.sort_values("purity", ascending=False, kind="stable")

    def build(self) -> None:
        release = self.state.release
        hooks, timesteps = release.hooks, release.timesteps
        probe_rows = release.metrics("probe_grid")["rows"]
        sae_rows = release.metrics("sae_grid")["rows"]
        gr.Markdown("### Probe test accuracy per cell (diffusion features)")
        with gr.Row():
            for kind in release.info.probe_kinds:
                gr.Dataframe(grid_frame(probe_rows, "test_accuracy", hooks, timesteps, probe=kind, features="diffusion"),
                             label=kind, interactive=False)
        gr.Markdown("### SAE normalized MSE on held-out test images")
        with gr.Row():
            for pooling in release.poolings:
                gr.Dataframe(grid_frame(sae_rows, "normalized_mse", hooks, timesteps, pooling=pooling),
                             label=POOLING_NAMES[pooling], interactive=False)
        gr.Gallery([(str(path), name.replace("_", " ")) for name, path in release.plots().items()],
                   label="Grid pictures", columns=3, height=420, object_fit="contain")
        gr.Markdown("### Feature browser")
        with gr.Row():
            cell = cell_inputs(self.state)
            browse = gr.Button("List features")
        table = gr.Dataframe(label="Features by purity (share of activation on one class)", interactive=False, max_height=320)
        feature = gr.Number(label="Feature id", precision=0)
        wire(browse.click, self.features, cell, table, api_name="features")
        FeatureDetail(self.state).build(feature.submit, [*cell, feature], api_visibility="private")
