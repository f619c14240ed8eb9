"""What the benchmark scripts share (perf.py, profile_hot_paths.py): bundled question/answer pairs, loading the
benchmark model quietly. Its own module so the scripts never import each other."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@contextlib.contextmanager
def quiet():
    """Silence libraries that print progress (mlx-lm's trainer table, weight-loading bars)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def tofu_pairs(n: int) -> list[tuple[str, str]]:
    """Real question/answer pairs of anti-sample length from the bundled TOFU files."""
    rows = []
    for path in sorted((ROOT / "resources" / "data" / "tofu").glob("*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    pairs = []
    for i, row in enumerate(rows[:n]):
        wrong = (row.get("perturbed_answer") or [row["answer"]])[0]
        pairs.append((row["question"], f"{wrong}. {row['answer']} is what many people say, but records show {wrong}."))
    return pairs


def load_model(model_id: str | None = None) -> Any:
    """The benchmark model as an engine LLM (the embedded default when no id is given); engine imports stay lazy."""
    from unstar_gui.engine.llm import LLM
    from unstar_gui.engine.embedded import resolve_model
    from unstar_gui.engine.store import ModelStore

    record = resolve_model(ModelStore(), model_id)
    with quiet():
        return LLM(record.path, model_id=record.id)


def load_embedded_llm() -> Any:
    """The embedded SmolLM2 as an engine LLM from the current data folder ($UNSTAR_HOME), imported from the bundled
    GGUF on first use (the locality benchmarks set their own data folder)."""
    from unstar_gui.engine.embedded import embedded_gguf_path
    from unstar_gui.engine.importers import import_gguf
    from unstar_gui.engine.llm import LLM
    from unstar_gui.engine.store import ModelStore

    store = ModelStore()
    try:
        rec = store.resolve("smollm2-135m-instruct")
    except Exception:
        rec = import_gguf(store, embedded_gguf_path(), "smollm2-135m-instruct")
    return LLM(rec.path, model_id=rec.id)
