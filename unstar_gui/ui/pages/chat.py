"""Chat: talk to the base model and the unlearned model side by side.

Each question goes to both (the same weights: the job's adapter is switched off for the base answer) and the answers
stream in as the tokens come. Each side keeps its own conversation: the base model sees its own earlier answers,
the unlearned one its own, so the two never mix. Stop (or Esc) ends an answer within a token. A question asked
while other model work runs says what it waits for, and can be cancelled.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Iterator

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (QComboBox, QDoubleSpinBox, QFrame, QHBoxLayout, QLabel, QLineEdit, QPushButton,
                               QScrollArea, QSpinBox, QVBoxLayout, QWidget)

from ...engine.events import AnswerPiece
from ...engine.jobs import Job, list_jobs
from ...engine.llm import ChatOptions
from ..dialogs import show_error
from ..errors import ErrorInfo
from ..services import Services
from .common import PageHeader

SIDES = ("base", "adapted")
SIDE_TITLES = {"base": "Before: the base model", "adapted": "After: with the job's adapter"}
ONLY_MODEL_TITLE = "The model (no job picked, so nothing was unlearned)"
NAME_CHARS = 40  # how much of a question the work queue shows
EMPTY_HINT = ("Ask a question below. With a finished job picked, the base model and the unlearned model both "
              "answer, side by side; follow-up questions continue the conversation.")


# worker side -----------------------------------------------------------------------------------------------------------
def job_model(job_dir: str) -> str | None:
    """The id (or folder) of the model a job unlearned from."""
    model = Job(Path(job_dir)).read().get("model") or {}
    return model.get("id") or model.get("path")


def answer_task(job_dir: str | None, question: str, histories: dict[str, list[tuple[str, str]]],
                options: ChatOptions, ctx: Any) -> Iterator[AnswerPiece]:
    """Runs on the worker thread: the job's model with its adapter (or the default model), streaming both sides."""
    from ...engine.llm import stream_sides

    if job_dir is None:
        llm = ctx.llm(None)
    else:
        llm = ctx.llm_with_adapter(job_model(job_dir), Path(job_dir) / "adapters")
    return stream_sides(llm, question, histories, options, ctx.cancel)


def warm_task(job_dir: str | None, ctx: Any) -> None:
    """Load the model before the first question, so the first answer starts at once."""
    ctx.llm(job_model(job_dir) if job_dir else None)


# widgets ---------------------------------------------------------------------------------------------------------------
class AnswerView(QFrame):
    """One model's answer to one question: the text as it streams in, a note on what is happening, Copy."""

    changed = Signal(str)  # the answer so far

    def __init__(self, title: str) -> None:
        super().__init__()
        self._text = ""
        self.done = False
        heading = QLabel(title)
        heading.setObjectName("hint")
        heading.setWordWrap(True)
        self.copy_btn = QPushButton("Copy")
        self.copy_btn.setToolTip("Copy this answer to the clipboard")
        self.copy_btn.setEnabled(False)
        self.copy_btn.clicked.connect(self.copy)
        self.body = QLabel()
        self.body.setObjectName("answerBox")
        self.body.setWordWrap(True)
        self.body.setTextFormat(Qt.TextFormat.PlainText)
        self.body.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse
                                          | Qt.TextInteractionFlag.TextSelectableByKeyboard)
        self.body.setVisible(False)
        self.note = QLabel("Waiting…")
        self.note.setObjectName("hint")
        top = QHBoxLayout()
        top.addWidget(heading, 1)
        top.addWidget(self.copy_btn)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.body)
        layout.addWidget(self.note)
        layout.addStretch(1)

    def text(self) -> str:
        return self._text.strip()

    def append(self, piece: str) -> None:
        self._text += piece
        self.body.setText(self.text())
        self.body.setVisible(bool(self.text()))
        self.copy_btn.setEnabled(bool(self.text()))
        self.set_note("")
        self.changed.emit(self.text())

    def set_note(self, text: str) -> None:
        self.note.setText(text)
        self.note.setVisible(bool(text))

    def finish(self, note: str = "") -> None:
        self.done = True
        self.set_note(note or ("" if self.text() else "(empty answer)"))

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.text())


