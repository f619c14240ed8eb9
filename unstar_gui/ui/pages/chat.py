"""Chat: one prompt, the base model and the unlearned model side by side."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QLineEdit, QPlainTextEdit,
                               QProgressBar, QPushButton, QVBoxLayout, QWidget)

from ...engine.jobs import Job, list_jobs
from ..dialogs import show_error
from ..services import Services
from .common import PageHeader


class ChatPage(QWidget):
    def __init__(self, services: Services) -> None:
        super().__init__()
        self.services = services
        self.task = None
        self.job_combo = QComboBox()
        self.job_combo.setMinimumWidth(420)
        self.prompt = QLineEdit()
        self.prompt.setPlaceholderText("Ask both models something, e.g. the question you made the model forget")
        self.prompt.returnPressed.connect(self.ask)
        self.ask_btn = QPushButton("Ask both")
        self.ask_btn.clicked.connect(self.ask)
        self.progress = QProgressBar()
        self.progress.setRange(0, 0)
        self.progress.setMaximumHeight(6)
        self.progress.setTextVisible(False)
        self.progress.setVisible(False)
        self.base_out = QPlainTextEdit()
        self.base_out.setReadOnly(True)
        self.unlearned_out = QPlainTextEdit()
        self.unlearned_out.setReadOnly(True)
        self.base_out.setPlaceholderText("What the model said before unlearning appears here.")
        self.unlearned_out.setPlaceholderText("What it says with the job's adapter appears here.")
        base_box, unlearned_box = QGroupBox("Before: the base model"), QGroupBox("After: with the job's adapter")
        QVBoxLayout(base_box).addWidget(self.base_out)
        QVBoxLayout(unlearned_box).addWidget(self.unlearned_out)
        answers = QHBoxLayout()
        answers.addWidget(base_box)
        answers.addWidget(unlearned_box)
        form = QFormLayout()
        form.addRow("Unlearned model from job:", self.job_combo)
        prompt_row = QHBoxLayout()
        prompt_row.addWidget(self.prompt, 1)
        prompt_row.addWidget(self.ask_btn)
        layout = QVBoxLayout(self)
        layout.addWidget(PageHeader("Chat", "Compare answers before and after unlearning. Both come from the same "
                                            "weights: the adapter is switched off for the base answer."))
        layout.addLayout(form)
        layout.addLayout(prompt_row)
        layout.addWidget(self.progress)
        layout.addLayout(answers, 1)

    def refresh(self) -> None:
        current = self.job_combo.currentData()
        self.job_combo.clear()
        for job in list_jobs(self.services.store()):
            if job.get("status") == "done" and Job(Path(job["dir"])).has_adapters:
                fact = job.get("fact") or {}
                label = f"{(job.get('model') or {}).get('id', '?')}: forgot “{fact.get('question', '')}”"
                self.job_combo.addItem(label, job["dir"])
        if not self.job_combo.count():
            self.job_combo.addItem("No finished job yet: only the default model answers", None)
        index = self.job_combo.findData(current)
        self.job_combo.setCurrentIndex(max(index, 0))

    def ask(self) -> None:
        question = self.prompt.text().strip()
        if not question or self.task is not None:
            return
        job_dir = self.job_combo.currentData()

        def answer_both(ctx):
            if job_dir is None:
                return ctx.llm(None).answer([question], max_tokens=128)[0], ""
            data = Job(Path(job_dir)).read()
            model = (data.get("model") or {}).get("id") or (data.get("model") or {}).get("path")
            llm = ctx.llm_with_adapter(model, Path(job_dir) / "adapters")
            with llm.base_model():
                before = llm.answer([question], max_tokens=128)[0]
            return before, llm.answer([question], max_tokens=128)[0]

        def show(answers: tuple[str, str]) -> None:
            self.base_out.setPlainText(answers[0] or "(empty answer)")
            self.unlearned_out.setPlainText((answers[1] or "(empty answer)") if job_dir
                                            else "(pick a finished job to compare)")

        def done() -> None:
            self.task = None
            self.ask_btn.setEnabled(True)
            self.progress.setVisible(False)

        self.ask_btn.setEnabled(False)
        self.progress.setVisible(True)
        self.base_out.setPlainText("…")
        self.unlearned_out.setPlainText("…")
        self.task = self.services.worker.submit(answer_both, name="chat", on_result=show,
                                                on_error=lambda info: show_error(self, info), on_done=done)

    def cancel_current(self) -> bool:
        if self.task is not None:
            self.task.cancel()
            return True
        return False
