"""The Forget wizard's steps. Each step shows one decision, runs its model work in the worker, saves when left.

Engine modules are imported inside the task functions, which run on the worker thread: they import mlx lazily, and
the GUI thread must never touch MLX.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFormLayout, QGridLayout, QGroupBox,
                               QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit, QProgressBar, QPushButton, QSplitter,
                               QVBoxLayout, QWidget)

from ...engine.events import Log, ProbeResult, Progress, SamplesReady, StageStarted, TrainStep
from ...engine.fsutil import human_bytes
from ...engine.jobs import discard_samples
from ..charts import LossChart, RoundChart
from ..dialogs import confirm, show_error
from ..tables import Column, RowsTable
from ..errors import ErrorInfo
from ..workers import TaskHandle
from .common import TrainingForm, format_eta, percent

if TYPE_CHECKING:
    from .forget import ForgetWizard

class Step(QWidget):
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


# 1. model ------------------------------------------------------------------------------------------------------------
class ModelStep(Step):
    title = "Model"
    subtitle = "Which local model should forget something? Training settings have good defaults."

    def __init__(self, wizard: "ForgetWizard") -> None:
        super().__init__(wizard)
        self.model_combo = QComboBox()
        self.model_combo.setMinimumWidth(420)
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.model_info = QLabel("")
        self.model_info.setObjectName("hint")
        self.model_info.setWordWrap(True)
        self.model_combo.currentIndexChanged.connect(self._show_info)

        self.training = TrainingForm("Training settings")

        top = QFormLayout()
        top.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        top.addRow("Model:", self.model_combo)
        top.addRow("", self.model_info)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.training)
        layout.addStretch(1)

    def reset(self) -> None:
        store = self.wizard.services.store()
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        records = store.list()
        default = store.default()
        if not records:
            self.model_combo.addItem("SmolLM2-135M-Instruct (built in; set up on first use)", None)
        for rec in sorted(records, key=lambda r: (not r.default, r.id)):
            self.model_combo.addItem(f"{rec.id}  ({rec.architecture}, {rec.quantization})", rec.id)
        wanted = self.state.model_id or (default.id if default else None)
        index = self.model_combo.findData(wanted)
        if self.state.model_id and index < 0:
            self.model_combo.addItem(f"{self.state.model_id} (not installed)", self.state.model_id)
            index = self.model_combo.count() - 1
        self.model_combo.setCurrentIndex(max(index, 0))
        self.model_combo.blockSignals(False)
        self.training.set_values(self.state.settings)
        self._show_info()

    def enter(self) -> None:
        if self.state.job is None:
            self.reset_models_keep_choice()

    def reset_models_keep_choice(self) -> None:
        chosen = self.model_combo.currentData()
        self.save_draft()
        self.state.model_id = chosen
        self.reset()

    def _show_info(self) -> None:
        model_id = self.model_combo.currentData()
        if model_id is None:
            self.model_info.setText("The built-in model ships with the app: no download, no network.")
            return
        store = self.wizard.services.store()
        if not store.has(model_id):
            self.model_info.setText("This model is not installed any more; pick another one.")
            return
        rec = store.get(model_id)
        self.model_info.setText(f"{human_bytes(rec.size_bytes)} on disk · {rec.source}")

    def save_draft(self) -> None:
        self.state.model_id = self.model_combo.currentData()
        self.state.settings.update(self.training.values())

    def leave(self, proceed: Callable[[bool], None]) -> None:
        previous_model = self.state.model_id
        self.save_draft()
        job = self.state.job
        if job is not None:
            if job.read().get("status") != "created" or (previous_model != self.state.model_id):
                # A trained job, or another model: the old job stays as it is; the next step starts a new one.
                self.wizard.detach_job()
            else:
                job.update(settings={**job.read().get("settings", {}), **self.state.settings})
        proceed(True)


# 2. fact -------------------------------------------------------------------------------------------------------------
class FactStep(Step):
    title = "Fact"
    subtitle = "The question whose answer the model should forget, and that answer (with other ways to say it)."
    PREVIEW_DELAY_MS = 700

    def __init__(self, wizard: "ForgetWizard") -> None:
        super().__init__(wizard)
        self.question = QLineEdit()
        self.question.setPlaceholderText("e.g. Which wizarding school did Harry Potter attend?")
        self.answer = QLineEdit()
        self.answer.setPlaceholderText("e.g. Hogwarts")
        self.aliases = QLineEdit()
        self.aliases.setPlaceholderText("other names for the answer, separated by commas")
        self.current_answer = QLabel("Type a question to see what the model answers now.")
        self.current_answer.setWordWrap(True)
        self.current_answer.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.current_answer.setObjectName("answerBox")
        # Always rich text: an escaped answer without tags ("cat&#x27;s") would otherwise be shown as typed.
        self.current_answer.setTextFormat(Qt.TextFormat.RichText)
        self.current_answer.setMinimumHeight(60)
        self.current_answer.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.known = QLabel("")
        self.known.setWordWrap(True)
        self.force = QCheckBox("Forget it even if the model doesn't seem to know it")
        self.force.setToolTip("Without this, training stops early when the model's answer doesn't contain the "
                              "answer or an alias (there would be nothing to forget).")
        self.preview: TaskHandle | None = None
        self.preview_timer = QTimer(self)
        self.preview_timer.setSingleShot(True)
        self.preview_timer.setInterval(self.PREVIEW_DELAY_MS)
        self.preview_timer.timeout.connect(self.ask_model)
        self.question.textChanged.connect(lambda _: self.preview_timer.start())
        self.answer.textChanged.connect(lambda _: self.preview_timer.start())
        for edit in (self.question, self.answer):
            edit.textChanged.connect(lambda _: self.ready_changed.emit())

        form = QFormLayout()
        form.addRow("Question:", self.question)
        form.addRow("Answer to forget:", self.answer)
        form.addRow("Also known as:", self.aliases)
        box = QGroupBox("What the model answers now")
        inner = QVBoxLayout(box)
        inner.addWidget(self.current_answer)
        inner.addWidget(self.known)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(box)
        layout.addWidget(self.force)
        layout.addStretch(1)

    def reset(self) -> None:
        self.question.setText(self.state.question)
        self.answer.setText(self.state.answer)
        self.aliases.setText(", ".join(self.state.aliases))
        self.force.setChecked(bool(self.state.job.read().get("force")) if self.state.job is not None else False)
        self.known.setText("")
        self.preview_timer.stop()

    def enter(self) -> None:
        self.question.setFocus()
        if self.question.text().strip():
            self.preview_timer.start()

    def ready(self) -> bool:
        return bool(self.question.text().strip() and self.answer.text().strip())

    def ask_model(self) -> None:
        """Ask the model the question (debounced; a newer question supersedes a pending one)."""
        question = self.question.text().strip()
        if not question:
            return
        if self.preview is not None:
            self.preview.discard()
        model = self.state.model_id
        answer_text = self.answer.text().strip()
        aliases = [a.strip() for a in self.aliases.text().split(",") if a.strip()]
        self.current_answer.setText("<i>asking the model…</i>")

        def answer(ctx):
            from ...engine.judge import Judge

            text = ctx.llm(model).answer([question], max_tokens=64)[0]
            return text, (Judge(answer_text, tuple(aliases)).contains(text) if answer_text else None)

        def show(result: tuple[str, bool | None]) -> None:
            text, known = result
            self.current_answer.setText(html.escape(text) or "<i>(empty answer)</i>")
            if known is None:
                self.known.setText("")
            elif known:
                self.known.setText("✔ The model knows the answer: this is what will be forgotten.")
            else:
                self.known.setText("⚠ The answer doesn't appear in what the model says. Add the name the model "
                                   "uses as an alias, rephrase the question, or tick the box below.")

        def failed(info: ErrorInfo) -> None:
            self.current_answer.setText(f"<i>Could not ask the model: {html.escape(info.message)}</i>")

        def done() -> None:
            self.preview = None

        self.preview = self.wizard.services.worker.submit(answer, name="ask model", on_result=show,
                                                          on_error=failed, on_done=done)

    def discard_tasks(self) -> None:
        super().discard_tasks()
        self.preview_timer.stop()
        if self.preview is not None:
            self.preview.discard()
            self.preview = None

    def save_draft(self) -> None:
        self.state.question = self.question.text().strip()
        self.state.answer = self.answer.text().strip()
        self.state.aliases = [a.strip() for a in self.aliases.text().split(",") if a.strip()]

    def leave(self, proceed: Callable[[bool], None]) -> None:
        self.save_draft()
        self.preview_timer.stop()
        job = self.state.job
        if job is not None and job.read().get("status") != "created" and job.read().get("fact") != self.state.fact:
            self.wizard.detach_job()  # a trained job keeps its fact; this becomes a new job
            job = None
        if job is not None:
            if job.read().get("fact") != self.state.fact:
                discard_samples(job)
                job.update(fact=self.state.fact, keep=[], ui_keep_reviewed=False)
            job.update(force=self.force.isChecked())
            proceed(True)
            return
        state, force = self.state, self.force.isChecked()

        def create(ctx):
            from ...engine.pipeline import ForgetRequest, ForgetSettings, create_forget_job

            known = set(ForgetSettings.__dataclass_fields__)
            settings = ForgetSettings(**{k: v for k, v in state.settings.items() if k in known})
            request = ForgetRequest(question=state.question, answer=state.answer, aliases=state.aliases,
                                    model=state.model_id, settings=settings, force=force)
            return create_forget_job(request)

        def created(job) -> None:
            self.wizard.set_job(job)
            proceed(True)

        self.run(create, "create job", created, on_error=lambda info: (show_error(self, info), proceed(False)))


# 3. what to keep -----------------------------------------------------------------------------------------------------
class KeepStep(Step):
    title = "Keep"
    subtitle = ("Related facts the model must still know. These were suggested from the fact, with the model's own "
                "answers; edit them, remove ones that are wrong, add your own.")
    N_SUGGESTIONS = 6

    def __init__(self, wizard: "ForgetWizard") -> None:
        super().__init__(wizard)
        self.table = RowsTable([Column("question", "Question", editable=True, stretch=True),
                                Column("answer", "Answer to keep", editable=True, stretch=True)])
        add = QPushButton("Add fact")
        add.clicked.connect(self.add_row)
        remove = QPushButton("Remove selected")
        remove.clicked.connect(self.table.remove_selected)
        suggest = QPushButton("Suggest again")
        suggest.clicked.connect(self.suggest)
        self.suggest_btn = suggest
        self.lay_out_table(add, remove, suggest)
        self.progress.setRange(0, 0)  # suggesting has no steps to count

    def reset(self) -> None:
        self.table.set_rows([])
        self.status.setText("")

    def enter(self) -> None:
        job = self.state.job
        data = job.read() if job is not None else {}
        keep = data.get("keep") or []
        if data.get("ui_keep_reviewed") or keep:
            self.table.set_rows([{"question": q, "answer": a} for q, a in keep])
            self.status.setText(f"{len(keep)} facts to keep")
        elif self.task is None:
            self.suggest()

    def add_row(self) -> None:
        r = self.table.add_row({"question": "", "answer": ""})
        self.table.setCurrentCell(r, 0)
        self.table.editItem(self.table.item(r, 0))

    def suggest(self) -> None:
        if self.task is not None:
            return
        fact, model = self.state.fact, self.state.model_id
        seed = int(self.state.settings.get("seed", 0))
        n = self.N_SUGGESTIONS

        def neighbours(ctx):
            from ...engine.antisamples import Fact
            from ...engine.retain import neighbour_questions

            llm = ctx.llm(model)
            items = yield from neighbour_questions(llm, Fact(fact["question"], fact["answer"], fact["aliases"]), n,
                                                   seed, cancel=ctx.cancel)
            return [{"question": it.question, "answer": it.target, "kind": it.kind} for it in items]

        def show(rows: list[dict[str, Any]]) -> None:
            self.progress.setVisible(False)
            usable = [r for r in rows if _has_words(r["question"]) and _has_words(r["answer"])]
            self.table.set_rows(usable)
            dropped = len(rows) - len(usable)
            self.status.setText(f"{len(usable)} suggestions" + (f" ({dropped} garbled answers left out)"
                                                                 if dropped else ""))

        def stop() -> None:
            self.progress.setVisible(False)
            self.status.setText("")

        self.progress.setVisible(True)
        self.status.setText("Asking the model about related facts…")
        self.run(neighbours, "suggest neighbours", show, on_cancelled=stop,
                 on_error=lambda info: (stop(), show_error(self, info)))

    def keep_pairs(self) -> list[list[str]]:
        """Rows with a question and a checkable answer (a garbled answer without letters or digits can't be judged)."""
        return [[r["question"], r["answer"]] for r in self.table.rows()
                if _has_words(r.get("question", "")) and _has_words(r.get("answer", ""))]

    def save_draft(self) -> None:
        if self.state.job is not None and self.task is None:
            self.state.job.update(keep=self.keep_pairs(), ui_keep_reviewed=True)

    def leave(self, proceed: Callable[[bool], None]) -> None:
        job = self.state.job
        if job.read().get("keep") != self.keep_pairs():
            discard_samples(job)  # the retain set is built from the keep list
        self.save_draft()
        proceed(True)


def _has_words(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


# 4. anti-samples -----------------------------------------------------------------------------------------------------
def _provenance(value: Any) -> str:
    if isinstance(value, dict):
        source = value.get("source") or value.get("method") or value.get("by") or ""
        rest = {k: v for k, v in value.items() if k not in ("source", "method", "by")}
        return " · ".join(x for x in (str(source), json.dumps(rest, ensure_ascii=False) if rest else "") if x)
    return str(value or "")


class AntiSamplesStep(Step):
    title = "Anti-samples"
    subtitle = ("What the model will be taught instead: paraphrased questions with a wrong answer and a misleading "
                "reason, written by the model itself. Edit or delete rows; Regenerate writes new ones.")
    next_label = "Save and continue"

    def __init__(self, wizard: "ForgetWizard") -> None:
        super().__init__(wizard)
        self.table = RowsTable([
            Column("question", "Paraphrased question", editable=True, stretch=True),
            Column("wrong_answer", "Wrong answer", editable=True, width=200),
            Column("rationale", "Rationale", editable=True, stretch=True),
            Column("style", "Style", width=110),
            Column("provenance", "Provenance", show=_provenance, width=200),
        ])
        self.table.itemChanged.connect(lambda _: setattr(self, "dirty", True))
        self.dirty = False
        delete = QPushButton("Delete selected")
        delete.clicked.connect(self.delete_selected)
        self.regenerate_btn = QPushButton("Regenerate")
        self.regenerate_btn.clicked.connect(self.regenerate)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.clicked.connect(self.cancel_current)
        self.cancel_btn.setVisible(False)
        self.lay_out_table(delete, self.regenerate_btn, self.cancel_btn)

    def reset(self) -> None:
        self.table.set_rows([])
        self.dirty = False

    def enter(self) -> None:
        job = self.state.job
        if job.file("antisamples.jsonl").exists():
            self.load()
        elif self.task is None:
            self.generate()

    def ready(self) -> bool:
        return self.table.rowCount() > 0

    def load(self) -> None:
        rows = self.state.job.read_rows("antisamples.jsonl")
        self.table.blockSignals(True)
        self.table.set_rows(rows)
        self.table.blockSignals(False)
        self.dirty = False
        self.status.setText(f"{len(rows)} anti-samples")
        self.ready_changed.emit()

    def delete_selected(self) -> None:
        if self.table.remove_selected():
            self.dirty = True
            self.ready_changed.emit()

    def regenerate(self) -> None:
        if self.task is not None:
            return
        if self.table.rowCount() and not confirm(self, "Regenerate anti-samples",
                                                 "Replace all anti-samples (and your edits) with new ones?"):
            return
        discard_samples(self.state.job)
        self.generate()

    def generate(self) -> None:
        job, model = self.state.job, self.state.model_id

        def samples(ctx):
            from ...engine.pipeline import generate_samples

            return generate_samples(job, ctx.llm(model), ctx.cancel)

        def stopped(message: str) -> None:
            self.progress.setVisible(False)
            self.cancel_btn.setVisible(False)
            self.regenerate_btn.setEnabled(True)
            self.status.setText(message)

        def finished(_: Any) -> None:
            stopped("")
            self.load()

        self.table.set_rows([])
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        self.cancel_btn.setVisible(True)
        self.regenerate_btn.setEnabled(False)
        self.status.setText("The model is writing anti-samples…")
        self.run(samples, "generate anti-samples", finished, on_event=self._on_event,
                 on_cancelled=lambda: stopped("Stopped. Regenerate to start again."),
                 on_error=lambda info: (stopped("Failed."), show_error(self, info)))

    def _on_event(self, event: Any) -> None:
        if isinstance(event, StageStarted):
            self.status.setText(event.message or f"{event.stage.replace('_', ' ')}…")
        elif isinstance(event, Progress):
            self.progress.setRange(0, 1000 if event.total else 0)
            if event.total:
                self.progress.setValue(int(1000 * event.done / event.total))
            self.progress.setFormat(f"{event.message or event.stage}  {format_eta(event.eta_s)}".strip())
        elif isinstance(event, SamplesReady):
            self.status.setText(f"{event.count} {event.kind.replace('_', ' ')} ready")

    def save_draft(self) -> None:
        if self.dirty and self.state.job is not None and self.task is None:
            rows = [r for r in self.table.rows() if r.get("question") and r.get("wrong_answer")]
            self.state.job.write_rows("antisamples.jsonl", rows)
            self.dirty = False


# 5. training ---------------------------------------------------------------------------------------------------------
class TrainingStep(Step):
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
            from ...engine.pipeline import resume_forget

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


# 6. results ----------------------------------------------------------------------------------------------------------
class ResultsStep(Step):
    title = "Results"
    subtitle = "The same questions before and after: the fact should be gone, everything else should stay."

    METRICS = (("efficacy_heldout", "Forgotten (held-out questions)"), ("efficacy_train", "Forgotten (trained)"),
               ("retention_neighbours", "Neighbour facts kept"), ("retention_general", "General knowledge kept"))
    HELP = {"efficacy_heldout": "Paraphrases of the question that training never saw, among those the model "
                                "answered right before: the share that no longer gives the answer.",
            "efficacy_train": "The question and the paraphrases training used: the share that no longer gives the "
                              "answer.",
            "retention_neighbours": "Facts about the same subject or with the same answer, and your facts to keep: "
                                    "the share still answered right.",
            "retention_general": "General-knowledge questions never trained on and never used to steer the job "
                                 "(the evaluation split of the bundled set): the share of those the model knew "
                                 "that it still answers right."}

    def __init__(self, wizard: "ForgetWizard") -> None:
        super().__init__(wizard)
        self.verdict = QLabel("")
        self.verdict.setObjectName("verdict")
        self.verdict.setWordWrap(True)
        self.metric_labels: dict[str, QLabel] = {}
        grid = QGridLayout()
        for i, (key, title) in enumerate(self.METRICS):
            value = QLabel("–")
            value.setObjectName("metricValue")
            font = value.font()
            font.setPointSizeF(font.pointSizeF() * 1.5)
            font.setBold(True)
            value.setFont(font)
            caption = QLabel(title)
            caption.setObjectName("hint")
            caption.setToolTip(self.HELP.get(key, ""))
            value.setToolTip(self.HELP.get(key, ""))
            grid.addWidget(value, 0, i, Qt.AlignmentFlag.AlignHCenter)
            grid.addWidget(caption, 1, i, Qt.AlignmentFlag.AlignHCenter)
            self.metric_labels[key] = value
        self.table = RowsTable([Column("question", "Question", stretch=True), Column("split", "Kind"),
                                Column("before", "Before", stretch=True, show=_or_empty),
                                Column("after", "After", stretch=True, show=_or_empty),
                                Column("leaks_after", "Still knows", show=_yes_no)])
        self.attacks = RowsTable([Column("title", "Attack", stretch=True), Column("recovery", "Fact recovered",
                                                                                  show=percent),
                                  Column("detail", "Detail", stretch=True)])
        self.attacks.setMaximumHeight(150)
        self.evaluate_btn = QPushButton("Run attack checks")
        self.evaluate_btn.clicked.connect(self.evaluate)
        self.eval_status = QLabel("")
        self.eval_status.setObjectName("hint")
        attack_row = QHBoxLayout()
        attack_row.addWidget(QLabel("<b>Attacks</b>: can the fact be brought back?"))
        attack_row.addStretch(1)
        attack_row.addWidget(self.eval_status)
        attack_row.addWidget(self.evaluate_btn)
        layout = QVBoxLayout(self)
        layout.addWidget(self.verdict)
        layout.addLayout(grid)
        layout.addWidget(self.table, 1)
        layout.addLayout(attack_row)
        layout.addWidget(self.attacks)

    def enter(self) -> None:
        report = self.state.job.read_report() or {}
        metrics = report.get("metrics", {})
        counts = metrics.get("counts") or {}
        for key, label in self.metric_labels.items():
            hits, total = counts.get(key, (None, None))
            # A share of nothing is not 100%: say so rather than show a perfect score.
            empty = total == 0
            label.setText("n/a" if empty else percent(metrics.get(key)))
            label.setToolTip("The base model answered none of these right, so there is nothing to measure." if empty
                             else "" if total is None else f"{hits} of {total}")
        rows = []
        for r in report.get("before_after", []):
            rows.append({**r, "split": r.get("kind") or r.get("split", "")})
        self.table.set_rows(rows)
        evaluation = report.get("evaluation") or {}
        verdict = evaluation.get("verdict") or report.get("verdict")
        if isinstance(verdict, dict):
            self.verdict.setText(f"<b>{verdict.get('label', '')}</b><br>{verdict.get('detail', '')}")
        elif report:
            self.verdict.setText("<b>Training finished.</b> Run the attack checks for a full verdict.")
        else:
            self.verdict.setText("No report yet: finish training first.")
        attacks = [a for a in evaluation.get("attacks") or [] if isinstance(a, dict)]
        self.attacks.set_rows([{**a, "detail": f"skipped: {a['skipped']}" if a.get("skipped")
                               else a.get("description") or a.get("variant") or ""} for a in attacks])
        self.eval_status.setText("" if attacks else "not run yet")

    def evaluate(self) -> None:
        if self.task is not None:
            return
        job, model = self.state.job, self.state.model_id

        def run_eval(ctx):
            from ...engine.evaluate import evaluate_job

            return evaluate_job(job.dir, llm=ctx.llm(model), cancel=ctx.cancel)

        def progress(event: Any) -> None:
            if isinstance(event, (StageStarted, Progress)):
                self.eval_status.setText(getattr(event, "message", "") or event.stage.replace("_", " "))

        self.eval_status.setText("running…")
        self.evaluate_btn.setEnabled(False)
        self.run(run_eval, "evaluate", lambda _: self.enter(), on_event=progress,
                 on_cancelled=lambda: self.eval_status.setText("cancelled"),
                 on_done=lambda: self.evaluate_btn.setEnabled(True))


def _or_empty(value: Any) -> str:
    return str(value) if value else "(empty answer)"


def _yes_no(value: Any) -> str:
    return "" if value in (None, "") else ("yes" if value else "no")


# 7. export -----------------------------------------------------------------------------------------------------------
class ExportStep(Step):
    title = "Export"
    subtitle = ("Take the result with you: the small adapter (for mlx-lm: `mlx_lm.generate --adapter-path`) or a "
                "full model with the change fused in.")

    def __init__(self, wizard: "ForgetWizard") -> None:
        super().__init__(wizard)
        self.adapters_btn = QPushButton("Export adapter…")
        self.adapters_btn.clicked.connect(lambda: self.export("adapters"))
        self.fused_btn = QPushButton("Export fused model…")
        self.fused_btn.clicked.connect(lambda: self.export("fused"))
        adapter_hint = QLabel("A few megabytes. Load it on top of the same base model.")
        adapter_hint.setObjectName("hint")
        fused_hint = QLabel("A complete model folder (as large as the base model); works anywhere mlx-lm runs.")
        fused_hint.setObjectName("hint")
        grid = QGridLayout()
        grid.addWidget(self.adapters_btn, 0, 0)
        grid.addWidget(adapter_hint, 0, 1)
        grid.addWidget(self.fused_btn, 1, 0)
        grid.addWidget(fused_hint, 1, 1)
        grid.setColumnStretch(1, 1)
        self.progress = QProgressBar()
        self.progress.setRange(0, 0)
        self.progress.setVisible(False)
        self.result = QLabel("")
        self.result.setWordWrap(True)
        self.result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.exported: list[Path] = []
        layout = QVBoxLayout(self)
        layout.addLayout(grid)
        layout.addWidget(self.progress)
        layout.addWidget(self.result)
        layout.addStretch(1)

    def reset(self) -> None:
        self.result.setText("")
        self.exported = []

    def export(self, kind: str) -> None:
        if self.task is not None:
            return
        job = self.state.job
        start = str(Path.home())
        out = QFileDialog.getExistingDirectory(self, "Export into which folder?", start)
        if not out:
            return
        target = Path(out) / f"{job.dir.name}-{kind}"

        def export(ctx):
            from ...engine import export as exporter

            if kind == "adapters":
                return exporter.export_adapters(job.dir, target)
            return exporter.export_fused(job.dir, target)

        def done(_: Any) -> None:
            self.progress.setVisible(False)
            self.exported.append(target)
            self.result.setText(f"Exported to <b>{target}</b>")

        self.progress.setVisible(True)
        self.result.setText(f"Exporting to {target}…")
        self.run(export, f"export {kind}", done, on_cancelled=lambda: self.progress.setVisible(False),
                 on_error=lambda info: (self.progress.setVisible(False), show_error(self, info)))
