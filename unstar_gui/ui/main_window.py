"""The main window: a sidebar (Models, Forget, Jobs, Chat, Settings), the pages, and a status bar with the work
queue, the compute backend, the loaded model and the memory in use. The window's size and place and the last page
shown are kept in the app's preferences across restarts."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QSettings, QSignalBlocker, QSize, Qt, QTimer
from PySide6.QtGui import QCloseEvent, QIcon, QKeySequence, QShortcut
from PySide6.QtWidgets import (QApplication, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QMainWindow,
                               QStackedWidget, QStyle, QWidget)

from ..engine.fsutil import human_bytes
from .dialogs import confirm
from .icons import chat_icon, settings_icon
from .pages.chat import ChatPage
from .pages.forget import ForgetWizard
from .pages.jobs import JobsPage
from .pages.models import ModelsPage
from .pages.settings import SettingsPage
from .queue_panel import QueueButton
from .services import Services
from .workers import MlxWorker

PAGES = ("Models", "Forget", "Jobs", "Chat", "Settings")
STANDARD_ICONS = {"Models": QStyle.StandardPixmap.SP_DriveHDIcon, "Forget": QStyle.StandardPixmap.SP_BrowserReload,
                  "Jobs": QStyle.StandardPixmap.SP_FileDialogDetailedView}
DRAWN_ICONS = {"Chat": chat_icon, "Settings": settings_icon}  # Qt has no fitting standard icon for these
START_PAGE = "Forget"
PREF_GEOMETRY, PREF_PAGE = "window/geometry", "window/page"
MEMORY_POLL_MS = 2000


def memory_in_use() -> int:
    """This process's resident memory (MLX weights live there on CPU; unified memory on Apple silicon)."""
    try:
        with open("/proc/self/statm") as fh:
            import os

            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # macOS: bytes (peak, the best it offers)
        return int(peak if sys.platform == "darwin" else peak * 1024)


