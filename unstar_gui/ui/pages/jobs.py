"""Jobs: every forget job with status, date, model, fact and verdict; reopen, resume, delete."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from ...engine.fsutil import read_json
from ...engine.jobs import delete_job, list_jobs
from ..dialogs import confirm, show_error
from ..services import Services
from ..tables import Column, RowsTable
from .common import PageHeader, job_verdict

RESUMABLE = ("running", "interrupted", "cancelled", "failed")


class JobsPage(QWidget):
    reopen_requested = Signal(str)
    resume_requested = Signal(str)

    def __init__(self, services: Services) -> None:
        super().__init__()
        self.services = services
        self.table = RowsTable([Column("date", "Date"), Column("status", "Status"), Column("model", "Model"),
                                Column("fact", "Fact", stretch=True), Column("verdict", "Verdict", stretch=True)])
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.doubleClicked.connect(lambda _: self.reopen())
        self.open_btn = QPushButton("Open")
        self.open_btn.clicked.connect(self.reopen)
        self.resume_btn = QPushButton("Resume")
        self.resume_btn.clicked.connect(self.resume)
        self.folder_btn = QPushButton("Show folder")
        self.folder_btn.clicked.connect(self.show_folder)
        self.delete_btn = QPushButton("Delete…")
        self.delete_btn.clicked.connect(self.delete)
        self.empty = QLabel("No jobs yet. Start one with Forget (Ctrl+N).")
        self.empty.setObjectName("hint")
        row = QHBoxLayout()
        for b in (self.open_btn, self.resume_btn, self.folder_btn):
            row.addWidget(b)
        row.addStretch(1)
        row.addWidget(self.delete_btn)
        layout = QVBoxLayout(self)
        layout.addWidget(PageHeader("Jobs", "Every forget job, newest first. Interrupted jobs resume where they "
                                            "stopped."))
        layout.addLayout(row)
        layout.addWidget(self.empty)
        layout.addWidget(self.table, 1)
        self._update_buttons()

    def refresh(self) -> None:
        rows = []
        for job in list_jobs(self.services.store()):
            fact = job.get("fact") or {}
            report = read_json(Path(job["dir"]) / "report.json")
            rows.append({"dir": job["dir"], "date": str(job.get("created", "")).replace("T", " "),
                         "status": job.get("status", ""), "model": (job.get("model") or {}).get("id", ""),
                         "fact": f"{fact.get('question', '')} → {fact.get('answer', '')}",
                         "verdict": _verdict(job, report)})
        self.table.set_rows(rows)
        self.empty.setVisible(not rows)
        self._update_buttons()

    def _update_buttons(self) -> None:
        row = self.table.selected_row()
        for b in (self.open_btn, self.folder_btn, self.delete_btn):
            b.setEnabled(row is not None)
        self.resume_btn.setEnabled(row is not None and row.get("status") in RESUMABLE)

    def reopen(self) -> None:
        row = self.table.selected_row()
        if row:
            self.reopen_requested.emit(row["dir"])

    def resume(self) -> None:
        row = self.table.selected_row()
        if row and row.get("status") in RESUMABLE:
            self.resume_requested.emit(row["dir"])

    def show_folder(self) -> None:
        row = self.table.selected_row()
        if row:
            QDesktopServices.openUrl(QUrl.fromLocalFile(row["dir"]))

    def delete(self) -> None:
        row = self.table.selected_row()
        if not row:
            return
        if row.get("status") == "running" and not self.services.worker.idle:
            show_error(self, _busy_error())
            return
        if not confirm(self, "Delete job", f"Delete the job “{row['fact']}” and its adapters? This cannot be "
                                           "undone."):
            return
        delete_job(Path(row["dir"]))
        self.refresh()


def _verdict(job: dict[str, Any], report: dict[str, Any] | None) -> str:
    evaluation = (report or {}).get("evaluation") or {}
    verdict = evaluation.get("verdict")
    if job.get("status") == "done" and isinstance(verdict, dict) and verdict.get("label"):
        return verdict["label"]
    return job_verdict(job, report)


def _busy_error():
    from ..errors import ErrorInfo

    return ErrorInfo("This job is running.", "Cancel it on the Forget page first, then delete it.")