class TurnView(QFrame):
    """One question and its answers, side by side."""

    def __init__(self, question: str, titles: dict[str, str]) -> None:
        super().__init__()
        self.setObjectName("chatTurn")
        self.question = question
        self.started = False  # the worker took the question up (False: it was still waiting in the queue)
        asked = QLabel(f"You: {question}")
        asked.setWordWrap(True)
        asked.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        font = asked.font()
        font.setBold(True)
        asked.setFont(font)
        self.answers = {side: AnswerView(title) for side, title in titles.items()}
        for later in list(self.answers.values())[1:]:
            later.set_note("Next, after the base answer.")  # the sides answer one after the other
        row = QHBoxLayout()
        row.setSpacing(16)
        for view in self.answers.values():
            row.addWidget(view, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 6, 0, 10)
        layout.addWidget(asked)
        layout.addLayout(row)

    def open_answers(self) -> list[AnswerView]:
        return [view for view in self.answers.values() if not view.done]


class SideText:
    """One side's answers as the person sees them (the text, or the note such as "(empty answer)"), oldest
    first: what a test or a quick look reads."""

    def __init__(self, page: "ChatPage", side: str) -> None:
        self.page, self.side = page, side

    def toPlainText(self) -> str:
        shown = (t.answers[self.side] for t in self.page.turns if self.side in t.answers)
        return "\n\n".join(view.text() or view.note.text() for view in shown)


PREF_MAX_TOKENS, PREF_TEMPERATURE, PREF_REPETITION = "chat/max_tokens", "chat/temperature", "chat/repetition_penalty"


