"""Step 2, "fact": the question and answer to forget (leaving it creates the job folder)."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Callable

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QCheckBox, QFormLayout, QGroupBox, QLabel, QLineEdit, QVBoxLayout

from ...dialogs import show_error
from ...errors import ErrorInfo
from ...workers import TaskHandle
from .step import Step

if TYPE_CHECKING:
    from .wizard import ForgetWizard


class FactStep(Step):
    key = "fact"
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
        self.force.setToolTip("Without this, the wizard stops at this step when the model's answer doesn't contain "
                              "the answer or an alias (there would be nothing to forget).")
        self.force.toggled.connect(lambda _: self.ready_changed.emit())
        # The last answer checked: (question, answer, aliases) -> does the model's answer contain the fact?
        self._checked: tuple[tuple[str, str, tuple[str, ...]], bool] | None = None
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
        inner.addWidget(self.force)  # right under the warning it answers
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(box)
        layout.addStretch(1)

    def reset(self) -> None:
        self.question.setText(self.state.question)
        self.answer.setText(self.state.answer)
        self.aliases.setText(", ".join(self.state.aliases))
        self.force.setChecked(bool(self.state.job.read().get("force")) if self.state.job is not None else False)
        self.known.setText("")
        self._checked = None
        self.preview_timer.stop()

    def enter(self) -> None:
        self.question.setFocus()
        if self.question.text().strip():
            self.preview_timer.start()

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
        inputs = self._inputs()
        self.current_answer.setText("<i>asking the model…</i>")

        def answer(ctx):
            return _ask_model(ctx, model, question, answer_text, aliases)

        def show(result: tuple[str, bool | None]) -> None:
            text, known = result
            self.current_answer.setText(html.escape(text) or "<i>(empty answer)</i>")
            if known is not None:
                self._checked = (inputs, known)
            self._show_known(known)

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

    def _inputs(self) -> tuple[str, str, tuple[str, ...]]:
        return (self.question.text().strip(), self.answer.text().strip(),
                tuple(a.strip() for a in self.aliases.text().split(",") if a.strip()))

    def _known_now(self) -> bool | None:
        """Whether the model's answer to what is typed now contains the fact (None: not checked yet)."""
        if self._checked is None or self._checked[0] != self._inputs():
            return None
        return self._checked[1]

    def _show_known(self, known: bool | None) -> None:
        if known is None:
            self.known.setText("")
        elif known:
            self.known.setText("✔ The model knows the answer: this is what will be forgotten.")
        else:
            self.known.setText("⚠ The model's answer doesn't contain this answer, so there is nothing to forget yet. "
                               "Add the name the model uses under “Also known as”, rephrase the question, "
                               "or tick the box below to go on anyway.")
        self.ready_changed.emit()

    def ready(self) -> bool:
        if not (self.question.text().strip() and self.answer.text().strip()):
            return False
        # An unknown fact stops here, before any job folder exists, unless the box says to go on.
        return self.force.isChecked() or self._known_now() is not False

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
                job.set_fact(self.state.fact)
            job.set_force(self.force.isChecked())
            proceed(True)
            return
        state, force = self.state, self.force.isChecked()
        if not force and self._known_now() is None:  # Next before the preview came back: check first
            self.preview_timer.stop()
            self._check_then(proceed)
            return

        def create(ctx):
            from ....engine.pipeline import ForgetRequest, ForgetSettings, create_forget_job

            settings = ForgetSettings.from_dict(state.settings)
            request = ForgetRequest(question=state.question, answer=state.answer, aliases=state.aliases,
                                    model=state.model_id, settings=settings, force=force)
            return create_forget_job(request)

        def created(job) -> None:
            self.wizard.set_job(job)
            proceed(True)

        self.run(create, "create job", created, on_error=lambda info: (show_error(self, info), proceed(False)))

    def _check_then(self, proceed: Callable[[bool], None]) -> None:
        """Ask the model, then leave if it knows the fact (or stay, showing why)."""
        model, inputs = self.state.model_id, self._inputs()
        question, answer, aliases = inputs

        def check(ctx):
            return _ask_model(ctx, model, question, answer, aliases)

        def checked(result: tuple[str, bool]) -> None:
            text, known = result
            self.current_answer.setText(html.escape(text) or "<i>(empty answer)</i>")
            self._checked = (inputs, known)
            self._show_known(known)
            if known:
                self.leave(proceed)
            else:
                proceed(False)

        self.current_answer.setText("<i>asking the model…</i>")
        self.run(check, "check fact", checked, on_cancelled=lambda: proceed(False),
                 on_error=lambda info: (show_error(self, info), proceed(False)))


def _ask_model(ctx, model: str | None, question: str, answer: str, aliases) -> tuple[str, bool | None]:
    """On the worker: the model's answer to `question` and whether it contains `answer` or an alias."""
    from ....engine.judge import Judge

    text = ctx.llm(model).answer([question], max_tokens=64)[0]
    return text, (Judge(answer, tuple(aliases)).contains(text) if answer else None)
