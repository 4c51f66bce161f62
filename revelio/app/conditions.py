"""What the Steer tab generates from, per backbone conditioning: inputs, checks, guidance range.

A text model takes a prompt (and a negative prompt), a class model one of its own classes (which
need not be the release's classes: those are the dataset's labels), an unconditional one nothing.
The /steer endpoint keeps the same inputs for all three, so API clients see one shape.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from revelio.app.inputs import label_id
from revelio.app.state import AppState
from revelio.models import Backbone

MAX_PROMPT_CHARS = 1000  # CLIP reads 77 tokens; longer text is a mistake or an abuse


def generation_condition(backbone: Backbone, value: Any, negative: Any) -> tuple[str | int | None, str | None]:
    """(condition, negative prompt) for ``backbone.generate`` from raw inputs: a prompt for a text
    model, one of the model's own classes (not necessarily the release's) for a class model,
    nothing for an unconditional one; a negative prompt only for text models."""
    negative = None if negative in (None, "") else negative
    if negative is not None and backbone.conditioning != "text":
        raise ValueError(f"a negative prompt needs a text-conditioned model; this one is conditioned on {backbone.conditioning!r}")
    if backbone.conditioning == "text":
        value = "" if value is None else value  # the empty prompt: unconditional, as the release's features
        for name, text in (("prompt", value), ("negative prompt", negative or "")):
            if not isinstance(text, str):
                raise ValueError(f"the {name} must be text (a string) for this text-to-image model; got {text!r:.80}")  # noqa: TRY004
            if len(text) > MAX_PROMPT_CHARS:
                raise ValueError(f"the {name} has {len(text)} characters; send at most {MAX_PROMPT_CHARS}")
        return value, negative
    if backbone.conditioning == "class":
        return label_id(list(backbone.class_names or []), value, "class to generate"), None
    if value not in (None, ""):
        raise ValueError(f"this model is unconditional: send no condition (None or an empty string); got {value!r}")
    return None, None


def guidance_range(backbone: Backbone) -> tuple[float, float]:
    """1 (unguided) to twice the model's default guidance scale, and at least to 8."""
    default = backbone.default_guidance_scale
    return min(1.0, default), max(8.0, 2 * default)


def example_prompt(state: AppState) -> str:
    """The prompt Steer starts with: the model's caption template ("a {colour} {class}") with each
    label set's first concept; else the extraction template's for the first class; else empty."""
    info = state.release.info
    if info.caption_template:
        sets = info.label_sets
        try:
            return info.caption_template.format(**{name: names[0] for name, names in sets.items() if names})
        except (KeyError, IndexError):  # a field that is no label set of this release: no example
            return ""
    if info.prompt_template and state.class_names:
        return info.prompt_template.format(state.class_names[0])
    return ""


def condition_inputs(state: AppState) -> tuple[gr.components.Component, gr.Textbox]:
    """What the backbone generates from: a prompt and a negative prompt (text models), one of its own
    classes (class models), or nothing (unconditional ones: hidden inputs keep /steer's inputs)."""
    backbone = state.backbone
    if backbone.conditioning == "text":
        prompt = example_prompt(state)
        hint = f"e.g. {prompt!r}" if prompt else "empty: unconditional, as the release's features were extracted"
        condition = gr.Textbox(prompt, label="Prompt", placeholder=hint)
    elif backbone.conditioning == "class":
        classes = [(name, i) for i, name in enumerate(backbone.class_names or [])]
        condition = gr.Dropdown(classes, value=0, label="Generate class (the model's own classes)")
    else:
        condition = gr.Textbox("", label="Condition (none: the model is unconditional)", visible=False)
    negative = gr.Textbox("", label="Negative prompt", visible=backbone.conditioning == "text")
    return condition, negative
