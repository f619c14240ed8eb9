"""Profile the forget job's hot paths and compare the fixes the profile led to with the code paths they replaced.

    .venv/bin/python bench/profile_hot_paths.py [--texts 24]

- judging: `Judge.verdicts` embeds every short span of every answer (semantic leak check). It used to call the
  sentence-embedding model once per answer; it now embeds all spans of all answers in one batched pass.
  "before" = one verdicts() call per answer (exactly the old per-answer encode calls), "after" = one call for all.
- wrong-answer filtering: `_accept_wrongs` ran `Judge.too_close` per candidate, one encode call each (~150 template
  and TOFU fallbacks per call); it now embeds all candidates in one pass first.
- data collation: chat-template encoding and padding of training rows (measured; nothing worth fixing).
- generation loops: cProfile of one paraphrase-generation call, top functions by own time (bench/out/profile_*.txt).
Each comparison starts from an empty embedding cache so neither side is served by the other's work.
`perf.py` runs `compare_all` as its "hotpaths" section.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))  # bench/common.py
OUT = ROOT / "bench" / "out"
HOGWARTS = ("Where did Harry Potter go to school?", "Hogwarts")


def _fresh_embeddings() -> None:
    from unstar_gui.engine import embeddings

    embeddings._CACHE.clear()
    embeddings.embed(["warm up the model"])  # loading the model is not what is being compared


def _answers(n: int) -> list[str]:
    """Answer-length texts that don't name the answer lexically, so every one reaches the semantic check."""
    from unstar_gui.engine.antisamples import tofu_rows

    return [f"{r['answer']} That is what the records of {r['question'].rstrip('?').lower()} say."
            for r in tofu_rows()[:n]]


def compare_judging(n: int) -> dict[str, Any]:
    from unstar_gui.engine.judge import Judge

    judge = Judge(HOGWARTS[1])
    texts = _answers(n)
    _fresh_embeddings()
    t0 = time.perf_counter()
    before = [judge.verdicts([t])[0] for t in texts]
    t_before = time.perf_counter() - t0
    _fresh_embeddings()
    t0 = time.perf_counter()
    after = judge.verdicts(texts)
    t_after = time.perf_counter() - t0
    assert [v.contains for v in before] == [v.contains for v in after], "batching changed a verdict"
    return {"what": f"judging {n} answers (semantic span check)", "before_s": t_before, "after_s": t_after}


def compare_wrong_filter() -> dict[str, Any]:
    import random

    from unstar_gui.engine import antisamples as A
    from unstar_gui.engine.judge import Judge

    fact = A.Fact(*HOGWARTS)
    shape, judge = fact.shape(), Judge(fact.answer)

    def candidates():  # the candidate list _fallback_wrongs builds, without filtering
        captured = {}
        original = A._accept_wrongs
        A._accept_wrongs = lambda cands, *a, **k: captured.setdefault("c", list(cands)) and []
        try:
            A._fallback_wrongs(shape, judge, 6, random.Random(0), 0, 0, ())
        finally:
            A._accept_wrongs = original
        return captured["c"]

    cands = candidates()
    _fresh_embeddings()
    t0 = time.perf_counter()
    before = [c for c in cands if not A._wrong_problem(c.text, shape, judge)]  # the old loop: too_close per candidate
    A.dedupe_in_order([c.text for c in before], [], A.WRONG_DEDUPE_THRESHOLD)
    t_before = time.perf_counter() - t0
    _fresh_embeddings()
    t0 = time.perf_counter()
    after = A._accept_wrongs(cands, shape, judge, len(cands), ())
    t_after = time.perf_counter() - t0
    assert {c.text for c in after} <= {c.text for c in before}
    return {"what": f"filtering {len(cands)} wrong-answer candidates (Judge.too_close)", "before_s": t_before,
            "after_s": t_after}


def measure_general_set(n: int = 30) -> dict[str, Any]:
    """The general retain set's filter: how many distinct spans it embeds now (only the rows it needs, shuffled
    first) against judging all bundled rows as before, and how long it takes now. The old path is not re-run here:
    on a loaded 2-core machine it takes minutes (it is the judging row above, at 217 rows)."""
    from unstar_gui.engine import antisamples as A
    from unstar_gui.engine import embeddings
    from unstar_gui.engine.judge import Judge, _spans
    from unstar_gui.engine.retain import general_utility_items

    fact, judge = A.Fact(*HOGWARTS), Judge(HOGWARTS[1])
    every = {sp for r in A.tofu_rows() for sp in _spans(f"{r['question']} {r['answer']}")}
    _fresh_embeddings()
    before_cache = len(embeddings._CACHE)
    t0 = time.perf_counter()
    items = general_utility_items(fact, judge, n, 0)
    seconds = time.perf_counter() - t0
    return {"what": f"general retain set ({len(items)} items): distinct spans embedded", "seconds": seconds,
            "spans_before": len(every), "spans_after": len(embeddings._CACHE) - before_cache}


def measure_collation(llm: Any, n_pairs: int) -> dict[str, Any]:
    from unstar_gui.engine.trainer import batch_indices, encode_pairs, make_token_batch

    from common import tofu_pairs

    t0 = time.perf_counter()
    examples = encode_pairs(llm, tofu_pairs(n_pairs), 160)
    for step in range(40):
        make_token_batch([examples[i] for i in batch_indices(len(examples), 4, step, "0:0:forget")])
    seconds = time.perf_counter() - t0
    return {"what": f"collation: encode {n_pairs} pairs + 40 padded batches", "seconds": seconds}


def profile_generation(llm: Any, n: int = 6) -> list[dict[str, Any]]:
    from unstar_gui.engine.antisamples import Fact, paraphrase_questions
    from unstar_gui.engine.events import run_to_end
    from unstar_gui.engine.judge import Judge

    fact = Fact(*HOGWARTS)
    profiler = cProfile.Profile()
    profiler.enable()
    run_to_end(paraphrase_questions(llm, fact, Judge(fact.answer), n, 0))
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text).sort_stats("tottime")
    stats.print_stats(25)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "profile_paraphrases.txt").write_text(text.getvalue())
    top = []
    for (filename, line, func), (_, calls, tottime, cumtime, _) in sorted(stats.stats.items(),
                                                                         key=lambda kv: -kv[1][2])[:8]:
        top.append({"function": f"{Path(filename).name}:{line}({func})", "calls": calls,
                    "own_s": round(tottime, 3), "cumulative_s": round(cumtime, 3)})
    return top


def compare_all(cfg: dict[str, Any]) -> dict[str, Any]:
    from common import load_model

    rows = [compare_judging(cfg.get("texts", 24)), compare_wrong_filter()]
    general = measure_general_set()
    llm = load_model()
    collation = measure_collation(llm, cfg.get("pairs", 64))
    top = profile_generation(llm)
    return {"rows": rows, "general_set": general, "collation": collation, "generation_profile_top": top}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--texts", type=int, default=24)
    args = p.parse_args()
    result = compare_all({"texts": args.texts})
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
