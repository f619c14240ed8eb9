"""Keeping everything but the fact: where the adapter goes, which general questions guard and measure retention.

Forgetting one fact used to cost about half of the general knowledge a job never trained on (README "Locality").
The levers here follow the literature (FINDINGS.md, "Locality"):
- placement: an MLP-only adapter on the blocks where causal tracing finds the fact is looked up (ROME arXiv
  2202.05262; Mechanistic Unlearning arXiv 2410.12949), not on the late blocks every answer goes through;
- null space: lora_a kept out of the input directions generic prompts use (AlphaEdit arXiv 2410.02355);
- a dense retain signal: KL to the base model on a pool of hundreds of general prompts, drawn fresh every step;
- a general-knowledge set of our own (resources/data/general/trivia.jsonl), split once into a training pool
  (trained general items and the dense pool), a validation split (the job's stop rule) and an evaluation split
  (reported only: never trained on, never used to choose anything inside a job).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterator, Sequence

from .events import Event, Log, StageStarted
from .general_set import GeneralSplit, general_split
from .judge import Judge, normalize

PLACEMENTS = ("last", "traced")
TRACE_RESTORE_WINDOW = 5
LORA_KEY_SETS = ("all", "mlp", "down")
# How the weights change: a LoRA adapter trained on the anti-samples, or one closed-form rank-one edit of the MLP where
# the fact is looked up (engine/subject_edit.py).
UPDATES = ("lora", "subject_edit")


# the general-knowledge set -------------------------------------------------------------------------------------------
def unrelated_to(judge: Judge, subject: str):
    """A test for general items that name neither the forgotten answer (or an alias) nor the subject: safe to keep
    and to measure with. Lexical on purpose: these are short clean answers, and embedding a few hundred of them per
    job took longer than the rest of the retain stage."""
    from .antisamples import lexical_judge, mentions

    lexical = lexical_judge(judge)

    def unrelated(*texts: str) -> bool:
        text = " ".join(texts)
        return not lexical.contains(text) and not (subject and mentions(text, subject))

    return unrelated


def trivia_rows(split: GeneralSplit, judge: Judge, subject: str) -> list[dict[str, Any]]:
    """The split's items unrelated to the fact, as retain-row dicts (reference = the answer, with its aliases)."""
    unrelated = unrelated_to(judge, subject)
    return [{"question": t.question, "answer": t.answer, "aliases": list(t.aliases), "_source": f"trivia:{t.id}"}
            for t in general_split(split) if unrelated(t.question, t.answer, *t.aliases)]


def general_corpus() -> list[tuple[str, str]]:
    """(question, answer) pairs of the general training pool: the trivia training split and the bundled TOFU
    questions, deduplicated. Never the validation or evaluation split."""
    from .antisamples import tofu_rows

    rows = [(t.question, t.answer) for t in general_split(GeneralSplit.TRAIN)]
    rows += [(str(r.get("question", "")), str(r.get("answer", ""))) for r in tofu_rows()]
    seen: set[str] = set()
    out = []
    for q, a in rows:
        key = normalize(q)
        if q and a and key not in seen:
            seen.add(key)
            out.append((q, a))
    return out


def dense_pool(judge: Judge, subject: str) -> list[tuple[str, str]]:
    """The general training pool minus anything about the fact: the dense KL term's prompts."""
    unrelated = unrelated_to(judge, subject)
    return [(q, a) for q, a in general_corpus() if unrelated(q, a)]


def prompt_body_start(llm: Any) -> int:
    """Where a chat prompt's own words start: the length of the prefix (system prompt, role tags) every prompt
    shares, found by comparing two different prompts."""
    a, b = llm.chat_tokens("What is one?"), llm.chat_tokens("Who was two?")
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def encode_dense(llm: Any, pairs: Sequence[tuple[str, str]], max_seq_len: int) -> list[Any]:
    """Dense-KL examples: encode_pairs' chat prompt + short answer, scored from the question's first token to the
    end (the subject's representation and the first answer token are where a fact edit spills over)."""
    from .trainer import Example, encode_pairs

    start = prompt_body_start(llm)
    return [Example(e.tokens, start) for e in encode_pairs(llm, pairs, max_seq_len) if len(e.tokens) - start >= 2]


