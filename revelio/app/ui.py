"""The Gradio Blocks: Explore, Steer, Classify and Atlas tabs wired to the app's handlers.

Every event takes raw inputs (``preprocess=False``) and validates them itself, so a bad upload or
an out-of-range value from an API client gets a message that says what to do (``gr.Error``)
instead of a framework error, and the server keeps serving.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import gradio as gr
import pandas as pd
import torch

from revelio.app.classify import classify_probabilities, top_classes
from revelio.app.examples import example_files
from revelio.app.explore import explore_image
from revelio.app.feature_view import feature_view
from revelio.app.generation import Generator, SteeringRequest
from revelio.app.rendering import enlarge, heatmap_overlay, histogram_frame, timesteps_frame
from revelio.app.state import POOLINGS, AppState, Cell
from revelio.app.uploads import read_upload
from revelio.features import class_selective_features

TABS = ("explore", "steer", "classify", "atlas")
CLAMP_MODES = [("the target class's mean map × value (spatial SAEs)", "class-map"), ("value × each feature's max (0 ablates)", "value")]
TOP_FEATURES = 8


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the library's input errors into messages shown to the user (and API clients)."""

    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        try:
            return fn(*args)
        except (ValueError, FileNotFoundError) as err:  # ImageError is a ValueError
            raise gr.Error(str(err)) from None

    return wrapper


