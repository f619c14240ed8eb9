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
            return cls(plain(exc.message), plain(exc.hint), details, type(exc).__name__)
        return cls(f"Something went wrong: {type(exc).__name__}: {exc}",
                   "Try again; if it happens again, copy the details below into a bug report.", details,
                   type(exc).__name__)


# The engine's messages are written for the command line too; in the app a flag means the control that does the
# same. Whole phrases first (they read right only as a whole), then single flags.
GUI_WORDS: tuple[tuple[str, str], ...] = (
    ("or pass --force to unlearn anyway", "or tick \u201cForget it even if the model doesn't seem to know it\u201d"),
    ("(--alias)", "(under \u201cAlso known as\u201d)"),
    ("pass --force (overwrite=True) to replace it", "tick \u201cReplace an earlier export\u201d to replace it"),
    ("so --force does not replace it", "so it is not replaced"),
    ("Use --resume to continue it, or pick another --out.", "Resume it from the Jobs page."),
    ("Run or resume the forget job first (`unstar forget --resume`).", "Run or resume the job first."),
    ("run `unstar eval` again to evaluate", "run the evaluation again"),
    ("Resume with: unstar forget --resume", "Resume it from the Jobs page:"),
    ("going on because of --force", "going on because the box to forget it anyway is ticked"),
    ("Resuming the created job in", "Starting the job in"),  # the wizard starts every run through resume_forget
    ("--dequantize", "16-bit"), ("--q-bits N", "a bit width"), ("--q-bits", "a bit width"),
    ("--adapted-bits", "changed layers 8-bit"), ("--fused", "the fused model"), ("--adapters", "the adapter"),
    ("--force", "Replace"),
)


def plain(text: str) -> str:
    """An engine message in the app's words: flags named as the controls that do the same, no code quotes."""
    for cli, gui in GUI_WORDS:
        text = text.replace(cli, gui)
    return text.replace("`", "\u201c", 1).replace("`", "\u201d", 1).replace("`", "") if "`" in text else text
