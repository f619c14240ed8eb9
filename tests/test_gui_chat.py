"""Chat, the work queue and the window's memory, driven with pytest-qt (offscreen) on the tiny model.

Chat: answers stream in, Stop ends them within a token, each side's history goes with the next question, Copy
works. The queue: a question asked during other work waits visibly and can be cancelled. The window: size, place
and last page survive a restart; leaving Settings with unsaved edits asks first.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings, QSize, Qt  # noqa: E402
from PySide6.QtGui import QColor  # noqa: E402
from PySide6.QtWidgets import QApplication, QMessageBox  # noqa: E402

from unstar_gui.engine.llm import LLM  # noqa: E402
from unstar_gui.ui import dialogs  # noqa: E402
from unstar_gui.ui.app import create_app  # noqa: E402
from unstar_gui.ui.icons import ACCENT  # noqa: E402
from unstar_gui.ui.main_window import PAGES, MainWindow  # noqa: E402

from tests.helpers.gui import WAIT_MS, open_window  # noqa: E402

pytestmark = pytest.mark.gui

CHAT = PAGES.index("Chat")
FIRST_QUESTION = "Where did Harry Potter go to school?"
# The random tiny model's greedy answer is only newlines (nothing to see once stripped); a strong repetition
# penalty makes it say something.
PENALTY = 2.0


@pytest.fixture
def window(qtbot, unstar_home, monkeypatch):
    monkeypatch.setattr(dialogs.QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    yield from open_window(qtbot)


@pytest.fixture
def finished_job(tiny_model) -> Path:
    """A done job on the tiny model with a (random, non-zero) adapter, so the two sides answer differently."""
    import mlx.core as mx

    from unstar_gui.engine.llm import LoraSettings
    from unstar_gui.engine.pipeline import ForgetRequest, ForgetSettings, create_forget_job

    job = create_forget_job(ForgetRequest(FIRST_QUESTION, "Hogwarts", model="tiny", settings=ForgetSettings(),
                                          force=True))
    llm = LLM(tiny_model.path)
    llm.attach_lora(LoraSettings(rank=4, num_layers=-1))
    mx.random.seed(1)
    for layer in llm.lora_layers():
        layer.lora_b = mx.random.normal(layer.lora_b.shape) * 0.5
    llm.save_adapter(job.dir / "adapters")
    job.set_status("done")
    return job.dir


class StreamSpy:
    """Wraps LLM.stream (called on the worker thread): records each call's history and counts the pieces made."""

    def __init__(self, monkeypatch) -> None:
        self.histories: list[list[tuple[str, str]]] = []
        self.pieces = 0
        self.lock = threading.Lock()
        real = LLM.stream

        def spy(llm, question, history=(), options=None, cancel=None, system=None):
            self.histories.append(list(history))
            for piece in real(llm, question, history, options, cancel, system):
                with self.lock:
                    self.pieces += 1
                yield piece

        monkeypatch.setattr(LLM, "stream", spy)


def open_chat(qtbot, window):
    window.show_page(CHAT)
    qtbot.waitUntil(lambda: window.services.worker.idle, timeout=WAIT_MS)  # the model warm-up
    return window.chat_page


def ask(qtbot, chat, question: str) -> None:
    chat.prompt.setText(question)
    qtbot.mouseClick(chat.ask_btn, Qt.MouseButton.LeftButton)


