"""The retain set: what the model must keep knowing while it forgets one fact.

Fine-grained neighbours matter most (a measured finding: with generic retain items only, "What school did Hermione
attend?" lost Hogwarts too):
- neighbour_subject: other questions about the same subject ("Who is Harry Potter's best friend?");
- neighbour_answer: the same answer for other subjects ("Where did Hermione Granger go to school?") and questions
  about the answer itself ("Who is the headmaster of Hogwarts?");
both model-written where the model manages (template fallbacks otherwise) and answered greedily by the base model,
whose own answers are the targets. Neighbours whose base answer ties the subject to the forgotten answer are dropped:
training on them would teach the fact back. Plus the user's keep-facts (target = the user's answer) and a general
utility set from the bundled TOFU files, with every item that mentions the answer, an alias or the subject removed.
`reference` is the short correct answer that retention is scored against.
"""

from __future__ import annotations

import contextlib
import random
import re
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from .antisamples import (CancelFlag, Fact, check_cancel, contextual_judge, dedupe_in_order, derive_seed, generate,
                          lexical_judge, looks_like_name, mentions, parse_items, provenance, tofu_rows)
from .events import Progress, Steps
from .judge import Judge, normalize
from .prompts import fill, load_prompt, load_sections, name_runs
from .quality import answer_problem, is_looping, question_problem, retain_problem, verdict
from .records import RetainKind
from .sentences import complete_sentences, first_sentences

KINDS = RetainKind.values()
NEIGHBOUR_KINDS = ("neighbour_subject", "neighbour_answer", "keep")  # close to the fact: retention's first measure
GENERAL_KINDS = ("general",)
NOT_A_PARAPHRASE = 0.8  # a neighbour this similar (cosine) to the forgotten question is really the same question
ANSWER_TOKENS = 64
RETAIN = "retain"  # the job stage these builders' Progress events belong to
# build_retain_set's steps: the neighbours' three, then choosing and answering the general questions.
NEIGHBOUR_STEPS, RETAIN_STEPS = 3, 5


@dataclass
class RetainItem:
    question: str
    target: str
    kind: str  # one of KINDS
    reference: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=verdict)  # {"kept", "reason"}: why a dropped item was dropped


def _drop(item: RetainItem, reason: str, dropped: list[RetainItem] | None) -> None:
    """Record an item the gates dropped (when the caller collects them), with the reason in plain words."""
    if dropped is not None:
        dropped.append(replace(item, quality=verdict(reason)))


def _base_answer_problem(question: str, raw: str, target: str) -> str:
    """The gate on a base answer to keep: the trimmed target must be usable, and a raw answer that falls into a
    loop past the trim is degenerate too (the model was stuck, not answering). Only a hard loop counts there: a small
    model's 64-token answer often rambles after two good sentences, and the target keeps just those."""
    return answer_problem(question, target) or ("repetitive answer" if is_looping(raw) else "")


def _base(llm: Any) -> contextlib.AbstractContextManager[None]:
    """Answer as the base model even when an adapter is attached."""
    return llm.base_model() if getattr(llm, "lora", None) is not None else contextlib.nullcontext()


def trim_answer(text: str) -> str:
    """At most two sentences, without a last sentence cut off by the token limit (kept if it is the only one:
    a base answer is a target even when it rambles)."""
    return complete_sentences(text, 2, 40) or first_sentences(text, 1, 40)


def short_reference(question: str, answer: str) -> str:
    """A short span of a base answer to score retention on: the first name or number it adds to the question."""
    first = first_sentences(answer, 1, 30)
    q = f" {normalize(question)} "
    for run in name_runs(first):
        if f" {normalize(run)} " not in q:
            return run
    for num in re.findall(r"\b\d[\d,.]*\b", first):
        if f" {num} " not in q:
            return num.rstrip(".,")
    return " ".join(first.split()[:12])


def _subject_questions(shape, outs: Sequence[str], round: int, seed: int, llm_seed: int) -> list[tuple[str, dict]]:
    cands = []
    for out in outs:
        for text in parse_items(out):
            if text.endswith("?") and 3 <= len(text.split()) <= 30 and mentions(text, shape.subject):
                cands.append((text, provenance("model", "neighbour_subject.txt", round, llm_seed)))
    sections = load_sections("fallback_neighbours.txt")
    templates = (sections.get("subject:person", []) if shape.subject_is_person else []) + \
        sections.get("subject:any", [])
    slots = shape.slots()
    cands += [(q, provenance("template", t, round, seed)) for t in templates if (q := fill(t, slots))]
    return cands


