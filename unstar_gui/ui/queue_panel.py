"""The work queue, made visible: what the one model worker runs now and what waits behind it, each with Cancel.

All model work goes through one worker thread (workers.py), so an import or a chat question started during training
waits, sometimes for minutes. The status bar's queue button says what runs and how much waits; its popup lists every
task with its state and a Cancel button.
"""

from __future__ import annotations

from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QToolButton, QVBoxLayout, QWidget

from .workers import MlxWorker, TaskHandle

STATE_TEXT = {"running": "Running", "waiting": "Waiting", "stopping": "Stopping…"}
PANEL_WIDTH = 420


def task_title(handle: TaskHandle) -> str:
    """Task names are written in lower case for sentences ("waiting for import x"); a list starts them upper case."""
    return handle.name[:1].upper() + handle.name[1:]


class QueueRow(QWidget):
    """One task: its name, its state, Cancel."""

    def __init__(self, handle: TaskHandle) -> None:
        super().__init__()
        self.handle = handle
        self.name = QLabel(task_title(handle))
        self.name.setWordWrap(True)
        self.state = QLabel(STATE_TEXT.get(handle.state, handle.state))
        self.state.setObjectName("hint")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(handle.state != "stopping")
        self.cancel_btn.clicked.connect(handle.cancel)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 2, 0, 2)
        layout.addWidget(self.name, 1)
        layout.addWidget(self.state)
        layout.addWidget(self.cancel_btn)


class QueuePanel(QFrame):
    """Every queued task, rebuilt whenever the worker's queue changes. Shown as a popup from the status bar."""

    def __init__(self, worker: MlxWorker, parent: QWidget | None = None) -> None:
        super().__init__(parent, Qt.WindowType.Popup)
        self.setObjectName("queuePanel")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setFixedWidth(PANEL_WIDTH)
        self.worker = worker
        self.list_layout = QVBoxLayout()
        title = QLabel("Model work")
        font = title.font()
        font.setBold(True)
        title.setFont(font)
        hint = QLabel("One task runs at a time; the others wait their turn.")
        hint.setObjectName("hint")
        hint.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(hint)
        layout.addLayout(self.list_layout)
        self.row_widgets: list[QueueRow] = []
        worker.queue_changed.connect(self.rebuild)
        self.rebuild()

    def rows(self) -> list[tuple[str, str]]:
        """(name, state) per task shown, in queue order."""
        return [(row.handle.name, row.handle.state) for row in self.row_widgets]

    def rebuild(self) -> None:
        while self.list_layout.count():
            widget = self.list_layout.takeAt(0).widget()
            if widget is not None:
                widget.deleteLater()
        self.row_widgets = [QueueRow(handle) for handle in self.worker.tasks()]
        for row in self.row_widgets:
            self.list_layout.addWidget(row)
        if not self.row_widgets:
            empty = QLabel("Nothing is running.")
            empty.setObjectName("hint")
            self.list_layout.addWidget(empty)
        self.adjustSize()


class QueueButton(QToolButton):
    """The status bar's summary of the queue ("Running: import x · 1 waiting"); a click opens the panel."""

    def __init__(self, worker: MlxWorker, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("queueButton")
        self.setAutoRaise(True)
        self.setToolTip("Show what the model is working on and what waits; cancel any of it.")
        self.worker = worker
        self.panel = QueuePanel(worker, self)
        self.clicked.connect(self.show_panel)
        worker.queue_changed.connect(self.update_text)
        self.update_text()

    def update_text(self) -> None:
        tasks = self.worker.tasks()
        running = [t for t in tasks if t.state != "waiting"]
        waiting = len(tasks) - len(running)
        if not tasks:
            self.setText("Idle")
            return
        now = f"Running: {running[0].name}" if running else "Starting…"
        self.setText(now + (f"  ·  {waiting} waiting" if waiting else "") + "  ▴")  # ▴: a click opens the list

    def show_panel(self) -> None:
        """Open the list just above the button, kept inside the screen."""
        self.panel.rebuild()
        size = self.panel.sizeHint()
        corner = self.mapToGlobal(QPoint(0, 0))
        x, y = corner.x(), corner.y() - size.height() - 4
        screen = self.screen().availableGeometry() if self.screen() is not None else None
        if screen is not None:
            x = max(screen.left(), min(x, screen.right() - size.width()))
            y = max(screen.top(), y)
        self.panel.move(x, y)
        self.panel.show()
