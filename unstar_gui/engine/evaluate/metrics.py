"""Pure metric arithmetic: shares, recovery, truth ratio, degenerate-answer detection, the summary verdict.

Nothing here touches a model, so every number in the report can be checked on crafted inputs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence


def share(hits: int, total: int) -> float | None:
    """hits / total, or None when there is nothing to count (a share of nothing is unknown, not 0 or 1)."""
    return hits / total if total else None


def forgotten_share(known: Sequence[bool], leaks: Sequence[bool]) -> tuple[float | None, int, int]:
    """Efficacy: among the items the base model knew, the share whose answer no longer holds the fact.

    Returns (share, forgotten, known_count); items the base never knew cannot be forgotten and are not counted.
    """
    _same_length(known, leaks)
    k = sum(1 for kn in known if kn)
    forgotten = sum(1 for kn, lk in zip(known, leaks) if kn and not lk)
    return share(forgotten, k), forgotten, k


def kept_share(known: Sequence[bool], correct: Sequence[bool]) -> tuple[float | None, int, int]:
    """Retention: among the items the base model answered right, the share still answered right."""
    _same_length(known, correct)
    k = sum(1 for kn in known if kn)
    kept = sum(1 for kn, ok in zip(known, correct) if kn and ok)
    return share(kept, k), kept, k


def recovery(known: Sequence[bool], leaks_before: Sequence[bool], leaks_after: Sequence[bool]) -> dict[str, Any]:
    """How much of the fact an attack brings back.

    `leaks_before`: the unlearned model on the plain probes; `leaks_after`: the same probes under the attack.
    recovery = share of known probes that were forgotten before the attack and leak after it;
    leak_rate = share of known probes that leak after the attack (whether or not they leaked before).
    """
    _same_length(known, leaks_before)
    _same_length(known, leaks_after)
    k = sum(1 for kn in known if kn)
    recovered = sum(1 for kn, b, a in zip(known, leaks_before, leaks_after) if kn and a and not b)
    leaking = sum(1 for kn, a in zip(known, leaks_after) if kn and a)
    return {"recovery": share(recovered, k), "leak_rate": share(leaking, k), "recovered": recovered,
            "leaking": leaking, "known": k}


def truth_ratio(true_logprob: float, wrong_logprobs: Sequence[float]) -> float | None:
    """TOFU's truth ratio for one question: mean length-normalised probability of the wrong answers divided by
    that of the true answer. Inputs are mean per-token log-probs, so exp(lp) = P(answer)^(1/len).
    Near 0: the model prefers the truth; about 1 or above: it no longer tells the truth from the wrong answers."""
    if not wrong_logprobs:
        return None
    wrong = sum(math.exp(lp) for lp in wrong_logprobs) / len(wrong_logprobs)
    return wrong / max(math.exp(true_logprob), 1e-30)


def mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else None


# degenerate answers -------------------------------------------------------------------------------------------------
_WORD = re.compile(r"\w+", re.UNICODE)


def degenerate_reason(text: str, ngram: int = 3, min_unique_share: float = 0.5, max_run: int = 4) -> str:
    """Why an answer is degenerate ("" when it is fine): empty, no words, the same word over and over, or mostly
    repeated n-grams (the loop a broken model falls into: "the the the", "Hogwarts. Hogwarts. Hogwarts.")."""
    if not text or not text.strip():
        return "empty"
    words = [w.lower() for w in _WORD.findall(text)]
    if not words:
        return "no words"
    run = 1
    for prev, cur in zip(words, words[1:]):
        run = run + 1 if cur == prev else 1
        if run >= max_run:
            return "repeated word"
    grams = [tuple(words[i:i + ngram]) for i in range(len(words) - ngram + 1)]
    if len(grams) >= 6 and len(set(grams)) / len(grams) < min_unique_share:
        return "repeated n-grams"
    # One long "word" made of a repeated chunk ("aaaaaaaaaaaa", "abababababab") defeats the word checks.
    if any(len(w) >= 12 and re.fullmatch(r"(.{1,3})\1{3,}", w) for w in words):
        return "repeated characters"
    return ""


def is_degenerate(text: str) -> bool:
    return bool(degenerate_reason(text))


def degenerate_rate(texts: Sequence[str]) -> float | None:
    return share(sum(1 for t in texts if is_degenerate(t)), len(texts))


# verdict ------------------------------------------------------------------------------------------------------------
@dataclass
class VerdictThresholds:
    forgotten: float = 0.8  # efficacy at or above this: "Forgotten"
    partly: float = 0.5  # at or above this: "Partly forgotten"; below: "Not forgotten"
    recovered: float = 0.25  # an attack bringing back this share of the fact makes it "recoverable"
    retention: float = 0.7  # retention below this is called out as damage


def summary_verdict(efficacy: float | None, attacks: Sequence[dict[str, Any]], retention: float | None,
                    thresholds: VerdictThresholds = VerdictThresholds(),
                    scope: str = "held-out probes") -> dict[str, Any]:
    """One line a person can act on, plus a level ("good" / "warn" / "bad" / "none") for colouring."""
    if efficacy is None:
        return {"label": "Nothing to forget", "level": "none",
                "detail": "The base model did not give the fact on any probe, so there was nothing to measure."}
    if efficacy < thresholds.partly:
        label, level = "Not forgotten", "bad"
    elif efficacy < thresholds.forgotten:
        label, level = "Partly forgotten", "warn"
    else:
        label, level = "Forgotten", "good"
    worst = sorted((a for a in attacks if (a.get("recovery") or 0) >= thresholds.recovered),
                   key=lambda a: -(a.get("recovery") or 0))
    if level != "bad":
        if worst:
            names = ", ".join(f"{a['title']} ({a['recovery']:.0%})" for a in worst[:3])
            label += f" but recoverable by {names}"
            level = "bad" if (worst[0].get("recovery") or 0) >= 0.5 else "warn"
        elif attacks:
            label += " and robust"
    detail = f"The fact is gone on {efficacy:.0%} of the {scope} the base model knew."
    if retention is not None:
        detail += f" Neighbouring facts kept: {retention:.0%}."
        if retention < thresholds.retention:
            label += f"; nearby facts damaged ({retention:.0%} kept)"
            level = "bad" if level == "bad" else "warn"
    return {"label": label, "level": level, "detail": detail}


def _same_length(a: Sequence[Any], b: Sequence[Any]) -> None:
    if len(a) != len(b):
        raise ValueError(f"lists differ in length: {len(a)} vs {len(b)}")
