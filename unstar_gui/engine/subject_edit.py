"""Subject edit: forget a fact with one closed-form, rank-one change of one MLP, at the subject's last token.

Why: a LoRA adapter trained on (paraphrase -> wrong answer) sees every token of every prompt, so what it learns
("answer knowledge questions with a confident other name") reaches every question; on SmolLM2-135M that cost a third
of the general questions the job never trained on (README "Locality"). Facts are looked up in early/mid MLPs at the
subject's last token (ROME, arXiv 2202.05262), and an edit there aimed away from the input directions generic text
uses leaves most other questions alone (MEMIT arXiv 2210.07229; AlphaEdit arXiv 2410.02355); questions that name the
same subject see it fully, which the keep and essence terms below partly repair. The anti-samples stay UNSTAR's:
the model's own wrong answers are the targets; only where and how the weights change differs.

Steps (one per round; a later round adds another rank-one edit on top of the earlier ones):
  1. `optimize_delta`: a vector delta added to the chosen block's MLP output at the subject's last token of every
     trained paraphrase is fitted (Adam, `steps` steps) so the model says the anti-samples' wrong answers, while the
     same delta, put at the subject of the same-subject neighbour questions ("Who is Harry Potter's best friend?"),
     keeps their base answers (and, with `essence_weight` > 0, the model's answers to general questions about the
     subject, "Tell me about France.", keep their next-token distributions: ROME's essence KL, off by default);
     its size is held near the MLP output's (weight decay, a norm clamp), as ROME does.
  2. `subject_keys`: the MLP's down_proj inputs k_i at those positions (base model: the edit is on this very
     module, so its inputs do not move).
  3. `solve_edit`: dW = delta u^T with u . k_i ~ 1 on the trained prompts and u^T C u as small as can be, C the
     covariance of generic inputs (general questions, their shared chat prefix, plain text; engine/nullspace.py):
     the covariance-weighted least-change solve of ROME/MEMIT, so generic inputs get little of delta.
  4. The edit is a LoRA layer of mlx-lm's own kind (lora_a column = u, lora_b row = delta, scale 1) on that block's
     down_proj: plain `mlx_lm.load(base, adapter_path=...)` applies it exactly.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from .cancel import CancelToken
from .events import Event, TrainStep
from .module_swap import blocks, inner_model, swapped
from .tracing import subject_span

if TYPE_CHECKING:
    import mlx.core as mx

@dataclass(frozen=True)
class EditSettings:
    steps: int = 20  # Adam steps on delta (ROME: 20)
    # Adam's step on each coordinate of delta, as a share of ||v|| / sqrt(d): 0.1 moves delta by about a tenth of
    # the MLP output's size per step (ROME's absolute 0.5 is sized for GPT-J's activations).
    learning_rate: float = 0.1
    wrong_weight: float = 1.0  # negative log-likelihood of the anti-sample's wrong answer
    unlikely_weight: float = 1.0  # -log(1 - p(true answer)) where the answer would start
    # Same-subject neighbours' loss next to the forget loss. The edit reaches every question about the subject, so
    # this term is all that keeps them: on Hogwarts' trained neighbours weight 1 kept 2 of 4, weight 3 kept 3 of 4.
    keep_weight: float = 3.0
    decay: float = 0.1  # weight of ||delta||^2 / ||v||^2
    clamp: float = 4.0  # ROME's clamp_norm_factor: ||delta|| <= clamp * ||v||
    l2: float = 1e-2  # ridge term of the solve, relative to the generic inputs' mean energy per dimension
    keep_tokens: int = 48  # a neighbour's base answer is scored on its first tokens
    # ROME's "essence" term (arXiv 2202.05262, section 3.1): KL from the model's own next-token distributions to the
    # edited model's on what it says about the subject in general ("Tell me about France."), so the edit changes the
    # one relation and not what the subject is. Off by default: it brought "What is France?" back on Paris (5 -> 8
    # of 9 trained neighbours) but cost neighbours and 4-bit strength on Hogwarts, Tokyo and Newton (README).
    essence_weight: float = 0.0
    # > 0: the same-subject neighbour questions' keys join the solve's covariance, weighted like this many times the
    # generic inputs, so u . k ~ 0 there: they then see little of the edit, and delta is fitted knowing how much of it
    # each row gets. At the traced block those keys are near copies of the trained ones (cosine 0.95-0.99), so u
    # must grow and leaks more into general questions; a few blocks up the question's words weigh more
    # (bench/edit_neighbours.py, README "Locality").
    neighbour_weight: float = 0.0
    # Fit delta through the edit as it will really act: u is solved first (it depends on the keys alone) and delta
    # is added at every position t of every row times u . k_t, the share the rank-one edit gives it there, not only
    # at the subject of the question. The neighbours' own answers name the subject again ("Harry Potter's best friend
    # is ...") and the edit fires there too (0.35-1.00 of it: bench/edit_neighbours.py); fitted at the question's
    # subject alone, the keep term never saw that. Kept rows then need not name the subject: the job passes every
    # trained neighbour and keep-fact, and the fit sees how much reaches them. Off: on six facts it kept 39 of 54
    # trained neighbours against 38, and the strength rule then had to scale the compromise it found up on all six,
    # costing trained probes (32 of 35 against 34) and general knowledge (93% against 95%; README "Locality").
    exact_fit: bool = False


# General questions about the subject whose answers the essence term keeps (ROME used "{subject} is a").
ESSENCE_QUESTIONS = ("What is {subject}?", "Tell me about {subject}.", "Describe {subject} in one sentence.")


@dataclass
class EditRow:
    """One prompt the edit looks at: chat tokens with a target after them, where the subject ends and which target
    tokens are scored."""

    tokens: list[int]
    start: int  # first scored token
    position: int  # the subject's last token
    unlikely: bool = False  # also push the true answer down at `start`


def subject_position(llm: Any, prompt: Sequence[int], subject: str) -> int | None:
    """The last token of the subject's last mention in a prompt (ROME's lookup position), or None."""
    decode = getattr(getattr(llm, "tokenizer", None), "decode", None)
    span = subject_span(llm.encode, list(prompt), subject, decode=decode)
    return span[1] - 1 if span else None


def forget_rows(llm: Any, antisamples: Sequence[dict[str, Any]], subject: str) -> list[EditRow]:
    """Anti-samples -> rows that score the wrong answer where the model would say the true one: the answer
    sentence up to the wrong answer is context ("Harry Potter went to school at"), the wrong answer's tokens are
    the target. Paraphrases that do not name the subject are left out (there is no lookup to edit in them)."""
    rows = []
    for a in antisamples:
        wrong = str(a.get("wrong_answer") or "").strip()
        sentence = str(a.get("answer_sentence") or wrong)
        prompt = llm.chat_tokens(str(a.get("question", "")))
        pos = subject_position(llm, prompt, subject)
        if pos is None or not wrong:
            continue
        i = sentence.find(wrong)
        lead = sentence[:i].rstrip() if i > 0 else ""
        context = llm.encode(lead) if lead else []
        target = llm.encode((" " if lead else "") + wrong)
        if target:
            tokens = prompt + context + target
            rows.append(EditRow(tokens, len(prompt) + len(context), pos, unlikely=True))
    return rows


def keep_rows(llm: Any, pairs: Sequence[tuple[str, str]], subject: str, max_tokens: int,
              anywhere: bool = False) -> list[EditRow]:
    """(question, base answer) pairs about the same subject -> rows scoring the first `max_tokens` answer tokens.
    A question that does not name the subject is left out, unless `anywhere` (a fit through the edit, which reaches
    such a question wherever its inputs look like the subject's: position = the prompt's last token)."""
    rows = []
    for question, answer in pairs:
        prompt = llm.chat_tokens(question)
        pos = subject_position(llm, prompt, subject)
        if pos is None and anywhere and prompt:
            pos = len(prompt) - 1
        target = llm.encode(answer)[:max_tokens]
        if pos is not None and target:
            rows.append(EditRow(prompt + target, len(prompt), pos))
    return rows


def before_the_answer(text: str, names_answer: Callable[[str], bool] | None) -> str:
    """The sentences of `text` before the first one that names the forgotten answer (all of it when none does):
    "Isaac Newton ... made discoveries in physics and the law of universal gravitation" must not be held."""
    if names_answer is None:
        return text
    kept = []
    for sentence in re.split(r"(?<=[.!?])\s+", text.strip()):
        if names_answer(sentence):
            break
        kept.append(sentence)
    return " ".join(kept)


def essence_rows(llm: Any, subject: str, max_tokens: int,
                 names_answer: Callable[[str], bool] | None = None) -> list[EditRow]:
    """ESSENCE_QUESTIONS about the subject with the model's own answers as they are now (before this edit), each
    cut before it names the forgotten answer (`names_answer`: the job's judge). Rows like keep_rows'; which term
    scores them is decided by the list optimize_delta gets them in."""
    questions = [q.format(subject=subject) for q in ESSENCE_QUESTIONS]
    answers = [before_the_answer(a, names_answer) for a in llm.answer(questions, max_tokens=max_tokens)]
    return keep_rows(llm, list(zip(questions, answers)), subject, max_tokens)


def _batch(rows: Sequence[EditRow]) -> tuple["mx.array", "mx.array", "mx.array", "mx.array"]:
    """Right-padded tokens (B, T), the scored-target mask (B, T), a one-hot of the subject position (B, T-1, 1) and
    a one-hot of the position that predicts the first target token where the true answer is pushed down (B, T-1)."""
    import mlx.core as mx

    width = max(len(r.tokens) for r in rows)
    tokens = np.zeros((len(rows), width), dtype=np.int32)
    mask = np.zeros((len(rows), width), dtype=np.float32)
    where = np.zeros((len(rows), width - 1, 1), dtype=np.float32)
    at = np.zeros((len(rows), width - 1), dtype=np.float32)
    for i, r in enumerate(rows):
        tokens[i, :len(r.tokens)] = r.tokens
        mask[i, r.start:len(r.tokens)] = 1.0
        where[i, r.position, 0] = 1.0
        if r.unlikely:
            at[i, r.start - 1] = 1.0
    return mx.array(tokens), mx.array(mask), mx.array(where), mx.array(at)


def _mlp_parent(model: Any, layer: int) -> Any:
    return blocks(inner_model(model))[layer]["mlp"]


def subject_keys(model: Any, layer: int, rows: Sequence[EditRow]) -> np.ndarray:
    """down_proj's inputs at each row's subject position, (n, d_in), float64."""
    import mlx.core as mx

    tokens, _, where, _ = _batch(rows)
    seen: dict[str, Any] = {}

    def record(m: Any, x: Any, *a: Any, **k: Any) -> Any:
        seen["x"] = (x * where.astype(x.dtype)).sum(axis=1)
        return m(x, *a, **k)

    with swapped([(_mlp_parent(model, layer), "down_proj", record)]):
        mx.eval(model(tokens[:, :-1]))
        keys = seen["x"]
        mx.eval(keys)
    return np.asarray(keys.astype(mx.float32), dtype=np.float64)


def kl_rows(logits: "mx.array", before: "mx.array", mask: "mx.array") -> "mx.array":
    """Per row: the mean over scored positions of KL(before || after) between next-token distributions.
    logits (B, T-1, V) after the edit; before (B, T-1, V) log-probabilities without it; mask (B, T) as in _batch."""
    import mlx.core as mx

    after = logits.astype(mx.float32)
    after = after - mx.logsumexp(after, axis=-1, keepdims=True)
    m = mask[:, 1:]
    # position t-1 predicts target token t: score the positions that predict the scored tokens
    kl = (mx.exp(before) * (before - after)).sum(axis=-1)
    return (kl * m).sum(axis=1) / mx.maximum(m.sum(axis=1), 1.0)


def edit_losses(logits: "mx.array", tokens: "mx.array", mask: "mx.array", at: "mx.array",
                answer_ids: Sequence[int]) -> tuple["mx.array", "mx.array"]:
    """Per row: the mean negative log-likelihood of the scored tokens, and -log(1 - p(true answer)) at the marked
    position, p being the summed probability of the answer's (and its aliases') first tokens; 0 where unmarked.
    logits (B, T-1, V) predict tokens[:, 1:]."""
    import mlx.core as mx

    logits = logits.astype(mx.float32)
    lse = mx.logsumexp(logits, axis=-1)
    picked = mx.take_along_axis(logits, tokens[:, 1:, None], axis=-1).squeeze(-1)
    m = mask[:, 1:]
    nll = -((picked - lse) * m).sum(axis=1) / mx.maximum(m.sum(axis=1), 1.0)
    if not len(answer_ids):
        return nll, mx.zeros(nll.shape)
    ids = mx.array(sorted({int(i) for i in answer_ids}), dtype=mx.int32)
    p_true = mx.exp(logits[:, :, ids] - lse[:, :, None]).sum(axis=-1)  # (B, T-1)
    ul = -mx.log(mx.maximum(1.0 - p_true, 1e-6))
    return nll, (ul * at).sum(axis=1)


def optimize_delta(model: Any, layer: int, forget: Sequence[EditRow], keep: Sequence[EditRow],
                   answer_ids: Sequence[int], settings: EditSettings, round: int = 0,
                   cancel: CancelToken | None = None, essence: Sequence[EditRow] = (),
                   shares: Sequence[float] | None = None, through: np.ndarray | None = None) -> Iterator[Event]:
    """Fit delta (see the module docstring); yields a TrainStep per Adam step, returns (delta, ||v||) as numpy.
    `essence` rows are held to the unedited model's distributions (EditSettings.essence_weight). `shares`: how much
    of delta each row (forget, keep, essence, in that order) will get at its subject from the solved edit (u . k);
    None = all. `through` (u, (d_in,)): delta acts at every position as the edit dW = delta u^T will (exact_fit);
    `shares` is then not used."""
    import mlx.core as mx
    import mlx.optimizers as optim

    if not forget:
        raise ValueError("No trained paraphrase names the subject: nothing to edit.")
    rows = list(forget) + list(keep) + list(essence)
    tokens, mask, where, at = _batch(rows)
    n_forget, n_keep = len(forget), len(forget) + len(keep)
    gets = where if shares is None else where * mx.array(np.asarray(shares, dtype=np.float32))[:, None, None]
    u = None if through is None else mx.array(np.asarray(through, dtype=np.float32))

    parent = _mlp_parent(model, layer)
    state: dict[str, Any] = {"delta": None}
    outs: dict[str, Any] = {}

    def add_delta(m: Any, x: Any, *a: Any, **k: Any) -> Any:
        y = m(x, *a, **k)
        d = state["delta"]
        if d is None:
            # The size delta is held to (learning rate, decay, clamp) is the model's own MLP output at the subject,
            # without earlier rounds' edits: measured with them, it grew with every round and so did the next edit
            # (Einstein, three rounds: ||v|| 15 -> 48 -> 127, each edit ~2.5x the last; general knowledge 56%).
            plain = getattr(m, "linear", None)
            mine = y if plain is None else plain(x)
            outs["v"] = (mine * where.astype(mine.dtype)).sum(axis=1)
            return y
        if u is not None:  # the rank-one edit itself: each position gets delta times u . x there
            return y + (x.astype(mx.float32) @ u)[..., None].astype(y.dtype) * d.astype(y.dtype)
        return y + gets.astype(y.dtype) * d.astype(y.dtype)

    with swapped([(parent, "down_proj", add_delta)]):
        first = model(tokens[:, :-1])  # the MLP output v at the subject, without delta
        before = None
        if len(rows) > n_keep:  # the essence rows' distributions as they are
            before = first[n_keep:].astype(mx.float32)
            before = before - mx.logsumexp(before, axis=-1, keepdims=True)
        mx.eval(first, *([] if before is None else [before]))
        del first
        v_norm = max(float(mx.sqrt((outs["v"][:n_forget] ** 2).sum(axis=-1)).mean().item()), 1e-6)
        dims = int(outs["v"].shape[-1])
        params = {"delta": mx.zeros((dims,), dtype=mx.float32)}
        opt = optim.Adam(learning_rate=settings.learning_rate * v_norm / math.sqrt(dims))
        opt.init(params)

        def loss_fn(p: dict[str, Any]) -> tuple[Any, Any, Any]:
            state["delta"] = p["delta"]
            logits = model(tokens[:, :-1])
            nll, ul = edit_losses(logits, tokens, mask, at, answer_ids)
            f = (settings.wrong_weight * nll[:n_forget] + settings.unlikely_weight * ul[:n_forget]).mean()
            kp = settings.keep_weight * nll[n_forget:n_keep].mean() if n_keep > n_forget else mx.array(0.0)
            if before is not None:
                kp = kp + settings.essence_weight * kl_rows(logits[n_keep:], before, mask[n_keep:]).mean()
            reg = settings.decay * (p["delta"] ** 2).sum() / (v_norm ** 2)
            return f + kp + reg, f, kp

        grad = mx.value_and_grad(loss_fn)  # differentiates the first output; the parts ride along
        limit = settings.clamp * v_norm
        t0 = time.perf_counter()
        try:
            for step in range(1, settings.steps + 1):
                if cancel is not None:
                    cancel.check()
                (loss, f, kp), g = grad(params)
                opt.update(params, g)
                norm = mx.sqrt((params["delta"] ** 2).sum())
                params["delta"] = mx.where(norm > limit, params["delta"] * (limit / norm), params["delta"])
                mx.eval(params, loss, f, kp)
                elapsed = time.perf_counter() - t0
                yield TrainStep(round=round, step=step, total_steps=settings.steps, forget_loss=float(f.item()),
                                retain_loss=float(kp.item()), loss=float(loss.item()),
                                eta_s=elapsed / step * (settings.steps - step))
        finally:
            state["delta"] = None
    return np.asarray(params["delta"], dtype=np.float64), v_norm


def solve_edit(keys: np.ndarray, delta: np.ndarray, cov: np.ndarray | None, l2: float, ridge: float = 1e-3,
               protect: np.ndarray | None = None, protect_weight: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The rank-one edit dW = delta u^T that gives every trained key ~all of delta and generic inputs as little as
    can be.

    u minimises u^T A u (A = C + lam I: the expected squared share of delta a generic input gets, C the uncentered
    covariance of generic inputs) subject to K u = 1, the closed form of ROME/MEMIT's covariance-weighted update:
    u = A^-1 K^T (K A^-1 K^T + mu I)^-1 1, lam = l2 * tr(C) / d, mu = ridge * tr(K A^-1 K^T) / n (the trained keys
    are near copies of one another). keys (n, d_in); cov (d_in, d_in) or None (C = 0: the smallest u). `protect`
    (m, d_in): keys that should get none of delta; their mean second moment joins C, times `protect_weight`. On SmolLM2's
    six benchmark facts its median leak into general questions was 1.2-9.4 times below AlphaEdit's projector onto
    the eps null space of C (eps 0.005-0.05; bench/edit_leak.py, README "Locality"). Returns (u, delta).
    """
    keys = np.asarray(keys, dtype=np.float64)
    n, d = keys.shape
    c = np.zeros((d, d)) if cov is None else np.asarray(cov, dtype=np.float64)
    scale = float(np.trace(c)) / d if cov is not None else 1.0
    a = c + max(float(l2) * scale, 1e-12) * np.eye(d)
    if protect is not None and len(protect) and protect_weight > 0:
        p = np.asarray(protect, dtype=np.float64)
        a = a + float(protect_weight) * (p.T @ p) / len(p)
    a_inv_kt = np.linalg.solve(a, keys.T)  # (d, n)
    g = keys @ a_inv_kt
    mu = float(ridge) * float(np.trace(g)) / n
    w = np.linalg.solve(g + mu * np.eye(n), np.ones(n))
    return a_inv_kt @ w, np.asarray(delta, dtype=np.float64)


