"""Error handling and progress adapters shared by every tab."""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import math
import threading

import gradio as gr
import torch

from app.state import UserState
from tacq.errors import Cancelled, TacqError
from tacq.progress import Progress, cancellable
from tacq.quant.recipe import Recipe

log = logging.getLogger("tacq.app")
HEAVY = "heavy"  # concurrency id shared by every job that uses the whole CPU/GPU
PARSE = "parse"  # reading uploads and tables: a small queue of its own
# What the Circuit and Quantize screens open on: one bit width for both, the measured
# preset's settings on the Quantize screen and its kept ratio on the Circuit slider (the
# paper's settings are one click away there, under Settings)
START_RECIPE = Recipe.preset("measured", 3)


def _user_error(e: BaseException) -> gr.Error:
    if isinstance(e, Cancelled):
        return gr.Error(str(e), title="Stopped")
    if isinstance(e, TacqError):
        return gr.Error(str(e))
    if isinstance(e, (torch.OutOfMemoryError, MemoryError)):
        return gr.Error("Out of memory. Use fewer or shorter examples, or delete a variant.")
    log.exception("internal error")
    return gr.Error("Internal error; see the server log.")


def _check_session(fn, args) -> None:
    """A handler of a page's session called with no session (an API client that never
    loaded the page) gets a message, not an AttributeError deep inside."""
    if args and args[0] is None and _takes_user(fn):
        raise TacqError("No session: open the app's page first (its load starts a session).")


@functools.cache
def _takes_user(fn) -> bool:
    params = list(inspect.signature(fn).parameters.values())
    return bool(params) and "UserState" in str(params[0].annotation)


@contextlib.contextmanager
def _activity(args):
    """A handler of a user's session runs as that user's activity: the idle sweep never
    releases a user while one runs (UserState.enter / leave)."""
    user = args[0] if args and isinstance(args[0], UserState) else None
    if user is None:
        yield
        return
    user.enter()
    try:
        yield
    finally:
        user.leave()


def handles_errors(fn):
    """Turn library errors into a message in the page; anything else is logged in full."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                _check_session(fn, args)
                with _activity(args):
                    yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as e:  # noqa: BLE001 - every error becomes a message
                raise _user_error(e) from e

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            _check_session(fn, args)
            with _activity(args):
                return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as e:  # noqa: BLE001 - every error becomes a message
            raise _user_error(e) from e

    return wrapper


def cancel_handler(kind: str, message: str = "Cancelling…"):
    """The handler of a Cancel button: stop this session's `kind` job (it stops at its next
    progress step) and say so."""

    @handles_errors
    def on_cancel(user: UserState):
        user.jobs.cancel(kind)
        return message

    return on_cancel


def gradio_progress(bar: gr.Progress, stop: threading.Event) -> Progress:
    """The library's progress hook drawing a gr.Progress bar; raises Cancelled once `stop`
    (the job's own token, UserState.jobs) is set."""

    def draw(frac: float, label: str) -> None:
        bar(min(max(frac, 0.0), 1.0), desc=label)

    return cancellable(draw, stop)


def variant_choices(
    names: list[str], n_lists: int, first: str | None = None, second: str | None = None
) -> list:
    """Dropdown updates for every variant list: all of them offer `names`; the last one (the
    chat's second column) preselects `second` so two different variants are compared.
    Defaults: the newest variant, and the one before it."""
    first = first or (names[-1] if names else None)
    if second is None:
        second = names[-2] if len(names) > 1 else None
    values = [first] * (n_lists - 1) + [second]
    return [gr.update(choices=names, value=v) for v in values]  # one dict each: Gradio
    # consumes an update as it applies it, so a dict shared by two outputs reaches one


def need(value, message: str):
    """Return value, or raise the message for the page when it is missing."""
    if value is None or value == [] or value == {}:
        raise gr.Error(message)
    return value


def whole(value: float | None, label: str, minimum: int = 0) -> int:
    """A whole-number field's value, or a message. Its gr.Number has precision=None: with
    precision 0, Gradio rounds before any handler runs, and a scripted NaN raised there and
    reached the caller as an empty error (a browser never sends NaN; a script can)."""
    if value is None or not math.isfinite(float(value)) or float(value) < minimum:
        raise TacqError(f"{label} must be a whole number of at least {minimum}.")
    return int(round(float(value)))