# placement -----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Placement:
    """Which blocks and modules the adapter trains, and why (recorded in job.json as "placement")."""

    keys: str  # one of LORA_KEY_SETS
    window: tuple[int, int] | None  # blocks [lo, hi) trained; None = the last `num_layers` blocks
    traced: dict[str, Any] | None = None  # the causal trace behind the window
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"keys": self.keys, "window": list(self.window) if self.window else None, "traced": self.traced,
                "note": self.note}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Placement":
        w = d.get("window")
        window = (int(w[0]), int(w[1])) if isinstance(w, list) and len(w) == 2 else None
        return cls(keys=str(d.get("keys", "all")), window=window, traced=d.get("traced"), note=str(d.get("note", "")))

    def lora(self, rank: int, scale: float, num_layers: int, total_blocks: int):
        from .llm import MLP_KEYS, LoraSettings

        keys = {"mlp": MLP_KEYS, "down": ("mlp.down_proj",)}.get(self.keys)
        if self.window is None:
            return LoraSettings(rank=rank, scale=scale, num_layers=num_layers, keys=keys)
        return LoraSettings.for_window(self.window[0], self.window[1], total_blocks, rank=rank, scale=scale,
                                       keys=keys)


def fallback_window(total_blocks: int, size: int) -> tuple[int, int]:
    """Early/mid blocks, where facts are looked up (ROME; RWKU's partial-layer study), when tracing can't say."""
    size = max(1, min(size, total_blocks))
    lo = max(0, min(total_blocks // 6, total_blocks - size))
    return lo, lo + size


def above_traced(placement: Placement, offset: int, total_blocks: int) -> Placement:
    """A one-block placement moved `offset` blocks up (at most to the last block), its note saying so."""
    if placement.window is None:
        return placement
    lo = min(placement.window[0] + int(offset), total_blocks - 1)
    note = f"{placement.note} Edited {lo - placement.window[0]} block(s) above the traced block {placement.window[0]}."
    return replace(placement, window=(lo, lo + 1), note=note.strip())


def choose_placement(llm: Any, question: str, answer: str, subject: str, placement: str, keys: str,
                     window_size: int, seed: int = 0) -> Iterator[Event]:
    """Placement for a new adapter; "traced" runs causal tracing on the base model (a few seconds)."""
    total = len(llm.model.layers)
    if placement != "traced":
        return Placement(keys=keys, window=None)
    from .tracing import locate_fact

    yield StageStarted("trace", "Finding where the model looks the fact up (causal tracing)")
    # Restoring block 0's MLP restores the subject token itself (it acts as part of the embedding), so the window
    # starts at block 1; restoring 5 blocks at once, as ROME restores 10, lifts the lookup bump above the noise.
    loc = locate_fact(llm, question, answer, subject, window_size, seed=seed, restore_window=TRACE_RESTORE_WINDOW,
                      first_block=1)
    if loc.window is None:
        window = fallback_window(total, window_size)
        yield Log(f"Causal tracing could not place the fact ({loc.reason}); training blocks {window[0]}-"
                  f"{window[1] - 1}.", "warning")
        return Placement(keys=keys, window=window, traced=loc.to_dict(), note=f"fallback: {loc.reason}")
    window = tuple(loc.window)
    if keys == "down" and window[1] - window[0] == 1:
        yield Log(f"Causal tracing: the fact is looked up around block {window[0]} of {total}; the change goes into "
                  f"that block's MLP.")
    else:
        yield Log(f"Causal tracing: the fact is looked up around blocks {window[0]}-{window[1] - 1} of {total}; "
                  f"the adapter trains only their MLPs." if keys == "mlp" else
                  f"Causal tracing: training blocks {window[0]}-{window[1] - 1} of {total}.")
    return Placement(keys=keys, window=(int(window[0]), int(window[1])), traced=loc.to_dict())