# chat ------------------------------------------------------------------------------------------------------------------
def test_chat_streams_both_sides_sends_history_and_copies(qtbot, window, finished_job, monkeypatch):
    spy = StreamSpy(monkeypatch)
    chat = open_chat(qtbot, window)
    assert chat.job_combo.currentData() == str(finished_job) and chat.ask_btn.text() == "Ask both"
    chat.max_tokens.setValue(300)
    chat.repetition.setValue(PENALTY)
    ask(qtbot, chat, FIRST_QUESTION)
    turn = chat.turns[-1]
    base, adapted = turn.answers["base"], turn.answers["adapted"]
    partial_lengths: set[int] = set()

    def finished() -> bool:  # polled between event-loop turns: what the person sees while it streams
        if chat.task is not None and base.text():
            partial_lengths.add(len(base.text()))
        return chat.task is None

    qtbot.waitUntil(finished, timeout=WAIT_MS)
    assert len(partial_lengths) > 1, "the answer appeared in one piece instead of growing"
    assert min(partial_lengths) < len(base.text())
    assert base.text() and adapted.text() and base.text() != adapted.text()
    assert base.done and adapted.done and not base.note.isVisible()

    qtbot.mouseClick(adapted.copy_btn, Qt.MouseButton.LeftButton)
    assert QApplication.clipboard().text() == adapted.text()

    ask(qtbot, chat, "And who taught there?")
    qtbot.waitUntil(lambda: chat.task is None, timeout=WAIT_MS)
    assert spy.histories == [[], [], [(FIRST_QUESTION, base.text())], [(FIRST_QUESTION, adapted.text())]]
    assert len(chat.turns) == 2 and chat.base_out.toPlainText().startswith(base.text())

    qtbot.mouseClick(chat.new_btn, Qt.MouseButton.LeftButton)
    assert chat.turns == [] and chat.history == {"base": [], "adapted": []}


def test_stop_ends_the_answer_within_a_token(qtbot, window, tiny_model, monkeypatch):
    spy = StreamSpy(monkeypatch)
    chat = open_chat(qtbot, window)
    assert chat.ask_btn.text() == "Ask"  # no finished job: only the model itself answers
    chat.max_tokens.setValue(4000)
    chat.repetition.setValue(PENALTY)
    ask(qtbot, chat, FIRST_QUESTION)
    answer = chat.turns[-1].answers["base"]
    assert chat.stop_btn.isVisible()
    qtbot.waitUntil(lambda: bool(answer.text()), timeout=WAIT_MS)
    with spy.lock:
        qtbot.mouseClick(chat.stop_btn, Qt.MouseButton.LeftButton)
        made_at_stop = spy.pieces
        shown_at_stop = answer.text()
    qtbot.waitUntil(lambda: chat.task is None, timeout=WAIT_MS)
    assert spy.pieces - made_at_stop <= 1 and spy.pieces < 4000
    assert answer.text() == shown_at_stop and "…" not in answer.text()  # nothing lands after Stop, no placeholder
    assert answer.note.text() == "Stopped." and not chat.stop_btn.isVisible() and chat.ask_btn.isEnabled()
    assert chat.history["base"] == [(FIRST_QUESTION, shown_at_stop)]


def test_esc_stops_the_answer(qtbot, window, tiny_model):
    chat = open_chat(qtbot, window)
    chat.max_tokens.setValue(4000)
    chat.repetition.setValue(PENALTY)
    ask(qtbot, chat, FIRST_QUESTION)
    answer = chat.turns[-1].answers["base"]
    qtbot.waitUntil(lambda: bool(answer.text()), timeout=WAIT_MS)
    qtbot.keyClick(window, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: chat.task is None, timeout=WAIT_MS)
    assert answer.note.text() == "Stopped."


