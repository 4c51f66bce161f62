"""The block / timestep / SAE picker of every tab, and the feature dropdown that follows it."""

from __future__ import annotations

from typing import Any

import gradio as gr

from revelio.app.events import wire
from revelio.app.state import AppState
from revelio.grid import POOLING_NAMES, Cell


def cell_inputs(state: AppState, default: Cell | None = None, with_pooling: bool = True) -> list[gr.components.Component]:
    """Dropdowns for block and timestep, and a radio for the SAE's pooling (unless ``with_pooling`` is False)."""
    default = default or state.default_cell
    inputs: list[gr.components.Component] = [
        gr.Dropdown(state.release.hooks, value=default.hook, label="Block"),
        gr.Dropdown(state.release.timesteps, value=default.timestep, label="Timestep"),
    ]
    if with_pooling:
        choices = [(POOLING_NAMES[p], p) for p in state.release.poolings]
        inputs.append(gr.Radio(choices, value=default.pooling, label="SAE"))
    return inputs


def follow_cell(state: AppState, features: gr.Dropdown, inputs: list[gr.components.Component]) -> None:
    """Offer the chosen SAE's features in ``features`` whenever the cell changes, with none selected
    (a feature id means nothing in another SAE)."""

    def cell_features(hook: str, timestep: Any, pooling: str) -> gr.Dropdown:
        return gr.Dropdown(choices=state.feature_choices(state.cell(hook, timestep, pooling)), value=None)

    for control in inputs:
        wire(control.change, cell_features, inputs, features, api_visibility="private")
