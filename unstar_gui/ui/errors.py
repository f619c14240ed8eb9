"""What the error dialog shows for a failure, built from an exception: shared by the worker (which catches it) and
the dialogs (which show it), so neither imports the other."""

from __future__ import annotations

import traceback
from dataclasses import dataclass

from ..engine.errors import UnstarError


@dataclass
class ErrorInfo:
    """What the error dialog shows: a summary (message + hint) and expandable details."""

    message: str
    hint: str = ""
    details: str = ""
    kind: str = ""

    @classmethod
    def from_exception(cls, exc: BaseException) -> "ErrorInfo":
        details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if isinstance(exc, UnstarError):
            return cls(exc.message, exc.hint, details, type(exc).__name__)
        return cls(f"Something went wrong: {type(exc).__name__}: {exc}",
                   "Try again; if it happens again, copy the details below into a bug report.", details,
                   type(exc).__name__)