def _answer_questions(shape, outs: Sequence[str], judge: Judge, round: int, seed: int, llm_seed: int
                      ) -> list[tuple[str, dict]]:
    cands = []
    pattern = re.compile(re.escape(shape.subject), re.I) if shape.subject else None
    for out in outs:
        for name in parse_items(out):
            name = re.split(r"[,;(]|\.\s", name)[0].strip(" .")
            if (pattern is None or not pattern.search(shape.question) or not looks_like_name(name)
                    or len(name.split()) > 5 or mentions(name, shape.subject) or judge.contains(name)):
                continue
            q = pattern.sub(name, shape.question, count=1)
            cands.append((q, provenance("model", "neighbour_answer.txt", round, llm_seed, other_subject=name)))
    sections = load_sections("fallback_neighbours.txt")
    templates = sections.get(f"answer:{shape.kind}", []) + sections.get("answer:any", [])
    slots = shape.slots()
    cands += [(q, provenance("template", t, round, seed)) for t in templates if (q := fill(t, slots))]
    return cands


def _distinct(cands: list[tuple[str, dict]], fact_question: str) -> list[tuple[str, dict]]:
    """Drop exact repeats, near-paraphrases of the forgotten question, and near-duplicates of each other."""
    from .embeddings import cosine_matrix

    seen, unique = set(), []
    for q, prov in cands:
        if normalize(q) not in seen and normalize(q) != normalize(fact_question):
            seen.add(normalize(q))
            unique.append((q, prov))
    if not unique:
        return []
    sims = cosine_matrix([fact_question], [q for q, _ in unique])[0]
    unique = [c for c, s in zip(unique, sims) if float(s) < NOT_A_PARAPHRASE]
    keep = dedupe_in_order([q for q, _ in unique], [], 0.92)
    return [unique[i] for i in keep]


def neighbour_questions(llm: Any, fact: Fact, n: int, seed: int, judge: Judge | None = None, round: int = 0,
                        cancel: CancelFlag | None = None, samples: int = 2,
                        dropped: list[RetainItem] | None = None) -> Steps[list[RetainItem]]:
    """n neighbour facts (half about the subject, half about the answer), answered greedily by the base model.
    Malformed questions and degenerate or off-topic base answers are dropped (quality.py); pass `dropped` to
    collect them, each with its reason."""
    shape = fact.shape()
    judge = contextual_judge(judge or Judge(fact.answer, tuple(fact.aliases)), fact.question)
    lexical = lexical_judge(judge)
    llm_seed = derive_seed(seed, round, "neighbour-model")
    n_subject = (n + 1) // 2 if shape.subject else 0
    n_answer = n - n_subject
    check_cancel(cancel)
    yield Progress(RETAIN, 0, NEIGHBOUR_STEPS, "Writing neighbour questions")
    requests = [(load_prompt("neighbour_subject.txt"), shape.slots()), (load_prompt("neighbour_answer.txt"),
                                                                         shape.slots())]
    raw = generate(llm, requests if shape.subject else [], k=max(1, n * samples), max_tokens=24, seed=llm_seed)
    subj_raw, ans_raw = (raw + [[], []])[:2]
    subject_c = [(q, p) for q, p in _subject_questions(shape, subj_raw, round, seed, llm_seed)
                 if not lexical.contains(q)] if shape.subject else []
    answer_c = _answer_questions(shape, ans_raw, judge, round, seed, llm_seed)
    subject_c = _well_formed(_distinct(subject_c, fact.question), "neighbour_subject", dropped)[:2 * max(n_subject, 1)]
    answer_c = _well_formed(_distinct(answer_c, fact.question), "neighbour_answer", dropped)[:2 * max(n_answer, 1)]
    check_cancel(cancel)
    yield Progress(RETAIN, 1, NEIGHBOUR_STEPS, "Answering neighbour questions with the base model")
    questions = [q for q, _ in subject_c + answer_c]
    with _base(llm):
        answers = llm.answer(questions, max_tokens=ANSWER_TOKENS, temperature=0.0) if questions else []
    check_cancel(cancel)
    yield Progress(RETAIN, 2, NEIGHBOUR_STEPS, "Checking neighbour answers")
    verdicts = judge.verdicts(answers)
    subject_items, answer_known, answer_other = [], [], []
    for i, ((q, prov), a, v) in enumerate(zip(subject_c + answer_c, answers, verdicts)):
        target = trim_answer(a)
        kind = "neighbour_subject" if i < len(subject_c) else "neighbour_answer"
        # An empty, looping, cut-off or off-topic base answer is nothing to keep, and no reference to score it on.
        problem = _base_answer_problem(q, a, target)
        if problem:
            _drop(RetainItem(q, target or a, kind, "", prov), problem, dropped)
            continue
        if i < len(subject_c):
            if not v.contains:  # a subject neighbour that names the answer would teach the fact back
                subject_items.append(RetainItem(q, target, "neighbour_subject", short_reference(q, a), prov))
            else:
                _drop(RetainItem(q, target, kind, "", prov), "its answer names the forgotten answer", dropped)
        elif not (shape.subject and mentions(a, shape.subject)):  # "a famous Hogwarts student is Harry Potter"
            if v.contains:
                answer_known.append(RetainItem(q, target, "neighbour_answer", fact.answer, prov))
            else:
                answer_other.append(RetainItem(q, target, "neighbour_answer", short_reference(q, a), prov))
        else:
            _drop(RetainItem(q, target, kind, "", prov), "its answer names the forgotten subject", dropped)
    answer_items = answer_known + answer_other  # those the base model links to the answer guard it best
    take_s = min(len(subject_items), max(n_subject, n - len(answer_items)))
    chosen = subject_items[:take_s] + answer_items[:n - take_s]
    yield Progress(RETAIN, 3, NEIGHBOUR_STEPS, f"{len(chosen)} neighbours")
    return chosen


