"""Atlas: the release's grid at a glance (probe accuracy, SAE error, pictures) and a feature browser."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, TypeVar

import gradio as gr
import pandas as pd

from revelio.analysis.labels import RULE
from revelio.app.cell_picker import cell_inputs, follow_cell
from revelio.app.events import wire
from revelio.app.feature_view import FeatureDetail
from revelio.app.inputs import text
from revelio.app.rendering import PROBE_KINDS, frame_csv, table_csv
from revelio.app.state import AppState
from revelio.formats.metrics import Monosemanticity, ProbeGrid, ProbeRow, PurityRow, SAEGrid, SAERow
from revelio.grid import POOLING_NAMES
from revelio.layout import MONOSEMANTICITY, PROBE_GRID, SAE_GRID, GridPlot

CELL = ("hook", "timestep", "pooling")  # the columns that name a cell of the grid, first in every grid CSV

MAX_QUERY = 200
FEATURE_COLUMNS = ["feature", "label", "purity", "image frequency", "max activation"]
PROBE_SOURCES = {"diffusion": "the model's activations", "random-weights": "a random-weights copy of the model (baseline)",
                 "pixels": "the raw pixels (baseline)"}
POOLED_OR_SPATIAL = {"none": "spatial SAEs", "mean": "pooled SAEs"}

Row = ProbeRow | SAERow | PurityRow  # a row of a metrics file: each names its cell
Grid = TypeVar("Grid", ProbeGrid, SAEGrid)


def rows_frame(rows: list[Row]) -> pd.DataFrame:
    """A metrics file's rows as a table (a column per field), for the CSV downloads."""
    return pd.DataFrame([asdict(row) for row in rows])


def grid_frame(rows: list[Row], value: str, hooks: list[str], timesteps: list[int], **match: Any) -> pd.DataFrame:
    """One metric of the rows matching ``match`` as a block x timestep table (NaN where missing)."""
    picked = {(r.hook, r.timestep): getattr(r, value) for r in rows
              if all(getattr(r, k, None) == v for k, v in match.items())}
    return pd.DataFrame([[hook, *(round(picked.get((hook, t), float("nan")), 3) for t in timesteps)] for hook in hooks],
                        columns=["block", *(f"t={t}" for t in timesteps)])


def purity_frame(rows: list[PurityRow], pooling: str, hooks: list[str], timesteps: list[int]) -> pd.DataFrame:
    """One pooling's purity grid, a row per cell: SAE features beside random directions and neurons
    (five columns fit beside another table; a block x timestep table per kind cut its last column off)."""
    picked = {(r.hook, r.timestep): r for r in rows if r.pooling == pooling}
    cells = [picked[(hook, t)] for hook in hooks for t in timesteps if (hook, t) in picked]
    return pd.DataFrame([(r.hook, r.timestep, round(r.sae, 3), round(r.random_directions, 3), round(r.neurons, 3))
                         for r in cells], columns=["block", "t", "SAE features", "random directions", "neurons"])


def plot_caption(name: str) -> str:
    """A grid picture's file name in plain words: no pooling ids ("none"), no underscores."""
    plot = GridPlot.from_name(name)
    if plot is None:
        return name.replace("_", " ").capitalize()
    if plot.family == "probe":
        return f"Probe test accuracy: {plot.variant} probe on {PROBE_SOURCES[plot.features]}"
    return f"SAE {plot.metric.replace('_', ' ')}: {POOLED_OR_SPATIAL[plot.variant]}"


