"""Step 3, "keep": related facts the model must keep knowing (suggested by the model, editable)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from PySide6.QtWidgets import QPushButton

from ...dialogs import show_error
from ...tables import Column, RowsTable
from .step import Step

if TYPE_CHECKING:
    from .wizard import ForgetWizard


class KeepStep(Step):
    key = "keep"
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
            from ....engine.antisamples import Fact
            from ....engine.retain import neighbour_questions

            llm = ctx.llm(model)
            dropped: list[Any] = []  # the engine's quality gates say what they left out, and why
            items = yield from neighbour_questions(llm, Fact(fact["question"], fact["answer"], fact["aliases"]), n,
                                                   seed, cancel=ctx.cancel, dropped=dropped)
            return ([{"question": it.question, "answer": it.target, "kind": it.kind} for it in items],
                    [f"{d.question} ({d.quality['reason']})" for d in dropped])

        def show(result: tuple[list[dict[str, Any]], list[str]]) -> None:
            rows, dropped = result
            self.progress.setVisible(False)
            self.table.set_rows(rows)
            self.status.setText(f"{len(rows)} suggestions" + (
                f" ({len(dropped)} left out by the quality checks: hover to see why)" if dropped else ""))
            self.status.setToolTip("\n".join(dropped))

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
            self.state.job.set_keep(self.keep_pairs(), reviewed=True)

    def leave(self, proceed: Callable[[bool], None]) -> None:
        job = self.state.job
        if job.read().get("keep") != self.keep_pairs():
            job.discard_samples()  # the retain set is built from the keep list
        self.save_draft()
        proceed(True)


def _has_words(text: str) -> bool:
    from ....engine.quality import has_words  # one home for "is there anything to judge"

    return has_words(text)
