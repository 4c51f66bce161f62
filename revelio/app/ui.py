"""The Gradio Blocks: Explore, Steer, Classify and Atlas tabs wired to the handlers.

Every event takes raw inputs (``preprocess=False``); the handlers validate them, so the server
keeps serving whatever a browser or an API client sends.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from revelio.app.examples import example_files
from revelio.app.handlers import (
    CLAMP_MODES,
    GUIDANCE,
    STEPS,
    STRENGTH,
    Handlers,
    user_errors,
)
from revelio.app.state import POOLINGS, AppState, Cell

TABS = ("explore", "steer", "classify", "atlas")


def _grid_frame(rows: list[dict], value: str, hooks: list[str], timesteps: list[int], **match: Any) -> pd.DataFrame:
    picked = {(r["hook"], r["timestep"]): r[value] for r in rows if all(r.get(k) == v for k, v in match.items())}
    return pd.DataFrame([[hook, *(round(picked.get((hook, t), float("nan")), 3) for t in timesteps)] for hook in hooks],
                        columns=["block", *(f"t={t}" for t in timesteps)])


def _cell_inputs(state: AppState, with_pooling: bool = True, default: Cell | None = None) -> tuple:
    default = default or state.default_cell
    hook = gr.Dropdown(state.release.hooks, value=default.hook, label="Block")
    timestep = gr.Dropdown(state.release.timesteps, value=default.timestep, label="Timestep")
    if not with_pooling:
        return hook, timestep
    pooling = gr.Radio([(POOLINGS[p], p) for p in state.release.poolings], value=default.pooling, label="SAE")
    return hook, timestep, pooling


def build_demo(state: AppState) -> gr.Blocks:
    handlers = Handlers(state)
    release, default = state.release, state.default_cell
    examples = example_files(state)
    best = release.info["best_cell"]
    raw = dict(preprocess=False)

    with gr.Blocks(title="revelio") as demo:
        gr.Markdown(
            f"# revelio\nSparse-autoencoder features and probes of **{release.info.get('backbone_name', release.info['backbone'])}** "
            f"({release.info.get('dataset', '')}): {len(release.hooks)} blocks × {len(release.timesteps)} timesteps. "
            f"Best cell: **{best['hook']} at t={best['timestep']}** ({best['probe']} probe, test accuracy {best['test_accuracy']:.3f})."
        )
        with gr.Tabs() as tabs:
            with gr.Tab("Explore", id="explore"):
                with gr.Row():
                    with gr.Column(scale=1):
                        image = gr.Image(examples[0], label="Image", type="filepath", sources=["upload", "clipboard"], height=256)
                        gr.Examples(examples, inputs=image, label="Examples: test images and photos")
                        hook, timestep, pooling = _cell_inputs(state)
                        explore_button = gr.Button("Explore", variant="primary")
                    with gr.Column(scale=2):
                        fvu = gr.Number(label="FVU on this image (share of activation variance the SAE misses; 0 is perfect)")
                        bars = gr.BarPlot(x="feature", y="activation", label="Top features", sort="-y", height=260, x_label_angle=-25)
                        table = gr.Dataframe(label="Top features", interactive=False)
                        heatmaps = gr.Gallery(label="Where each top feature fires (spatial SAE)", columns=4, height=300)
                feature = gr.Dropdown(state.feature_choices(default), label="Feature (type to search by label or id)", filterable=True)
                with gr.Row():
                    summary = gr.Markdown()
                    histogram = gr.BarPlot(x="activation", y="images", label="Activation on held-out test images", height=220)
                    over_time = gr.LinePlot(x="timestep", y="mean activation", label="Mean activation across timesteps", height=220)
                exemplars = gr.Gallery(label="Top training exemplars", columns=8, height=260)

                explore_button.click(user_errors(handlers.explore), [image, hook, timestep, pooling],
                                     [fvu, bars, table, heatmaps, feature], api_name="explore", **raw)
                demo.load(user_errors(handlers.explore), [image, hook, timestep, pooling],  # a first look, no click needed
                          [fvu, bars, table, heatmaps, feature], api_visibility="private", **raw)
                feature.change(user_errors(handlers.feature), [hook, timestep, pooling, feature],
                               [summary, exemplars, histogram, over_time], api_name="feature", **raw)
                for control in (hook, timestep, pooling):
                    control.change(user_errors(handlers.cell_features), [hook, timestep, pooling], feature,
                                   api_visibility="private", **raw)

            with gr.Tab("Steer", id="steer"):
                classes = [(name, i) for i, name in enumerate(state.class_names)]
                target_class = 1 if len(classes) > 1 else 0
                # The last decoder block (highest resolution) shapes the image most directly: on the
                # bundled model, class-map clamps there move the probe; at mid_block they barely do.
                steer_cell = Cell(release.hooks[-1], default.timestep, default.pooling)
                with gr.Row():
                    with gr.Column(scale=1):
                        class_value = gr.Dropdown(classes, value=0, label="Generate class")
                        with gr.Row():
                            seed = gr.Number(0, precision=0, label="Seed")
                            steps = gr.Slider(*STEPS, 25, step=1, label="Steps")
                            guidance = gr.Slider(*GUIDANCE, state.backbone.default_guidance_scale, step=0.5, label="Guidance")
                        s_hook, s_timestep, s_pooling = _cell_inputs(state, default=steer_cell)
                        with gr.Row():
                            target = gr.Dropdown(classes, value=target_class, label="Target class (suggestions, class maps)")
                            count = gr.Slider(1, 32, 16, step=1, label="How many")
                            suggest = gr.Button("Suggest features")
                        suggested = handlers.suggest(steer_cell.hook, steer_cell.timestep, steer_cell.pooling, target_class, 16) if classes else []
                        features = gr.Dropdown(state.feature_choices(steer_cell), value=suggested, multiselect=True, filterable=True,
                                               label="Features to clamp (type to search by label or id)")
                        clamp_to = gr.Radio(CLAMP_MODES, value="class-map" if steer_cell.pooling == "none" else "value", label="Clamp each feature to")
                        strength = gr.Slider(*STRENGTH, 2, step=0.25, label="Value (0 ablates)")
                        with gr.Row():
                            t_high = gr.Slider(0, state.backbone.num_train_timesteps - 1, state.backbone.num_train_timesteps - 1, step=1, label="Window: from t")
                            # the high-noise half: where class shape is decided, at half the cost of every step
                            t_low = gr.Slider(0, state.backbone.num_train_timesteps - 1, state.backbone.num_train_timesteps // 2,
                                              step=1, label="down to t")
                        generate = gr.Button("Generate", variant="primary")
                    with gr.Column(scale=2):
                        with gr.Row():
                            baseline = gr.Image(label="Baseline (same seed)", height=256)
                            steered = gr.Image(label="Steered", height=256)
                        with gr.Row():
                            baseline_label = gr.Label(label="Probe: baseline")
                            steered_label = gr.Label(label="Probe: steered")
                        clamp_note = gr.Markdown()
                suggest.click(user_errors(handlers.suggest), [s_hook, s_timestep, s_pooling, target, count], features,
                              api_name="suggest_features", **raw)
                for control in (s_hook, s_timestep, s_pooling):
                    control.change(user_errors(handlers.cell_features), [s_hook, s_timestep, s_pooling], features,
                                   api_visibility="private", **raw)
                steer_inputs = [class_value, seed, steps, guidance, s_hook, s_timestep, s_pooling, features, clamp_to, target,
                                strength, t_high, t_low]
                steer_outputs = [baseline, steered, baseline_label, steered_label, clamp_note]
                generate.click(user_errors(handlers.steer), steer_inputs, steer_outputs, api_name="steer", **raw)

            with gr.Tab("Classify", id="classify"):
                with gr.Row():
                    with gr.Column():
                        c_image = gr.Image(label="Image", type="filepath", sources=["upload", "clipboard"], height=256)
                        gr.Examples(examples, inputs=c_image)
                        c_hook, c_timestep = _cell_inputs(state, with_pooling=False)
                        kind = gr.Dropdown(release.info["probe_kinds"], value=best["probe"], label="Probe")
                        classify_button = gr.Button("Classify", variant="primary")
                    prediction = gr.Label(label="Top-5 classes", num_top_classes=5)
                classify_button.click(user_errors(handlers.classify), [c_image, c_hook, c_timestep, kind], prediction,
                                      api_name="classify", **raw)

            with gr.Tab("Atlas", id="atlas"):
                probe_rows = release.metrics("probe_grid")["rows"]
                sae_rows = release.metrics("sae_grid")["rows"]
                gr.Markdown("### Probe test accuracy per cell (diffusion features)")
                with gr.Row():
                    for kind_name in release.info["probe_kinds"]:
                        gr.Dataframe(_grid_frame(probe_rows, "test_accuracy", release.hooks, release.timesteps,
                                                 probe=kind_name, features="diffusion"), label=kind_name, interactive=False)
                gr.Markdown("### SAE normalized MSE on held-out test images")
                with gr.Row():
                    for pooling_name in release.poolings:
                        gr.Dataframe(_grid_frame(sae_rows, "normalized_mse", release.hooks, release.timesteps, pooling=pooling_name),
                                     label=POOLINGS[pooling_name], interactive=False)
                gr.Gallery([(str(path), name.replace("_", " ")) for name, path in release.plots().items()],
                           label="Grid pictures", columns=3, height=420, object_fit="contain")
                gr.Markdown("### Feature browser")
                with gr.Row():
                    a_hook, a_timestep, a_pooling = _cell_inputs(state)
                    browse = gr.Button("List features")
                feature_list = gr.Dataframe(label="Features by purity (share of activation on one class)", interactive=False, max_height=320)
                a_feature = gr.Number(label="Feature id", precision=0)
                with gr.Row():
                    a_summary = gr.Markdown()
                    a_histogram = gr.BarPlot(x="activation", y="images", label="Activation on held-out test images", height=220)
                    a_over_time = gr.LinePlot(x="timestep", y="mean activation", label="Mean activation across timesteps", height=220)
                a_exemplars = gr.Gallery(label="Top training exemplars", columns=8, height=260)
                browse.click(user_errors(handlers.feature_table), [a_hook, a_timestep, a_pooling], feature_list,
                             api_name="features", **raw)
                a_feature.submit(user_errors(handlers.feature), [a_hook, a_timestep, a_pooling, a_feature],
                                 [a_summary, a_exemplars, a_histogram, a_over_time], api_visibility="private", **raw)

        def open_tab(request: gr.Request) -> Any:
            """``?tab=steer`` opens a tab directly (links, screenshots)."""
            wanted = request.query_params.get("tab", "explore") if request else "explore"
            return gr.Tabs(selected=wanted if wanted in TABS else "explore")

        demo.load(open_tab, None, tabs, api_visibility="private")
    return demo
