"""Errors a person can act on: every one says what happened and what to do next."""

from __future__ import annotations


class UnstarError(Exception):
    """Base class for every error the engine shows to a user.

    `message` says what happened, `hint` what to do about it. The CLI prints both on one line and exits non-zero;
    the GUI shows them in a dialog.
    """

    exit_code = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}".strip()


class ModelNotFound(UnstarError):
    exit_code = 3


class ImportFailed(UnstarError):
    exit_code = 4


class UnsupportedModel(ImportFailed):
    pass


class StorageError(UnstarError):
    exit_code = 5


class InvalidInput(UnstarError):
    exit_code = 2


class Cancelled(UnstarError):
    exit_code = 130

    def __init__(self, message: str = "Cancelled.", hint: str = "") -> None:
        super().__init__(message, hint)


class Interrupted(Cancelled):
    """Stopped by a signal (SIGTERM, Ctrl-C) at a safe point: the work so far is kept and the job can resume."""

    def __init__(self, message: str = "Stopped by a signal before it finished; the work so far was kept.",
                 hint: str = "") -> None:
        super().__init__(message, hint)


class DownloadError(UnstarError):
    exit_code = 6


class JobError(UnstarError):
    exit_code = 7