# the page --------------------------------------------------------------------------------------------------------------
class ChatPage(QWidget):
    def __init__(self, services: Services) -> None:
        super().__init__()
        self.services = services
        self.task = None
        self.turns: list[TurnView] = []
        self.history: dict[str, list[tuple[str, str]]] = {side: [] for side in SIDES}
        self.base_out, self.unlearned_out = SideText(self, "base"), SideText(self, "adapted")

        self.job_combo = QComboBox()
        self.job_combo.setMinimumWidth(420)
        self.job_combo.setMaximumWidth(760)  # on a wide screen a full-width list of one line looks empty
        self.job_combo.currentIndexChanged.connect(self._job_changed)
        self.new_btn = QPushButton("New conversation")
        self.new_btn.setToolTip("Forget the earlier questions and answers and start over")
        self.new_btn.clicked.connect(self.new_conversation)
        self.max_tokens, self.temperature, self.repetition = self._option_boxes()
        self._restore_options()
        self.scroll, self.turns_layout, self.empty_hint = self._transcript()
        self.status = QLabel("")
        self.status.setObjectName("hint")
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setToolTip("Stop the answer now (Esc)")
        self.stop_btn.setVisible(False)
        keep_place = self.stop_btn.sizePolicy()
        keep_place.setRetainSizeWhenHidden(True)  # the transcript must not jump when an answer starts or ends
        self.stop_btn.setSizePolicy(keep_place)
        self.stop_btn.clicked.connect(self.stop)
        self.prompt = QLineEdit()
        self.prompt.setPlaceholderText("Ask something, e.g. the question you made the model forget")
        self.prompt.returnPressed.connect(self.ask)
        self.ask_btn = QPushButton("Ask both")
        self.ask_btn.setDefault(True)
        self.ask_btn.clicked.connect(self.ask)
        services.worker.queue_changed.connect(self._show_waiting)
        self._build_layout()

    # options are remembered between sessions (in the app's preferences, not in any job) -------------------------
    def _option_prefs(self) -> tuple[tuple[str, QSpinBox | QDoubleSpinBox, type], ...]:
        return ((PREF_MAX_TOKENS, self.max_tokens, int), (PREF_TEMPERATURE, self.temperature, float),
                (PREF_REPETITION, self.repetition, float))

    def _restore_options(self) -> None:
        prefs = self.services.prefs
        for key, box, kind in self._option_prefs():
            saved = prefs.value(key) if prefs is not None else None
            try:
                value = kind(saved) if saved is not None else None
            except (TypeError, ValueError):  # a damaged preference: keep the default
                value = None
            if value is not None and box.minimum() <= value <= box.maximum():
                box.setValue(value)
            box.valueChanged.connect(lambda v, key=key: self._save_option(key, v))

    def _save_option(self, key: str, value: float) -> None:
        if self.services.prefs is not None:
            self.services.prefs.setValue(key, value)

    # layout ------------------------------------------------------------------------------------------------------
    def _option_boxes(self) -> tuple[QSpinBox, QDoubleSpinBox, QDoubleSpinBox]:
        defaults = ChatOptions()
        max_tokens = QSpinBox()
        max_tokens.setRange(8, 4096)
        max_tokens.setSingleStep(64)
        max_tokens.setValue(defaults.max_tokens)
        max_tokens.setToolTip("The longest answer, in tokens (a token is about three quarters of a word)")
        temperature = QDoubleSpinBox()
        temperature.setRange(0.0, 2.0)
        temperature.setSingleStep(0.1)
        temperature.setValue(defaults.temperature)
        temperature.setToolTip("0 gives the most likely answer, the same every time (best for comparing); higher "
                               "values give more varied answers")
        repetition = QDoubleSpinBox()
        repetition.setRange(1.0, 2.0)
        repetition.setSingleStep(0.05)
        repetition.setValue(defaults.repetition_penalty)
        repetition.setToolTip("Above 1 discourages repeating the same words; small models otherwise loop")
        return max_tokens, temperature, repetition

    def _transcript(self) -> tuple[QScrollArea, QVBoxLayout, QLabel]:
        inner = QWidget()
        layout = QVBoxLayout(inner)
        empty = QLabel(EMPTY_HINT)
        empty.setObjectName("hint")
        empty.setWordWrap(True)
        layout.addWidget(empty)
        layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(inner)
        # follow the answer as it grows, unless the person scrolled up to read
        bar = scroll.verticalScrollBar()
        bar.rangeChanged.connect(lambda _lo, hi: bar.setValue(hi) if self._following else None)
        bar.valueChanged.connect(lambda value: setattr(self, "_following", value >= bar.maximum() - 8))
        self._following = True
        return scroll, layout, empty

    def _build_layout(self) -> None:
        top = QHBoxLayout()
        top.addWidget(QLabel("Unlearned model from job:"))
        top.addWidget(self.job_combo, 1)
        top.addStretch(0)
        top.addWidget(self.new_btn)
        options = QHBoxLayout()
        for label, box in (("Longest answer (tokens):", self.max_tokens), ("Temperature:", self.temperature),
                           ("Repetition penalty:", self.repetition)):
            options.addWidget(QLabel(label))
            options.addWidget(box)
            options.addSpacing(12)
        options.addStretch(1)
        status_row = QHBoxLayout()
        status_row.addWidget(self.status, 1)
        status_row.addWidget(self.stop_btn)
        prompt_row = QHBoxLayout()
        prompt_row.addWidget(self.prompt, 1)
        prompt_row.addWidget(self.ask_btn)
        layout = QVBoxLayout(self)
        layout.addWidget(PageHeader("Chat", "Compare answers before and after unlearning. Both come from the same "
                                            "weights: the adapter is switched off for the base answer."))
        layout.addLayout(top)
        layout.addLayout(options)
        layout.addWidget(self.scroll, 1)
        layout.addLayout(status_row)
        layout.addLayout(prompt_row)

    # jobs and conversation ---------------------------------------------------------------------------------------
    def refresh(self) -> None:
        current = self.job_combo.currentData()
        self.job_combo.blockSignals(True)  # the same choice comes back: the conversation stays
        self.job_combo.clear()
        for job in list_jobs(self.services.store()):
            # A job stopped during its evaluation is trained all the same (Job.trained): its model can be asked.
            if job.get("status") == "done" and Job(Path(job["dir"])).has_adapters or (
                    job.get("stage") == "evaluate" and Job(Path(job["dir"])).trained):
                fact = job.get("fact") or {}
                label = f"{(job.get('model') or {}).get('id', '?')}: forgot “{fact.get('question', '')}”"
                self.job_combo.addItem(label, job["dir"])
        if not self.job_combo.count():
            self.job_combo.addItem("No finished job yet: only the default model answers", None)
        self.job_combo.setCurrentIndex(max(self.job_combo.findData(current), 0))
        self.job_combo.blockSignals(False)
        if self.job_combo.currentData() != current:
            self.new_conversation()
        self._update_ask_label()
        self._warm_up()

    def _job_changed(self) -> None:
        self.new_conversation()  # another model: the earlier answers are not its own
        self._update_ask_label()
        self._warm_up()

    def _update_ask_label(self) -> None:
        self.ask_btn.setText("Ask both" if self.job_combo.currentData() else "Ask")

    def _warm_up(self) -> None:
        """Load the model while the person types, when the worker has nothing else to do."""
        if self.services.worker.idle:
            self.services.worker.submit(partial(warm_task, self.job_combo.currentData()),
                                        name="loading the model for Chat", on_error=lambda info: None)

    def new_conversation(self) -> None:
        if self.task is not None:
            return  # an answer is streaming into the current conversation
        for turn in self.turns:
            turn.deleteLater()
        self.turns.clear()
        self.history = {side: [] for side in SIDES}
        self.empty_hint.setVisible(True)

    def options(self) -> ChatOptions:
        return ChatOptions(max_tokens=self.max_tokens.value(), temperature=self.temperature.value(),
                           repetition_penalty=self.repetition.value())

    # asking ------------------------------------------------------------------------------------------------------
    def ask(self) -> None:
        question = self.prompt.text().strip()
        if not question or self.task is not None:
            return
        job_dir = self.job_combo.currentData()
        sides = SIDES if job_dir else ("base",)
        turn = self._add_turn(question, {side: SIDE_TITLES[side] if job_dir else ONLY_MODEL_TITLE
                                         for side in sides})
        histories = {side: list(self.history[side]) for side in sides}
        short = question if len(question) <= NAME_CHARS else question[:NAME_CHARS].rstrip() + "…"
        self.task = self.services.worker.submit(
            partial(answer_task, job_dir, question, histories, self.options()), name=f"chat answer to “{short}”",
            on_event=self._on_piece, on_started=lambda: self._on_started(turn),
            on_result=lambda _: self._answered(turn), on_error=lambda info: self._failed(turn, info),
            on_cancelled=lambda: self._stopped(turn), on_done=self._done)
        self.prompt.clear()
        self._set_busy(True)
        self._show_waiting()

    def _add_turn(self, question: str, titles: dict[str, str]) -> TurnView:
        turn = TurnView(question, titles)
        self.turns.append(turn)
        self.turns_layout.insertWidget(self.turns_layout.count() - 1, turn)  # above the closing stretch
        self.empty_hint.setVisible(False)
        self._following = True
        return turn

    def _show_waiting(self) -> None:
        """While the question waits in the queue: for which task, and Cancel."""
        if self.task is None or self.task.started:
            return
        ahead = self.services.worker.ahead_of(self.task)
        self.status.setText(f"Waiting for {ahead[0].name} to finish…" if ahead else "Starting…")
        self.stop_btn.setText("Cancel")

    def _on_started(self, turn: TurnView) -> None:
        turn.started = True
        self.status.setText("Answering…")
        self.stop_btn.setText("Stop")
        self._next_side_thinks(turn)

    @staticmethod
    def _next_side_thinks(turn: TurnView) -> None:
        open_answers = turn.open_answers()
        if open_answers:
            open_answers[0].set_note("Thinking…")

    def _on_piece(self, piece: AnswerPiece) -> None:
        turn = self.turns[-1]
        view = turn.answers[piece.side]
        if piece.done:
            view.finish()
            self._next_side_thinks(turn)
        else:
            view.append(piece.text)

    def _answered(self, turn: TurnView) -> None:
        for side, view in turn.answers.items():
            if not view.done:
                view.finish()
            self.history[side].append((turn.question, view.text()))

    def _stopped(self, turn: TurnView) -> None:
        if not turn.started:
            self._remove_turn(turn)  # cancelled while it waited: nothing was said; the question goes back
            return
        for side, view in turn.answers.items():
            if not view.done:
                view.finish("Stopped." if view.text() else "Stopped before it began.")
            if view.text():  # what a model said, even cut short, is part of its conversation
                self.history[side].append((turn.question, view.text()))

    def _remove_turn(self, turn: TurnView) -> None:
        self.turns.remove(turn)
        turn.deleteLater()
        self.empty_hint.setVisible(not self.turns)
        if not self.prompt.text():
            self.prompt.setText(turn.question)

    def _failed(self, turn: TurnView, info: ErrorInfo) -> None:
        for view in turn.open_answers():
            view.finish("No answer: the model failed (see the message).")
        show_error(self, info)

    def _done(self) -> None:
        self.task = None
        self._set_busy(False)
        self.status.setText("")

    def _set_busy(self, busy: bool) -> None:
        self.ask_btn.setEnabled(not busy)
        self.stop_btn.setVisible(busy)
        self.job_combo.setEnabled(not busy)
        self.new_btn.setEnabled(not busy)

    def stop(self) -> bool:
        if self.task is None:
            return False
        self.task.cancel()
        return True

    def cancel_current(self) -> bool:
        return self.stop()
