"""Steer: the same condition and seed generated with and without clamped features, side by side.

The condition is whatever the backbone generates from (a prompt and negative prompt, one of its
own classes, or nothing); the target class of suggestions and class maps is one of the release's
classes (the dataset's labels, which the probes predict).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import gradio as gr
import torch
from PIL import Image

from revelio.app.cell_picker import cell_inputs, follow_cell
from revelio.app.conditions import condition_inputs, generation_condition, guidance_range
from revelio.app.gpu import GENERATE_SECONDS, gpu
from revelio.app.rendering import display_side, to_display
from revelio.app.state import AppState
from revelio.app.validation import class_id, feature_ids, number, wire
from revelio.grid import Cell
from revelio.steering import FeatureEdit, steer
from revelio.steering.selection import clamp_targets, steering_features

BASELINE_CACHE_SIZE = 32
# Limits shared by the sliders and the checks (API clients can send anything).
STEPS = (1, 100)
STRENGTH = (-5.0, 10.0)
CLAMP_MODES = [("the target class's mean map × value (spatial SAEs)", "class-map"),
               ("value × each feature's max (0 ablates)", "value")]


@dataclass
class SteeringRequest:
    """One checked Generate request."""

    condition: str | int | None  # what the backbone generates from: a prompt, one of its classes, nothing
    negative_prompt: str | None  # text models only
    seed: int
    steps: int
    guidance: float
    cell: Cell
    features: list[int]
    strength: float  # multiplies each feature's max training activation (0 ablates), or the class map
    window: tuple[int, int]  # (t_high, t_low)
    clamp_to: str  # "value" (strength x max, everywhere) or "class-map" (strength x target's mean map)
    target: int  # the class whose maps "class-map" clamps to


def clamp_mode(value: Any) -> str:
    """One of the CLAMP_MODES values."""
    modes = [mode for _, mode in CLAMP_MODES]
    if value not in modes:
        raise ValueError(f"clamp to one of {modes}; got {value!r}")
    return value


class Generator:
    """Generates under the app's model lock and remembers recent unsteered images (same seed, same picture)."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self._baselines: OrderedDict[tuple, Image.Image] = OrderedDict()
        self._sample = gpu(GENERATE_SECONDS)(self._sample_image)

    def generate(self, request: SteeringRequest, clamp: dict[int, float | torch.Tensor] | None) -> Image.Image:
        """One image; steered when ``clamp`` says what to clamp each feature of the request's SAE to."""
        with self.state.model_lock:
            return self._sample(request, clamp)

    def _sample_image(self, request: SteeringRequest, clamp: dict[int, float | torch.Tensor] | None) -> Image.Image:
        # builds the edit itself: on ZeroGPU this runs in the GPU worker, with pickled arguments
        backbone = self.state.backbone
        kwargs = {"seed": request.seed, "num_inference_steps": request.steps, "guidance_scale": request.guidance,
                  "negative_prompt": request.negative_prompt}
        if clamp is None:  # no hooks at all on the unsteered run
            return backbone.generate(request.condition, **kwargs)[0]
        edit = FeatureEdit(self.state.sae(request.cell), clamp=clamp, timesteps=request.window)
        with steer(backbone, [edit]):
            return backbone.generate(request.condition, **kwargs)[0]

    def baseline(self, request: SteeringRequest) -> Image.Image:
        key = (request.condition, request.negative_prompt, request.seed, request.steps, request.guidance)
        with self.state.model_lock:  # also guards the cache against concurrent requests
            if key not in self._baselines:
                self._baselines[key] = self.generate(request, None)
                if len(self._baselines) > BASELINE_CACHE_SIZE:
                    self._baselines.popitem(last=False)
            self._baselines.move_to_end(key)
            return self._baselines[key]

    def run(self, request: SteeringRequest) -> tuple[Image.Image, Image.Image, dict[int, float | torch.Tensor]]:
        """(baseline, steered image, what each feature was clamped to)."""
        if not request.features:
            raise ValueError("pick at least one feature to steer (or use 'Suggest features')")
        maps = self.state.class_maps(request.cell) if request.clamp_to == "class-map" else None
        clamp = clamp_targets(request.features, request.strength, self.state.stats(request.cell), maps, request.target)
        return self.baseline(request), self.generate(request, clamp), clamp


