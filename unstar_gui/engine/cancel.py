"""The one cancel token: every long job (samples, training, evaluation, export, chat) checks it between steps and
inside generation loops. The owner (CLI signal handler, the app's worker) sets it from any thread."""

from __future__ import annotations

import threading

from .errors import Cancelled, Interrupted


class CancelToken:
    """A flag the owner of a job sets (from any thread) and the job checks between steps."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = "user"

    def cancel(self, reason: str = "user") -> None:
        """`reason` "signal" (SIGTERM/Ctrl-C) ends the job as interrupted rather than cancelled."""
        if not self._event.is_set():  # the first reason wins: a later plain cancel does not turn a signal into one
            self.reason = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self.cancelled and self.reason == "signal":
            raise Interrupted()
        if self.cancelled:
            raise Cancelled("Cancelled by the user.", "The last checkpoint was kept; resume the job to continue.")
