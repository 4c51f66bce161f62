"""Event handlers: each validates its raw inputs and turns results into values for the UI.

Events take raw inputs (``preprocess=False``), so a bad upload or an out-of-range value from an
API client gets a message that says what to do (``gr.Error``) instead of a framework error.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import gradio as gr
import pandas as pd
import torch

from revelio.app.classify import classify_probabilities, top_classes
from revelio.app.explore import explore_image
from revelio.app.feature_view import feature_view
from revelio.app.generation import Generator, SteeringRequest
from revelio.app.rendering import (
    enlarge,
    heatmap_overlay,
    histogram_frame,
    timesteps_frame,
)
from revelio.app.state import AppState, Cell
from revelio.app.uploads import read_upload
from revelio.steering.selection import class_selective_features

TOP_FEATURES = 8
# Limits shared by the sliders and the checks (API clients can send anything).
STEPS = (1, 100)
GUIDANCE = (1.0, 8.0)
STRENGTH = (-5.0, 10.0)
CLAMP_MODES = [("the target class's mean map × value (spatial SAEs)", "class-map"), ("value × each feature's max (0 ablates)", "value")]


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
        if not names:
            raise ValueError("this release names no classes, so there is no class to generate or steer towards")
        if isinstance(value, str) and value in names:
            return names.index(value)
        return int(_number(value, "class", 0, len(names) - 1, whole=True))

    def _features(self, cell: Cell, values: Any) -> list[int]:
        if values is None or isinstance(values, (int, str)):
            values = [] if values is None else [values]
        if not isinstance(values, (list, tuple)):
            raise ValueError(f"features must be a list of feature ids; got {values!r}")
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
        if feature is None:  # the dropdown was just cleared (another block or timestep): nothing to show yet
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
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
            steps=int(_number(steps, "steps", *STEPS, whole=True)), guidance=_number(guidance, "guidance", *GUIDANCE),
            cell=cell, features=self._features(cell, features), strength=_number(strength, "clamp value", *STRENGTH),
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
