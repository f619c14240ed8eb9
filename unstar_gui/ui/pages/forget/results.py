"""Step 6, "results": is the fact gone, are its neighbours and general knowledge kept, can an attack bring it back;
then the same questions before and after."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QBrush, QColor, QDesktopServices
from PySide6.QtWidgets import QCheckBox, QGridLayout, QHBoxLayout, QLabel, QPushButton, QVBoxLayout

from ....engine.weight_change import describe_change, trace_of
from ...charts import TraceChart
from ...dialogs import show_error
from ...tables import Column, RowsTable
from ..common import percent
from .progress import JobProgress, job_plan
from .step import Step
from .verdict import after_words, attack_failed, headline, kind_words, outcomes

if TYPE_CHECKING:
    from .wizard import ForgetWizard

BELOW_BAR = QColor("#c92a2a")
FAILED_ROW = QColor("#ffe3e3")
LEVEL_COLOURS = {"good": "#2b8a3e", "warn": "#e67700", "bad": "#c92a2a", "none": "#495057"}


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
    ATTACK_HELP = {"recovery": "Of the questions the unlearned model no longer answered, the share an attack made "
                               "it answer again. Highlighted: at or above 25%, the fact can be brought back.",
                   "base_leak_rate": "How often the base model, before unlearning, gave the fact under the same "
                                     "attack: the most an attack could bring back."}

    def __init__(self, wizard: "ForgetWizard") -> None:
        super().__init__(wizard)
        self.verdict = QLabel("")  # the headline, in the colour of its level
        self.verdict.setObjectName("verdict")
        self.verdict.setWordWrap(True)
        self.verdict.setTextFormat(Qt.TextFormat.PlainText)
        font = self.verdict.font()
        font.setPointSizeF(font.pointSizeF() * 1.2)
        font.setBold(True)
        self.verdict.setFont(font)
        self.outcome_lines = QLabel("")  # the three questions, each answered against its bar
        self.outcome_lines.setWordWrap(True)
        self.outcome_lines.setTextFormat(Qt.TextFormat.PlainText)
        self.metric_labels: dict[str, QLabel] = {}
        self.metric_captions: dict[str, QLabel] = {}
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
            self.metric_captions[key] = caption
        self.attacks = RowsTable([
            Column("title", "Attack", stretch=True, tip=lambda v: f"{v}: can it bring the fact back?"),
            Column("recovery", "Fact brought back", show=percent),
            Column("base_leak_rate", "Base model", show=percent),
            Column("detail", "How", stretch=True)])
        for col, key in ((1, "recovery"), (2, "base_leak_rate")):
            self.attacks.horizontalHeaderItem(col).setToolTip(self.ATTACK_HELP[key])
        self.attacks.setMaximumHeight(170)
        self.evaluate_btn = QPushButton("Run the evaluation")
        self.evaluate_btn.setToolTip("Measure everything again and run the attacks (re-quantization, relearning, "
                                     "other formats, indirect questions).")
        self.evaluate_btn.clicked.connect(self.evaluate)
        self.report_btn = QPushButton("Open full report")
        self.report_btn.setToolTip("The evaluation report (report.html) in your web browser.")
        self.report_btn.clicked.connect(self.open_report)
        self.eval_status = QLabel("")
        self.eval_status.setObjectName("hint")
        self.eval_progress = JobProgress()
        self.eval_progress.setVisible(False)
        attack_row = QHBoxLayout()
        attack_title = QLabel("Attacks: can the fact be brought back?")
        attack_title.setObjectName("sectionTitle")
        attack_row.addWidget(attack_title)
        attack_row.addStretch(1)
        attack_row.addWidget(self.eval_status)
        attack_row.addWidget(self.evaluate_btn)
        attack_row.addWidget(self.report_btn)
        self.table = RowsTable([Column("question", "Question", stretch=True), Column("kind", "Kind"),
                                Column("before", "Before", stretch=True, show=_or_empty),
                                Column("after", "After", stretch=True, show=_or_empty),
                                Column("result", "Result")])
        self.show_unknown = QCheckBox("Show questions the base model never knew")
        self.show_unknown.setToolTip("They can't show forgetting or keeping: the base model got them wrong already.")
        self.show_unknown.toggled.connect(lambda _: self._fill_table())
        self._rows: list[dict[str, Any]] = []
        # What the job changed in the weights and where the fact is looked up: text beside the causal trace.
        self.change_title = QLabel("What changed in the model")
        self.change_title.setObjectName("sectionTitle")
        self.change_text = QLabel("")
        self.change_text.setWordWrap(True)
        self.change_text.setTextFormat(Qt.TextFormat.PlainText)
        self.change_text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.trace_chart = TraceChart()
        self.trace_chart.setMaximumHeight(220)
        change_row = QHBoxLayout()
        change_row.addWidget(self.change_text, 1, Qt.AlignmentFlag.AlignTop)
        change_row.addWidget(self.trace_chart, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.verdict)
        layout.addWidget(self.outcome_lines)
        layout.addLayout(grid)
        layout.addLayout(attack_row)  # attacks above the long table: a failed one is seen without scrolling
        layout.addWidget(self.eval_progress)
        layout.addWidget(self.attacks)
        layout.addWidget(self.change_title)
        layout.addLayout(change_row)
        layout.addWidget(self.show_unknown)
        layout.addWidget(self.table, 1)

    def enter(self) -> None:
        job = self.state.job
        report = job.read_report() or {}
        settings = (job.read().get("settings") or {})
        metrics = report.get("metrics", {})
        counts = metrics.get("counts") or {}
        items = {o.key: o for o in outcomes(metrics, settings)}
        for key, label in self.metric_labels.items():
            hits, total = counts.get(key, (None, None))
            empty = total == 0  # a share of nothing is not 100%: say so rather than show a perfect score
            label.setText("n/a" if empty else percent(metrics.get(key)))
            outcome = items.get(key)
            below = outcome is not None and outcome.ok is False
            label.setStyleSheet(f"color: {BELOW_BAR.name()};" if below else "")
            bar = f" The bar is {outcome.bar:.0%}." if outcome is not None else ""
            label.setToolTip("The base model answered none of these right, so there is nothing to measure." if empty
                             else self.HELP.get(key, "") + ("" if total is None else f" {hits} of {total}.") + bar)
        evaluation = report.get("evaluation") or {}
        if report:
            text, level = headline(list(items.values()), evaluation)
            self.outcome_lines.setText("\n".join(o.sentence for o in items.values()))
        else:
            text, level = "No report yet: finish training first.", "none"
            self.outcome_lines.setText("")
        self.verdict.setText(text)
        self.verdict.setStyleSheet(f"color: {LEVEL_COLOURS[level]};")
        self._rows = [{**r, "kind": kind_words(r), "result": after_words(r)} for r in report.get("before_after", [])]
        unknown = sum(1 for r in self._rows if not r.get("known_before"))
        self.show_unknown.setText(f"Show questions the base model never knew ({unknown})")
        self._fill_table()
        attacks = [a for a in evaluation.get("attacks") or [] if isinstance(a, dict)]
        attacks.sort(key=lambda a: not attack_failed(a))  # failed first: at the top, seen without scrolling
        self.attacks.set_rows([{**a, "detail": f"Skipped: {a['skipped']}" if a.get("skipped")
                               else a.get("description") or ""} for a in attacks])
        for r, a in enumerate(attacks):
            if attack_failed(a):
                for c in range(self.attacks.columnCount()):
                    self.attacks.item(r, c).setBackground(QBrush(FAILED_ROW))
        self.attacks.setVisible(bool(attacks))  # an empty table says less than the status beside the button
        self.eval_status.setText("Evaluation incomplete" if not evaluation
                                 else "" if attacks else "No attacks run: nothing the base model knew to bring back")
        self.report_btn.setEnabled(job.file("report.html").exists())
        self._show_change(job.read())

    def _show_change(self, data: dict[str, Any]) -> None:
        lines = describe_change(data)
        trace = trace_of(data)
        self.change_text.setText("\n".join(f"• {line}" for line in lines))
        if trace is not None:
            self.trace_chart.set_trace(list(trace.effects), trace.changed)
        self.trace_chart.setVisible(trace is not None)
        for w in (self.change_title, self.change_text):
            w.setVisible(bool(lines))

    def _fill_table(self) -> None:
        shown = self._rows if self.show_unknown.isChecked() else [r for r in self._rows if r.get("known_before")]
        self.table.set_rows(shown)

    def open_report(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.state.job.file("report.html"))))

    def evaluate(self) -> None:
        if self.task is not None:
            return
        job, model = self.state.job, self.state.model_id

        def run_eval(ctx):
            from ....engine.evaluate import evaluate_job
            from ....engine.llm import cancellable

            llm = ctx.llm(model)
            return cancellable(llm, ctx.cancel, evaluate_job(job.dir, llm=llm, cancel=ctx.cancel))

        def stopped(text: str) -> None:
            self.eval_progress.stop("")
            self.eval_progress.setVisible(False)
            self.eval_status.setText(text)

        self.eval_status.setText("")
        self.evaluate_btn.setEnabled(False)
        self.eval_progress.start(job_plan(job, "evaluation"))
        def finished(_: Any) -> None:
            stopped("")
            if job.trained and job.status != "done":  # the evaluation a stopped run missed is now complete
                job.set_status("done", stage="done", error=None)
                self.wizard.jobs_changed.emit()
            self.enter()

        self.run(run_eval, "evaluate", finished, on_event=self.eval_progress.feed,
                 on_cancelled=lambda: stopped("Evaluation stopped: incomplete"),
                 on_error=lambda info: (stopped("Evaluation failed"), show_error(self, info)),
                 on_done=lambda: self.evaluate_btn.setEnabled(True))


def _or_empty(value: Any) -> str:
    return str(value) if value else "(empty answer)"