class MainWindow(QMainWindow):
    def __init__(self, worker: MlxWorker | None = None, prefs: QSettings | None = None) -> None:
        super().__init__()
        self.setWindowTitle("UnStar Studio")
        self.resize(1200, 800)
        self.setMinimumSize(QSize(900, 600))
        self.services = Services(worker or MlxWorker(), prefs)
        worker = self.services.worker

        self.nav = QListWidget()
        self.nav.setObjectName("sidebar")
        self.nav.setFixedWidth(170)
        self.nav.setIconSize(QSize(20, 20))
        for name in PAGES:
            item = QListWidgetItem(self.page_icon(name), name)
            item.setSizeHint(QSize(150, 38))
            self.nav.addItem(item)
        self.models_page = ModelsPage(self.services)
        self.forget_page = ForgetWizard(self.services)
        self.jobs_page = JobsPage(self.services)
        self.chat_page = ChatPage(self.services)
        self.settings_page = SettingsPage(self.services)
        self.pages = [self.models_page, self.forget_page, self.jobs_page, self.chat_page, self.settings_page]
        self.stack = QStackedWidget()
        for page in self.pages:
            page.setContentsMargins(12, 8, 12, 4)
            self.stack.addWidget(page)
        self.nav.currentRowChanged.connect(self.show_page)

        central = QWidget()
        layout = QHBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.nav)
        layout.addWidget(self.stack, 1)
        self.setCentralWidget(central)

        # status bar: the work queue, backend, loaded model, memory
        self.backend_label = QLabel("Backend: detecting…")
        self.model_label = QLabel("Model: none loaded")
        self.memory_label = QLabel("")
        self.queue_button = QueueButton(worker, self)
        self.queue_panel = self.queue_button.panel
        bar = self.statusBar()
        for w in (self.backend_label, self.model_label, self.memory_label):
            bar.addPermanentWidget(w)
        bar.addWidget(self.queue_button)
        worker.model_changed.connect(lambda name: self.model_label.setText(f"Model: {name or 'none loaded'}"))
        worker.busy_changed.connect(self._show_busy)
        self.memory_timer = QTimer(self)
        self.memory_timer.timeout.connect(self.update_memory)
        self.memory_timer.start(MEMORY_POLL_MS)
        self.update_memory()
        worker.submit(self._detect_backend, name="checking the compute backend", on_result=self._show_backend)

        # pages talk through signals, never through each other's widgets
        self.jobs_page.reopen_requested.connect(self.open_job)
        self.jobs_page.resume_requested.connect(lambda d: self.open_job(d, resume=True))
        self.forget_page.finished.connect(lambda _: self.show_page(PAGES.index("Jobs")))
        self.settings_page.data_dir_changed.connect(self.forget_page.reset)
        self.models_page.models_changed.connect(self._models_changed)

        for i in range(len(PAGES)):
            QShortcut(QKeySequence(f"Ctrl+{i + 1}"), self, activated=lambda i=i: self.show_page(i))
        QShortcut(QKeySequence("Ctrl+N"), self, activated=self.new_forget)
        QShortcut(QKeySequence(Qt.Key.Key_Escape), self, activated=self.cancel_current)
        self.restore_window()

    # pages -------------------------------------------------------------------------------------------------------
    def page_icon(self, name: str) -> QIcon:
        drawn = DRAWN_ICONS.get(name)
        return drawn() if drawn is not None else self.style().standardIcon(STANDARD_ICONS[name])

    def show_page(self, index: int) -> None:
        current = self.stack.currentIndex()
        if current != index and not self._may_leave(current):
            with QSignalBlocker(self.nav):
                self.nav.setCurrentRow(current)  # the person chose to stay: the sidebar shows the page again
            return
        if self.nav.currentRow() != index:
            self.nav.setCurrentRow(index)  # comes back here through currentRowChanged
            return
        self.stack.setCurrentIndex(index)
        if self.services.prefs is not None:
            self.services.prefs.setValue(PREF_PAGE, PAGES[index])
        page = self.pages[index]
        refresh = getattr(page, "refresh", None)
        if refresh is not None:
            refresh()

    def _may_leave(self, index: int) -> bool:
        """A page with edits in progress (Settings) asks before it is left; True when leaving is fine."""
        can_leave = getattr(self.pages[index], "can_leave", None) if 0 <= index < len(self.pages) else None
        return can_leave is None or bool(can_leave())

    def new_forget(self) -> None:
        if not self.services.worker.idle and not confirm(
                self, "New forget job", "Work is still running. Start a new job anyway? The running work is "
                                        "cancelled; an interrupted job can be resumed from Jobs."):
            return
        self.forget_page.reset()
        self.show_page(PAGES.index("Forget"))

    def open_job(self, job_dir: str, resume: bool = False) -> None:
        self.show_page(PAGES.index("Forget"))
        self.forget_page.open_job(Path(job_dir), resume=resume)

    def cancel_current(self) -> None:
        cancel = getattr(self.pages[self.stack.currentIndex()], "cancel_current", None)
        if cancel is not None and cancel():
            self.statusBar().showMessage("Cancelling…", 3000)

    def _models_changed(self) -> None:
        if self.forget_page.state.job is None:
            self.forget_page.steps[0].reset_models_keep_choice()

    # status bar --------------------------------------------------------------------------------------------------
    @staticmethod
    def _detect_backend(ctx):
        from ..engine.backend import detect

        return detect()

    def _show_backend(self, backend) -> None:
        self.services.backend = backend
        self.backend_label.setText(f"Backend: {backend.label}")

    def _show_busy(self, name: str) -> None:
        if not name:
            self.statusBar().clearMessage()  # "Cancelling…" is over

    def update_memory(self) -> None:
        self.memory_label.setText(f"Memory: {human_bytes(memory_in_use())}")

    # window state ------------------------------------------------------------------------------------------------
    def restore_window(self) -> None:
        """The size, place and page of the last session (the default size and the Forget page the first time)."""
        prefs = self.services.prefs
        geometry = prefs.value(PREF_GEOMETRY) if prefs is not None else None
        if geometry:
            self.restoreGeometry(geometry)
        page = prefs.value(PREF_PAGE) if prefs is not None else None
        self.show_page(PAGES.index(page) if page in PAGES else PAGES.index(START_PAGE))

    def save_window(self) -> None:
        prefs = self.services.prefs
        if prefs is None:
            return
        prefs.setValue(PREF_GEOMETRY, self.saveGeometry())
        prefs.setValue(PREF_PAGE, PAGES[self.stack.currentIndex()])
        prefs.sync()

    # closing -----------------------------------------------------------------------------------------------------
    def stop_for_signal(self) -> None:
        """SIGTERM/SIGINT: no question asked; a running job writes a checkpoint, is marked interrupted, and the
        app quits once the worker has stopped."""
        self.save_window()
        self.services.worker.cancel_all(reason="signal")
        self.memory_timer.stop()
        self.services.worker.stop()
        QApplication.quit()

    def closeEvent(self, event: QCloseEvent) -> None:
        worker = self.services.worker
        if not self._may_leave(self.stack.currentIndex()) or (
                not worker.idle and not confirm(self, "Quit UnStar Studio",
                                                "Work is still running. Quit anyway? A training job stops at its "
                                                "last checkpoint and can be resumed from Jobs.")):
            event.ignore()
            return
        self.save_window()
        self.memory_timer.stop()
        worker.stop()
        event.accept()
