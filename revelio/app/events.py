"""Every event is wired the app's way: raw inputs, errors as messages, images as immutable files.

Events take raw inputs (``preprocess=False``) and check them themselves (:mod:`revelio.app.inputs`),
so whatever a browser or API client sends gets an answer and the server keeps serving. What the
user can fix comes back as a message that says what to send (``gr.Error``, server paths scrubbed);
an unexpected failure is logged on the server and reported as one plain sentence, without its details.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import gradio as gr

from revelio.app.inputs import scrub
from revelio.app.outputs import to_files
from revelio.errors import RevelioError

log = logging.getLogger("revelio.app")

# What the user can fix: our checks (ImageError is a ValueError), anything revelio refuses (a
# RevelioError), a release lacking a file, a number too large to convert. Anything else is the
# server's fault: logged, not described.
USER_ERRORS = (ValueError, RevelioError, FileNotFoundError, OverflowError)
INTERNAL = "something went wrong on the server while answering this request (it has been logged); try again or change the inputs"


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
