"""Steer: the same condition and seed generated with and without clamped features, side by side.

The condition is whatever the backbone generates from (a prompt and negative prompt, one of its
own classes, or nothing); the target class of suggestions and class maps is one of the release's
classes (the dataset's labels, which the probes predict). On a spatial SAE a painted mask limits
the clamp to a region of the image. This module holds the tab's events and layout; what a request
may ask for is :mod:`revelio.app.steer_request`, the generating :mod:`revelio.app.generation`, the
mask :mod:`revelio.app.masks`.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import torch

from revelio.app.cell_picker import cell_inputs, follow_cell
from revelio.app.conditions import condition_inputs, guidance_range
from revelio.app.events import wire
from revelio.app.generation import Clamps, GenerationService
from revelio.app.inputs import whole
from revelio.app.masks import is_painted
from revelio.app.rendering import PROBE_KINDS, display_side, to_display
from revelio.app.state import AppState
from revelio.app.steer_advice import advice, selection_reason, selection_table, suggested
from revelio.app.steer_request import (
    COUNT_SLIDER,
    SEEDS,
    STEPS,
    STRENGTH,
    SUGGEST,
    SteeringDefaults,
    SteeringRequest,
    cell_choices,
    clamp_modes,
    read_request,
    steering_defaults,
)
from revelio.app.tabs.remove import RemoveTab
from revelio.app.uploads import upload_path
from revelio.data.images import ImageError

MASK_HELP = ("**Where to clamp** (spatial SAEs): paint over the part of the image to steer; nothing painted "
             "clamps everywhere. After a Generate the baseline appears here to paint on.")
ALSO_HELP = ("At each further SAE the target's suggested features are clamped too, as many as above, with the same "
             "clamp, value, window and mask; clamping to class maps needs spatial SAEs. The page starts with the cells "
             "the release's steering measurement (metrics/steering.json) steered at once.")
PROBE_HELP = ("Probe: the release's best classifier on the model's own activations (block {hook}, t={t}, "
              "{kind} probe), given each image: what the model itself sees in it.")


class SteerTab:
    """The Steer tab: its events (a shared generation service behind them) and its layout."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.generator = GenerationService(state)
        self.mask_editor: gr.ImageEditor | None = None
        self.modes: gr.Tabs | None = None  # Steer's two modes: steer towards a concept, remove one
        self.also: gr.Dropdown | None = None  # further SAEs to steer at
        self.defaults: SteeringDefaults | None = None

    # --- events -------------------------------------------------------------------------------
    def suggest(self, hook: str, timestep: Any, pooling: str, target: Any, count: Any) -> list[int]:
        """The features that steer towards a concept (a class, or e.g. a colour of a further label
        set): from its class maps on spatial SAEs; on pooled ones the features labelled with it
        (:mod:`revelio.analysis.labels`), heaviest on it first (there may be fewer than asked: the
        message says so)."""
        cell = self.state.cell(hook, timestep, pooling)
        count = whole(count, "number of features", *SUGGEST)
        target = self.state.check_target(target)
        name = self.state.names(target.label_set)[target.index]
        found = suggested(self.state, cell, target, count)
        maps = cell.pooling == "none"
        if len(found) < count:
            gr.Info(f"Only {len(found)} of this pooled SAE's features are labelled {name} (see the label rule), so "
                    f"{len(found)} are suggested, not {count}." if not maps else
                    f"Only {len(found)} features of this SAE are more active on {name} than elsewhere; "
                    f"{len(found)} are suggested, not {count}.")
        return found

    def steer(self, condition: Any, seed: Any, steps: Any, guidance: Any, hook: str, timestep: Any, pooling: str,
              features: Any, clamp_to: Any, target: Any, strength: Any, t_high: Any, t_low: Any,
              negative_prompt: Any = None, mask: Any = None, also_at: Any = None,
              progress: Any = gr.Progress()) -> tuple:  # noqa: B008 - Gradio's way
        """Baseline and steered images, the probe's view of each, and a note of what was clamped at each SAE;
        ``also_at``: further SAEs ("hook:t", read as the main SAE's kind) to clamp the target's features at."""
        request = self.request(condition, seed, steps, guidance, hook, timestep, pooling, features, clamp_to, target,
                               strength, t_high, t_low, negative_prompt, mask, also_at)

        def report(done: int, total: int, what: str) -> None:
            progress((max(0, done), total), desc=f"Generating: {what}", unit="steps")

        baseline, steered, clamps = self.generator.run(request, report)
        before, after = self.state.probabilities([baseline, steered], label_set=request.target.label_set)
        side = display_side(self.state.backbone.resolution)
        return to_display(baseline, side), to_display(steered, side), before, after, self.note(request, clamps)

    def request(self, condition: Any, seed: Any, steps: Any, guidance: Any, hook: str, timestep: Any, pooling: str,
                features: Any, clamp_to: Any, target: Any, strength: Any, t_high: Any, t_low: Any,
                negative_prompt: Any = None, mask: Any = None, also_at: Any = None) -> SteeringRequest:
        """The checked request (ValueError saying what was wrong with any input)."""
        blobs = self.mask_editor.blob_storage if self.mask_editor is not None else None
        return read_request(self.state, condition, seed, steps, guidance, hook, timestep, pooling, features, clamp_to,
                            target, strength, t_high, t_low, negative_prompt, mask, blobs, also_at=also_at)

    def note(self, request: SteeringRequest, clamps: Clamps) -> str:
        """What was clamped at each SAE: the main one's features each with its label, what ranked it and
        its clamp; each further SAE's in one line (its suggested features, clamped alike)."""
        target_name = self.state.names(request.target.label_set)[request.target.index]
        where = (f" inside the painted mask ({100 * float(request.mask.mean()):.0f}% of the image)"
                 if request.mask is not None else "")
        maps = (f"its map on the {target_name} image the release's steering measurement chose"
                if request.clamp_to == "exemplar" else f"its {target_name} map")
        parts = []
        for cell, clamp in clamps.items():
            window = f"Clamped at {cell}{where}, from t={request.window[0]} down to t={request.window[1]}"
            if not clamp:
                parts.append(f"{window}: nothing, no feature of this SAE is suggested for {target_name}.")
            elif cell == request.cell:
                parts.append(f"{window}:\n\n" + "\n".join(
                    f"- {self.state.feature_label(cell, f)} [{selection_reason(self.state, cell, f, request.target)}] → "
                    + (f"{request.strength:g} × {maps}" if isinstance(v, torch.Tensor) else f"{v:.3g}")
                    for f, v in clamp.items()))
            else:  # a further SAE: its suggested features in one line, all clamped alike
                value = next(iter(clamp.values()))
                to = (f"{request.strength:g} × {maps}" if isinstance(value, torch.Tensor)
                      else f"{request.strength:g} × its largest training activation (or typical activation × k)")
                parts.append(f"{window}, {len(clamp)} features each to {to}: "
                             + ", ".join(self.state.feature_label(cell, f) for f in clamp) + ".")
        if len(clamps) > 1:
            parts.insert(0, f"Steered at {len(clamps)} SAEs at once ({', '.join(c.spec for c in clamps)}); at each further "
                            f"SAE the {len(request.features)} features suggested for {target_name} there.")
        return "\n\n".join(parts)

    def cell_changed(self, pooling: Any, clamp_to: Any) -> tuple:
        """Clamp modes and the mask painter for the chosen SAE (UI only): class maps and masks where
        they apply (spatial SAEs); switching to a pooled SAE switches class-map clamping to a value."""
        spatial = pooling == "none"
        modes = clamp_modes(pooling, bool(self.state.exemplar_rows()))
        mode = clamp_to if clamp_to in [m for _, m in modes] else "value"
        painter = gr.ImageEditor(visible=True) if spatial else gr.ImageEditor(value=None, visible=False)
        return gr.Radio(choices=modes, value=mode), painter, gr.Markdown(visible=spatial)

    def advice(self, hook: Any, timestep: Any, pooling: Any, clamp_to: Any) -> str:
        """The note before Generate on settings measured or known not to steer (UI only)."""
        return advice(self.state, hook, pooling, clamp_to)

    def chosen(self, hook: Any, timestep: Any, pooling: Any, target: Any, features: Any) -> str:
        """The chosen features with their labels and what ranks each for the target (UI only)."""
        cell = self.state.cell(hook, timestep, pooling)
        return selection_table(self.state, cell, self.state.check_features(cell, features), self.state.check_target(target))

    def measured_count(self, target: Any) -> Any:
        """How many features the release's steering measurement clamped for this target (UI only): its
        own count where it chose one (e.g. 64 for Sandal), else the measured default."""
        if self.defaults is None or not self.defaults.counts:
            return gr.skip()
        chosen = self.state.check_target(target)
        name = self.state.names(chosen.label_set)[chosen.index]
        counts = dict(self.defaults.counts) if chosen.label_set is None else {}  # measured on the default set
        return gr.Slider(value=counts.get(name, self.defaults.count))

    def load_defaults(self) -> Any:
        """The further SAEs the page starts with (UI only): the release's measured cells after the first."""
        return gr.Dropdown(value=[cell.spec for cell in self.defaults.also] if self.defaults else [])

    def paint_on(self, baseline: Any, mask: Any) -> Any:
        """After a Generate without a mask, the baseline becomes the painter's background."""
        if is_painted(mask) or not isinstance(baseline, dict):
            return gr.skip()
        try:
            path = str(upload_path(baseline))
        except ImageError:
            return gr.skip()
        return {"background": path, "layers": [], "composite": path}

    # --- layout -------------------------------------------------------------------------------
    def build(self) -> None:
        state = self.state
        classes = state.target_choices()
        target_class = classes[1][1] if len(classes) > 1 else 0
        last = state.backbone.num_train_timesteps - 1
        defaults = self.defaults = steering_defaults(state)
        steer_cell = defaults.cell
        starting = (self.suggest(steer_cell.hook, steer_cell.timestep, steer_cell.pooling, target_class, defaults.count)
                    if classes else [])
        side = display_side(state.backbone.resolution)
        spatial = steer_cell.pooling == "none"
        best = state.release.info.best_cell
        with gr.Tabs(selected="towards") as self.modes:
            with gr.Tab("Steer towards a concept", id="towards"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=1, min_width=320):
                        condition, negative_prompt = condition_inputs(state)
                        generate = gr.Button("Generate", variant="primary")
                        gr.Markdown("Generates the baseline (same seed, nothing clamped, reused when unchanged) and the "
                                    "steered image; progress shows below.", elem_classes=["revelio-help"])
                        status = gr.Markdown(elem_classes=["revelio-status"])
                        warning = gr.Markdown(self.advice(steer_cell.hook, steer_cell.timestep, steer_cell.pooling,
                                                          defaults.clamp_to if spatial else "value"),
                                              elem_classes=["revelio-advice"])
                        with gr.Accordion("Sampling: seed, steps, guidance", open=False):
                            seed = gr.Number(0, precision=0, label=f"Seed (0..{SEEDS[1]})", minimum=SEEDS[0], maximum=SEEDS[1])
                            # 25 suits the DPM-Solver++ samplers; a few-step model (FLUX.1-schnell) says fewer
                            steps = gr.Slider(*STEPS, min(25, state.backbone.default_num_inference_steps), step=1,
                                              label="Denoising steps")
                            guidance = gr.Slider(*guidance_range(state.backbone), state.backbone.default_guidance_scale,
                                                 step=0.5, label="Guidance (classifier-free; 1 = none)",
                                                 visible=state.backbone.conditioning != "none")
                        gr.Markdown("**What to clamp**: an SAE (block, timestep; spatial has one code per location, pooled "
                                    "one per image) and its features.")
                        cell = cell_inputs(state, default=steer_cell)
                        with gr.Row():
                            target = gr.Dropdown(classes, value=target_class, filterable=True,
                                                 label="Target (for suggestions and class maps)" if state.further_label_sets else
                                                 "Target class (for suggestions and class maps)")
                            count = gr.Slider(*COUNT_SLIDER, defaults.count, step=1, label="How many")
                        suggest = gr.Button("Suggest features", size="sm")
                        features = gr.Dropdown(state.feature_choices(steer_cell), value=starting, multiselect=True,
                                               filterable=True, label="Features to clamp (type to search by label or id)")
                        with gr.Accordion("Why these features", open=False):
                            why = gr.Markdown(selection_table(state, steer_cell, starting, state.check_target(target_class))
                                              if classes else "")
                        clamp_to = gr.Radio(clamp_modes(steer_cell.pooling, bool(state.exemplar_rows())),
                                            value=defaults.clamp_to if spatial else "value",
                                            label="Clamp each feature to")
                        strength = gr.Slider(*STRENGTH, defaults.strength, step=0.25, label="Value")
                        with gr.Row():
                            t_high = gr.Slider(0, last, defaults.window[0], step=1, label=f"Steer from t ({last} = pure noise)")
                            t_low = gr.Slider(0, last, defaults.window[1], step=1, label="down to t (0 = clean)")
                        # empty here (the API's default: a call without it steers one SAE, as before); the page
                        # fills in the measured cells as it loads (load_defaults)
                        self.also = gr.Dropdown(cell_choices(state), value=[], multiselect=True, filterable=True,
                                                label="Also steer at (further SAEs of the same kind)")
                        also = self.also
                        gr.Markdown(ALSO_HELP, elem_classes=["revelio-help"])
                    with gr.Column(scale=2):
                        with gr.Row():
                            baseline = gr.Image(label="Baseline (same seed, nothing clamped)", height=side + 48,
                                                buttons=["download"], interactive=False, elem_classes=["revelio-result"])
                            steered = gr.Image(label="Steered", height=side + 48, buttons=["download"], interactive=False,
                                               elem_classes=["revelio-result"])
                        with gr.Row():
                            baseline_label = gr.Label(label="Probe on the baseline")
                            steered_label = gr.Label(label="Probe on the steered image")
                        sets = (" With several label sets, the probe of the target's set (its own best cell) reads both images."
                                if state.further_label_sets else "")
                        gr.Markdown(PROBE_HELP.format(hook=best.hook, t=best.timestep, kind=best.probe) + sets + " "
                                    + PROBE_KINDS, elem_classes=["revelio-help"])
                        note = gr.Markdown()
                        mask_help = gr.Markdown(MASK_HELP, visible=spatial)
                        mask = gr.ImageEditor(label="Mask: paint where to clamp", type="pil", sources=[], transforms=[],
                                              layers=False, canvas_size=(side, side), fixed_canvas=True, height=side + 120,
                                              brush=gr.Brush(colors=["#ff2d2d"], color_mode="fixed",
                                                             default_size=max(2, side // 12)),
                                              eraser=gr.Eraser(default_size=max(2, side // 12)), visible=spatial,
                                              elem_classes=["revelio-mask"])
                        self.mask_editor = mask
            with gr.Tab("Remove a concept", id="remove"):
                RemoveTab(state, self.generator).build()
        wire(suggest.click, self.suggest, [*cell, target, count], features, api_name="suggest_features",
             show_progress_on=[features])
        wire(target.change, self.measured_count, target, count, api_visibility="private", show_progress="hidden")
        follow_cell(state, features, cell)
        if classes:
            wire(lambda *args, **kwargs: gr.on([features.change, target.change], *args, **kwargs), self.chosen,
                 [*cell, target, features], why, api_visibility="private", show_progress="hidden", trigger_mode="always_last")
        wire(lambda *args, **kwargs: gr.on([*(c.change for c in cell), clamp_to.change], *args, **kwargs), self.advice,
             [*cell, clamp_to], warning, api_visibility="private", show_progress="hidden")
        cell[2].change(self.cell_changed, [cell[2], clamp_to], [clamp_to, mask, mask_help], api_visibility="private",
                       queue=False)
        event = wire(generate.click, self.steer,
                     [condition, seed, steps, guidance, *cell, features, clamp_to, target, strength, t_high, t_low,
                      negative_prompt, mask, also],
                     [baseline, steered, baseline_label, steered_label, note], api_name="steer",
                     show_progress_on=[status])
        wire(event.success, self.paint_on, [baseline, mask], mask, api_visibility="private", show_progress="hidden")
