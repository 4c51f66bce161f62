"""What the Steer tab says before Generate: settings measured not to steer, and what a selection used.

The advice follows the controls (SAE, clamp mode, value), so a user learns that a setting will do
little before waiting for it. What was measured comes from docs/steering.md on the bundled release
(no release file records it): constant clamps, pooled or spatial, did not steer that model towards
a class, and a painted mask kept the change inside it only at up_blocks.0.
"""

from __future__ import annotations

from typing import Any

from revelio.app.state import AppState, Target
from revelio.bundled import bundled_release_dir
from revelio.grid import Cell
from revelio.steering.selection import steering_features

LOCAL_MASK_HOOKS = ("up_blocks.0",)  # the bundled release's blocks where a mask kept the change local
POOLED = ("**A pooled SAE will not steer towards the class.** Its edit moves every location of the image the same "
          "way; on the bundled model, constant clamps of pooled features changed the image but only 0.02–0.10 of "
          "images' class. Class identity lives in *where* features fire: choose the spatial SAE and clamp to the "
          "target class's map.")
CONSTANT = ("**Constant clamps rarely change the class.** On the bundled model, clamping spatial features to a value "
            "(5–20 × their max) changed 0.02–0.10 of images' class; 0 switches features off, which lowers a class only "
            "for some classes and blocks. To steer towards the target class, clamp to its map.")
SPREADING_MASK = ("**A painted mask will not keep the change inside it at {hook}**: on the bundled model the same "
                  "class-map clamp inside a painted half redrew the whole image there; masks kept it local at {local}.")


def is_bundled(state: AppState) -> bool:
    """Whether the app serves the bundled release, where docs/steering.md measured what steers."""
    try:
        return state.release.root.resolve() == bundled_release_dir().resolve()
    except OSError:
        return False


def advice(state: AppState, hook: Any, pooling: Any, clamp_to: Any) -> str:
    """Notes on settings measured (on the bundled release) or known not to steer; "" when none apply."""
    notes = []
    if pooling == "mean":
        notes.append(POOLED)
    elif clamp_to == "value" and is_bundled(state):
        notes.append(CONSTANT)
    if pooling == "none" and is_bundled(state) and hook not in LOCAL_MASK_HOOKS:
        notes.append(SPREADING_MASK.format(hook=hook, local=", ".join(LOCAL_MASK_HOOKS)))
    return "\n\n".join(notes)


def suggested(state: AppState, cell: Cell, target: Target, count: int) -> list[int]:
    """The features that steer towards ``target`` at ``cell`` ('Suggest features', and every further
    SAE steered at once): from its class maps on spatial SAEs; on pooled ones the features labelled
    with it (:mod:`revelio.analysis.labels`), heaviest on it first. There may be fewer than ``count``."""
    stats = state.stats(cell, target.label_set)
    if cell.pooling != "none":
        name = state.names(target.label_set)[target.index]
        labels = state.labels(cell, target.label_set)
        ranked = steering_features(stats, target.index, state.sae(cell).d_sae, min_purity=0.0)
        return [f for f in ranked if labels[f].name == name][:count]
    return steering_features(stats, target.index, count, maps=state.class_maps(cell, target.label_set))


def selection_reason(state: AppState, cell: Cell, feature: int, target: Target) -> str:
    """What ranks ``feature`` for ``target`` (what 'Suggest features' used): on spatial SAEs its
    extra activation on the target's held-out images over all of them; on pooled ones its share on it."""
    name = state.names(target.label_set)[target.index]
    if cell.pooling == "none":
        maps = state.class_maps(cell, target.label_set)
        on_target, overall = maps.maps[target.index, ..., feature], maps.overall[..., feature]
        excess = float((on_target - overall).clamp_min(0).sum())
        ratio = float(on_target.sum() / overall.sum()) if float(overall.sum()) > 0 else float("inf")
        return f"+{excess:.3g} on {name} maps, {ratio:.1f}× its average"
    share = float(state.stats(cell, target.label_set).label_distribution[feature, target.index])
    return f"{100 * share:.0f}% of its activation on {name}"


def selection_table(state: AppState, cell: Cell, features: list[int], target: Target) -> str:
    """The chosen features, their labels and what ranks each for the target class, as a markdown list."""
    if not features:
        return "No features chosen: pick some, or use **Suggest features**."
    how = ("extra activation on the target's held-out images over their average (summed over locations): "
           "what 'Suggest features' ranks spatial features by" if cell.pooling == "none" else
           "the share of activation on the target: 'Suggest features' picks pooled features labelled with it")
    lines = [f"{state.feature_label(cell, f)} · {selection_reason(state, cell, f, target)}" for f in features]
    return f"Chosen features ({how}):\n\n" + "\n".join(f"- {line}" for line in lines)
