"""Step 4, "samples": the anti-samples the model writes, reviewed and editable before training."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from PySide6.QtWidgets import QPushButton

from ....engine.events import Progress, SamplesReady, StageStarted
from ....engine.jobs import discard_samples
from ...dialogs import confirm, show_error
from ...tables import Column, RowsTable
from ..common import format_eta
from .step import Step

if TYPE_CHECKING:
    from .wizard import ForgetWizard


def _provenance(value: Any) -> str:
    if isinstance(value, dict):
        source = value.get("source") or value.get("method") or value.get("by") or ""
        rest = {k: v for k, v in value.items() if k not in ("source", "method", "by")}
        return " · ".join(x for x in (str(source), json.dumps(rest, ensure_ascii=False) if rest else "") if x)
    return str(value or "")


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
            from ....engine.pipeline import generate_samples

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