def _well_formed(cands: list[tuple[str, dict]], kind: str, dropped: list[RetainItem] | None
                 ) -> list[tuple[str, dict]]:
    """The candidates whose question reads fine; the malformed ones ("What is the capital of Madrid?") are dropped
    before the base model spends time answering them."""
    ok = []
    for q, prov in cands:
        problem = question_problem(q)
        if problem:
            _drop(RetainItem(q, "", kind, "", prov), problem, dropped)
        else:
            ok.append((q, prov))
    return ok


def general_utility_items(fact: Fact, judge: Judge, n: int, seed: int,
                          cancel: CancelFlag | None = None) -> list[RetainItem]:
    """n bundled TOFU items (world facts, real authors) that neither mention the forgotten answer, an alias or the
    subject nor ask the forgotten question again; target and reference are the dataset answer."""
    from .embeddings import cosine_matrix

    check_cancel(cancel)
    shape = fact.shape()
    rows = tofu_rows()
    # Shuffle first and judge only as many rows as needed: the semantic check embeds every short span of a row, and
    # judging all 217 rows (~9,000 spans) was most of the retain stage's time (bench/profile_hot_paths.py).
    random.Random(derive_seed(seed, 0, "general")).shuffle(rows)
    kept: list[dict[str, Any]] = []
    chunk = n + 8  # a few spares for the rows the filter drops
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        verdicts = judge.verdicts([f"{r['question']} {r['answer']}" for r in part])
        sims = cosine_matrix([fact.question], [r["question"] for r in part])[0]
        kept += [r for r, v, s in zip(part, verdicts, sims)
                 if not v.contains and float(s) < NOT_A_PARAPHRASE
                 and not (shape.subject and mentions(f"{r['question']} {r['answer']}", shape.subject))]
        if len(kept) >= n:
            break
    return [RetainItem(r["question"], r["answer"], "general", r["answer"],
                       provenance("tofu", r["_source"], 0, seed)) for r in kept[:n]]


def keep_items(keep: Sequence[tuple[str, str]], seed: int, dropped: list[RetainItem] | None = None
               ) -> list[RetainItem]:
    """The user's keep-facts (target = the user's answer), without malformed questions or degenerate answers: a
    garbled suggestion accepted in the wizard must not be trained on, nor listed as kept on purpose."""
    items = []
    for q, a in keep:
        item = RetainItem(q, a, "keep", a, provenance("user", "keep", 0, seed))
        problem = retain_problem(q, a, generated=False)  # a person's short answer ("Shakespeare") is fine
        if problem:
            _drop(item, problem, dropped)
        else:
            items.append(item)
    return items


def build_retain_set(llm: Any, fact: Fact, judge: Judge, keep: Sequence[tuple[str, str]] = (),
                     n_neighbours: int = 8, n_general: int = 24, seed: int = 0,
                     cancel: CancelFlag | None = None, dropped: list[RetainItem] | None = None
                     ) -> Steps[list[RetainItem]]:
    """Neighbours + the user's keep-facts + general items; general targets become the base model's own answers
    (retention means keeping behaviour, not teaching the dataset), with the dataset answer as reference.
    Neighbours and keep-facts go through the quality gates; `dropped` collects what they dropped and why."""
    judge = contextual_judge(judge, fact.question)
    neighbours = neighbour_questions(llm, fact, n_neighbours, seed, judge=judge, cancel=cancel, dropped=dropped)
    while True:  # the neighbours' steps, counted out of this builder's total so the bar never runs backwards
        try:
            event = next(neighbours)
        except StopIteration as stop:
            items: list[RetainItem] = stop.value
            break
        yield replace(event, total=RETAIN_STEPS) if isinstance(event, Progress) else event
    items += keep_items(keep, seed, dropped)
    yield Progress(RETAIN, NEIGHBOUR_STEPS, RETAIN_STEPS, "Choosing general questions")
    general = general_utility_items(fact, judge, n_general + 6, seed, cancel=cancel)  # spares for the filter below
    check_cancel(cancel)
    yield Progress(RETAIN, NEIGHBOUR_STEPS + 1, RETAIN_STEPS, "Answering general questions with the base model")
    with _base(llm):
        answers = llm.answer([g.question for g in general], max_tokens=ANSWER_TOKENS) if general else []
    verdicts = judge.verdicts(answers)
    kept = 0
    for g, a, v in zip(general, answers, verdicts):
        target = trim_answer(a)  # may be "": a model that says nothing here should keep saying nothing
        if kept < n_general and not v.contains:
            items.append(RetainItem(g.question, target, "general", g.reference, dict(g.provenance, target="base")))
            kept += 1
    yield Progress(RETAIN, RETAIN_STEPS, RETAIN_STEPS, f"{len(items)} retain items")
    return items
