"""Raw event inputs checked, so whatever a browser or API client sends gets an answer.

Events take raw inputs (``preprocess=False``, see :mod:`revelio.app.events`): a bad upload or an
out-of-range value from an API client reaches these checks and comes back as a message that says
what to send instead of a framework error. Numbers are checked here once for every endpoint:
JSON's ``Infinity``, ``NaN`` and ``1e999``, booleans, fractions where a whole number is meant,
text that is not a number, each gets its own message. Messages never carry a server path
(:func:`scrub`: an absolute path becomes its file name).

These checks know nothing of the app's state: they are given the names and sizes to check against.
"""

from __future__ import annotations

import math
import re
from typing import Any

from revelio.grid import Cell

# An absolute POSIX path (two components or more): shown by its last component only.
_PATH = re.compile(r"(?<![\w.~:/-])/(?:[^\s'\"/:,;()\[\]]+/)+([^\s'\"/:,;()\[\]]*)")
MAX_FEATURES = 256  # features clamped at once


def scrub(message: str) -> str:
    """``message`` with absolute server paths replaced by their file names."""
    return _PATH.sub(lambda m: m.group(1) or "(a folder)", message)


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


def class_id(names: list[str], value: Any) -> int:
    """A class of the release (the dataset's labels ``names``: what probes predict), given by name or id."""
    if not names:
        raise ValueError("this release names no classes, so there is no class to steer towards")
    return label_id(names, value)


def feature_id(value: Any, cell: Cell, d_sae: int) -> int:
    """A feature id of ``cell``'s SAE of ``d_sae`` features (a whole number, or one written as text)."""
    feature = whole(value, "a feature id")
    if not 0 <= feature < d_sae:
        raise ValueError(f"feature {feature} does not exist: the SAE {cell} has features 0..{d_sae - 1}")
    return feature


def feature_ids(values: Any, cell: Cell, d_sae: int) -> list[int]:
    """Features of ``cell``'s SAE from a list of ids (or one id, or None for none), each once, in order."""
    if values is None or isinstance(values, (int, str)):
        values = [] if values is None else [values]
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"features must be a list of feature ids; got {_shown(values)}")  # noqa: TRY004 - a user error
    if len(values) > MAX_FEATURES:
        raise ValueError(f"clamp at most {MAX_FEATURES} features at once; got {len(values)}")
    return list(dict.fromkeys(feature_id(v, cell, d_sae) for v in values))
