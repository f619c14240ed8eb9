"""Streaming chat answers (engine side): LLM.stream yields the greedy answer piece by piece, stops within a token
when cancelled, and stream_sides gives each side its own conversation."""

from __future__ import annotations

import pytest

from unstar_gui.engine.errors import InvalidInput
from unstar_gui.engine.events import AnswerPiece
from unstar_gui.engine.llm import LLM, ChatOptions, stream_sides

QUESTION = "Where did Harry Potter go to school?"
PLAIN = ChatOptions(max_tokens=12, temperature=0.0, repetition_penalty=1.0)


class CancelAfter:
    """A cancel flag that turns on once `n` pieces were read (what the GUI's Stop button does to the token)."""

    def __init__(self, n: int) -> None:
        self.n, self.seen = n, 0

    @property
    def cancelled(self) -> bool:
        return self.seen >= self.n


@pytest.fixture
def tiny_llm(tiny_model_dir):
    return LLM(tiny_model_dir)


def test_stream_yields_the_greedy_answer_in_pieces(tiny_llm):
    pieces = list(tiny_llm.stream(QUESTION, options=PLAIN))
    assert len(pieces) > 1 and all(pieces)
    assert "".join(pieces).strip() == tiny_llm.answer([QUESTION], max_tokens=PLAIN.max_tokens)[0]


def test_repetition_penalty_changes_the_answer(tiny_llm):
    """The random tiny model's greedy answer repeats one token (a newline); a strong penalty breaks the loop."""
    plain = "".join(tiny_llm.stream("Hello", options=ChatOptions(20, 0.0, repetition_penalty=1.0)))
    penalised = "".join(tiny_llm.stream("Hello", options=ChatOptions(20, 0.0, repetition_penalty=2.0)))
    assert len(set(plain)) == 1 and len(set(penalised)) > 3


def test_stream_stops_within_a_token_of_cancel(tiny_llm):
    cancel = CancelAfter(3)
    pieces = []
    for piece in tiny_llm.stream(QUESTION, options=ChatOptions(max_tokens=500), cancel=cancel):
        pieces.append(piece)
        cancel.seen += 1
    assert len(pieces) == 3


def test_stream_refuses_an_empty_question(tiny_llm):
    with pytest.raises(InvalidInput):
        list(tiny_llm.stream("   "))


def test_history_reaches_the_prompt(tiny_llm):
    history = [("Who wrote Hamlet?", "Shakespeare")]
    with_history = tiny_llm.chat_tokens(QUESTION, history=history)
    assert tiny_llm.encode("Shakespeare")[0] in with_history
    assert len(with_history) > len(tiny_llm.chat_tokens(QUESTION))


def test_stream_sides_keeps_each_sides_history(tiny_llm, monkeypatch):
    seen: list[tuple[str, list]] = []
    real = LLM.stream

    def spy(self, question, history=(), options=None, cancel=None, system=None):
        seen.append((question, list(history)))
        return real(self, question, history, options, cancel, system)

    monkeypatch.setattr(LLM, "stream", spy)
    histories = {"base": [("Hi", "base said hi")], "adapted": [("Hi", "adapted said hi")]}
    events = list(stream_sides(tiny_llm, QUESTION, histories, PLAIN))
    assert seen == [(QUESTION, histories["base"]), (QUESTION, histories["adapted"])]
    sides = [e.side for e in events]
    assert sides == sorted(sides, key=["base", "adapted"].index), "the base answer comes first, whole"
    assert [e for e in events if e.done] == [AnswerPiece("base", "", True), AnswerPiece("adapted", "", True)]


def test_stream_sides_stops_without_marking_done(tiny_llm):
    cancel = CancelAfter(2)
    events = []
    for event in stream_sides(tiny_llm, QUESTION, {"base": [], "adapted": []}, ChatOptions(max_tokens=200), cancel):
        events.append(event)
        cancel.seen += 1
    assert len(events) == 2 and not any(e.done or e.side == "adapted" for e in events)
