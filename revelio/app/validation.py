"""Raw event inputs checked, so whatever a browser or API client sends gets an answer.

Events take raw inputs (``preprocess=False``): a bad upload or an out-of-range value from an API
client reaches these checks and comes back as a message that says what to send (``gr.Error``)
instead of a framework error, and the server keeps serving. Numbers are checked here once for
every endpoint: JSON's ``Infinity``, ``NaN`` and ``1e999``, booleans, fractions where a whole
number is meant, text that is not a number, each gets its own message. Messages never carry a
server path (an absolute path becomes its file name) and an unexpected failure is logged on the
server and reported as one plain sentence, without its details.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gradio as gr

from revelio.app.outputs import to_files

if TYPE_CHECKING:
    from revelio.app.state import AppState
    from revelio.grid import Cell

log = logging.getLogger("revelio.app")

# What the user can fix: our checks (ImageError is a ValueError), a release lacking a file, a
# number too large to convert. Anything else is the server's fault: logged, not described.
USER_ERRORS = (ValueError, FileNotFoundError, OverflowError)
INTERNAL = "something went wrong on the server while answering this request (it has been logged); try again or change the inputs"
# An absolute POSIX path (two components or more): shown by its last component only.
_PATH = re.compile(r"(?<![\w.~:/-])/(?:[^\s'\"/:,;()\[\]]+/)+([^\s'\"/:,;()\[\]]*)")


def scrub(message: str) -> str:
    """``message`` with absolute server paths replaced by their file names."""
    return _PATH.sub(lambda m: m.group(1) or "(a folder)", message)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the library's input errors into messages shown to the user (and API clients)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error as err:
            err.message = scrub(str(err.message))
            raise
        except USER_ERRORS as err:
            raise gr.Error(scrub(str(err)) or type(err).__name__) from None
        except Exception:
            log.exception("unexpected error in %s", getattr(fn, "__qualname__", fn))
            raise gr.Error(INTERNAL) from None

    return wrapper


def files_out(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Every image ``fn`` returns handed to Gradio as an immutable file (see :mod:`revelio.app.outputs`)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return to_files(fn(*args, **kwargs))

    return wrapper


def wire(trigger: Callable[..., Any], fn: Callable[..., Any], inputs: Any, outputs: Any, **kwargs: Any) -> Any:
    """Attach ``fn`` to an event (``button.click``, ...) the app's way: raw inputs, errors as
    messages, images as immutable files. Returns the event (for ``.then`` / ``.success``)."""
    return trigger(user_errors(files_out(fn)), inputs, outputs, preprocess=False, **kwargs)


def _shown(value: Any) -> str:
    """A sent value as the message quotes it: short, and JSON's words for the special floats."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _limit(x: float) -> str:
    """A limit as people write it: 2147483647, not 2.14748e+09; 0.5, not 0.500000."""
    if float(x).is_integer():
        return f"{int(x):,}" if abs(x) >= 10_000 else str(int(x))
    return f"{x:g}"


def _parse(value: Any, wanted: str, whole: bool) -> float:
    """``value`` (a number, or one written as text) as a finite float; ValueError saying ``wanted``."""
    if isinstance(value, bool) or value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"{wanted}; got {_shown(value)}")
    if isinstance(value, str) and len(value) > 40:
        raise ValueError(f"{wanted}; got text of {len(value)} characters")
    try:
        parsed = float(value.strip() if isinstance(value, str) else value)
    except OverflowError:  # an integer beyond the float range
        raise ValueError(f"{wanted}; got a number far too large") from None
    except (TypeError, ValueError):
        raise ValueError(f"{wanted}; got {_shown(value)}") from None
    if math.isnan(parsed):
        raise ValueError(f"{wanted}; got NaN (not a number)")
    if math.isinf(parsed):
        raise ValueError(f"{wanted}; got {'-' if parsed < 0 else ''}Infinity (or a number too large to represent)")
    if whole and not parsed.is_integer():
        raise ValueError(f"{wanted}; got {_shown(value)}, which is not whole")
    return parsed


def number(value: Any, name: str, low: float, high: float, whole: bool = False) -> float:
    """``value`` as a finite number in ``low..high`` (a whole one if ``whole``); a number written as
    text is read too. Anything else gets a message naming what was sent and what is allowed."""
    wanted = f"{name} must be {'a whole number' if whole else 'a number'} in {_limit(low)}..{_limit(high)}"
    parsed = _parse(value, wanted, whole)
    if not low <= parsed <= high:
        raise ValueError(f"{wanted}; got {_shown(value)}")
    return parsed


def whole(value: Any, name: str, low: int | None = None, high: int | None = None) -> int:
    """``value`` as a whole number (in ``low..high`` when both are given); ints are kept exact."""
    ranged = low is not None and high is not None
    wanted = f"{name} must be a whole number" + (f" in {_limit(low)}..{_limit(high)}" if ranged else "")
    exact = isinstance(value, int) and not isinstance(value, bool)
    parsed = value if exact else int(_parse(value, wanted, whole=True))
    if ranged and not low <= parsed <= high:  # type: ignore[operator]
        raise ValueError(f"{wanted}; got {_shown(value)}")
    return parsed


def choice(value: Any, name: str, choices: list[Any]) -> Any:
    """One of ``choices`` (compared as sent: no conversion)."""
    if isinstance(value, (str, int)) and not isinstance(value, bool) and value in choices:
        return value
    shown = ", ".join(map(repr, choices[:12])) + (", ..." if len(choices) > 12 else "")
    raise ValueError(f"{name} must be one of {shown}; got {_shown(value)}")


def text(value: Any, name: str, limit: int) -> str:
    """``value`` as text of at most ``limit`` characters (None is the empty text)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be text (a string); got {_shown(value)}")  # noqa: TRY004 - a user error
    if len(value) > limit:
        raise ValueError(f"{name} has {len(value)} characters; send at most {limit}")
    return value


def label_id(names: list[str], value: Any, what: str = "class") -> int:
    """One of ``names``, given by name or id."""
    if isinstance(value, str) and value in names:
        return names.index(value)
    try:
        return whole(value, what, 0, len(names) - 1)
    except ValueError:
        shown = ", ".join(map(repr, names[:10])) + (", ..." if len(names) > 10 else "")
        raise ValueError(f"the {what} must be one of {shown} or an id in 0..{len(names) - 1}; got {_shown(value)}") from None


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
        raise ValueError(f"features must be a list of feature ids; got {_shown(values)}")  # noqa: TRY004 - a user error
    if len(values) > 256:
        raise ValueError(f"clamp at most 256 features at once; got {len(values)}")
    return list(dict.fromkeys(state.check_feature(cell, v) for v in values))  # each once, in order
