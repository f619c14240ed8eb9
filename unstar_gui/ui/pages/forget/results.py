"""Step 6, "results": before/after answers and the evaluation report."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QGridLayout, QHBoxLayout, QLabel, QPushButton, QVBoxLayout

from ....engine.events import Progress, StageStarted
from ...tables import Column, RowsTable
from ..common import percent
from .step import Step

if TYPE_CHECKING:
    from .wizard import ForgetWizard


class ResultsStep(Step):
    key = "results"
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
            from ....engine.evaluate import evaluate_job

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
