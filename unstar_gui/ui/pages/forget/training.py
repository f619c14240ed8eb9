"""Step 5, "train": LoRA training rounds with live loss and per-round forgetting."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPlainTextEdit, QProgressBar, QPushButton, QSplitter, QVBoxLayout

from ....engine.events import Log, ProbeResult, Progress, StageStarted, TrainStep
from ...charts import LossChart, RoundChart
from ...dialogs import show_error
from ...errors import ErrorInfo
from ..common import format_eta, percent
from .step import Step

if TYPE_CHECKING:
    from .wizard import ForgetWizard


class TrainingStep(Step):
    key = "train"
    title = "Training"
    subtitle = ("LoRA training on the anti-samples, with the keep facts as a counterweight. After each round the "
                "model is asked again; still-known questions get fresh anti-samples.")

    def __init__(self, wizard: "ForgetWizard") -> None:
        super().__init__(wizard)
        self.loss_chart = LossChart()
        self.round_chart = RoundChart()
        charts = QSplitter(Qt.Orientation.Horizontal)
        charts.addWidget(self.loss_chart)
        charts.addWidget(self.round_chart)
        charts.setSizes([600, 400])
        self.start_btn = QPushButton("Start training")
        self.start_btn.clicked.connect(self.start)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.clicked.connect(self.cancel_current)
        self.cancel_btn.setEnabled(False)
        self.stage = QLabel("Ready to train.")
        self.eta = QLabel("")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(500)
        self.log.setMaximumHeight(110)
        row = QHBoxLayout()
        row.addWidget(self.start_btn)
        row.addWidget(self.cancel_btn)
        row.addWidget(self.stage, 1)
        row.addWidget(self.eta)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.progress)
        layout.addWidget(charts, 1)
        layout.addWidget(self.log)
        self._step_offset = 0
        self._last_step = 0
        self.done = False

    def reset(self) -> None:
        self.loss_chart.clear()
        self.round_chart.clear()
        self.log.clear()
        self.done = False
        self.progress.setValue(0)
        self.eta.setText("")

    def enter(self) -> None:
        if self.task is not None:
            return
        self.reset()
        job = self.state.job
        status = job.read().get("status", "created")
        for row in job.read_rows("metrics.jsonl"):  # what earlier runs measured
            kind = row.get("event")
            if kind == "TrainStep":
                self._plot_step(row)
            elif kind == "ProbeResult":
                self.round_chart.add_round(row["round"], row["efficacy"], row["retention"])
        self.done = status == "done"
        self.start_btn.setText({"created": "Start training", "done": "Finished"}.get(status, "Resume training"))
        self.start_btn.setEnabled(status != "done")
        self.stage.setText({"done": "Training finished: see the results.", "created": "Ready to train.",
                            "failed": "The last run failed; Resume continues from the last checkpoint.",
                            }.get(status, "Interrupted: Resume continues from the last checkpoint."))
        if self.done:
            self.progress.setValue(1000)
            self.progress.setFormat("Finished")

    def ready(self) -> bool:
        return self.done

    def start(self) -> None:
        if self.task is not None:
            return
        job, model = self.state.job, self.state.model_id
        self.done = False

        def train(ctx):
            from ....engine.pipeline import resume_forget

            return resume_forget(job.dir, cancel=ctx.cancel, llm=ctx.llm(model))

        self.start_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self.stage.setText("Starting…")
        self.run(train, "train", self._finished, on_event=self._on_event, on_cancelled=self._cancelled,
                 on_error=self._failed)

    def _plot_step(self, row: dict[str, Any]) -> None:
        # Steps restart at each round: plot them on one axis.
        step = int(row.get("step", 0)) + int(row.get("round", 0)) * int(row.get("total_steps", 0) or 0)
        self._last_step = step
        self.loss_chart.add_step(step, float(row.get("forget_loss", float("nan"))),
                                 float(row.get("retain_loss", float("nan"))))

    def _on_event(self, event: Any) -> None:
        if isinstance(event, TrainStep):
            self._plot_step(event.to_dict())
            self.progress.setValue(int(1000 * event.step / max(event.total_steps, 1)))
            self.progress.setFormat(f"round {event.round + 1} · step {event.step}/{event.total_steps}")
            self.eta.setText(format_eta(event.eta_s))
        elif isinstance(event, ProbeResult):
            self.round_chart.add_round(event.round, event.efficacy, event.retention)
            self.log.appendPlainText(f"Round {event.round}: forgotten {event.forgotten}/{event.total} probes "
                                     f"({percent(event.efficacy)}), kept {percent(event.retention)}")
        elif isinstance(event, StageStarted):
            self.stage.setText(event.message or event.stage.replace("_", " ").capitalize() + "…")
        elif isinstance(event, Progress):
            if event.total:
                self.progress.setValue(int(1000 * event.done / event.total))
            self.progress.setFormat(event.message or event.stage)
            self.eta.setText(format_eta(event.eta_s))
        elif isinstance(event, Log):
            self.log.appendPlainText(event.message)

    def _finished(self, result: Any) -> None:
        self.done = True
        self.progress.setValue(1000)
        self.progress.setFormat("Finished")
        self.eta.setText("")
        self.stage.setText("Training finished: see the results.")
        self.start_btn.setText("Finished")
        self.cancel_btn.setEnabled(False)
        self.wizard.jobs_changed.emit()

    def _cancelled(self) -> None:
        self.cancel_btn.setEnabled(False)
        self.start_btn.setEnabled(True)
        self.start_btn.setText("Resume training")
        self.stage.setText("Cancelled. Resume continues from the last checkpoint.")
        self.eta.setText("")
        self.wizard.jobs_changed.emit()

    def _failed(self, info: ErrorInfo) -> None:
        self._cancelled()
        self.stage.setText("Training failed. Fix the cause and Resume.")
        show_error(self, info)
