"""Causal tracing (ROME, Meng et al. 2022, arXiv 2202.05262): which blocks' MLPs carry a fact.

Three kinds of forward pass over the chat prompt of a question:
- clean: record each block's MLP output at the subject's last token, and p_clean, the probability of the answer's
  first token at the last position;
- corrupted: Gaussian noise on the subject tokens' embeddings (`samples` noise draws as one batch, fixed seed);
  p_corrupt is the mean probability of the same token;
- restored, once per block l: the corrupted run again with block l's MLP output at the subject's last token put back
  to its clean value; effect[l] = mean p_restored - p_corrupt.
The blocks with the largest effects are where the fact is recalled, so a LoRA adapter can be placed on just those.

Works on any mlx-lm model whose inner model has `embed_tokens` and `layers`, with an `.mlp` in every block (llama,
qwen2, qwen3, gemma3 text, ...). Modules are swapped for thin wrappers during a trace and always put back; mlx-lm
itself is not changed. Cost: positions before the subject's last token are the same in every corrupted run, so
they are computed once into a KV cache (where the model's cache can be rolled back); restored runs then replay the
recorded outputs of the blocks before l and compute only the prompt's last few tokens, and the final norm and
lm_head see only the last position.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from .module_swap import blocks as model_blocks
from .module_swap import inner_model, swapped

if TYPE_CHECKING:  # mlx is imported where it is used, like the rest of the engine
    import mlx.core as mx
    import mlx.nn as nn

NOISE_FACTOR = 3.0  # ROME: noise std = 3 x the std of the embeddings
MIN_DROP = 0.01  # below this (p_clean - p_corrupt) the trace is flat: noise on the subject does not hide the answer
_STD_ROWS = 8192  # embedding rows sampled for the std on big vocabularies


@dataclass(frozen=True)
class TraceResult:
    p_clean: float
    p_corrupt: float
    effects: tuple[float, ...]  # one per block: mean p_restored - p_corrupt

    @property
    def drop(self) -> float:
        return self.p_clean - self.p_corrupt

    def indirect_effect(self) -> tuple[float, ...]:
        """Effects as a share of what the noise took away (1 = restoring that block gives p_clean back)."""
        d = self.drop
        if d <= 0:
            return tuple(0.0 for _ in self.effects)
        return tuple(e / d for e in self.effects)


@dataclass(frozen=True)
class FactLocation:
    window: tuple[int, int] | None  # [lo, hi) blocks to adapt; None = no clear location (use the default placement)
    effects: tuple[float, ...]
    p_clean: float
    p_corrupt: float
    subject: str
    reason: str = ""
    span: tuple[int, int] | None = None  # the subject's tokens in the prompt
    target_id: int | None = None  # the answer's first token, as traced
    target: str = ""  # that token as text
    prefix: str = ""  # the start of the base model's reply put after the prompt (empty: none)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["window"] = list(self.window) if self.window is not None else None
        d["span"] = list(self.span) if self.span is not None else None
        d["effects"] = [float(e) for e in self.effects]
        return d


def embedding_std(model: nn.Module) -> float:
    """Std of the token embeddings (through the embedding module, so quantized tables work too)."""
    import mlx.core as mx

    embed = inner_model(model)["embed_tokens"]
    vocab = _vocab_size(embed)
    if vocab <= _STD_ROWS:
        ids = mx.arange(vocab)
    else:
        ids = (mx.arange(_STD_ROWS) * (vocab // _STD_ROWS)).astype(mx.int32)
    e = embed(ids[None]).astype(mx.float32)
    return float(mx.std(e).item())


def _vocab_size(embed: nn.Module) -> int:
    n = getattr(embed, "num_embeddings", None)
    if n:
        return int(n)
    return int(embed["weight"].shape[0])


# tracing -------------------------------------------------------------------------------------------------------------
def _last_probs(model: nn.Module, tokens: mx.array, cache: list[Any] | None = None) -> mx.array:
    import mlx.core as mx

    logits = model(tokens, cache=cache) if cache is not None else model(tokens)
    return mx.softmax(logits[:, -1, :].astype(mx.float32), axis=-1)


def _prefix_cache(model: nn.Module, prefix: mx.array, total: int) -> list[Any] | None:
    """A KV cache holding `prefix`, or None where the model's cache cannot be rolled back to it after each run."""
    import mlx.core as mx

    try:
        from mlx_lm.models.cache import make_prompt_cache

        cache = make_prompt_cache(model)
        if not all(hasattr(c, "offset") and hasattr(c, "trim") and hasattr(c, "is_trimmable") for c in cache):
            return None
        if any(getattr(c, "max_size", None) is not None and total >= c.max_size for c in cache):
            return None  # a sliding-window cache would rotate: no clean way back
        model(prefix, cache=cache)
        mx.eval([c.state for c in cache])
        if not all(c.is_trimmable() for c in cache):
            return None
        return cache
    except Exception:  # an unusual cache: run the whole prompt every time instead
        return None


