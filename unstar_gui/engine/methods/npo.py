"""Negative Preference Optimization (Zhang et al. 2024, arXiv 2404.05868) on the true answer, plus a retain term.

loss_forget = -(2/beta) x mean over rows of log sigmoid(-beta x (log p_theta(y|x) - log p_ref(y|x)))

with log p(y|x) the summed log-probability of the target tokens and p_ref the base model (adapter scaled to 0, the
trainer fills it because "forget" is in reference_sides). Unlike gradient ascent the loss is bounded below (by 0):
a row's gradient fades as its log-ratio goes negative, so it slows down on its own instead of diverging.
"""

from __future__ import annotations

from typing import Any

from .base import Batch, TokenBatch, retain_term, token_logprobs
from .ga_kl import FactMethod


def sequence_logprobs(tok_logprobs: Any, mask: Any):
    """Summed log-prob of each row's target tokens: tok_logprobs (B, T-1) aligned with mask[:, 1:] -> (B,)."""
    return (tok_logprobs * mask[:, 1:]).sum(axis=1)


def npo_loss(logp: Any, ref_logp: Any, beta: float):
    """-(2/beta) mean log sigmoid(-beta (logp - ref_logp)) over rows; log sigmoid(z) = -log(1 + e^-z)."""
    import mlx.core as mx

    z = -beta * (logp - ref_logp)
    return (2.0 / beta) * mx.logaddexp(mx.zeros_like(z), -z).mean()


def reference_token_logprobs(tb: TokenBatch):
    """The base model's log-prob of each next token, from the batch's stored reference log-softmax: (B, T-1)."""
    import mlx.core as mx

    if tb.ref_logprobs is None:
        raise ValueError("NPO needs the base model's log-probs on the forget batch (reference_sides has 'forget').")
    return mx.take_along_axis(tb.ref_logprobs, tb.tokens[:, 1:, None], axis=-1).squeeze(-1)


class NPOMethod(FactMethod):
    name = "npo"
    description = "Negative preference optimization on the true answer (bounded ascent), plus a retain term."

    @property
    def reference_sides(self) -> tuple[str, ...]:
        kl = self.ctx is not None and self.ctx.retain_loss == "kl"
        return ("forget", "retain") if kl else ("forget",)

    def loss(self, model: Any, batch: Batch) -> tuple[Any, dict[str, Any]]:
        assert self.ctx is not None, "prepare() first"
        _, tok = token_logprobs(model, batch.forget)
        logp = sequence_logprobs(tok, batch.forget.mask)
        ref = sequence_logprobs(reference_token_logprobs(batch.forget), batch.forget.mask)
        forget = npo_loss(logp, ref, float(self.ctx.npo_beta))
        retain = retain_term(model, batch, self.ctx)
        return forget + self.ctx.retain_weight * retain, {"forget": forget, "retain": retain}
