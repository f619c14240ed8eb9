"""The Results step's judgement in words, without Qt: the three outcomes a person asks about (is the fact gone, are
its neighbours kept, is general knowledge kept), each against the bar the job's settings set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Efficacy at or above this reads "forgotten" (evaluate/metrics.VerdictThresholds.forgotten: the same bar).
FORGOTTEN_BAR = 0.8


@dataclass
class Outcome:
    key: str  # the report.json metric
    question: str  # what the person asks
    value: float | None  # None: nothing to measure (the base model knew none of these)
    bar: float

    @property
    def ok(self) -> bool | None:
        return None if self.value is None else self.value >= self.bar

    @property
    def sentence(self) -> str:
        if self.value is None:
            return f"{self.question} Nothing to measure: the base model knew none of these."
        answer = "Yes" if self.ok else "No"
        return f"{self.question} {answer}: {self.value:.0%} (the bar is {self.bar:.0%})."


def outcomes(metrics: dict[str, Any], settings: dict[str, Any]) -> list[Outcome]:
    counts = metrics.get("counts") or {}

    def value(key: str) -> float | None:
        total = (counts.get(key) or (None, None))[1]
        return None if total == 0 or metrics.get(key) is None else float(metrics[key])

    gone = "efficacy_heldout" if value("efficacy_heldout") is not None else "efficacy_train"
    return [Outcome(gone, "Is the fact forgotten?", value(gone), FORGOTTEN_BAR),
            Outcome("retention_neighbours", "Are the neighbouring facts kept?", value("retention_neighbours"),
                    float(settings.get("min_retention", 0.85))),
            Outcome("retention_general", "Is general knowledge kept?", value("retention_general"),
                    float(settings.get("min_general_retention", 0.5)))]


LOST_NAMES = {"retention_neighbours": "of the neighbouring facts", "retention_general": "general knowledge"}


def headline(items: list[Outcome], evaluation: dict[str, Any] | None) -> tuple[str, str]:
    """(the verdict's first line, its level "good" / "warn" / "bad" / "none")."""
    measured = [o for o in items if o.ok is not None]
    failed = [o for o in measured if not o.ok]
    forgotten = items[0].ok
    if not measured:
        text, level = "Nothing to measure: the base model knew none of the questions.", "none"
    elif not failed:
        text, level = "The fact is forgotten and the rest of what the model knew is kept.", "good"
    elif forgotten is False:
        text, level = "The fact is not forgotten.", "bad"
    else:
        lost = " and ".join(LOST_NAMES.get(o.key, o.key) for o in failed)
        text, level = f"The fact is forgotten, but the model lost too much {lost}.", "warn"
    return text + " " + attacks_sentence(evaluation), level


def attacks_sentence(evaluation: dict[str, Any] | None) -> str:
    if not evaluation:
        return "The evaluation is incomplete: the attacks were not run."
    measured = [a for a in evaluation.get("attacks") or [] if isinstance(a, dict) and not a.get("skipped")]
    if not measured:
        return "No attack was run: there was no answer the base model knew to bring back."
    failed = [a for a in measured if attack_failed(a)]
    if not failed:
        return f"None of the {len(measured)} attacks brought the fact back."
    return f"{len(failed)} of {len(measured)} attacks brought the fact back (highlighted below)."


def attack_failed(row: dict[str, Any], bar: float = 0.25) -> bool:
    """An attack brought back at least `bar` of the fact (evaluate/metrics.VerdictThresholds.recovered)."""
    return not row.get("skipped") and (row.get("recovery") or 0) >= bar


KINDS = {"probe": "Question", "neighbour": "Neighbour fact", "keep": "Your fact to keep", "general": "General question"}


def kind_words(row: dict[str, Any]) -> str:
    kind = str(row.get("kind") or "")
    words = KINDS.get(kind, kind.replace("_", " ").capitalize())
    if kind == "probe":
        words += " (held out)" if row.get("split") == "heldout" else " (trained on)"
    return words


def after_words(row: dict[str, Any]) -> str:
    """What the unlearned model does with a question, in words."""
    if not row.get("known_before"):
        return "the base model didn't know it"
    if row.get("kind") == "probe":
        return "still gives the fact" if row.get("leaks_after") else "forgotten"
    return "kept" if row.get("kept_after") else "lost"
