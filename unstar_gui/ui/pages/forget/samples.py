"""Step 4, "samples": the anti-samples the model writes, reviewed and editable before training."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtWidgets import QPushButton

from ....engine.events import Progress, SamplesReady, StageStarted
from ...dialogs import confirm, show_error
from ...tables import Column, RowsTable
from .progress import JobProgress, job_plan
from .step import Step

if TYPE_CHECKING:
    from .wizard import ForgetWizard


SOURCES = {"model": "written by the model", "template": "from a template", "user": "typed by you",
           "mixed": "mixed"}
PARTS = (("question", "question"), ("wrong_answer", "wrong answer"), ("rationale", "rationale"))


def _source(value: Any) -> str:
    source = str((value or {}).get("source", "") if isinstance(value, dict) else value or "")
    return SOURCES.get(source, source.replace("_", " "))


def _provenance(value: Any) -> str:
    """Where a row came from, in words: "written by the model", or per part when the parts differ."""
    if not isinstance(value, dict):
        return _source(value)
    if value.get("source") != "mixed":
        text = _source(value)
    else:
        text = "; ".join(f"{name} {_source(value.get(key))}" for key, name in PARTS if value.get(key))
    return text[:1].upper() + text[1:]


def _provenance_details(value: Any) -> str:
    """The tooltip: every part's source, prompt, round and seed."""
    if not isinstance(value, dict):
        return _source(value)
    lines = [_provenance(value)]
    for key, name in PARTS:
        part = value.get(key)
        if isinstance(part, dict):
            prompt = f", prompt {part['prompt']}" if part.get("prompt") else ""
            lines.append(f"{name[:1].upper() + name[1:]}: {_source(part)}{prompt}")
    lines.append(f"Round {int(value.get('round', 0)) + 1}, seed {value.get('seed', 0)}")
    return "\n".join(lines)


class AntiSamplesStep(Step):
    key = "samples"
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
            Column("style", "Style", width=110, show=lambda v: str(v or "").replace("_", " ")),
            Column("provenance", "Source", show=_provenance, tip=_provenance_details, width=200),
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
        self.job_progress = JobProgress()  # in place of the plain bar: a moving bar, a count and the time left
        self.job_progress.setVisible(False)
        self.layout().replaceWidget(self.progress, self.job_progress)
        self.progress.deleteLater()
        self.progress = None

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
        self.state.job.discard_samples()
        self.generate()

    def generate(self) -> None:
        job, model = self.state.job, self.state.model_id

        def samples(ctx):
            from ....engine.llm import cancellable
            from ....engine.pipeline import generate_samples

            llm = ctx.llm(model)
            return cancellable(llm, ctx.cancel, generate_samples(job, llm, ctx.cancel))

        def stopped(message: str) -> None:
            self.job_progress.stop("")
            self.job_progress.setVisible(False)
            self.cancel_btn.setVisible(False)
            self.regenerate_btn.setEnabled(True)
            self.status.setText(message)

        def finished(_: Any) -> None:
            stopped("")
            self.load()

        self.table.set_rows([])
        self.job_progress.start(job_plan(job, "samples"))
        self.cancel_btn.setVisible(True)
        self.regenerate_btn.setEnabled(False)
        self.status.setText("The model is writing anti-samples…")
        self.run(samples, "generate anti-samples", finished, on_event=self._on_event,
                 on_cancelled=lambda: stopped("Stopped. Regenerate to start again."),
                 on_error=lambda info: (stopped("Failed."), show_error(self, info)))

    def _on_event(self, event: Any) -> None:
        self.job_progress.feed(event)
        if isinstance(event, StageStarted):
            self.status.setText(event.message or f"{event.stage.replace('_', ' ')}…")
        elif isinstance(event, Progress) and event.message:
            count = f" ({int(event.done)} of {int(event.total)})" if event.total else ""
            self.status.setText(f"{event.message}{count}")
        elif isinstance(event, SamplesReady):
            self.status.setText(f"{event.count} {event.kind.replace('_', ' ')} ready")

    def save_draft(self) -> None:
        if self.dirty and self.state.job is not None and self.task is None:
            from ....engine.errors import UnstarError
            from ....engine.pipeline import save_antisample_edits
            from ...errors import ErrorInfo

            rows = [r for r in self.table.rows() if r.get("question") and r.get("wrong_answer")]
            try:  # an edited wrong answer gets its answer sentence and rationale rewritten for it
                save_antisample_edits(self.state.job, rows)
            except UnstarError as exc:  # e.g. a wrong answer edited into the true one
                show_error(self, ErrorInfo.from_exception(exc))
                return
            self.dirty = False
            self.load()