def _number(value: Any, name: str, low: float, high: float, whole: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in {low:g}..{high:g}; got {value!r}") from None
    if not low <= number <= high or (whole and not number.is_integer()):
        kind = "a whole number" if whole else "a number"
        raise ValueError(f"{name} must be {kind} in {low:g}..{high:g}; got {value!r}")
    return number


class Handlers:
    """One method per event; each validates its raw inputs and returns UI values."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.generator = Generator(state)

    def _class_id(self, value: Any) -> int:
        names = self.state.class_names
        if isinstance(value, str) and value in names:
            return names.index(value)
        return int(_number(value, "class", 0, len(names) - 1, whole=True))

    def _features(self, cell: Cell, values: Any) -> list[int]:
        values = [values] if isinstance(values, (int, str)) else list(values or [])
        return [self.state.check_feature(cell, v) for v in values]

    def explore(self, upload: Any, hook: str, timestep: Any, pooling: str) -> tuple:
        cell = self.state.cell(hook, timestep, pooling)
        image = read_upload(upload)
        found = explore_image(self.state, image, cell, TOP_FEATURES)
        table = pd.DataFrame(
            [(h.feature, h.label, round(h.activation, 4), round(100 * h.relative, 1)) for h in found.hits],
            columns=["feature", "label", "activation", "% of its max"],
        )
        bars = pd.DataFrame({"feature": [self.state.feature_label(cell, h.feature) for h in found.hits],
                             "activation": [h.activation for h in found.hits]})
        peaks = self.state.stats(cell).max_activation
        overlays = [(heatmap_overlay(image, found.heatmaps[h.feature], float(peaks[h.feature])),
                     f"{self.state.feature_label(cell, h.feature)} · {h.activation:.2f}")
                    for h in found.hits if h.feature in found.heatmaps]
        top = max((h.activation for h in found.hits), default=1.0)
        bars = gr.BarPlot(bars, y_lim=[0, top * 1.05])  # bars from zero: heights compare honestly
        first = found.hits[0].feature if found.hits else None
        choices = gr.Dropdown(choices=self.state.feature_choices(cell), value=first)
        return round(found.fvu, 4), bars, table, overlays, choices

    def feature(self, hook: str, timestep: Any, pooling: str, feature: Any) -> tuple:
        cell = self.state.cell(hook, timestep, pooling)
        view = feature_view(self.state, cell, self.state.check_feature(cell, feature))
        fires, total = view.held_out_firing
        lines = [f"### {view.label}", f"Fires on **{fires} of {total}** held-out test images.", "",
                 "| statistic (training images) | value |", "|---|---|"]
        lines += [f"| {name} | {value:.4g} |" for name, value in view.summary.items()]
        exemplars = [(enlarge(image, 112), caption) for image, caption in view.exemplars]
        return "\n".join(lines), exemplars, histogram_frame(*view.histogram), timesteps_frame(view.timesteps)

    def cell_features(self, hook: str, timestep: Any, pooling: str) -> Any:
        cell = self.state.cell(hook, timestep, pooling)
        return gr.Dropdown(choices=self.state.feature_choices(cell), value=None)

    def suggest(self, hook: str, timestep: Any, pooling: str, target: Any, count: Any) -> list[int]:
        """The features most selective for a class: most extra activation on its images (spatial SAEs),
        else most activation among features whose dominant label it is."""
        cell = self.state.cell(hook, timestep, pooling)
        count = int(_number(count, "number of features", 1, 64, whole=True))
        if cell.pooling == "none":
            return self.state.class_maps(cell).selective(self._class_id(target), count)
        return class_selective_features(self.state.stats(cell), self._class_id(target), count, min_purity=0.0)

    def steer(self, class_value: Any, seed: Any, steps: Any, guidance: Any, hook: str, timestep: Any,
              pooling: str, features: Any, clamp_to: Any, target: Any, strength: Any, t_high: Any, t_low: Any) -> tuple:
        cell = self.state.cell(hook, timestep, pooling)
        last = self.state.backbone.num_train_timesteps - 1
        high = int(_number(t_high, "window start (t high)", 0, last, whole=True))
        low = int(_number(t_low, "window end (t low)", 0, last, whole=True))
        if low > high:
            raise ValueError(f"the window runs from t high down to t low; got t high {high} < t low {low}")
        request = SteeringRequest(
            class_id=self._class_id(class_value), seed=int(_number(seed, "seed", 0, 2**31 - 1, whole=True)),
            steps=int(_number(steps, "steps", 1, 200, whole=True)), guidance=_number(guidance, "guidance", 1, 20),
            cell=cell, features=self._features(cell, features), strength=_number(strength, "clamp value", -20, 20),
            window=(high, low), clamp_to=self._clamp_mode(clamp_to), target=self._class_id(target),
        )
        result = self.generator.run(request)
        target = self.state.class_names[request.target] if request.target < len(self.state.class_names) else request.target
        clamps = ", ".join(
            f"{self.state.feature_label(cell, f)} → " + (f"{request.strength:g} × its {target} map" if isinstance(v, torch.Tensor) else f"{v:.3g}")
            for f, v in result.clamp.items())
        return (enlarge(result.baseline), enlarge(result.steered), result.baseline_probabilities,
                result.steered_probabilities, f"Clamped at {cell}: {clamps}")

    @staticmethod
    def _clamp_mode(value: Any) -> str:
        modes = [mode for _, mode in CLAMP_MODES]
        if value not in modes:
            raise ValueError(f"clamp to one of {modes}; got {value!r}")
        return value

    def classify(self, upload: Any, hook: str, timestep: Any, kind: str) -> dict[str, float]:
        cell = self.state.cell(hook, timestep, None)
        if kind not in self.state.release.info["probe_kinds"]:
            raise ValueError(f"unknown probe {kind!r}; choose one of {self.state.release.info['probe_kinds']}")
        image = read_upload(upload)
        return top_classes(classify_probabilities(self.state, [image], cell.hook, cell.timestep, kind)[0], 5)

    def feature_table(self, hook: str, timestep: Any, pooling: str) -> pd.DataFrame:
        cell = self.state.cell(hook, timestep, pooling)
        stats = self.state.stats(cell)
        live = (stats.firing_frequency > 0).nonzero().flatten().tolist()
        rows = [(f, stats.labels[f], round(float(stats.purity[f]), 3), round(float(stats.image_frequency[f]), 4),
                 round(float(stats.max_activation[f]), 3)) for f in live]
        table = pd.DataFrame(rows, columns=["feature", "label", "purity", "image frequency", "max activation"])
        return table.sort_values("purity", ascending=False, kind="stable")


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
                            steps = gr.Slider(1, 100, 25, step=1, label="Steps")
                            guidance = gr.Slider(1, 8, state.backbone.default_guidance_scale, step=0.5, label="Guidance")
                        s_hook, s_timestep, s_pooling = _cell_inputs(state, default=steer_cell)
                        with gr.Row():
                            target = gr.Dropdown(classes, value=target_class, label="Target class (suggestions, class maps)")
                            count = gr.Slider(1, 32, 16, step=1, label="How many")
                            suggest = gr.Button("Suggest features")
                        suggested = handlers.suggest(steer_cell.hook, steer_cell.timestep, steer_cell.pooling, target_class, 16)
                        features = gr.Dropdown(state.feature_choices(steer_cell), value=suggested, multiselect=True, filterable=True,
                                               label="Features to clamp (type to search by label or id)")
                        clamp_to = gr.Radio(CLAMP_MODES, value="class-map" if steer_cell.pooling == "none" else "value", label="Clamp each feature to")
                        strength = gr.Slider(-5, 10, 2, step=0.25, label="Value (0 ablates)")
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
