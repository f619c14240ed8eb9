"""The interface every unlearning method implements, and the masked losses they share.

A method decides two things: which (prompt -> target) pairs the forget side trains on (UNSTAR: paraphrase -> wrong
answer + rationale; IdK: question -> "I don't know"; ...), and the loss of one step given a forget batch and a retain
batch. The trainer owns everything else (LoRA, batching, optimizer, checkpoints, cancel), so adding a method is one
small module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence


@dataclass
class TokenBatch:
    """Right-padded token rows; `mask` is 1 on the scored (target) positions, 0 on prompt and padding.

    `ref_logprobs` holds the base model's log-softmax over the vocabulary at each position (B, T-1, V), filled by the
    trainer (adapter scale 0, no gradient) only for the sides a method lists in `reference_sides`.
    """

    tokens: Any  # mx.array (B, T) int32
    mask: Any  # mx.array (B, T) float32
    ref_logprobs: Any = None

    @property
    def n_tokens(self) -> int:
        return int(self.mask.sum().item())


@dataclass
class Batch:
    forget: TokenBatch
    retain: TokenBatch | None = None
    # Fresh general prompts drawn each step, with the base model's log-probs: the dense KL retain term.
    dense: TokenBatch | None = None


@dataclass
class MethodContext:
    """What a method may look at while preparing: the fact, the settings and the loaded model (for reference data)."""

    question: str
    answer: str
    aliases: Sequence[str] = ()
    retain_weight: float = 1.0
    retain_loss: str = "ce"  # "ce" (cross-entropy on the base answers) | "kl" (KL to the base model's logits)
    # KL to the base model on a broad pool of general prompts sampled every step (0 = off); see Batch.dense.
    dense_weight: float = 0.0
    # Loss weight of an anti-sample's invented rationale relative to its wrong-answer sentence (UNSTAR: 1).
    rationale_weight: float = 1.0
    seed: int = 0  # idk: which bundled refusal each question gets
    # The methods' own knobs (ForgetSettings takes its defaults from here: engine/settings.py).
    npo_beta: float = 0.1  # npo: the paper's default
    kl_weight: float = 1.0  # ga_kl: lambda, times retain_weight
    ce_bound: float | None = None  # ga_kl: per-row forget CE ceiling; None = ln(vocabulary size)
    negate_alpha: float = 1.0  # negate: negation strength (the fit is applied with scale -1/alpha)
    negate_beta: float = 0.0  # negate: retain direction strength (0 = pure negation)
    undial_beta: float = 10.0  # undial: how far the true answer's logits are pushed down
    # Reference data read off the base model before training (undial): its answer to each forget question, and the
    # answer's token ids.
    base_answers: dict[str, str] = field(default_factory=dict)
    answer_token_ids: Sequence[int] = ()


class Method:
    """Base class: subclasses set `name` and implement `forget_pairs` and `loss`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(self) -> None:
        self.ctx: MethodContext | None = None

    def prepare(self, ctx: MethodContext) -> None:
        self.ctx = ctx

    @property
    def reference_sides(self) -> tuple[str, ...]:
        """Which sides of a batch ("forget", "retain") need the base model's log-probs."""
        return ()

    def forget_pairs(self, antisamples: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
        """(question, target text) pairs the forget side trains on, from antisamples.jsonl rows."""
        raise NotImplementedError

    def loss(self, model: Any, batch: Batch) -> tuple[Any, dict[str, Any]]:
        """Scalar loss to minimise and its named parts (mx scalars, e.g. {"forget": ..., "retain": ...})."""
        raise NotImplementedError

    def finalize(self, llm: Any) -> None:
        """Called once after the last training step, before the adapter is saved (task-vector negation flips its
        adapter here so the saved adapter_config.json carries the negative scale). Default: nothing."""


def token_logprobs(model: Any, tb: TokenBatch):
    """Log-softmax at every position but the last (B, T-1, V), and the log-prob of each next token (B, T-1)."""
    import mlx.core as mx

    logits = model(tb.tokens[:, :-1]).astype(mx.float32)
    logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    tok = mx.take_along_axis(logp, tb.tokens[:, 1:, None], axis=-1).squeeze(-1)
    return logp, tok


def target_logprobs(model: Any, tb: TokenBatch):
    """The log-prob of each next token, (B, T-1), without materialising the full log-softmax: logit - logsumexp.

    Same numbers as `token_logprobs(...)[1]`; one vocabulary-wide array fewer in the forward and backward pass
    (about 6% of a SmolLM2 training step's peak memory, bench/perf.py).
    """
    import mlx.core as mx

    logits = model(tb.tokens[:, :-1]).astype(mx.float32)
    picked = mx.take_along_axis(logits, tb.tokens[:, 1:, None], axis=-1).squeeze(-1)
    return picked - mx.logsumexp(logits, axis=-1)


def masked_ce(model: Any, tb: TokenBatch):
    """Mean cross-entropy over the target tokens of a batch (prompt and padding masked)."""
    import mlx.core as mx

    tok = target_logprobs(model, tb)
    m = tb.mask[:, 1:]
    return -(tok * m).sum() / mx.maximum(m.sum(), 1.0)


def masked_kl(model: Any, tb: TokenBatch):
    """Mean KL(base || model) over the target positions, against `tb.ref_logprobs` from the base model."""
    import mlx.core as mx

    if tb.ref_logprobs is None:
        raise ValueError("KL needs the base model's log-probs on this batch (list its side in reference_sides).")
    logp, _ = token_logprobs(model, tb)
    ref = tb.ref_logprobs
    kl = (mx.exp(ref) * (ref - logp)).sum(axis=-1)
    m = tb.mask[:, 1:]
    return (kl * m).sum() / mx.maximum(m.sum(), 1.0)


def retain_term(model: Any, batch: Batch, ctx: MethodContext):
    """The retain side most methods share: CE on the base model's answers, or KL to its logits; plus, when the
    batch has a dense side, dense_weight x KL to the base model on fresh general prompts. Callers multiply the sum
    by retain_weight, so a round that doubles the retain weight doubles both."""
    import mlx.core as mx

    if batch.retain is None:
        term = mx.array(0.0)
    elif ctx.retain_loss == "kl":
        term = masked_kl(model, batch.retain)
    else:
        term = masked_ce(model, batch.retain)
    return term + dense_term(model, batch, ctx)


def dense_term(model: Any, batch: Batch, ctx: MethodContext):
    """dense_weight x KL(base || model) over the dense side's scored positions (0 when there is none)."""
    import mlx.core as mx

    if batch.dense is None or not ctx.dense_weight:
        return mx.array(0.0)
    return ctx.dense_weight * masked_kl(model, batch.dense)