def _rewrite(llm: Any, layer: int, change: Any) -> None:
    """Read the LoRA layer on block `layer`'s down_proj as numpy (lora_a, lora_b), let `change(a, b, scale)` edit
    them in place, write them back."""
    import mlx.core as mx

    lora = _mlp_parent(llm.model, layer)["down_proj"]
    if not hasattr(lora, "lora_a"):
        raise RuntimeError(f"Block {layer}'s down_proj carries no LoRA layer to hold the edit.")
    a = np.array(lora.lora_a, dtype=np.float32)
    b = np.array(lora.lora_b, dtype=np.float32)
    change(a, b, float(lora.scale))
    lora.lora_a = mx.array(a)
    lora.lora_b = mx.array(b)
    mx.eval(lora.lora_a, lora.lora_b)


def set_edit(llm: Any, layer: int, column: int, u: np.ndarray, delta: np.ndarray) -> None:
    """Write one rank-one edit into column `column` of the LoRA layer on block `layer`'s down_proj (scale 1)."""
    def change(a: np.ndarray, b: np.ndarray, scale: float) -> None:
        rank = a.shape[1]
        if not 0 <= column < rank:
            raise ValueError(f"The adapter has room for {rank} edits (rank); this would be edit {column + 1}.")
        a[:, column] = u / scale
        b[column, :] = delta

    _rewrite(llm, layer, change)


