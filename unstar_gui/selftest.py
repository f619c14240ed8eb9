"""`unstar-studio --self-test`: prove an install (or a built .app) works without opening a window.

Loads the default model (the embedded SmolLM2 is imported on first use), asks it one question, embeds two sentences
with the embedded sentence model, and imports Qt's widgets. Each step prints one line; the exit code is 0 only when
every step worked, so a build script can run the bundle's executable and trust the result.
"""

from __future__ import annotations

import sys
import time
import traceback
from typing import Callable

SELF_TEST_QUESTION = "What is the capital of France?"


def _answer_step() -> str:
    from .engine.llm import LLM
    from .engine.embedded import resolve_model
    from .engine.store import ModelStore

    record = resolve_model(ModelStore())
    llm = LLM(record.path, model_id=record.id)
    answer = llm.answer([SELF_TEST_QUESTION], max_tokens=32)[0].strip()
    if not answer:
        raise RuntimeError(f"The model {record.id} gave an empty answer.")
    return f"model {record.id} on {llm.backend.label}\n  question: {SELF_TEST_QUESTION}\n  answer:   {answer}"


def _embedding_step() -> str:
    from .engine.embeddings import cosine_matrix

    similarity = float(cosine_matrix(["Paris"], ["The capital of France is Paris."])[0, 0])
    return f"all-MiniLM-L6-v2 cosine(Paris, the answer sentence) = {similarity:.2f}"


def _qt_step() -> str:
    import PySide6
    from PySide6 import QtWidgets  # noqa: F401  (loads the Qt frameworks; no window, so no display needed)

    return f"PySide6 {PySide6.__version__} widgets import"


STEPS: tuple[tuple[str, Callable[[], str]], ...] = (
    ("answer", _answer_step),
    ("embeddings", _embedding_step),
    ("qt", _qt_step),
)


def run_self_test() -> int:
    """Run every step, print what each showed; 0 if all worked, 1 otherwise."""
    from . import __version__
    from .engine.errors import UnstarError

    print(f"UnStar Studio {__version__} self-test (Python {sys.version.split()[0]}, {sys.platform})", flush=True)
    failed = []
    for name, step in STEPS:
        started = time.monotonic()
        try:
            detail = step()
        except UnstarError as exc:  # says what happened and what to do
            failed.append(name)
            print(f"FAILED {name}: {exc.message}\n  what to do: {exc.hint}", flush=True)
            continue
        except Exception as exc:  # a broken bundle fails in odd places: show the whole story
            failed.append(name)
            print(f"FAILED {name}: {type(exc).__name__}: {exc}", flush=True)
            traceback.print_exc()
            continue
        print(f"ok     {name} ({time.monotonic() - started:.1f} s): {detail}", flush=True)
    if failed:
        print(f"self-test FAILED: {', '.join(failed)}", flush=True)
        return 1
    print("self-test passed", flush=True)
    return 0
