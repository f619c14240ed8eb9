"""Asking a model many questions: batched greedy answers that report progress between batches and can be stopped.

The forget job (probes, re-probes, stop checks) and the evaluation both ask through `ask`, so they see the same
answers for the same questions and token budget.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

from .events import Progress, Steps

BATCH = 16  # questions per generate call between progress events (LLM's batch; 1.5x faster than 8 on CPU)


def ask(llm: Any, questions: Sequence[str], *, stage: str, check: Callable[[], None] | None = None,
        max_tokens: int = 64, batch_size: int = BATCH, system: str | None = None,
        message: str = "answers") -> Steps[list[str]]:
    """The model's chat answers (`llm.answer`) in batches, yielding Progress with an ETA after each; `check` runs
    before each batch and raises to stop (the caller decides what a stop means: a job's CancelToken.check, the
    evaluation's own message)."""
    out: list[str] = []
    t0 = time.perf_counter()
    for i in range(0, len(questions), batch_size):
        if check is not None:
            check()
        out += llm.answer(list(questions[i:i + batch_size]), max_tokens=max_tokens, system=system,
                          batch_size=batch_size)
        elapsed = time.perf_counter() - t0
        eta = elapsed / len(out) * (len(questions) - len(out))
        yield Progress(stage, len(out), len(questions), message, eta)
    return out
