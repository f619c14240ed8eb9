"""The Forget wizard's step base class: one decision per step, model work in the worker, saved when left.

Engine modules are imported inside the task functions, which run on the worker thread: they import mlx
lazily, and the GUI thread must never touch MLX.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from ...dialogs import show_error
from ...errors import ErrorInfo
from ...workers import TaskHandle

if TYPE_CHECKING:
    from .wizard import ForgetWizard


class Step(QWidget):
    # The step's stable name: job.json's "ui_step" stores it, so a saved job reopens at the same step even when
    # steps are added or reordered (a position index would then point at another one).
    key = ""
    title = ""
    subtitle = ""
    next_label = "Next"
    ready_changed = Signal()

    def __init__(self, wizard: "ForgetWizard") -> None:
        super().__init__()
        self.wizard = wizard
        self.task: TaskHandle | None = None

    @property
    def state(self):
        return self.wizard.state

    def lay_out_table(self, *buttons: QPushButton) -> None:
        """The table steps' layout: a row of buttons and a status line, a progress bar, then `self.table`."""
        self.status = QLabel("")
        self.status.setObjectName("hint")
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        row = QHBoxLayout()
        for b in buttons:
            row.addWidget(b)
        row.addStretch(1)
        row.addWidget(self.status)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.progress)
        layout.addWidget(self.table, 1)

    def reset(self) -> None:
        """Show the wizard state (a new job, or one just reopened)."""

    def enter(self) -> None:
        """The step became visible."""

    def ready(self) -> bool:
        return True

    def busy(self) -> bool:
        return self.task is not None

    def save_draft(self) -> None:
        """Keep what was typed when going Back."""

    def leave(self, proceed: Callable[[bool], None]) -> None:
        """Save into the job folder, then call proceed(True) (or proceed(False) to stay)."""
        self.save_draft()
        proceed(True)

    def run(self, fn: Callable, name: str, on_result: Callable[[Any], None], *,
            on_event: Callable[[Any], None] | None = None, on_cancelled: Callable[[], None] | None = None,
            on_error: Callable[[ErrorInfo], None] | None = None,
            on_done: Callable[[], None] | None = None) -> TaskHandle:
        """Submit a worker task owned by this step; Back/Next stay disabled while it runs."""
        def done() -> None:
            self.task = None
            if on_done is not None:
                on_done()
            self.ready_changed.emit()

        self.task = self.wizard.services.worker.submit(
            fn, name=name, on_event=on_event, on_result=on_result, on_cancelled=on_cancelled,
            on_error=on_error or (lambda info: show_error(self, info)), on_done=done)
        self.ready_changed.emit()
        return self.task

    def cancel_current(self) -> bool:
        if self.task is not None:
            self.task.cancel()
            return True
        return False

    def discard_tasks(self) -> None:
        if self.task is not None:
            self.task.discard()
            self.task = None