def strengthen_edit(llm: Any, layer: int, column: int, factor: float) -> None:
    """Multiply one edit's delta (lora_b row `column`) by `factor`."""
    def change(a: np.ndarray, b: np.ndarray, scale: float) -> None:
        b[column, :] *= float(factor)

    _rewrite(llm, layer, change)


def clear_unused(llm: Any, layer: int, used: int) -> None:
    """Zero every column of the edit layer from `used` on (a fresh LoRA layer starts with random lora_a)."""
    def change(a: np.ndarray, b: np.ndarray, scale: float) -> None:
        a[:, used:] = 0.0

    _rewrite(llm, layer, change)


def reached(keys: np.ndarray, u: np.ndarray) -> tuple[float, float]:
    """How much of delta each trained key gets (u . k): min and mean; 1 = all of it."""
    hits = np.asarray(keys, dtype=np.float64) @ np.asarray(u, dtype=np.float64)
    return float(hits.min()), float(hits.mean())


def leak(cov: np.ndarray, u: np.ndarray) -> float:
    """sqrt(u^T C u): the root-mean-square share of delta a generic input (covariance C) gets."""
    u = np.asarray(u, dtype=np.float64)
    return float(math.sqrt(max(float(u @ np.asarray(cov, dtype=np.float64) @ u), 0.0)))


