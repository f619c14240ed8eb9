"""Gradient ascent with a KL retention term: push the true answer's likelihood down on the forget questions while
a KL term keeps the model's next-token distribution on the retain prompts close to the base model's.

loss = -min(CE_row(question -> true answer), bound) averaged over rows  +  lambda x KL(base || model) on retain.

Plain gradient ascent has no floor: CE grows without limit and the model falls apart (every answer degenerates).
The guard clamps each row's forget CE at `bound` (default ln(vocabulary size), the surprise of a uniform guess):
once a row is pushed past it, that row's gradient is zero, so the ascent stops on its own instead of diverging.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from .base import Batch, Method, TokenBatch, masked_kl, token_logprobs


def forget_questions(antisamples: Sequence[dict[str, Any]], question: str) -> list[str]:
    """The user's question and every distinct anti-sample question (the paraphrases UNSTAR trains on), in order."""
    seen, out = set(), []
    for q in [question, *(row["question"] for row in antisamples)]:
        key = q.strip().lower()
        if key and key not in seen:
            seen.add(key)
            out.append(q)
    return out


def true_answer_pairs(antisamples: Sequence[dict[str, Any]], question: str, answer: str) -> list[tuple[str, str]]:
    """(question -> true answer) for every forget question: the methods that work on the fact itself."""
    return [(q, answer) for q in forget_questions(antisamples, question)]


class FactMethod(Method):
    """A method whose forget side is the fact itself: (forget question -> true answer) pairs."""

    def forget_pairs(self, antisamples: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
        assert self.ctx is not None, "prepare() first"
        return true_answer_pairs(antisamples, self.ctx.question, self.ctx.answer)


def row_ce(model: Any, tb: TokenBatch):
    """Mean cross-entropy of each row's target tokens (B,), and the vocabulary size."""
    import mlx.core as mx

    logp, tok = token_logprobs(model, tb)
    m = tb.mask[:, 1:]
    return -(tok * m).sum(axis=1) / mx.maximum(m.sum(axis=1), 1.0), logp.shape[-1]


class GradientAscentKL(FactMethod):
    name = "ga_kl"
    description = "Gradient ascent on the true answer (clamped), KL to the base model on the retain set."

    @property
    def reference_sides(self) -> tuple[str, ...]:
        return ("retain",)

    def loss(self, model: Any, batch: Batch) -> tuple[Any, dict[str, Any]]:
        import mlx.core as mx

        assert self.ctx is not None, "prepare() first"
        ce, vocab = row_ce(model, batch.forget)
        bound = self.ctx.ce_bound
        forget = -mx.minimum(ce, math.log(vocab) if bound is None else bound).mean()
        retain = masked_kl(model, batch.retain) if batch.retain is not None else mx.array(0.0)
        weight = float(self.ctx.kl_weight) * self.ctx.retain_weight
        return forget + weight * retain, {"forget": forget, "retain": retain}