class SteerTab:
    """The Steer tab: its events (a shared baseline cache behind them) and its layout."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.generator = Generator(state)

    def suggest(self, hook: str, timestep: Any, pooling: str, target: Any, count: Any) -> list[int]:
        """The features that steer towards a class: from its class maps on spatial SAEs; on pooled
        ones every feature whose dominant label it is counts, however spread its activation."""
        cell = self.state.cell(hook, timestep, pooling)
        count = int(number(count, "number of features", 1, 64, whole=True))
        maps = self.state.class_maps(cell) if cell.pooling == "none" else None
        return steering_features(self.state.stats(cell), class_id(self.state, target), count, maps=maps, min_purity=0.0)

    def steer(self, condition: Any, seed: Any, steps: Any, guidance: Any, hook: str, timestep: Any, pooling: str,
              features: Any, clamp_to: Any, target: Any, strength: Any, t_high: Any, t_low: Any,
              negative_prompt: Any = None) -> tuple:
        """Baseline and steered images, the probe's view of each, and a note of what was clamped."""
        cell = self.state.cell(hook, timestep, pooling)
        condition, negative_prompt = generation_condition(self.state.backbone, condition, negative_prompt)
        last = self.state.backbone.num_train_timesteps - 1
        high = int(number(t_high, "window start (t high)", 0, last, whole=True))
        low = int(number(t_low, "window end (t low)", 0, last, whole=True))
        if low > high:
            raise ValueError(f"the window runs from t high down to t low; got t high {high} < t low {low}")
        request = SteeringRequest(
            condition=condition, negative_prompt=negative_prompt, seed=int(number(seed, "seed", 0, 2**31 - 1, whole=True)),
            steps=int(number(steps, "steps", *STEPS, whole=True)),
            guidance=number(guidance, "guidance", *guidance_range(self.state.backbone)),
            cell=cell, features=feature_ids(self.state, cell, features), strength=number(strength, "clamp value", *STRENGTH),
            window=(high, low), clamp_to=clamp_mode(clamp_to), target=class_id(self.state, target),
        )
        baseline, steered, clamp = self.generator.run(request)
        before, after = self.state.probabilities([baseline, steered])
        names = self.state.class_names
        target_name = names[request.target] if request.target < len(names) else request.target
        clamps = ", ".join(
            f"{self.state.feature_label(cell, f)} → "
            + (f"{request.strength:g} × its {target_name} map" if isinstance(v, torch.Tensor) else f"{v:.3g}")
            for f, v in clamp.items())
        side = display_side(self.state.backbone.resolution)
        return to_display(baseline, side), to_display(steered, side), before, after, f"Clamped at {cell}: {clamps}"

    def build(self) -> None:
        state, default = self.state, self.state.default_cell
        classes = [(name, i) for i, name in enumerate(state.class_names)]
        target_class = 1 if len(classes) > 1 else 0
        last = state.backbone.num_train_timesteps - 1
        # The last decoder block (highest resolution) shapes the image most directly: on the
        # bundled model, class-map clamps there move the probe; at mid_block they barely do.
        steer_cell = Cell(state.release.hooks[-1], default.timestep, default.pooling)
        suggested = self.suggest(steer_cell.hook, steer_cell.timestep, steer_cell.pooling, target_class, 16) if classes else []
        with gr.Row():
            with gr.Column(scale=1):
                condition, negative_prompt = condition_inputs(state)
                with gr.Row():
                    seed = gr.Number(0, precision=0, label="Seed")
                    steps = gr.Slider(*STEPS, 25, step=1, label="Steps")
                    guidance = gr.Slider(*guidance_range(state.backbone), state.backbone.default_guidance_scale, step=0.5,
                                         label="Guidance", visible=state.backbone.conditioning != "none")
                cell = cell_inputs(state, default=steer_cell)
                with gr.Row():
                    target = gr.Dropdown(classes, value=target_class, label="Target class (suggestions, class maps)")
                    count = gr.Slider(1, 32, 16, step=1, label="How many")
                    suggest = gr.Button("Suggest features")
                features = gr.Dropdown(state.feature_choices(steer_cell), value=suggested, multiselect=True, filterable=True,
                                       label="Features to clamp (type to search by label or id)")
                clamp_to = gr.Radio(CLAMP_MODES, value="class-map" if steer_cell.pooling == "none" else "value",
                                    label="Clamp each feature to")
                strength = gr.Slider(*STRENGTH, 2, step=0.25, label="Value (0 ablates)")
                with gr.Row():
                    t_high = gr.Slider(0, last, last, step=1, label="Window: from t")
                    # the high-noise half: where class shape is decided, at half the cost of every step
                    t_low = gr.Slider(0, last, state.backbone.num_train_timesteps // 2, step=1, label="down to t")
                generate = gr.Button("Generate", variant="primary")
            with gr.Column(scale=2):
                side = display_side(state.backbone.resolution)
                with gr.Row():
                    baseline = gr.Image(label="Baseline (same seed)", height=side)
                    steered = gr.Image(label="Steered", height=side)
                with gr.Row():
                    baseline_label = gr.Label(label="Probe: baseline")
                    steered_label = gr.Label(label="Probe: steered")
                note = gr.Markdown()
        wire(suggest.click, self.suggest, [*cell, target, count], features, api_name="suggest_features")
        follow_cell(state, features, cell)
        wire(generate.click, self.steer,
             [condition, seed, steps, guidance, *cell, features, clamp_to, target, strength, t_high, t_low, negative_prompt],
             [baseline, steered, baseline_label, steered_label, note], api_name="steer")
