"""Raw event inputs checked, so whatever a browser or API client sends gets an answer.

Events take raw inputs (``preprocess=False``): a bad upload or an out-of-range value from an API
client reaches these checks and comes back as a message that says what to send (``gr.Error``)
instead of a framework error, and the server keeps serving.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import gradio as gr

from revelio.app.state import AppState
from revelio.grid import Cell


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the library's input errors into messages shown to the user (and API clients)."""

    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        try:
            return fn(*args)
        except (ValueError, FileNotFoundError) as err:  # ImageError is a ValueError
            raise gr.Error(str(err)) from None

    return wrapper


def wire(trigger: Callable[..., Any], fn: Callable[..., Any], inputs: Any, outputs: Any, **kwargs: Any) -> None:
    """Attach ``fn`` to an event (``button.click``, ...) the app's way: raw inputs, errors as messages."""
    trigger(user_errors(fn), inputs, outputs, preprocess=False, **kwargs)


def number(value: Any, name: str, low: float, high: float, whole: bool = False) -> float:
    """``value`` as a number in ``low..high`` (a whole one if ``whole``)."""
    try:
        parsed = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in {low:g}..{high:g}; got {value!r}") from None
    if not low <= parsed <= high or (whole and not parsed.is_integer()):
        kind = "a whole number" if whole else "a number"
        raise ValueError(f"{name} must be {kind} in {low:g}..{high:g}; got {value!r}")
    return parsed


def label_id(names: list[str], value: Any, what: str = "class") -> int:
    """One of ``names``, given by name or id."""
    if isinstance(value, str) and value in names:
        return names.index(value)
    try:
        return int(number(value, what, 0, len(names) - 1, whole=True))
    except ValueError:
        shown = ", ".join(map(repr, names[:10])) + (", ..." if len(names) > 10 else "")
        raise ValueError(f"the {what} must be one of {shown} or an id in 0..{len(names) - 1}; got {value!r}") from None


def class_id(state: AppState, value: Any) -> int:
    """A class of the release (the dataset's labels: what probes predict), given by name or id."""
    if not state.class_names:
        raise ValueError("this release names no classes, so there is no class to steer towards")
    return label_id(state.class_names, value)


def feature_ids(state: AppState, cell: Cell, values: Any) -> list[int]:
    """Features of ``cell``'s SAE from a list of ids (or one id, or None for none)."""
    if values is None or isinstance(values, (int, str)):
        values = [] if values is None else [values]
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"features must be a list of feature ids; got {values!r}")  # noqa: TRY004 - a user error
    return [state.check_feature(cell, v) for v in values]
