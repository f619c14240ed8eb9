"""UNSTAR (arXiv 2410.17050): train the model to answer paraphrases of the question with a wrong answer and a
misleading rationale (cross-entropy, prompt masked), while a retain term keeps its own answers elsewhere."""

from __future__ import annotations

from typing import Any, Sequence

from .base import Batch, Method, masked_ce, retain_term


def antisample_target(row: dict[str, Any]) -> str:
    """What the model is trained to say for one antisamples.jsonl row (AntiSample.target_text)."""
    return _antisample(row).target_text()


def antisample_segments(row: dict[str, Any], rationale_weight: float) -> list[tuple[str, float]]:
    """The same target as (text, loss weight) segments: the wrong-answer sentence at 1, the rationale at
    `rationale_weight`. Below 1 the model learns "this answer" more than "invent a story for it": fitting invented
    justifications is the habit that spreads to other questions (Kang et al. arXiv 2403.05612; Gekhman et al. arXiv
    2405.05904). At 0 the rationale is left out of the target altogether."""
    return _antisample(row).target_segments(rationale_weight)


def _antisample(row: dict[str, Any]):
    from ..antisamples import AntiSample

    fields = AntiSample.__dataclass_fields__
    return AntiSample(**{k: v for k, v in row.items() if k in fields})


class UnstarMethod(Method):
    name = "unstar"
    description = "Anti-samples: paraphrase -> wrong answer + misleading rationale, plus a retain term."

    @property
    def reference_sides(self) -> tuple[str, ...]:
        return ("retain",) if self.ctx is not None and self.ctx.retain_loss == "kl" else ()

    def forget_pairs(self, antisamples: Sequence[dict[str, Any]]) -> list[tuple[str, Any]]:
        weight = 1.0 if self.ctx is None else self.ctx.rationale_weight
        if weight == 1.0:  # the paper's recipe: one plain target text
            return [(row["question"], antisample_target(row)) for row in antisamples]
        return [(row["question"], antisample_segments(row, weight)) for row in antisamples]

    def loss(self, model: Any, batch: Batch) -> tuple[Any, dict[str, Any]]:
        assert self.ctx is not None, "prepare() first"
        forget = masked_ce(model, batch.forget)
        retain = retain_term(model, batch, self.ctx)
        return forget + self.ctx.retain_weight * retain, {"forget": forget, "retain": retain}
