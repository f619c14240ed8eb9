"""The Forget wizard: choose a model, state the fact, pick what to keep, review anti-samples, train, check, export.

Every step saves into the job folder when it is left (job.json, antisamples.jsonl), so closing the app loses
nothing and the Jobs page can reopen a job at the step where it was left.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QStackedWidget, QVBoxLayout, QWidget

from ....engine.jobs import Job, open_job
from ...services import Services, training_defaults
from ..common import PageHeader
from .export import ExportStep
from .fact import FactStep
from .keep import KeepStep
from .model import ModelStep
from .results import ResultsStep
from .samples import AntiSamplesStep
from .step import Step
from .training import TrainingStep

STEP_CLASSES: tuple[type[Step], ...] = (ModelStep, FactStep, KeepStep, AntiSamplesStep, TrainingStep, ResultsStep,
                                        ExportStep)
STEP_KEYS = tuple(cls.key for cls in STEP_CLASSES)


def saved_step_index(saved: Any, default: int = 1) -> int:
    """The step a job.json "ui_step" names: a step key ("keep"), or, in jobs saved before keys, the step's position
    (those jobs were saved with the same seven steps in this order). Anything else: `default` (the fact step)."""
    if isinstance(saved, str) and saved in STEP_KEYS:
        return STEP_KEYS.index(saved)
    if isinstance(saved, int) and not isinstance(saved, bool) and 0 <= saved < len(STEP_CLASSES):
        return saved
    return default


@dataclass
class WizardState:
    model_id: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    question: str = ""
    answer: str = ""
    aliases: list[str] = field(default_factory=list)
    job: Job | None = None

    @property
    def fact(self) -> dict[str, Any]:
        return {"question": self.question, "answer": self.answer, "aliases": list(self.aliases)}


class ForgetWizard(QWidget):
    finished = Signal(str)  # the job folder, when the user clicks Finish
    jobs_changed = Signal()

    def __init__(self, services: Services) -> None:
        super().__init__()
        self.services = services
        self.state = WizardState()
        self.header = PageHeader("Forget a fact")
        self.stack = QStackedWidget()
        self.steps: list[Step] = []
        crumbs = QHBoxLayout()
        self.crumbs: list[QLabel] = []
        for i, cls in enumerate(STEP_CLASSES):
            step = cls(self)
            step.ready_changed.connect(self._update_nav)
            self.steps.append(step)
            self.stack.addWidget(step)
            crumb = QLabel(f"{i + 1}. {cls.title}")
            crumb.setObjectName("crumb")
            crumb.setAlignment(Qt.AlignmentFlag.AlignCenter)
            self.crumbs.append(crumb)
            crumbs.addWidget(crumb, 1)

        self.back_btn = QPushButton("Back")
        self.back_btn.clicked.connect(self.back)
        self.next_btn = QPushButton("Next")
        self.next_btn.setDefault(True)
        self.next_btn.clicked.connect(self.next)
        self.job_label = QLabel("")
        self.job_label.setObjectName("hint")
        self.job_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        nav = QHBoxLayout()
        nav.addWidget(self.job_label, 1)
        nav.addWidget(self.back_btn)
        nav.addWidget(self.next_btn)

        layout = QVBoxLayout(self)
        layout.addWidget(self.header)
        layout.addLayout(crumbs)
        layout.addWidget(self.stack, 1)
        layout.addLayout(nav)
        self._leaving = False
        self.reset()

    # navigation --------------------------------------------------------------------------------------------------
    @property
    def index(self) -> int:
        return self.stack.currentIndex()

    @property
    def current(self) -> Step:
        return self.steps[self.index]

    def go(self, index: int) -> None:
        index = max(0, min(index, len(self.steps) - 1))
        self.stack.setCurrentIndex(index)
        step = self.steps[index]
        self.header.title.setText(f"Forget a fact: {step.title}")
        self.header.set_subtitle(step.subtitle)
        for i, crumb in enumerate(self.crumbs):
            crumb.setProperty("state", "current" if i == index else ("done" if i < index else "todo"))
            crumb.style().unpolish(crumb)
            crumb.style().polish(crumb)
        if self.state.job is not None:
            self.state.job.set_ui_step(step.key)
        step.enter()
        self._update_nav()

    def next(self) -> None:
        if not self.current.ready() or self._leaving:
            return
        if self.index == len(self.steps) - 1:
            self.finished.emit(str(self.state.job.dir) if self.state.job else "")
            return
        self._leaving = True
        self._update_nav()
        target = self.index + 1

        def proceed(ok: bool = True) -> None:
            self._leaving = False
            if ok:
                self.go(target)
            else:
                self._update_nav()

        self.current.leave(proceed)

    def back(self) -> None:
        if self.index > 0 and not self.current.busy():
            self.current.save_draft()
            self.go(self.index - 1)

    def _update_nav(self) -> None:
        step = self.current
        busy = step.busy() or self._leaving
        self.back_btn.setEnabled(self.index > 0 and not busy)
        last = self.index == len(self.steps) - 1
        self.next_btn.setText("Finish" if last else step.next_label)
        self.next_btn.setEnabled(step.ready() and not busy)
        job = self.state.job
        if job is not None:
            self.job_label.setText(f"Saved as job {job.dir.name}")
            self.job_label.setToolTip(str(job.dir))
        else:
            self.job_label.setText("Nothing saved yet: the job folder is made when you leave the fact step.")
            self.job_label.setToolTip("")

    def refresh(self) -> None:
        """The page is shown: the model list may have changed since."""
        if self.index == 0:
            self.current.enter()

    def cancel_current(self) -> bool:
        return self.current.cancel_current()

    # jobs --------------------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """A new, empty forget job."""
        for step in self.steps:
            step.discard_tasks()
        self.state = WizardState(settings=training_defaults(self.services.store()))
        for step in self.steps:
            step.reset()
        self.go(0)

    def set_job(self, job: Job) -> None:
        self.state.job = job
        self.jobs_changed.emit()
        self._update_nav()

    def detach_job(self) -> None:
        """Leave the current job as it is; the fact step will create a new one."""
        self.state.job = None
        self._update_nav()

    def open_job(self, job_dir: Path | str, resume: bool = False) -> None:
        """Load a job's saved inputs into the wizard and show the step where it was left."""
        job = open_job(Path(job_dir))
        data = job.read()
        for step in self.steps:
            step.discard_tasks()
        fact = data.get("fact", {})
        model = data.get("model") or {}
        settings = training_defaults(self.services.store())
        settings.update(data.get("settings") or {})
        self.state = WizardState(model_id=model.get("id") or model.get("path"), settings=settings,
                                 question=fact.get("question", ""), answer=fact.get("answer", ""),
                                 aliases=list(fact.get("aliases", [])), job=job)
        for step in self.steps:
            step.reset()
        training = STEP_CLASSES.index(TrainingStep)
        if resume or data.get("status") in ("running", "interrupted", "cancelled", "failed"):
            target = training
        elif data.get("status") == "done":
            target = STEP_CLASSES.index(ResultsStep)
        else:
            target = min(saved_step_index(data.get("ui_step")), training)
        self.go(target)
        if resume:
            self.steps[training].start()
