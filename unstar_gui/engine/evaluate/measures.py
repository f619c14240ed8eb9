"""Metrics measured with the model: efficacy, retention, answer log-probs and truth ratio, fluency.

"Before" is always the base model (`llm.base_model()`: adapter scale 0, exactly the original weights); "after" is the
model with the job's adapter.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Generator, Sequence

from ..asking import ask
from ..events import Event, Progress
from ..judge import known_retain, probe_leaks, retain_reference
from ..retain import GENERAL_KINDS, NEIGHBOUR_KINDS
from . import metrics
from .probing import SPLIT_ORDER, JobData, check_cancel

REFERENCE_TEXT = Path(__file__).resolve().parents[3] / "resources" / "data" / "reference_text.txt"


def fill_base_answers(llm: Any, rows: list[dict[str, Any]], *, stage: str, check: Any, max_tokens: int,
                      batch_size: int) -> Generator[Event, None, None]:
    """Ask the base model (adapter off) the rows that have no `base_answer` yet (older jobs) and fill them in."""
    missing = [i for i, r in enumerate(rows) if r.get("base_answer") is None]
    if not missing:
        return
    with llm.base_model():
        base = yield from ask(llm, [rows[i]["question"] for i in missing], stage=stage, check=check,
                              max_tokens=max_tokens, batch_size=batch_size, message="base answers")
    for i, a in zip(missing, base):
        rows[i]["base_answer"] = a


def probe_forgetting(llm: Any, data: JobData, judge: Any, *, cancel: Any, max_tokens: int,
                     batch_size: int) -> Generator[Event, None, list[dict[str, Any]]]:
    """Answer every probe with the adapter; fill missing base answers. One row per probe with known/leaks flags."""
    rows = [dict(p) for p in data.probes]
    check = partial(check_cancel, cancel)
    yield from fill_base_answers(llm, rows, stage="efficacy", check=check, max_tokens=max_tokens,
                                 batch_size=batch_size)
    after = yield from ask(llm, [r["question"] for r in rows], stage="efficacy", check=check,
                           max_tokens=max_tokens, batch_size=batch_size, message="answers after unlearning")
    judge.verdicts(after)  # one batched embedding pass; probe_leaks below reads its cache
    # The same leak rule as training's re-probes (a yes/no probe leaks on "Yes", not on "No, ... Durmstrang").
    after_leaks = [probe_leaks(r.get("style", ""), a, judge, r["question"]) for r, a in zip(rows, after)]
    unknown = [i for i, r in enumerate(rows) if r.get("known") is None]
    if unknown:
        for i in unknown:
            rows[i]["known"] = probe_leaks(rows[i].get("style", ""), rows[i]["base_answer"], judge,
                                           rows[i]["question"])
    out = []
    for r, a, leak in zip(rows, after, after_leaks):
        out.append({"question": r["question"], "split": r.get("split", "train"), "style": r.get("style", ""),
                    "before": r["base_answer"], "after": a, "known_before": bool(r["known"]), "leaks_after": leak})
    return out


def efficacy_by_split(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Efficacy per split and overall; the headline is the held-out one (never trained on) when it has items."""
    result: dict[str, Any] = {"counts": {}}
    for split in (*SPLIT_ORDER, "all"):
        sel = [r for r in rows if split == "all" or r["split"] == split]
        value, forgotten, known = metrics.forgotten_share([r["known_before"] for r in sel],
                                                          [r["leaks_after"] for r in sel])
        result[split] = value
        result["counts"][split] = {"forgotten": forgotten, "known": known, "probes": len(sel)}
    scope = "heldout" if result["heldout"] is not None else "all"
    result["headline"] = result[scope]
    result["headline_scope"] = "held-out probes" if scope == "heldout" else "probes"
    return result


