"""What a Steer request may ask for, the checked request itself, and the setting the tab starts from.

The limits are shared by the sliders and the checks (API clients can send anything); a request is
read from the raw inputs of the /steer endpoint into a :class:`SteeringRequest`, or refused with a
message saying which input was wrong. The defaults come from the release's steering measurement
(``metrics/steering.json``) when it measured a setting this tab can reproduce.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

import torch

from revelio.app.conditions import generation_condition, guidance_range
from revelio.app.inputs import number, whole
from revelio.app.masks import read_mask
from revelio.app.state import AppState, Target
from revelio.errors import ArtifactFormatError
from revelio.formats.metrics import Steering
from revelio.grid import Cell
from revelio.layout import STEERING

log = logging.getLogger("revelio.app")

STEPS = (1, 100)
STRENGTH = (-5.0, 10.0)
SEEDS = (0, 2**31 - 1)
SUGGEST = (1, 64)
COUNT_SLIDER = SUGGEST  # the "How many" slider (a measured setting may choose 64 for a class)
CLASS_MAP = ("the target class's mean map × value (spatial SAEs)", "class-map")
VALUE = ("value × the feature's largest training activation (or its publisher's typical activation × k); 0 switches it off",
         "value")
EXEMPLAR = ("the target's map on one real image of it, the one the release's steering measurement chose × value "
            "(spatial SAEs)", "exemplar")
CLAMP_MODES = [CLASS_MAP, EXEMPLAR, VALUE]
MAP_MODES = ("class-map", "exemplar")  # the clamp modes that clamp to a map over locations

Clamp = dict[int, float | torch.Tensor]  # what each feature is clamped to: a value, or a map over locations


def clamp_modes(pooling: Any, exemplars: bool = True) -> list[tuple[str, str]]:
    """The clamp modes that apply to an SAE: maps only where there is a map (spatial SAEs), exemplars
    only where the release's steering measurement chose some."""
    if pooling != "none":
        return [VALUE]
    return CLAMP_MODES if exemplars else [CLASS_MAP, VALUE]


def clamp_mode(value: Any, pooling: str = "none") -> str:
    """One of the CLAMP_MODES values, and one that applies to the SAE."""
    modes = [mode for _, mode in CLAMP_MODES]
    if value not in modes:
        raise ValueError(f"clamp to one of {modes}; got {value!r:.60}")
    if value in MAP_MODES and pooling != "none":
        raise ValueError("clamping to a class's map needs a spatial SAE (a pooled SAE has one code per image, no map); "
                         "choose the spatial SAE or clamp to a value")
    return value


@dataclass
class Sampling:
    """What an image is generated from, and how: the same for Steer and Remove (and their shared baselines)."""

    condition: str | int | None  # what the backbone generates from: a prompt, one of its classes, nothing
    negative_prompt: str | None  # text models only
    seed: int
    steps: int
    guidance: float


def read_sampling(state: AppState, condition: Any, seed: Any, steps: Any, guidance: Any,
                  negative_prompt: Any = None) -> Sampling:
    """The checked condition, seed, steps and guidance (ValueError saying which was wrong)."""
    condition, negative_prompt = generation_condition(state.backbone, condition, negative_prompt)
    return Sampling(condition=condition, negative_prompt=negative_prompt, seed=whole(seed, "seed", *SEEDS),
                    steps=whole(steps, "steps", *STEPS), guidance=number(guidance, "guidance", *guidance_range(state.backbone)))


@dataclass
class SteeringRequest(Sampling):
    """One checked Generate request: the main SAE's features, and further SAEs (``also``) clamped the same way."""

    cell: Cell
    features: list[int]
    strength: float  # multiplies each feature's max training activation (0 ablates), or the class map
    window: tuple[int, int]  # (t_high, t_low)
    clamp_to: str  # "value" (strength x max, everywhere), "class-map" (x target's mean map), "exemplar" (x its exemplar's)
    target: Target  # the concept (of a label set) whose maps "class-map" clamps to
    mask: torch.Tensor | None = None  # [H, W] in [0, 1]: where the clamp applies (None: everywhere)
    also: list[Cell] = field(default_factory=list)  # further SAEs: the target's suggested features, clamped alike


def cell_choices(state: AppState) -> list[tuple[str, str]]:
    """Every (block, timestep) of the release as "hook:t" (how steering.json writes cells), for "also steer at"."""
    return [(f"{hook} at t={t}", Cell(hook, t).spec) for hook in state.release.hooks for t in state.release.timesteps]