class AtlasTab:
    """The Atlas tab: grid tables and pictures, and a feature browser."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    def features(self, hook: str, timestep: Any, pooling: str, query: Any = None) -> pd.DataFrame:
        """The SAE's live features, purest first; ``query`` keeps those whose label contains it
        (any case) or, for a number (or "#12"), that feature (listed even when it never fired)."""
        cell = self.state.cell(hook, timestep, pooling)
        stats, labels = self.state.stats(cell), [str(label) for label in self.state.labels(cell)]
        query = text(query, "the search", MAX_QUERY).strip()
        wanted = query.removeprefix("#").strip()
        if wanted.isdigit():
            feature = self.state.check_feature(cell, wanted)
            picked = [feature]
        else:
            picked = (stats.firing_frequency > 0).nonzero().flatten().tolist()
            if query:
                picked = [f for f in picked if query.lower() in labels[f].lower()]
        rows = [(f, labels[f], round(float(stats.purity[f]), 3), round(float(stats.image_frequency[f]), 4),
                 round(float(stats.max_activation[f]), 3)) for f in picked]
        table = pd.DataFrame(rows, columns=FEATURE_COLUMNS)
        return table.sort_values("purity", ascending=False, kind="stable")

    def search_note(self, hook: str, timestep: Any, pooling: str, query: Any, payload: Any) -> tuple[str, Any]:
        """A line over the list saying what matched; a search with no match hides the (empty) list and
        says what labels look like instead."""
        rows = payload.get("data") if isinstance(payload, dict) else None
        rows = [row for row in rows or [] if isinstance(row, list) and row and row[0] not in ("", None)]
        query = query.strip() if isinstance(query, str) else ""
        if rows or not query:
            listed = f"{len(rows)} feature{'' if len(rows) == 1 else 's'}"
            found = (f"Feature {query}." if query.removeprefix("#").strip().isdigit() else
                     f"{listed} whose label contains {query!r}." if query else f"{listed} that fired on the training images.")
            return found, gr.Dataframe(visible=True)
        names = ", ".join(self.state.class_names[:3])
        return (f"**No feature of the SAE {self.state.cell(hook, timestep, pooling)} has a label containing {query!r}.** "
                f"Labels name a class ({names}, ...) or say *mixed* with the top two classes; search for a class "
                "name, a part of one, or a feature id."), gr.Dataframe(visible=False)

    def metrics(self, name: str, schema: type[Grid]) -> Grid:
        """A grid every release has (probe_grid, sae_grid), typed; FileNotFoundError when it lacks one."""
        found = self.state.release.read_metrics(name, schema)
        if found is None:
            raise FileNotFoundError(f"this release has no metrics {name!r}; rebuild it with train/build_release.py")
        return found

    def pick_row(self, evt: gr.SelectData) -> Any:
        """A click on a table row picks that row's feature (its id is the first column)."""
        row = evt.row_value if isinstance(evt.row_value, list) else None
        return gr.Dropdown(value=int(row[0])) if row and isinstance(row[0], (int, float)) else gr.skip()

    def purity(self, purity: Monosemanticity, hooks: list[str], timesteps: list[int]) -> None:
        """Per pooling, held-out label purity of the SAE's features beside random directions and neurons."""
        with gr.Row():
            gr.Markdown(f"### Monosemanticity: label purity on {purity.images} held-out images\nA direction's top "
                        f"{purity.top_k} images weighted by its activation: the share on their main class. SAE "
                        "features against random directions of the same space and the block's own channels (neurons).")
            gr.DownloadButton("Download the purity grid (CSV)", frame_csv(rows_frame(purity.cells), "purity-grid.csv", CELL),
                              size="sm", variant="secondary", scale=0, min_width=260)
        with gr.Row():  # one table per pooling, the three kinds of direction side by side in each row
            for pooling in dict.fromkeys(r.pooling for r in purity.cells):
                gr.Dataframe(purity_frame(purity.cells, pooling, hooks, timesteps), label=f"{POOLING_NAMES[pooling]} SAEs",
                             interactive=False, max_height=360, elem_classes=["revelio-grid-table"])

    def build(self) -> None:
        release, state = self.state.release, self.state
        hooks, timesteps = release.hooks, release.timesteps
        probe_rows = self.metrics(PROBE_GRID, ProbeGrid).rows
        sae_rows = self.metrics(SAE_GRID, SAEGrid).rows
        with gr.Row():
            gr.Markdown("### Probe test accuracy per cell (classifiers on the model's activations)\n" + PROBE_KINDS)
            gr.DownloadButton("Download the probe grid (CSV)", frame_csv(rows_frame(probe_rows), "probe-grid.csv", ("features", "probe") + CELL),
                              size="sm", variant="secondary", scale=0, min_width=260)
        with gr.Row():
            for kind in release.info.probe_kinds:
                gr.Dataframe(grid_frame(probe_rows, "test_accuracy", hooks, timesteps, probe=kind, features="diffusion"),
                             label=f"{kind} probe", interactive=False, min_width=400, elem_classes=["revelio-grid-table"])
        with gr.Row():
            gr.Markdown("### SAE error per cell: normalized MSE on held-out test images (0 is perfect)")
            gr.DownloadButton("Download the SAE grid (CSV)", frame_csv(rows_frame(sae_rows), "sae-grid.csv", CELL),
                              size="sm", variant="secondary", scale=0, min_width=260)
        with gr.Row():
            for pooling in release.poolings:
                gr.Dataframe(grid_frame(sae_rows, "normalized_mse", hooks, timesteps, pooling=pooling),
                             label=f"{POOLING_NAMES[pooling]} SAEs", interactive=False, min_width=400,
                             elem_classes=["revelio-grid-table"])
        if (purity := release.read_metrics(MONOSEMANTICITY, Monosemanticity)) is not None:
            self.purity(purity, hooks, timesteps)
        gr.Gallery([(str(path), plot_caption(name)) for name, path in release.plots().items()],
                   label="Grid pictures", columns=3, object_fit="contain", elem_classes=["revelio-gallery"])
        gr.Markdown("### Feature browser\nEvery feature of one SAE that fired on the training images, purest first. "
                    "*Purity*: the share of the feature's activation that falls on its top class; *image frequency*: "
                    "the share of training images it fires on; *max activation*: its largest on them. Labels: "
                    f"{RULE}. Click a row for its details.")
        with gr.Row(equal_height=True):
            cell = cell_inputs(state)
            query = gr.Textbox("", label="Search by label or id", placeholder="e.g. Trouser, or 36", max_length=MAX_QUERY)
            browse = gr.Button("List features", variant="primary", scale=0, min_width=140)
        default = state.default_cell
        first = self.features(default.hook, default.timestep, default.pooling)
        found = gr.Markdown(f"{len(first)} features that fired on the training images.")
        table = gr.Dataframe(first, label="Features by purity (share of activation on one class)", interactive=False,
                             max_height=360, wrap=True)
        download = gr.DownloadButton("Download this list (CSV)", frame_csv(first, "features.csv"), size="sm",
                                     variant="secondary")
        feature = gr.Dropdown(state.feature_choices(state.default_cell), value=None, filterable=True,
                              label="Feature (click a row above, or type to search by label or id)")
        listed = wire(lambda *args, **kwargs: gr.on([browse.click, query.submit, *(c.change for c in cell)], *args, **kwargs),
                      self.features, [*cell, query], table, api_name="features", show_progress_on=[browse])
        wire(listed.success, lambda payload: table_csv(payload, "features.csv"), table, download,
             api_visibility="private", show_progress="hidden")
        wire(listed.success, self.search_note, [*cell, query, table], [found, table], api_visibility="private",
             show_progress="hidden")
        table.select(self.pick_row, None, feature, api_visibility="private")
        follow_cell(state, feature, cell)
        FeatureDetail(state).build(feature.change, [*cell, feature], api_visibility="private")
