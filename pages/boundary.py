"""The error boundary: an unexpected error becomes one sentence and an id, never a traceback.

Tracebacks name server paths and code, so the user sees an error id and the server log gets
the full traceback under that id (the operator greps the log for it). Streamlit's own
control flow (st.rerun, st.stop) derives from BaseException and passes through untouched.
.streamlit/config.toml sets ``client.showErrorDetails = "none"`` for anything that still
escapes.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any, TypeVar

import streamlit as st

log = logging.getLogger("cnnlab")
F = TypeVar("F", bound=Callable[..., Any])


def report(exc: BaseException, where: str) -> str:
    """Log ``exc`` with a new error id and show the user one sentence with that id."""
    error_id = uuid.uuid4().hex[:10]
    log.error("error id %s on %s", error_id, where, exc_info=exc)
    st.error(
        f"Something went wrong on this page (error id {error_id}). Reload the page and try "
        "again; if it happens again, tell whoever runs this server the error id: the details "
        "are in the server log."
    )
    return error_id


@contextmanager
def error_boundary(where: str):
    """Catch any Exception inside: report it instead of showing a traceback."""
    try:
        yield
    except Exception as exc:  # the boundary: every unexpected error ends here
        report(exc, where)


def guarded(fn: F) -> F:
    """``fn`` (e.g. a fragment that reruns on its own) inside an error boundary."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with error_boundary(fn.__qualname__):
            return fn(*args, **kwargs)
        return None

    return wrapper  # type: ignore[return-value]