def probe_retention(llm: Any, data: JobData, *, cancel: Any, max_tokens: int, batch_size: int,
                    semantic: bool) -> Generator[Event, None, list[dict[str, Any]]]:
    """Answer every retain item with the adapter; each is judged against its own reference answer."""
    rows = [dict(r) for r in data.retain if retain_reference(r) and r.get("question")]
    check = partial(check_cancel, cancel)
    yield from fill_base_answers(llm, rows, stage="retention", check=check, max_tokens=max_tokens,
                                 batch_size=batch_size)
    after = yield from ask(llm, [r["question"] for r in rows], stage="retention", check=check,
                           max_tokens=max_tokens, batch_size=batch_size, message="retain answers after")
    out = []
    for r, a in zip(rows, after):
        # the job's own retention rule (aliases; trivia judged on the first sentence)
        before_ok, after_ok = (known_retain(r, text, semantic=semantic) for text in (r["base_answer"], a))
        out.append({"question": r["question"], "kind": r.get("kind", "general"), "reference": retain_reference(r),
                    "before": r["base_answer"], "after": a, "known_before": before_ok, "correct_after": after_ok})
    return out


def retention_by_kind(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    def kept(sel: Sequence[dict[str, Any]]) -> tuple[float | None, int, int]:
        return metrics.kept_share([r["known_before"] for r in sel], [r["correct_after"] for r in sel])

    result: dict[str, Any] = {"counts": {}, "by_kind": {}}
    for name, kinds in (("neighbours", NEIGHBOUR_KINDS), ("general", GENERAL_KINDS)):
        value, k, n = kept([r for r in rows if r["kind"] in kinds])
        result[name] = value
        result["counts"][name] = {"kept": k, "known": n}
    for kind in sorted({r["kind"] for r in rows}):
        result["by_kind"][kind] = kept([r for r in rows if r["kind"] == kind])[0]
    result["all"] = kept(rows)[0]
    return result


def answer_probabilities(llm: Any, data: JobData, retain_rows: Sequence[dict[str, Any]], *, cancel: Any,
                         n_wrong: int) -> Generator[Event, None, dict[str, Any]]:
    """Mean log-prob of the true answer on forget and retain sets, and the truth ratio on forget probes,
    before (base) and after (adapter)."""
    forget_q = [p["question"] for p in data.probes]
    wrongs = data.wrong_answers[:n_wrong]
    pairs = [(q, data.answer) for q in forget_q] + [(q, w) for q in forget_q for w in wrongs]
    pairs += [(r["question"], r["reference"]) for r in retain_rows]
    result: dict[str, Any] = {"n_wrong": len(wrongs)}
    for phase in ("before", "after"):
        check_cancel(cancel)
        yield Progress(stage="probabilities", done=0 if phase == "before" else 1, total=2, message=phase)
        if phase == "before":
            with llm.base_model():
                lps = llm.answer_logprobs(pairs)
        else:
            lps = llm.answer_logprobs(pairs)
        nf, nw = len(forget_q), len(forget_q) * len(wrongs)
        true_lp, wrong_lp, retain_lp = lps[:nf], lps[nf:nf + nw], lps[nf + nw:]
        ratios = [metrics.truth_ratio(true_lp[i], wrong_lp[i * len(wrongs):(i + 1) * len(wrongs)])
                  for i in range(nf)]
        result[phase] = {"forget_logprob": metrics.mean(true_lp), "retain_logprob": metrics.mean(retain_lp),
                         "truth_ratio": metrics.mean(ratios)}
    yield Progress(stage="probabilities", done=2, total=2)
    return result


def fluency(llm: Any, answers_before: Sequence[str], answers_after: Sequence[str]) -> dict[str, Any]:
    """Degenerate-answer rates and perplexity on a fixed public-domain paragraph, before and after."""
    result: dict[str, Any] = {"degenerate_before": metrics.degenerate_rate(answers_before),
                              "degenerate_after": metrics.degenerate_rate(answers_after),
                              "degenerate_examples": [a for a in answers_after if metrics.is_degenerate(a)][:5],
                              "perplexity_before": None, "perplexity_after": None, "reference": None}
    if REFERENCE_TEXT.exists():
        text = REFERENCE_TEXT.read_text(encoding="utf-8").strip()
        with llm.base_model():
            result["perplexity_before"] = llm.perplexity(text)
        result["perplexity_after"] = llm.perplexity(text)
        result["reference"] = REFERENCE_TEXT.name
    return result
