"""What a forget job changed in the model's weights, in sentences a person can read: where the change went (the
blocks causal tracing found, or the last blocks), what kind of change it is (a LoRA adapter, or a subject edit's
rank-one edits), and whether it was stopped early or scaled down.

One home for this account: the Results page shows it and the model card of an export prints it. job.json is
untrusted input (a job folder can come from anywhere), so every field is checked and a malformed one is left out
rather than shown wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

KEY_WORDS = {"all": "every linear module", "mlp": "the MLPs (gate, up and down projections)",
             "down": "the MLP's down projection"}


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) < 1e9 else None


def _float(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) < 1e12 else None


def _blocks_text(lo: int, hi: int) -> str:
    return f"block {lo}" if hi - lo <= 1 else f"blocks {lo}-{hi - 1}"


@dataclass(frozen=True)
class Trace:
    """The causal trace behind a placement: per block, how much restoring its MLP output brings the answer back."""

    effects: tuple[float, ...]
    changed: tuple[int, ...]  # the blocks the job changed
    subject: str


def trace_of(job: Mapping[str, Any]) -> Trace | None:
    """The causal trace recorded in job.json (placement.traced), or None when there is none or it is malformed."""
    placement = job.get("placement")
    traced = placement.get("traced") if isinstance(placement, Mapping) else None
    if not isinstance(traced, Mapping):
        return None
    effects = traced.get("effects")
    if not isinstance(effects, Sequence) or isinstance(effects, str) or not effects or len(effects) > 4096:
        return None
    values = [_float(e) for e in effects]
    if any(v is None for v in values):
        return None
    window = _window(placement)
    changed = tuple(range(window[0], min(window[1], len(values)))) if window else ()
    return Trace(tuple(v for v in values if v is not None), changed, str(traced.get("subject") or ""))


def _window(placement: Mapping[str, Any]) -> tuple[int, int] | None:
    w = placement.get("window")
    if isinstance(w, Sequence) and not isinstance(w, str) and len(w) == 2:
        lo, hi = _int(w[0]), _int(w[1])
        if lo is not None and hi is not None and 0 <= lo < hi:
            return lo, hi
    return None


def describe_change(job: Mapping[str, Any]) -> list[str]:
    """Sentences on where and how the job changed the weights, in the order it happened. Empty when job.json says
    nothing about it (a job from before placements were recorded, or not trained yet)."""
    settings = job.get("settings") if isinstance(job.get("settings"), Mapping) else {}
    placement = job.get("placement") if isinstance(job.get("placement"), Mapping) else None
    trace = trace_of(job)
    subject = trace.subject if trace else ""
    lines: list[str] = []
    edits = [e for e in job.get("edits") or [] if isinstance(e, Mapping)] if isinstance(job.get("edits"), list) else []
    window = _window(placement) if placement else None
    if placement is not None:
        keys = KEY_WORDS.get(str(placement.get("keys", "all")), "every linear module")
        if window and trace:
            where = (f"Causal tracing found where the model looks the fact up: around {_blocks_text(*window)}"
                     + (f", at the subject {subject!r}" if subject else "") + ".")
        elif window:
            where = f"Causal tracing could not place the fact; the change went into {_blocks_text(*window)}."
        else:
            n = _int(settings.get("num_layers"))  # -1: every block; missing: say nothing rather than guess
            where = (f"The adapter covers {keys} of the last {n} blocks." if n and n > 0
                     else f"The adapter covers {keys} of every block." if n == -1 else "")
        if where:
            lines.append(where)
        if window and settings.get("update") != "subject_edit":  # an edit says what it did per round, below
            lines.append(f"A LoRA adapter trains only {keys} of {_blocks_text(*window)}.")
    for e in sorted(edits, key=lambda e: _int(e.get("round")) or 0):
        rnd, layer = _int(e.get("round")), _int(e.get("layer"))
        if rnd is None or layer is None:
            continue
        text = (f"Round {rnd + 1}: a rank-one edit of block {layer}'s MLP at the subject's last token"
                + (f", fitted so that {_int(e.get('rows'))} paraphrases give the wrong answers"
                   if _int(e.get("rows")) else ""))
        kept = _int(e.get("keep_rows"))
        if kept:  # fitted through the edit, the held questions are every trained neighbour, not only the subject's
            text += (f" while {kept} neighbour questions keep theirs, the change acting on them as it really does"
                     if settings.get("edit_exact_fit") is True else
                     f" while {kept} other questions about the subject keep theirs")
        essence = _int(e.get("essence_rows"))
        if essence:
            text += f"{' and' if kept else ' while'} what the model says about the subject in general is held"
        text += "."
        strength = _float(e.get("strength"))
        if e.get("undone") is True:  # pipeline._edit_round: it let no fewer trained questions back than before
            text += (" It let no fewer trained questions give the fact away than the model before it, so it was "
                     "taken out again: it changes nothing.")
        elif e.get("trained_forgotten") is False and strength:
            # the job's strength search found no edit that forgets every trained question (pipeline._edit_strength)
            text += (" No strength tried kept every trained question forgotten, also after 4-bit re-quantization"
                     + (", and no stronger one let fewer back, so it keeps its fitted strength." if strength <= 1 else
                        f"; it was made {strength:g}x stronger, the strength that let the fewest back."))
        elif strength and strength > 1:
            text += f" Made {strength:g}x stronger so the fact stays forgotten after 4-bit re-quantization."
        leak = _float(e.get("leak"))
        if leak is not None and 0 <= leak <= 10 and e.get("undone") is not True:  # an undone edit reaches nothing
            text += f" A general question's input gets about {leak:.0%} of the change."
        lines.append(text)
    for stop in job.get("early_stops") or [] if isinstance(job.get("early_stops"), list) else []:
        if isinstance(stop, Mapping) and _int(stop.get("round")) is not None and _int(stop.get("step")):
            total = _int(settings.get("steps_per_round"))
            lines.append(f"Round {_int(stop['round']) + 1} stopped early after {_int(stop['step'])}"
                         + (f" of {total}" if total else "") + " steps: every trained question was forgotten and "
                         "the neighbours held.")
    for scale in job.get("adapter_scales") or [] if isinstance(job.get("adapter_scales"), list) else []:
        if isinstance(scale, Mapping) and _int(scale.get("round")) is not None:
            factor = _float(scale.get("factor"))
            if factor is not None and 0 < factor < 1:
                lines.append(f"Round {_int(scale['round']) + 1}: the adapter is applied at {factor:.0%} of its "
                             f"trained strength, the least that still forgets every trained question.")
    return lines