# the work queue --------------------------------------------------------------------------------------------------------
def test_question_waits_behind_running_work_and_can_be_cancelled(qtbot, window, tiny_model):
    worker = window.services.worker
    chat = open_chat(qtbot, window)

    def long_work(ctx) -> None:
        while not ctx.cancel.cancelled:
            time.sleep(0.01)

    long = worker.submit(long_work, name="test training")
    qtbot.waitUntil(lambda: long.started, timeout=WAIT_MS)
    ask(qtbot, chat, FIRST_QUESTION)
    assert chat.status.text() == "Waiting for test training to finish…"
    assert chat.stop_btn.isVisible() and chat.stop_btn.text() == "Cancel"
    panel = window.queue_panel
    assert panel.rows() == [("test training", "running"), (chat.task.name, "waiting")]
    assert "test training" in window.queue_button.text() and "1 waiting" in window.queue_button.text()
    window.queue_button.click()
    assert panel.isVisible()

    qtbot.mouseClick(panel.row_widgets[1].cancel_btn, Qt.MouseButton.LeftButton)
    assert panel.rows() == [("test training", "running")]
    assert chat.task is None and chat.turns == [] and chat.prompt.text() == FIRST_QUESTION  # the question is back
    assert chat.status.text() == "" and not chat.stop_btn.isVisible()

    qtbot.mouseClick(panel.row_widgets[0].cancel_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: worker.idle, timeout=WAIT_MS)
    assert panel.rows() == [] and window.queue_button.text() == "Idle"
    panel.hide()


def test_cancelling_a_waiting_task_ends_it_at_once_and_it_never_runs(qtbot):
    from unstar_gui.ui.workers import MlxWorker

    worker = MlxWorker()
    try:
        release = threading.Event()
        ran: list[str] = []
        ended: list[str] = []
        first = worker.submit(lambda ctx: release.wait(WAIT_MS / 1000), name="first")
        second = worker.submit(lambda ctx: ran.append("second"), name="second",
                               on_cancelled=lambda: ended.append("cancelled"), on_done=lambda: ended.append("done"))
        qtbot.waitUntil(lambda: first.started, timeout=WAIT_MS)
        assert [(t.name, t.state) for t in worker.tasks()] == [("first", "running"), ("second", "waiting")]
        assert worker.ahead_of(second) == [first] and worker.ahead_of(first) == []
        second.cancel()
        assert ended == ["cancelled", "done"] and worker.tasks() == [first]  # at once, not when `first` ends
        release.set()
        qtbot.waitUntil(lambda: worker.idle, timeout=WAIT_MS)
        assert ran == []
    finally:
        assert worker.stop()


