"""UNDIAL (arXiv 2402.10052; open-unlearning `compute_undial_loss`): self-distillation with adjusted logits.

On (forget question -> true answer) rows, the target at every answer position is the base model's own next-token
distribution with the logit of the true token, and of the first token of the answer and every alias, lowered by
`beta`; the loss is the cross-entropy of the model against that soft target. Nothing invents a confident other
name: the model keeps its own distribution minus the fact, which is why UNDIAL keeps utility where training on
fabricated answers does not (RWKU arXiv 2406.10890: DPO on fabricated answers halves factuality).
"""

from __future__ import annotations

from typing import Any, Sequence

from .base import Batch, Method, TokenBatch, retain_term
from .ga_kl import forget_questions


def undial_targets(ref_logprobs: Any, labels: Any, beta: float, extra_ids: Sequence[int] = ()):
    """softmax(ref - beta * onehot(label) - beta * onehot(extra ids)) at every position: (B, T, V).

    ref_logprobs: the base model's log-softmax (B, T, V) (log-softmax or raw logits give the same softmax);
    labels: the next token at each position (B, T).
    """
    import mlx.core as mx

    vocab = ref_logprobs.shape[-1]
    push = (mx.arange(vocab)[None, None, :] == labels[..., None]).astype(mx.float32)
    if extra_ids:
        extra = mx.zeros((vocab,), dtype=mx.float32)
        extra[mx.array(sorted(set(int(i) for i in extra_ids)))] = 1.0
        push = mx.maximum(push, extra[None, None, :])
    return mx.softmax(ref_logprobs.astype(mx.float32) - beta * push, axis=-1)


def undial_loss(logits: Any, ref_logprobs: Any, labels: Any, mask: Any, beta: float,
                extra_ids: Sequence[int] = ()):
    """Mean over masked positions of CE(model logits, UNDIAL soft target). logits/ref (B, T, V), labels/mask (B, T)."""
    import mlx.core as mx

    target = mx.stop_gradient(undial_targets(ref_logprobs, labels, beta, extra_ids))
    logp = logits.astype(mx.float32) - mx.logsumexp(logits.astype(mx.float32), axis=-1, keepdims=True)
    ce = -(target * logp).sum(axis=-1)
    return (ce * mask).sum() / mx.maximum(mask.sum(), 1.0)


def answer_segments(base_answer: str, names: Sequence[str]) -> list[tuple[str, float]]:
    """[(words before the answer, 0), (the answer as the base model wrote it, 1)]; just the answer when the base
    answer does not name it."""
    import re

    hits = [m for n in names if n.strip() for m in [re.search(re.escape(n.strip()), base_answer, re.I)] if m]
    if not hits:
        return [(names[0].strip(), 1.0)]
    first = min(hits, key=lambda m: (m.start(), -len(m.group(0))))
    prefix = base_answer[:first.start()].strip()
    return [(prefix, 0.0), (first.group(0), 1.0)] if prefix else [(first.group(0), 1.0)]


class UndialMethod(Method):
    name = "undial"
    description = "Self-distillation: the base model's own distribution with the true answer pushed down (UNDIAL)."

    @property
    def reference_sides(self) -> tuple[str, ...]:
        sides = ("forget",)
        return sides + ("retain",) if self.ctx is not None and self.ctx.retain_loss == "kl" else sides

    def forget_pairs(self, antisamples: Sequence[dict[str, Any]]) -> list[tuple[str, Any]]:
        """(forget question -> the base model's own words up to the answer): scored on the answer's tokens only, so
        the sentence frame every answer shares ("Harry Potter attended ...") is not pushed down with it."""
        assert self.ctx is not None, "prepare() first"
        said = self.ctx.base_answers
        names = [self.ctx.answer, *self.ctx.aliases]
        return [(q, answer_segments(said.get(q, ""), names))
                for q in forget_questions(antisamples, self.ctx.question)]

    def loss(self, model: Any, batch: Batch) -> tuple[Any, dict[str, Any]]:
        assert self.ctx is not None, "prepare() first"
        tb: TokenBatch = batch.forget
        logits = model(tb.tokens[:, :-1])
        beta = float(self.ctx.undial_beta)
        forget = undial_loss(logits, tb.ref_logprobs, tb.tokens[:, 1:], tb.mask[:, 1:], beta,
                             self.ctx.answer_token_ids)
        retain = retain_term(model, batch, self.ctx)
        return forget + self.ctx.retain_weight * retain, {"forget": forget, "retain": retain}
