"""The main window: a sidebar (Models, Forget, Jobs, Chat, Settings), the pages, and a status bar with the compute
backend, the loaded model and the memory in use."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QSettings, QSize, Qt, QTimer
from PySide6.QtGui import QCloseEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (QApplication, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QMainWindow,
                               QStackedWidget, QStyle, QWidget)

from ..engine.fsutil import human_bytes
from .dialogs import confirm
from .pages.chat import ChatPage
from .pages.forget import ForgetWizard
from .pages.jobs import JobsPage
from .pages.models import ModelsPage
from .pages.settings import SettingsPage
from .services import Services
from .workers import MlxWorker

PAGES = ("Models", "Forget", "Jobs", "Chat", "Settings")
ICONS = (QStyle.StandardPixmap.SP_DriveHDIcon, QStyle.StandardPixmap.SP_BrowserReload,
         QStyle.StandardPixmap.SP_FileDialogDetailedView, QStyle.StandardPixmap.SP_MessageBoxQuestion,
         QStyle.StandardPixmap.SP_FileDialogInfoView)
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
        for name, icon in zip(PAGES, ICONS):
            item = QListWidgetItem(self.style().standardIcon(icon), name)
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

        # status bar: backend, loaded model, memory, what the worker is doing
        self.backend_label = QLabel("Backend: detecting…")
        self.model_label = QLabel("Model: none loaded")
        self.memory_label = QLabel("")
        self.busy_label = QLabel("")
        bar = self.statusBar()
        for w in (self.backend_label, self.model_label, self.memory_label):
            bar.addPermanentWidget(w)
        bar.addWidget(self.busy_label)
        worker.model_changed.connect(lambda name: self.model_label.setText(f"Model: {name or 'none loaded'}"))
        worker.busy_changed.connect(self._show_busy)
        self.memory_timer = QTimer(self)
        self.memory_timer.timeout.connect(self.update_memory)
        self.memory_timer.start(MEMORY_POLL_MS)
        self.update_memory()
        worker.submit(self._detect_backend, name="detect backend", on_result=self._show_backend)

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
        self.show_page(PAGES.index("Forget"))

    # pages -------------------------------------------------------------------------------------------------------
    def show_page(self, index: int) -> None:
        if self.nav.currentRow() != index:
            self.nav.setCurrentRow(index)  # comes back here through currentRowChanged
            return
        self.stack.setCurrentIndex(index)
        page = self.pages[index]
        refresh = getattr(page, "refresh", None)
        if refresh is not None:
            refresh()

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
        self.busy_label.setText(f"Working: {name}" if name else "")
        if not name:
            self.statusBar().clearMessage()  # "Cancelling…" is over

    def update_memory(self) -> None:
        self.memory_label.setText(f"Memory: {human_bytes(memory_in_use())}")

    # closing -----------------------------------------------------------------------------------------------------
    def stop_for_signal(self) -> None:
        """SIGTERM/SIGINT: no question asked; a running job writes a checkpoint, is marked interrupted, and the
        app quits once the worker has stopped."""
        self.services.worker.cancel_all(reason="signal")
        self.memory_timer.stop()
        self.services.worker.stop()
        QApplication.quit()

    def closeEvent(self, event: QCloseEvent) -> None:
        worker = self.services.worker
        if not worker.idle and not confirm(self, "Quit UnStar Studio",
                                           "Work is still running. Quit anyway? A training job stops at its last "
                                           "checkpoint and can be resumed from Jobs."):
            event.ignore()
            return
        self.memory_timer.stop()
        worker.stop()
        event.accept()