# the window ------------------------------------------------------------------------------------------------------------
def test_window_remembers_geometry_and_last_page(qtbot, tmp_path, unstar_home, monkeypatch):
    monkeypatch.setattr(dialogs.QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    create_app([])
    prefs_file = str(tmp_path / "prefs.ini")

    def start() -> MainWindow:
        w = MainWindow(prefs=QSettings(prefs_file, QSettings.Format.IniFormat))
        qtbot.addWidget(w)
        w.show()
        return w

    first = start()
    assert first.stack.currentWidget() is first.forget_page  # the first start opens on Forget
    # the offscreen screen is 800 px wide: a restored window is clamped to it, so only the height can be free
    first.resize(900, 713)
    first.show_page(CHAT)
    # the chat's options are remembered too (a person who turned the temperature down expects it to stay down)
    first.chat_page.max_tokens.setValue(300)
    first.chat_page.temperature.setValue(0.7)
    first.chat_page.repetition.setValue(1.3)
    qtbot.waitUntil(lambda: first.services.worker.idle, timeout=WAIT_MS)
    first.close()
    assert not first.isVisible()

    second = start()
    try:
        assert second.stack.currentWidget() is second.chat_page and second.nav.currentRow() == CHAT
        assert second.size() == QSize(900, 713)  # a new window without saved geometry is 1200 x 800
        chat = second.chat_page
        assert (chat.max_tokens.value(), chat.temperature.value(), chat.repetition.value()) == (300, 0.7, 1.3)
    finally:
        second.services.worker.stop(WAIT_MS)


def test_damaged_or_out_of_range_chat_options_fall_back_to_the_defaults(qtbot, tmp_path, unstar_home):
    from unstar_gui.engine.llm import ChatOptions
    from unstar_gui.ui.pages.chat import PREF_MAX_TOKENS, PREF_REPETITION, PREF_TEMPERATURE

    create_app([])
    prefs = QSettings(str(tmp_path / "prefs.ini"), QSettings.Format.IniFormat)
    prefs.setValue(PREF_MAX_TOKENS, "lots")  # not a number
    prefs.setValue(PREF_TEMPERATURE, 99.0)  # outside the box's range
    prefs.setValue(PREF_REPETITION, 1.25)  # fine
    w = MainWindow(prefs=prefs)
    qtbot.addWidget(w)
    try:
        chat, defaults = w.chat_page, ChatOptions()
        assert chat.max_tokens.value() == defaults.max_tokens
        assert chat.temperature.value() == defaults.temperature
        assert chat.repetition.value() == 1.25
    finally:
        w.services.worker.stop(WAIT_MS)


def test_leaving_settings_with_unsaved_edits_asks(qtbot, window, monkeypatch):
    buttons = QMessageBox.StandardButton
    answers: list = []
    asked: list[str] = []

    def question(parent, title, text, *args, **kwargs):
        asked.append(title)
        return answers.pop(0)

    monkeypatch.setattr("unstar_gui.ui.pages.settings.QMessageBox.question", question)
    page = window.settings_page
    settings, jobs = PAGES.index("Settings"), PAGES.index("Jobs")
    window.show_page(settings)
    window.show_page(jobs)
    assert asked == [] and window.stack.currentWidget() is window.jobs_page  # nothing changed: no question

    window.show_page(settings)
    page.training.fields["rank"].setValue(4)
    answers.append(buttons.Cancel)
    window.nav.setCurrentRow(jobs)  # a click in the sidebar
    assert asked == ["Unsaved settings"]
    assert window.stack.currentWidget() is page and window.nav.currentRow() == settings
    assert page.training.fields["rank"].value() == 4  # the edit is still there

    answers.append(buttons.Discard)
    window.show_page(jobs)
    assert window.stack.currentWidget() is window.jobs_page
    assert "training" not in window.services.store().load_settings()
    window.show_page(settings)
    assert page.training.fields["rank"].value() == 8

    page.training.fields["rank"].setValue(4)
    answers.append(buttons.Save)
    window.show_page(jobs)
    assert window.services.store().load_settings()["training"]["rank"] == 4
    assert len(asked) == 3 and window.stack.currentWidget() is window.jobs_page


def test_chat_and_settings_have_their_own_drawn_icons(qtbot, window):
    for name in ("Chat", "Settings"):
        image = window.nav.item(PAGES.index(name)).icon().pixmap(32, 32).toImage()
        colours = {QColor(image.pixel(x, y)).name() for x in range(32) for y in range(32)}
        assert ACCENT.name() in colours, name


# the embedded model ----------------------------------------------------------------------------------------------------
# The goal (first token within 2 s on a quiet machine; measured 0.35-0.63 s warm on the shared 2-core box) is a
# number to report, not to time in CI: this bound only catches an answer that is not streamed at all.
FIRST_TOKEN_BOUND_S = 10.0


@pytest.mark.slow
def test_first_token_streams_right_after_asking_on_the_embedded_model(qtbot, window, smollm2):
    """Chat loads the model when the page opens, so the first word of an answer comes right after asking."""
    chat = open_chat(qtbot, window)
    assert "smollm2" in window.model_label.text()  # the warm-up loaded it
    answer_seen: list[float] = []
    ask(qtbot, chat, "What is the capital of France?")
    asked = time.perf_counter()
    chat.turns[-1].answers["base"].changed.connect(
        lambda _text: answer_seen.append(time.perf_counter()) if not answer_seen else None)
    qtbot.waitUntil(lambda: bool(answer_seen), timeout=WAIT_MS)
    first_token_s = answer_seen[0] - asked
    print(f"\nfirst token after {first_token_s:.2f} s")
    qtbot.waitUntil(lambda: chat.task is None, timeout=WAIT_MS)
    assert "Paris" in chat.turns[-1].answers["base"].text()
    assert first_token_s < FIRST_TOKEN_BOUND_S