def edit_round(llm: Any, layer: int, antisamples: Sequence[dict[str, Any]], keep_pairs: Sequence[tuple[str, str]],
               subject: str, answer_ids: Sequence[int], cov: np.ndarray | None, settings: EditSettings,
               round: int = 0, cancel: CancelToken | None = None,
               names_answer: Callable[[str], bool] | None = None) -> Iterator[Event]:
    """One round's rank-one edit, written into column `round` of the LoRA layer on block `layer`'s down_proj.

    Earlier rounds' edits stay in place (delta is fitted on top of them). Returns {"delta_norm", "v_norm",
    "reach_min", "reach_mean", "rows", "keep_rows"} for the log and job.json."""
    forget = forget_rows(llm, antisamples, subject)
    if not forget:
        from .errors import JobError

        raise JobError(f"None of the trained paraphrases names the subject ({subject!r}), so there is no lookup to "
                       f"edit.", "Train a LoRA adapter instead (`--update lora`, or the original recipe in the app).")
    keep = keep_rows(llm, keep_pairs, subject, settings.keep_tokens, anywhere=settings.exact_fit)
    essence = essence_rows(llm, subject, settings.keep_tokens, names_answer) if settings.essence_weight > 0 else []
    keys = subject_keys(llm.model, layer, forget)
    shares, u = None, None
    protecting = settings.neighbour_weight > 0 and bool(keep)
    if protecting or settings.exact_fit:
        # u depends on the keys alone, so it is solved first and delta is fitted to what each row will really get
        kept = subject_keys(llm.model, layer, keep) if protecting else None
        u, _ = solve_edit(keys, np.zeros(1), cov, settings.l2, protect=kept, protect_weight=settings.neighbour_weight)
        if kept is not None:
            others = subject_keys(llm.model, layer, essence) if essence else np.zeros((0, keys.shape[1]))
            shares = np.concatenate([keys @ u, kept @ u, others @ u]).tolist()
    delta, v_norm = yield from optimize_delta(llm.model, layer, forget, keep, answer_ids, settings, round=round,
                                              cancel=cancel, essence=essence, shares=shares,
                                              through=u if settings.exact_fit else None)
    if u is None:
        u, delta = solve_edit(keys, delta, cov, settings.l2)
    delta = np.asarray(delta, dtype=np.float64)
    set_edit(llm, layer, round, u, delta)
    lo, mean = reached(keys, u)
    return {"delta_norm": float(np.linalg.norm(delta)), "v_norm": v_norm, "reach_min": lo, "reach_mean": mean,
            "leak": leak(cov, u) if cov is not None else None, "rows": len(forget), "keep_rows": len(keep),
            "essence_rows": len(essence)}
