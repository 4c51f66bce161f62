"""Remove a concept (Steer's second mode): the same condition and seed generated as usual and with a
concept of any label set taken out where its SAE features fire, side by side, with the probe's reading
of both and a note of how it was removed.

The baseline comes from the Steer tab's generation service (one cache of unedited images for both
modes); the removal itself from :mod:`revelio.app.removal` (settings, prepared statistics) and
:mod:`revelio.steering.removal` (the edit).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from revelio.app.conditions import condition_inputs, guidance_range
from revelio.app.events import wire
from revelio.app.generation import BASELINE, GenerationService
from revelio.app.removal import PreparedRemovals, RemovalSettings, label_set_name, removal_settings
from revelio.app.rendering import display_side, to_display
from revelio.app.state import AppState, Target
from revelio.app.steer_request import SEEDS, STEPS, Sampling, read_sampling
from revelio.grid import Cell
from revelio.release.removal_measurement import RemovalSetup

TOP_SHOWN = 5  # features per block the note names with their labels
PREPARING = "preparing the removal (once per label set and step count: the held-out images at every sampler step)"


@dataclass
class RemovalRequest(Sampling):
    """One checked Remove request: what to generate, and which concept to take out of it."""

    target: Target


class RemoveTab:
    """The Remove mode: its events and layout; generations go through Steer's service."""

    def __init__(self, state: AppState, generator: GenerationService) -> None:
        self.state, self.generator = state, generator
        self.settings: RemovalSettings = removal_settings(state)
        self.prepared = PreparedRemovals(state, self.settings)

    # --- events -------------------------------------------------------------------------------
    def request(self, condition: Any, seed: Any, steps: Any, guidance: Any, concept: Any,
                negative_prompt: Any = None) -> RemovalRequest:
        """The checked request (ValueError saying what was wrong with any input)."""
        if concept in (None, "", []):
            raise ValueError("pick a concept to remove: " + self.concept_hint())
        target = self.state.check_target(concept)
        return RemovalRequest(**vars(read_sampling(self.state, condition, seed, steps, guidance, negative_prompt)),
                              target=target)

    def concept_hint(self) -> str:
        """How a concept is written, for the message when none was sent."""
        hint = "a class of the release by name or id"
        if self.state.further_label_sets:
            hint += f', or "set:name" / "set:id" of a further label set (e.g. "{self.state.further_label_sets[0]}:0")'
        return hint

    def remove(self, condition: Any, seed: Any, steps: Any, guidance: Any, concept: Any, negative_prompt: Any = None,
               progress: Any = gr.Progress()) -> tuple:  # noqa: B008 - Gradio's way
        """Before and after (the concept removed), the probe's reading of each (the concept's label set)
        and a note of the method, blocks, features and why."""
        request = self.request(condition, seed, steps, guidance, concept, negative_prompt)

        def report(done: int, total: int, what: str) -> None:
            progress((max(0, done), total), desc=what if what == PREPARING else f"Generating: {what}", unit="steps")

        before, after, setup = self.run(request, report)
        readings = self.state.probabilities([before, after], label_set=request.target.label_set)
        side = display_side(self.state.backbone.resolution)
        return to_display(before, side), to_display(after, side), *readings, self.note(request, setup, before, after)

    def run(self, request: RemovalRequest, report: Callable[[int, int, str], None] | None = None
            ) -> tuple[Image.Image, Image.Image, RemovalSetup]:
        """(before, after, the prepared removal used); ``report(done, total, what)`` as each phase and step goes."""
        report = report or (lambda *_: None)
        label_set = label_set_name(self.state, request.target.label_set)
        setup = self.prepared.get(label_set, request.steps, lambda: report(0, 1, PREPARING))
        settings = self.settings
        edits = setup.edits(label_set, request.target.index, settings.method, settings.features, settings.multiplier)
        if not edits:
            raise ValueError(f"no feature of the SAEs at {', '.join(settings.hooks)} is more active on "
                             f"{self.concept_name(request.target)} than on the other concepts: nothing to remove it with")
        cached = self.generator.has_baseline(request)
        total = request.steps * (1 if cached else 2)
        done = 0 if cached else request.steps
        if not cached:
            report(0, total, BASELINE)
        before = self.generator.baseline(request, lambda i: report(i - 1, total, BASELINE))
        report(done, total, "concept removed")
        after = self.generator.generate(request, None, lambda i: report(done + i - 1, total, "concept removed"), edits=edits)
        report(total, total, "probe")
        return before, after, setup

    def concept_name(self, target: Target) -> str:
        name = self.state.names(target.label_set)[target.index]
        return f"{name} ({target.label_set})" if target.label_set else name

    def note(self, request: RemovalRequest, setup: RemovalSetup, before: Image.Image, after: Image.Image) -> str:
        """Which method, blocks and features removed the concept, and why these settings."""
        settings, target = self.settings, request.target
        name, label_set = self.concept_name(target), label_set_name(self.state, target.label_set)
        lines = [f"Removed **{name}** with **{settings.method}** at {', '.join(settings.hooks)}, at every one of the "
                 f"{request.steps} sampler steps: the concept's {settings.features} highest-scoring features per block and "
                 "step (SAeUron's score: their share of activation on its held-out images minus on the others'), "
                 + ("where they fire above their usual level the activation becomes the other concepts' mean there"
                    if settings.method == "replace" else
                    f"where they fire above their usual level they are scaled by {settings.multiplier:g}, the SAE's error kept")
                 + ", in images whose first step shows the concept."]
        if np.array_equal(np.asarray(before), np.asarray(after)):
            lines.append(f"**Nothing changed**: at the first step this image did not show {name} (its features stayed "
                         "below the level that separates its images from the others'), so nothing was removed.")
        lines.append("Why these settings: " + settings.why() + ".")
        row = settings.measured.methods[settings.method].per_concept.get(self.state.names(target.label_set)[target.index]) \
            if settings.measured is not None and settings.method in settings.measured.methods else None
        if row is not None and row.label_set == label_set:
            lines.append(f"Measured for {name}: UA {row.ua:.2f} (its images no longer recognised as it; unedited "
                         f"{row.baseline_ua:.2f}), IRA {row.ira:.2f} (the others still recognised; unedited "
                         f"{row.baseline_ira:.2f})"
                         + (f", CRA {row.cra:.2f}" if row.cra is not None else "") + ".")
        if settings.steps is not None and request.steps != settings.steps:
            lines.append(f"(Measured at {settings.steps} steps; this image used {request.steps}.)")
        cells = setup.cells()
        shown = []
        for key, features in setup.features(label_set, target.index, settings.features).items():
            cell = Cell.parse(cells[key], "none")
            labelled = ", ".join(self.state.feature_label(cell, f) for f in features[:TOP_SHOWN])
            shown.append(f"- {key.replace(':', ' at t=')} (the SAE at t={cell.timestep}): {labelled}"
                         + (f"; then #{', #'.join(map(str, features[TOP_SHOWN:]))}" if len(features) > TOP_SHOWN else ""))
        lines.append("Its best features at the first step, where removal decides (of "
                     f"{settings.features} per block and step):\n\n" + "\n".join(shown))
        return "\n\n".join(lines)

    # --- layout -------------------------------------------------------------------------------
    def build(self) -> None:
        state = self.state
        concepts = state.target_choices()
        side = display_side(state.backbone.resolution)
        steps_default = self.settings.steps or min(25, state.backbone.default_num_inference_steps)
        spatial = "none" in state.release.poolings
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=320):
                condition, negative_prompt = condition_inputs(state)
                first = concepts[0][1] if concepts else None  # a text model's example prompt names each set's first
                if list(state.backbone.class_names or []) == state.class_names and len(state.class_names) > 1:
                    condition.value = first = 1  # a model of the release's classes generates the one it removes
                concept = gr.Dropdown(concepts, value=first, filterable=True, label="Concept to remove")
                remove = gr.Button("Remove", variant="primary", interactive=spatial and bool(concepts))
                gr.Markdown("Generates the image as usual (reused from Steer when the same) and again with the concept "
                            "removed; the first removal of a label set at a step count prepares it (seconds).",
                            elem_classes=["revelio-help"])
                status = gr.Markdown(elem_classes=["revelio-remove-status"])
                gr.Markdown("**How**: " + (self.settings.why() + "." if spatial else
                            "removal needs spatial SAEs; this release has only pooled ones."), elem_classes=["revelio-help"])
                with gr.Accordion("Seed, sampler steps and guidance", open=False):
                    seed = gr.Number(0, precision=0, label=f"Seed for removal (0..{SEEDS[1]})", minimum=SEEDS[0],
                                     maximum=SEEDS[1])
                    steps = gr.Slider(*STEPS, steps_default, step=1, label="Sampler steps")
                    guidance = gr.Slider(*guidance_range(state.backbone), state.backbone.default_guidance_scale, step=0.5,
                                         label="Guidance scale (classifier-free; 1 = none)",
                                         visible=state.backbone.conditioning != "none")
            with gr.Column(scale=2):
                with gr.Row():
                    before = gr.Image(label="Before (nothing removed)", height=side + 48, buttons=["download"],
                                      interactive=False, elem_classes=["revelio-result"])
                    after = gr.Image(label="After (concept removed)", height=side + 48, buttons=["download"],
                                     interactive=False, elem_classes=["revelio-result"])
                with gr.Row():
                    before_label = gr.Label(label="Probe before")
                    after_label = gr.Label(label="Probe after")
                gr.Markdown("Probe: the release's best classifier of the concept's label set, on the model's own "
                            "activations: what the model itself sees in each image.", elem_classes=["revelio-help"])
                note = gr.Markdown(elem_classes=["revelio-remove-note"])
        wire(remove.click, self.remove, [condition, seed, steps, guidance, concept, negative_prompt],
             [before, after, before_label, after_label, note], api_name="remove", show_progress_on=[status])