def trace_layers(model: nn.Module, tokens: list[int], subject: tuple[int, int], target_ids: list[int],
                 noise_scale: float | None = None, samples: int = 8, seed: int = 0,
                 noise_spans: Sequence[tuple[int, int]] | None = None, restore_window: int = 1) -> TraceResult:
    """Causal trace of the MLP outputs at the subject's last token; see the module docstring.

    noise_spans: the token spans that get noise (default: just `subject`; pass every mention of the subject when
    it occurs more than once). restore_window: restore the MLPs of this many blocks around each block at once
    (ROME uses 10 on GPT-2 XL; 1 = each block alone)."""
    import mlx.core as mx
    import mlx.nn as nn

    lo, hi = int(subject[0]), int(subject[1])
    n = len(tokens)
    if not tokens or not target_ids:
        raise ValueError("trace_layers needs prompt tokens and a target token.")
    spans = [(int(a), int(b)) for a, b in (noise_spans or [subject])]
    for a, b in spans + [(lo, hi)]:
        if not 0 <= a < b <= n:
            raise ValueError(f"Span {(a, b)} is outside the prompt ({n} tokens).")
    samples = max(1, int(samples))
    target = int(target_ids[0])
    pos = hi - 1
    inner = inner_model(model)
    blocks = model_blocks(inner)
    n_blocks = len(blocks)
    w = max(1, int(restore_window))
    if noise_scale is None:
        noise_scale = NOISE_FACTOR * embedding_std(model)

    # the final norm sees only the last position: the lm_head then works on one row instead of the whole prompt
    last_only: list[tuple[Any, Any, Callable[..., Any]]] = []
    if "norm" in inner and isinstance(inner["norm"], nn.Module):
        last_only.append((inner, "norm", lambda m, h, *a, **k: m(h[:, -1:, :], *a, **k)))

    # clean run: record every MLP output at the subject's last token
    clean: list[Any] = [None] * n_blocks

    def recorder(i: int) -> Callable[..., Any]:
        def fn(m: nn.Module, *a: Any, **k: Any) -> Any:
            out = m(*a, **k)
            clean[i] = out[:, pos, :]
            return out
        return fn

    with swapped(last_only + [(b, "mlp", recorder(i)) for i, b in enumerate(blocks)]):
        probs = _last_probs(model, mx.array([tokens], dtype=mx.int32))
        mx.eval(probs, *clean)
    p_clean = float(probs[0, target].item())

    # corrupted run: noise on the subject's embeddings, one batch of `samples` draws. Positions before the
    # restored one are the same in every later run (causal attention), so where the model's KV cache allows they
    # are computed once; each run then does positions pos..n only, recording/replaying every block's output there.
    dims = _hidden(inner)
    ar = mx.arange(n)
    mask = mx.zeros((n,))
    for a, b in spans:
        mask = mx.where((ar >= a) & (ar < b), 1.0, mask)
    noise = mx.random.normal((samples, n, dims), key=mx.random.key(seed)) * noise_scale * mask[None, :, None]
    mx.eval(noise)
    current = {"noise": noise}

    def noisy_embed(m: nn.Module, ids: mx.array, *a: Any, **k: Any) -> mx.array:
        e = m(ids, *a, **k)
        return e + current["noise"].astype(e.dtype)

    embed_swap = [(inner, "embed_tokens", noisy_embed)]
    xb = mx.broadcast_to(mx.array([tokens], dtype=mx.int32), (samples, n))
    cache = None
    if pos > 0:
        current["noise"] = noise[:, :pos]
        with swapped(last_only + embed_swap):
            cache = _prefix_cache(model, xb[:, :pos], n)
    start = pos if cache is not None else 0
    offsets = [c.offset for c in cache] if cache is not None else []
    current["noise"] = noise[:, start:]
    x_run = xb[:, start:]

    def run() -> mx.array:
        try:
            probs = _last_probs(model, x_run, cache)
            mx.eval(probs)
            return probs
        finally:
            for c, off in zip(cache or (), offsets):
                c.trim(c.offset - off)  # back to the shared prefix for the next run

    corrupt_out: list[Any] = [None] * n_blocks

    def block_recorder(i: int) -> Callable[..., Any]:
        def fn(m: nn.Module, *a: Any, **k: Any) -> Any:
            out = m(*a, **k)
            corrupt_out[i] = out
            return out
        return fn

    with swapped(last_only + embed_swap + [(blocks, i, block_recorder(i)) for i in range(n_blocks)]):
        probs = run()
        mx.eval(*_arrays(corrupt_out))
    p_corrupt = float(probs[:, target].mean().item())

    # restored runs: the blocks before the window replay their corrupted outputs; the window's MLPs get their
    # clean value back at the subject's last token
    at_pos = (mx.arange(start, n) == pos)[None, :, None]

    def restore(i: int) -> Callable[..., Any]:
        def fn(m: nn.Module, *a: Any, **k: Any) -> Any:
            out = m(*a, **k)
            return mx.where(at_pos, clean[i][:, None, :].astype(out.dtype), out)
        return fn

    def replay(i: int) -> Callable[..., Any]:
        return lambda m, *a, **k: corrupt_out[i]

    effects: list[float] = []
    for layer in range(n_blocks):
        first, last = max(0, layer - w // 2), min(n_blocks, layer - (-w // 2))
        swaps = last_only + embed_swap + [(blocks, i, replay(i)) for i in range(first)]
        swaps += [(blocks[i], "mlp", restore(i)) for i in range(first, last)]
        with swapped(swaps):
            probs = run()
        effects.append(float(probs[:, target].mean().item()) - p_corrupt)
    return TraceResult(p_clean=p_clean, p_corrupt=p_corrupt, effects=tuple(effects))


def _hidden(inner: nn.Module) -> int:
    import mlx.core as mx

    return int(inner["embed_tokens"](mx.array([[0]])).shape[-1])


def _arrays(outputs: Sequence[Any]) -> list[mx.array]:
    import mlx.core as mx

    found: list[mx.array] = []
    for o in outputs:
        if isinstance(o, mx.array):
            found.append(o)
        elif isinstance(o, (tuple, list)):
            found.extend(_arrays(o))
    return found


# windows and spans ---------------------------------------------------------------------------------------------------
def choose_window(effects: Sequence[float], size: int) -> tuple[int, int]:
    """The contiguous [lo, hi) window of `size` blocks with the largest summed effect (the earlier one on ties);
    size is clamped to 1..len(effects)."""
    n = len(effects)
    if n == 0:
        return (0, 0)
    size = min(max(1, int(size)), n)
    best_lo, best = 0, -math.inf
    for lo in range(n - size + 1):
        s = math.fsum(float(e) for e in effects[lo:lo + size])
        if s > best:
            best_lo, best = lo, s
    return (best_lo, best_lo + size)


def _find_all(haystack: Sequence[int], needle: Sequence[int]) -> list[int]:
    m = len(needle)
    needle = list(needle)
    return [i for i in range(len(haystack) - m + 1) if m and list(haystack[i:i + m]) == needle]


def _char_spans(prompt_tokens: Sequence[int], subject: str,
                decode: Callable[[list[int]], str]) -> list[tuple[int, int]]:
    """Token spans covering each occurrence of `subject` in the decoded prompt (boundaries that split tokens)."""
    full = decode(list(prompt_tokens))
    hits, i = [], full.find(subject)
    while i >= 0:
        hits.append((i, i + len(subject)))
        i = full.find(subject, i + len(subject))
    if not hits:
        return []
    n = len(prompt_tokens)
    lengths = [len(decode(list(prompt_tokens[:k]))) for k in range(n + 1)]
    spans = []
    for cs, ce in hits:
        start = max(k for k in range(n) if lengths[k] <= cs)
        end = next((k for k in range(start + 1, n + 1) if lengths[k] >= ce), None)
        if end is not None:
            spans.append((start, end))
    return spans


def subject_spans(tokenizer_encode: Callable[[str], list[int]], prompt_tokens: list[int], subject: str,
                  decode: Callable[[list[int]], str] | None = None) -> list[tuple[int, int]]:
    """Every [start, end) token span of the subject in the prompt, in order, not overlapping. Token match first
    (" " + subject and subject); with `decode`, a character match on decoded prefixes adds the mentions whose
    tokenization differs at the subject's boundaries."""
    subject = subject.strip()
    if not subject or not prompt_tokens:
        return []
    found: list[tuple[int, int]] = []
    for text in (" " + subject, subject):
        ids = list(tokenizer_encode(text))
        found += [(i, i + len(ids)) for i in _find_all(prompt_tokens, ids)]
    if decode is not None:
        chars = _char_spans(prompt_tokens, subject, decode)
        if len(chars) > len(found):
            found += chars  # token matches come first, so they win overlaps below
    spans: list[tuple[int, int]] = []
    for span in sorted(dict.fromkeys(found), key=lambda sp: (sp[0], -(sp[1] - sp[0]))):
        if not any(span[0] < b and a < span[1] for a, b in spans):
            spans.append(span)
    return sorted(spans)


def subject_span(tokenizer_encode: Callable[[str], list[int]], prompt_tokens: list[int], subject: str,
                 decode: Callable[[list[int]], str] | None = None) -> tuple[int, int] | None:
    """[start, end) of the subject's last mention in the prompt (the question's, not a system prompt's), or None;
    see `subject_spans`."""
    spans = subject_spans(tokenizer_encode, prompt_tokens, subject, decode)
    return spans[-1] if spans else None


def answer_prefix(reply: str, answer: str, max_chars: int = 300) -> str:
    """The part of the model's own reply before it says the answer ("The capital of France is" for "Paris"), so the
    trace looks at the token where the fact is recalled rather than at a reply that starts by restating the
    question. Empty when the reply does not contain the answer, starts with it, or says it too late."""
    answer = answer.strip()
    if not answer:
        return ""
    i = reply.lower().find(answer.lower())
    if i <= 0 or i > max_chars:
        return ""
    return reply[:i].rstrip()


# the whole step ------------------------------------------------------------------------------------------------------
REPLY_TOKENS = 32  # the answer usually comes within the first sentence


def pick_window(effects: Sequence[float], size: int, first_block: int = 0) -> tuple[int, int] | None:
    """choose_window over the blocks from `first_block` on (block indices stay absolute); None when none of
    them has a positive effect."""
    first_block = min(max(0, int(first_block)), len(effects))
    tail = list(effects[first_block:])
    if not tail or max(tail) <= 0:
        return None
    lo, hi = choose_window(tail, size)
    return (lo + first_block, hi + first_block)


def locate_fact(llm: Any, question: str, answer: str, subject: str, window: int, samples: int = 8,
                seed: int = 0, min_drop: float = MIN_DROP, use_reply: bool = True,
                restore_window: int = 1, first_block: int = 0) -> FactLocation:
    """Trace the base model on the question and pick the `window` blocks whose MLPs most restore the answer.

    With use_reply, the base model first answers greedily; if its reply says the answer after some words, those
    words are appended to the prompt and the trace targets the answer's first token right there. Every mention of
    the subject gets noise; the restored position is the last mention's last token. window=None in the result (with
    a reason) when the subject is not in the prompt or the trace is flat. first_block > 0 keeps the window off the
    first blocks (block 0's MLP often acts as part of the embedding: restoring it restores the subject token itself).
    """
    import mlx.core as mx

    check = getattr(llm, "_check_thread", None)
    if check is not None:
        check()
    base = llm.base_model() if getattr(llm, "lora", None) is not None else contextlib.nullcontext()
    with base:
        model = llm.model
        model_blocks(inner_model(model))
        decode = getattr(getattr(llm, "tokenizer", None), "decode", None)
        prefix = ""
        if use_reply:
            reply = llm.generate_tokens([llm.chat_tokens(question)], max_tokens=REPLY_TOKENS)[0]
            prefix = answer_prefix(reply, answer)
        prompt = list(llm.chat_tokens(question, answer_prefix=prefix) if prefix else llm.chat_tokens(question))
        spans = subject_spans(llm.encode, prompt, subject, decode=decode)
        if not spans:
            return FactLocation(None, (), 0.0, 0.0, subject, reason=f"subject {subject!r} not found in the prompt",
                                prefix=prefix)
        span = spans[-1]
        candidates = [ids for ids in (llm.encode(answer.strip()), llm.encode(" " + answer.strip())) if ids]
        if not candidates:
            return FactLocation(None, (), 0.0, 0.0, subject, reason="the answer is empty", span=span, prefix=prefix)
        probs = _last_probs(model, mx.array([prompt], dtype=mx.int32))
        mx.eval(probs)
        target = max((ids[0] for ids in candidates), key=lambda t: float(probs[0, t].item()))
        trace = trace_layers(model, prompt, span, [target], samples=samples, seed=seed, noise_spans=spans,
                             restore_window=restore_window)
    loc = dict(effects=trace.effects, p_clean=trace.p_clean, p_corrupt=trace.p_corrupt, subject=subject,
               span=span, target_id=int(target), target=decode([int(target)]) if decode else "", prefix=prefix)
    if trace.drop < min_drop:
        return FactLocation(None, reason=f"flat trace: noise on the subject barely changes the answer "
                                         f"(p_clean {trace.p_clean:.3f}, p_corrupt {trace.p_corrupt:.3f})", **loc)
    chosen = pick_window(trace.effects, window, first_block)
    if chosen is None:
        return FactLocation(None, reason="no block's MLP restores the answer", **loc)
    return FactLocation(chosen, **loc)
