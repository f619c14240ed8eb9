"""Step 5, "train": LoRA training rounds with live loss and per-round forgetting."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QSplitter, QVBoxLayout

from ....engine.events import Log, ProbeResult, Progress, StageStarted, TrainStep
from ...charts import LossChart, RoundChart
from ...dialogs import show_error
from ...errors import ErrorInfo, plain
from ..common import percent
from .progress import JobProgress, job_plan
from .step import Step

if TYPE_CHECKING:
    from .wizard import ForgetWizard

ROUND_STAGES = frozenset({"train", "reprobe", "scale", "null_space", "placement"})


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
        self.stage.setWordWrap(True)
        self.progress = JobProgress()  # the whole job: samples, rounds, evaluation, attacks
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(500)
        self.log.setMaximumHeight(110)
        row = QHBoxLayout()
        row.addWidget(self.start_btn)
        row.addWidget(self.cancel_btn)
        row.addWidget(self.stage, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.progress)
        layout.addWidget(charts, 1)
        layout.addWidget(self.log)
        self._offsets: dict[int, int] = {}  # round -> chart x of its step 0 (rounds follow on one axis)
        self._last = (-1, 0)  # (round, step) of the last point plotted
        self.done = False

    def reset(self) -> None:
        self.loss_chart.clear()
        self.round_chart.clear()
        self.log.clear()
        self._offsets, self._last = {}, (-1, 0)
        self.done = False
        self.progress.stop("", 0.0)

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
                self.log.appendPlainText(_round_line(row))  # what each earlier round did, as it was shown live
        # Trained but stopped during the evaluation: the adapter is saved, so Results and Export stay open.
        self.done = status == "done" or job.trained
        self.start_btn.setText(self._action(status))
        self.start_btn.setEnabled(status != "done")
        self.stage.setText(self._status_text(status))
        self.progress.stop(*self._bar_state(status))

    def _bar_state(self, status: str) -> tuple[str, float]:
        """The idle bar: what is done, in a few words (the stage line beside the buttons says what comes next)."""
        if status == "done":
            return "Finished", 1.0
        if self.state.job.trained:
            return "Training done · evaluation incomplete", 0.0
        if status == "created":
            return "Not started", 0.0
        point = self.state.job.resume_point()
        return (f"Stopped at round {point[0] + 1}, step {point[1]}" if point else "Stopped"), 0.0

    def _action(self, status: str) -> str:
        """What the button will do, in words."""
        if status == "done":
            return "Finished"
        if self.state.job.trained:
            return "Run the evaluation"
        return "Start training" if status == "created" else "Resume training"

    def _status_text(self, status: str) -> str:
        job = self.state.job
        if status == "done":
            return "Training finished: see the results."
        if job.trained:
            return ("Training finished, but the evaluation was stopped before the end. Results and Export work "
                    "with the trained model; run the evaluation for the full verdict.")
        if status == "created":
            return "Ready to train."
        point = job.resume_point()
        where = (f"Resume continues from round {point[0] + 1}, step {point[1]}." if point
                 else "Resume starts training from the beginning (no checkpoint was saved yet).")
        return ("The last run failed. " if status == "failed" else "Stopped. ") + where

    def ready(self) -> bool:
        return self.done

    def start(self) -> None:
        if self.task is not None:
            return
        job, model = self.state.job, self.state.model_id
        self.done = False
        point = job.resume_point()
        if point is not None:  # the resumed run redoes the steps after the checkpoint: drop their old points
            self._drop_after(*point)

        def train(ctx):
            from ....engine.llm import cancellable
            from ....engine.pipeline import resume_forget

            llm = ctx.llm(model)
            return cancellable(llm, ctx.cancel, resume_forget(job.dir, cancel=ctx.cancel, llm=llm))

        self.start_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self.stage.setText("Starting…")
        self.progress.start(job_plan(job, "evaluation" if job.trained else "all"))
        self.run(train, "train", self._finished, on_event=self._on_event, on_cancelled=self._cancelled,
                 on_error=self._failed)

    def _x(self, round_no: int, step: int) -> int:
        """The chart position of (round, step): steps restart at each round, and a round starts where the one
        before it ended (its length may differ: early stops, a changed round length)."""
        if round_no not in self._offsets:
            last_round, last_step = self._last
            self._offsets[round_no] = (self._offsets.get(last_round, 0) + last_step) if last_round >= 0 else 0
        return self._offsets[round_no] + step

    def _drop_after(self, round_no: int, step: int) -> None:
        """Forget the points after (round, step): a resume redoes those steps, and redrawn points would overlap."""
        if (round_no, step) >= self._last:
            return
        self._offsets = {r: x for r, x in self._offsets.items() if r <= round_no}
        self.loss_chart.drop_from(self._x(round_no, step) + 1)
        self._last = (round_no, step)

    def _plot_step(self, row: dict[str, Any]) -> None:
        round_no, step = int(row.get("round", 0)), int(row.get("step", 0))
        if (round_no, step) <= self._last:  # metrics.jsonl holds the steps a resumed run did again
            self._drop_after(round_no, step - 1)
        x = self._x(round_no, step)
        self._last = (round_no, step)
        self.loss_chart.add_step(x, float(row.get("forget_loss", float("nan"))),
                                 float(row.get("retain_loss", float("nan"))))

    def _on_event(self, event: Any) -> None:
        self.progress.feed(event)
        if isinstance(event, TrainStep):
            self._plot_step(event.to_dict())
        elif isinstance(event, ProbeResult):
            self.round_chart.add_round(event.round, event.efficacy, event.retention)
            self.log.appendPlainText(_round_line(event.to_dict()))
        elif isinstance(event, StageStarted):
            text = _sentence(event.message or event.stage.replace("_", " ") + "…")
            self.stage.setText(f"Round {event.round + 1}: {text}" if event.stage in ROUND_STAGES else text)
        elif isinstance(event, Progress) and event.message and not event.total:
            self.stage.setText(_sentence(event.message))
        elif isinstance(event, Log):
            self.log.appendPlainText(plain(event.message))

    def _finished(self, result: Any) -> None:
        self.done = True
        self.progress.stop("Finished", 1.0)
        self.stage.setText("Training finished: see the results.")
        self.start_btn.setText("Finished")
        self.cancel_btn.setEnabled(False)
        self.wizard.jobs_changed.emit()

    def _cancelled(self) -> None:
        self.cancel_btn.setEnabled(False)
        self.start_btn.setEnabled(True)
        status = self.state.job.status
        self.done = self.state.job.trained
        self.start_btn.setText(self._action(status))
        self.stage.setText(self._status_text(status))
        self.progress.stop(self._bar_state(status)[0])
        self.wizard.jobs_changed.emit()

    def _failed(self, info: ErrorInfo) -> None:
        self._cancelled()
        self.stage.setText("Training failed. Fix the cause and Resume.")
        show_error(self, info)


def _sentence(text: str) -> str:
    """Engine stage messages start in lower case ("answer log-probs…"); the stage line is a sentence."""
    return text[:1].upper() + text[1:]


def _round_line(row: dict[str, Any]) -> str:
    """A ProbeResult (event or metrics.jsonl row) as one log line, rounds counted from 1."""
    total = int(row.get("total") or 0)
    gone = (f"forgotten {int(row.get('forgotten') or 0)} of {total} probes ({percent(row.get('efficacy'))})" if total
            else "no probe the base model knew, so nothing to forget")
    return f"Round {int(row.get('round', 0)) + 1}: {gone}; kept {percent(row.get('retention'))}"
