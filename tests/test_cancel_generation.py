"""Cancel inside generation: the model checks the job's flag after every token (engine/llm.py `cancellable`)."""

from __future__ import annotations

import pytest

from unstar_gui.engine.errors import Cancelled
from unstar_gui.engine.events import run_to_end
from unstar_gui.engine.llm import cancellable, load_llm
from unstar_gui.engine.trainer import CancelToken


@pytest.fixture(scope="module")
def tiny_llm(tiny_model_dir):
    return load_llm(tiny_model_dir)


class CancelAfter:
    """A flag that turns on after it has been read `n` times (n tokens into a generation)."""

    def __init__(self, n: int) -> None:
        self.n, self.reads = n, 0

    @property
    def cancelled(self) -> bool:
        self.reads += 1
        return self.reads > self.n


def test_the_cancellable_loop_gives_the_same_answers(tiny_llm):
    qs = ["Where is Paris?", "Who wrote Hamlet?", "What is two plus two?"]
    plain = tiny_llm.answer(qs, max_tokens=8)
    tiny_llm.cancel = CancelToken()  # set but never cancelled: the token-by-token loop runs
    try:
        assert tiny_llm.answer(qs, max_tokens=8) == plain
    finally:
        tiny_llm.cancel = None


def test_cancel_lands_within_a_few_tokens_and_the_flag_is_taken_off(tiny_llm):
    flag = CancelAfter(3)

    def job():
        yield "started"
        return tiny_llm.answer(["Where is Paris?"] * 4, max_tokens=400)

    with pytest.raises(Cancelled):
        run_to_end(cancellable(tiny_llm, flag, job()))
    assert flag.reads == 4  # stopped at the fourth token, not after 400
    assert tiny_llm.cancel is None
    assert len(tiny_llm.answer(["Where is Paris?"], max_tokens=4)) == 1  # later tasks are not cancelled


def test_a_job_token_raises_its_own_error(tiny_llm):
    token = CancelToken()
    token.cancel()
    tiny_llm.cancel = token
    try:
        with pytest.raises(Cancelled, match="Cancelled by the user"):
            tiny_llm.answer(["Where is Paris?"], max_tokens=8)
    finally:
        tiny_llm.cancel = None
