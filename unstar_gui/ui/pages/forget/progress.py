"""One progress bar and time estimate for everything a wizard task has left (the estimator is engine/eta.py)."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QWidget

from ....engine.eta import JobEta, plan_evaluation, plan_job, samples_phase
from ....engine.jobs import Job


class JobProgress(QWidget):
    """A bar over the whole task, the running phase with its count, and the time left. A one-second timer keeps the
    bar moving through long generation calls that report nothing until they return."""

    TICK_MS = 1000

    def __init__(self) -> None:
        super().__init__()
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setValue(0)
        self.bar.setTextVisible(True)
        self.eta = QLabel("")
        self.eta.setObjectName("hint")
        self.eta.setMinimumWidth(190)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.bar, 1)
        row.addWidget(self.eta)
        self.estimator: JobEta | None = None
        self.timer = QTimer(self)
        self.timer.setInterval(self.TICK_MS)
        self.timer.timeout.connect(self.refresh)

    def start(self, estimator: JobEta) -> None:
        self.estimator = estimator
        self.setVisible(True)
        self.timer.start()
        self.refresh()

    def feed(self, event: Any) -> None:
        if self.estimator is not None:
            self.estimator.feed(event)
            self.refresh()

    def refresh(self) -> None:
        if self.estimator is None:
            return
        snap = self.estimator.snapshot()
        self.bar.setValue(int(1000 * snap.fraction))
        self.bar.setFormat(" · ".join(x for x in (snap.phase, snap.count, f"{snap.fraction:.0%}") if x))
        self.eta.setText(snap.text)

    def stop(self, text: str, fraction: float | None = None) -> None:
        """The task ended (done, cancelled, failed): freeze the bar with `text`."""
        self.timer.stop()
        self.estimator = None
        if fraction is not None:
            self.bar.setValue(int(1000 * fraction))
        self.bar.setFormat(text)
        self.eta.setText("")


def _counts(job: Job) -> dict[str, int]:
    return {"probes": len(job.read_rows("probes.jsonl")), "retain": len(job.read_rows("retain.jsonl"))}


def job_plan(job: Job, part: str = "all") -> JobEta:
    """The estimator for `part` of a job: "all" (what run_job has left), "samples" or "evaluation"."""
    data = job.read()
    settings = data.get("settings") or {}
    if part == "samples":
        return JobEta([samples_phase(settings)])
    counts = _counts(job)
    if part == "evaluation":
        return JobEta(plan_evaluation(settings, counts["probes"], counts["retain"]))
    return JobEta(plan_job(data, counts))