def read_also(state: AppState, value: Any, main: Cell) -> list[Cell]:
    """The further SAEs to steer at: cells written "hook:t" (one, or a list; None for none), read with
    the main SAE's kind (spatial or pooled); the main cell and repeats are dropped."""
    if value in (None, "", []):
        return []
    specs = [value] if isinstance(value, str) else value
    if not isinstance(specs, list | tuple):
        raise ValueError(f"'also steer at' takes cells written HOOK:T (e.g. up_blocks.0:100), one or a list; got {value!r:.60}")
    cells: list[Cell] = []
    for spec in specs:
        if not isinstance(spec, str):
            raise ValueError(f"'also steer at' takes cells written HOOK:T (e.g. up_blocks.0:100); got {spec!r:.60}")
        parsed = Cell.parse(spec)
        cell = state.cell(parsed.hook, parsed.timestep, main.pooling)
        if cell != main and cell not in cells:
            cells.append(cell)
    return cells


def read_request(state: AppState, condition: Any, seed: Any, steps: Any, guidance: Any, hook: str, timestep: Any,
                 pooling: str, features: Any, clamp_to: Any, target: Any, strength: Any, t_high: Any, t_low: Any,
                 negative_prompt: Any = None, mask: Any = None,
                 mask_blobs: MutableMapping[str, Any] | None = None, also_at: Any = None) -> SteeringRequest:
    """The checked request from /steer's raw inputs (ValueError saying what was wrong with any of them);
    ``mask_blobs`` is the painter's blob store (see :func:`revelio.app.masks.read_mask`)."""
    cell = state.cell(hook, timestep, pooling)
    sampling = read_sampling(state, condition, seed, steps, guidance, negative_prompt)
    last = state.backbone.num_train_timesteps - 1
    high = whole(t_high, "window start (t high)", 0, last)
    low = whole(t_low, "window end (t low)", 0, last)
    if low > high:
        raise ValueError(f"the window runs from t high down to t low; got t high {high} < t low {low}")
    return SteeringRequest(
        **vars(sampling), cell=cell, features=state.check_features(cell, features),
        strength=number(strength, "clamp value", *STRENGTH), window=(high, low), clamp_to=clamp_mode(clamp_to, cell.pooling),
        target=state.check_target(target), mask=read_mask(mask, mask_blobs), also=read_also(state, also_at, cell),
    )


@dataclass(frozen=True)
class SteeringDefaults:
    """What the Steer tab starts with: the SAE, how many features, how hard, when, and further SAEs."""

    cell: Cell
    count: int
    strength: float
    window: tuple[int, int]  # (t_high, t_low)
    also: tuple[Cell, ...] = ()  # further SAEs steered at once (the measurement's other cells)
    clamp_to: str = "class-map"  # "exemplar" where the measurement clamped to its chosen images' maps
    counts: tuple[tuple[str, int], ...] = ()  # (class, features) where the measurement chose other than ``count``


def steering_defaults(state: AppState) -> SteeringDefaults:
    """The setting the release's steering measurement (metrics/steering.json) chose within its
    side-effect budget, when it measured spatial SAEs of this release clamped to class maps (the
    first of its ``cells`` is the main SAE, the others are steered at once). Otherwise the last
    decoder block (highest resolution, which shapes the image most directly) at the default
    timestep, 16 features at twice their class maps, over the high-noise half of the schedule
    (where class shape is decided, at half the cost of every step)."""
    default, steps = state.default_cell, state.backbone.num_train_timesteps
    fallback = SteeringDefaults(Cell(state.release.hooks[-1], default.timestep, default.pooling), 16, 2.0,
                                (steps - 1, steps // 2))
    try:
        measured = state.release.read_metrics(STEERING, Steering)
    except ArtifactFormatError as err:  # the tab still works from the fallback; say why on the server
        log.warning("ignoring the release's steering measurement: %s", err)
        return fallback
    if not (measured and measured.within_budget and measured.pooling == "none"
            and measured.clamp_to == "class-map" and measured.cells):
        return fallback
    try:
        cell, *also = [state.cell(c.hook, c.timestep, c.pooling) for c in measured.steered_cells]
        high, low = measured.window
    except ValueError:  # measured on SAEs this release no longer has (or a window that is no (high, low))
        return fallback
    return SteeringDefaults(cell, min(measured.features_per_class, COUNT_SLIDER[1]), measured.strength,
                            (min(high, steps - 1), max(low, 0)), tuple(dict.fromkeys(c for c in also if c != cell)),
                            "exemplar" if state.exemplar_rows() else "class-map",
                            tuple((name, min(n, COUNT_SLIDER[1])) for name, n in measured.class_features_per_class.items()))
