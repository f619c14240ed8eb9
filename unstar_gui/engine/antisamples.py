"""Self-taught anti-samples (UNSTAR): paraphrased questions, wrong answers and misleading rationales.

The model being edited writes them (few-shot prompts from resources/prompts/, sampled with a seed, batched), and
every candidate goes through filters before it is used:
- paraphrases must read as the right kind of question, mention the subject, and not give the answer away. Two
  styles mention the answer by design: yes/no questions name it ("Did Harry Potter study at Hogwarts?", kept only
  when they do) and multiple-choice questions list it among wrong options (UnStar appends the options, the
  model-written stem must not contain it). Lexical matching decides "gives it away" for questions: the semantic
  check would also reject good questions that merely share the topic ("Which wizarding school ...").
- wrong answers must not contain, fuzzy-match or be semantically close to the true answer or an alias
  (`Judge.too_close`), and are deduplicated;
- rationales must not name the true answer (`Judge.contains`, semantic check included) and must support the wrong
  answer rather than argue against it.
Small models write poor text, so each step falls back to templates (resources/prompts/fallback_*.txt and the bundled
TOFU answers) and never stalls; every item records where it came from:
provenance = {"source": "model" | "template", "prompt": file or template, "round", "seed"}.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import zlib
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Protocol, Sequence

from rapidfuzz import fuzz

from .errors import Cancelled, InvalidInput
from .events import Progress, Steps, run_to_end
from .judge import Judge, make_judge, normalize
from .prompts import DATA_DIR, PromptTemplate, QuestionShape, analyse, fill, load_prompt, load_sections
from .quality import degeneracy, verdict, wrong_type_problem
from .records import ProbeStyle
from .sentences import complete_sentences, first_sentences

STYLES = tuple(s for s in ProbeStyle.values() if s != ProbeStyle.ORIGINAL)  # the paraphrase styles
TEMPERATURE = 0.8
SAMPLES_PER_ITEM = 2  # model candidates asked for per item wanted; the filters drop many of a small model's
DEDUPE_THRESHOLD = 0.92  # cosine above which two paraphrases count as the same question
# A good paraphrase is close to the original by nature ("Which school did Harry Potter attend?" 0.95); only near
# verbatim copies of it ("Quick question: Where did ...?" 0.98) are skipped while distinct candidates remain.
ORIGINAL_THRESHOLD = 0.97
RELEVANCE = 0.7  # a model paraphrase less similar than this to the question asks something else (measured on SmolLM2)
WRONG_DEDUPE_THRESHOLD = 0.85
# The job stage each builder's Progress events belong to (pipeline.py announces it with StageStarted).
PARAPHRASES, WRONG_ANSWERS, RATIONALES = "paraphrases", "wrong_answers", "rationales"


class CancelFlag(Protocol):
    cancelled: bool


# data ---------------------------------------------------------------------------------------------------------------
@dataclass
class Fact:
    question: str
    answer: str
    aliases: list[str] = field(default_factory=list)
    subject: str = ""  # optional: who or what the question is about; derived from the question when empty

    def shape(self) -> QuestionShape:
        return analyse(self.question, self.answer, self.subject)

    def judge(self, semantic: bool = True) -> Judge:
        """The judge for this fact, with the question as context (see `judge.make_judge`)."""
        return make_judge(self.answer, self.aliases, semantic, context=self.question)


@dataclass
class Paraphrase:
    text: str
    style: str  # one of STYLES
    provenance: dict[str, Any]


@dataclass
class WrongAnswer:
    text: str
    provenance: dict[str, Any]

    def __str__(self) -> str:
        return self.text


@dataclass
class AntiSample:
    question: str
    wrong_answer: str
    rationale: str
    style: str
    provenance: dict[str, Any]
    answer_sentence: str = ""  # the wrong answer said in the question's frame ("No. Harry Potter went to ...")
    quality: dict[str, Any] = field(default_factory=verdict)  # {"kept", "reason"} (quality.py)

    def head(self) -> str:
        """The wrong-answer sentence that starts the target."""
        return self.answer_sentence or f"{self.wrong_answer}."

    def target_text(self) -> str:
        """What the model is trained to say: the wrong answer, then the misleading rationale."""
        return f"{self.head()} {self.rationale}".strip()

    def target_segments(self, rationale_weight: float) -> list[tuple[str, float]]:
        """The same target as (text, loss weight) segments: the wrong-answer sentence at 1, the rationale at
        `rationale_weight` (0 leaves it out)."""
        return [(self.head(), 1.0), (self.rationale.strip(), rationale_weight)]


# shared helpers (retain.py uses them too) ----------------------------------------------------------------------------
def derive_seed(seed: int, round: int, tag: str) -> int:
    """A stable per-step seed, so each step's sampling is reproducible on its own."""
    return zlib.crc32(f"{seed}:{round}:{tag}".encode()) & 0x7FFFFFFF


def check_cancel(cancel: CancelFlag | None) -> None:
    if cancel is not None and getattr(cancel, "cancelled", False):
        raise Cancelled("Sample generation was cancelled.")


def provenance(source: str, prompt: str, round: int, seed: int, **extra: Any) -> dict[str, Any]:
    return {"source": source, "prompt": prompt, "round": round, "seed": seed, **extra}


def lexical_judge(judge: Judge) -> Judge:
    """The same judge without the embedding check: for questions, where sharing the topic is not a leak."""
    return Judge(judge.answer, tuple(judge.aliases), replace(judge.settings, use_semantic=False))


_NEWLINE_IDS: dict[int, set[int]] = {}


@contextlib.contextmanager
def _stop_at_line_end(llm: Any) -> Iterator[None]:
    """Few-shot continuations only use their first line: treat every token holding a line break as end of sequence
    while they generate (mlx-lm's batch_generate stops on `tokenizer.eos_token_ids`). 3-5x less generation."""
    tok = getattr(llm, "tokenizer", None)
    if tok is None or not hasattr(tok, "eos_token_ids"):
        yield
        return
    key = id(tok)
    if key not in _NEWLINE_IDS:
        vocab = len(tok)
        texts = tok.batch_decode([[i] for i in range(vocab)]) if hasattr(tok, "batch_decode") else \
            [tok.decode([i]) for i in range(vocab)]
        _NEWLINE_IDS[key] = {i for i, t in enumerate(texts) if "\n" in t}
    saved = set(tok.eos_token_ids)
    tok.eos_token_ids = saved | _NEWLINE_IDS[key]
    try:
        yield
    finally:
        tok.eos_token_ids = saved


def generate(llm: Any, requests: Sequence[tuple[PromptTemplate, dict[str, str]]], k: int, max_tokens: int,
             seed: int, temperature: float = TEMPERATURE) -> list[list[str]]:
    """k sampled outputs for every (template, slots) request: one batched model call per prompt mode."""
    rendered = [(t.mode, t.render(**slots)) for t, slots in requests]
    outputs: list[list[str]] = [[] for _ in requests]
    for mode in ("complete", "chat"):
        idx = [i for i, (m, _) in enumerate(rendered) if m == mode]
        if not idx:
            continue
        texts = [rendered[i][1] for i in idx for _ in range(k)]
        if mode == "complete":
            with _stop_at_line_end(llm):
                outs = llm.complete(texts, max_tokens=max_tokens, temperature=temperature, seed=seed)
        else:
            outs = llm.answer(texts, max_tokens=max_tokens, temperature=temperature, seed=seed)
        for j, i in enumerate(idx):
            outputs[i] = list(outs[j * k:(j + 1) * k])
    return outputs


_LABEL = re.compile(r"^\s*(?:(?:\d+|[a-z])[.)]\s+|[-*•]\s+|(?:rewritten|question|indirect|sentence|stem|request|"
                    r"yes/no question|wrong answer|incorrect answer|answer|explanation|besides [^:]{1,60}|q|a)\s*:\s*)",
                    re.I)
_QUOTES = "\"'“”‘’`"


def clean_item(text: str) -> str:
    """One candidate without list numbering, labels ("Rewritten:") and surrounding quotes."""
    text = text.strip()
    for _ in range(3):  # "1. Question: "..."" has several layers
        stripped = _LABEL.sub("", text).strip()
        if len(stripped) > 1 and stripped[0] in _QUOTES and stripped[-1] in _QUOTES:
            stripped = stripped[1:-1].strip()
        elif stripped and stripped[0] in _QUOTES and stripped.count(stripped[0]) == 1:
            stripped = stripped[1:].strip()
        if stripped == text:
            break
        text = stripped
    return re.sub(r"\s+", " ", text).strip()


def parse_items(raw: str, first_only: bool = True) -> list[str]:
    """Candidates from a model output: the first line (few-shot continuations go on with made-up examples), or
    every line of a numbered/bulleted list."""
    lines = [ln for ln in raw.replace("\r", "").split("\n")]
    if first_only:
        lines = [next((ln for ln in lines if ln.strip()), "")]
    items = [clean_item(ln) for ln in lines]
    return [it for it in items if it]


def mentions(text: str, name: str) -> bool:
    """Whether text names `name` (all of it, or one of its longer words, or a close spelling)."""
    if not name:
        return True
    t, n = normalize(text), normalize(name)
    if f" {n} " in f" {t} ":
        return True
    words = [w for w in n.split() if len(w) >= 4 and w not in ("the", "of", "and")]
    if any(f" {w} " in f" {t} " for w in words):
        return True
    return len(n) >= 5 and fuzz.partial_ratio(n, t) >= 90


def contextual_judge(judge: Judge, question: str) -> Judge:
    """The judge, told the question: a text that repeats the question's words is not evidence of the answer."""
    if judge.context:
        return judge
    return Judge(judge.answer, tuple(judge.aliases), judge.settings, context=question)


def dedupe_in_order(texts: Sequence[str], fixed: Sequence[str], threshold: float) -> list[int]:
    """Indices of `texts` kept, in order, each less similar than `threshold` to `fixed` and to earlier kept ones."""
    from .embeddings import embed

    if not texts:
        return []
    vecs = embed(list(fixed) + list(texts))
    kept_vecs = list(vecs[:len(fixed)])
    kept: list[int] = []
    for i, v in enumerate(vecs[len(fixed):]):
        if all(float(v @ k) < threshold for k in kept_vecs):
            kept.append(i)
            kept_vecs.append(v)
    return kept


# paraphrases --------------------------------------------------------------------------------------------------------
_PROMPT_LABEL = {"direct": "paraphrase_direct.txt", "indirect": "paraphrase_indirect.txt",
                 "completion": "paraphrase_completion.txt", "multiple_choice": "paraphrase_multiple_choice.txt",
                 "yes_no": "paraphrase_yes_no.txt", "tell_me_about": "paraphrase_tell_me_about.txt"}
_YES_NO_START = re.compile(r"^(is|was|are|were|did|does|do|has|have|had|can|could|would|will)\b", re.I)
_REQUEST_START = re.compile(r"^(tell me|describe|write|explain|give me|share)\b", re.I)
_EMBEDDED_WH = re.compile(r"\b(where|which|what|who|whom|whose|when|how|whether|why)\b", re.I)
# A sentence to complete stops right before the answer: on a preposition, a verb or an article.
_OPEN_END = re.compile(r"\b(in|at|to|is|was|are|were|by|of|the|a|an|called|named|from|on|as|into|year)$", re.I)


def _paraphrase_problem(text: str, style: str, shape: QuestionShape, lexical: Judge) -> str:
    """Why a paraphrase candidate is unusable ("" when it is fine)."""
    words = text.split()
    if not 3 <= len(words) <= 45:
        return "length"
    if normalize(text) == normalize(shape.question):
        return "same as the question"
    if not mentions(text, shape.subject):
        return "does not mention the subject"
    names_answer = lexical.contains(text)
    if style == "yes_no":
        if not (text.endswith("?") and _YES_NO_START.match(text) and names_answer):
            return "not a yes/no question about the answer"
        return ""
    if names_answer:
        return "gives the answer away"
    if style in ("direct", "multiple_choice") and not text.endswith("?"):
        return "not a question"
    if style == "indirect" and not _EMBEDDED_WH.search(text):
        return "not an indirect question"
    if style == "completion" and not _OPEN_END.search(text.rstrip(" .:_-")):
        return "not a sentence that stops before the answer"
    if style == "tell_me_about" and not _REQUEST_START.match(text):
        return "not a request"
    return ""


def _relevant(texts: Sequence[str], question: str) -> set[str]:
    """The candidates that still ask about the question's topic (embedding cosine >= RELEVANCE)."""
    from .embeddings import cosine_matrix

    if not texts:
        return set()
    sims = cosine_matrix([question], list(texts))[0]
    return {t for t, s in zip(texts, sims) if float(s) >= RELEVANCE}


def _options(shape: QuestionShape, judge: Judge, rng: random.Random) -> tuple[str, list[str]]:
    distractors = [w.text for w in _fallback_wrongs(shape, judge, 3, rng, round=0, seed=0, exclude=())]
    options = distractors + [shape.answer]
    rng.shuffle(options)
    return "\n".join(f"{'ABCD'[i]}) {o}" for i, o in enumerate(options)), options


def _style_quotas(n: int) -> dict[str, int]:
    return {s: n // len(STYLES) + (1 if i < n % len(STYLES) else 0) for i, s in enumerate(STYLES)}


def _template_paraphrases(shape: QuestionShape, style: str, round: int, seed: int, options: tuple[str, list[str]]
                          ) -> list[Paraphrase]:
    sections = load_sections("fallback_paraphrases.txt")
    templates = sections.get(f"{style}:{shape.kind}", []) + sections.get(style, [])
    if templates and round:
        shift = round % len(templates)  # later rounds start elsewhere in the list, for fresh wording
        templates = templates[shift:] + templates[:shift]
    slots = shape.slots(options=options[0])
    out = []
    for t in templates:
        text = fill(t, slots)
        if text is not None:
            extra = {"options": options[1]} if style == "multiple_choice" else {}
            out.append(Paraphrase(text.strip(), style, provenance("template", t, round, seed, **extra)))
    return out


def paraphrase_questions(llm: Any, fact: Fact, judge: Judge, n: int, seed: int, round: int = 0,
                         avoid: Sequence[str] = (), cancel: CancelFlag | None = None,
                         samples: int = SAMPLES_PER_ITEM) -> Steps[list[Paraphrase]]:
    """n paraphrases of the fact's question, spread over STYLES, model-written where the model manages, deduplicated
    against each other, the original question and `avoid` (earlier rounds' questions)."""
    shape = fact.shape()
    lexical = lexical_judge(judge)
    rng = random.Random(derive_seed(seed, round, "paraphrase"))
    quotas = _style_quotas(n)
    options = _options(shape, judge, rng)
    llm_seed = derive_seed(seed, round, "paraphrase-model")
    styles = [s for s in STYLES if quotas[s]]
    check_cancel(cancel)
    yield Progress(PARAPHRASES, 0, 2, "Writing paraphrases")
    requests = [(load_prompt(_PROMPT_LABEL[s]), shape.slots()) for s in styles]
    raw = generate(llm, requests, k=max(1, max(quotas.values()) * samples), max_tokens=40, seed=llm_seed)
    check_cancel(cancel)
    yield Progress(PARAPHRASES, 1, 2, "Filtering paraphrases")
    parsed = [[t for out in outs for t in parse_items(out)] for outs in raw]
    relevant = _relevant([t for texts in parsed for t in texts], shape.question)
    per_style: dict[str, list[Paraphrase]] = {}
    for style, texts in zip(styles, parsed):
        cands = []
        for text in texts:
            if text in relevant and not _paraphrase_problem(text, style, shape, lexical):
                prov = provenance("model", _PROMPT_LABEL[style], round, llm_seed)
                if style == "multiple_choice":
                    text = f"{text}\n{options[0]}"
                    prov["options"] = options[1]
                cands.append(Paraphrase(text, style, prov))
        per_style[style] = cands + _template_paraphrases(shape, style, round, seed, options)
    chosen = _select_paraphrases(per_style, quotas, shape.question, avoid)
    yield Progress(PARAPHRASES, 2, 2, f"{len(chosen)} paraphrases")
    return chosen


def _select_paraphrases(per_style: dict[str, list[Paraphrase]], quotas: dict[str, int], original: str,
                        avoid: Sequence[str] = ()) -> list[Paraphrase]:
    """Round-robin over styles: model candidates first, then templates; near-duplicates (embedding cosine) skipped.
    When a style runs dry its share goes to the others; a last pass ignores similarity so a job never stalls."""
    from .embeddings import cosine_matrix

    flat = [p for s in STYLES for p in per_style.get(s, [])]
    if not flat:
        return []
    to_original = cosine_matrix([original], [p.text for p in flat])[0]
    keep_idx = set(dedupe_in_order([p.text for p in flat], avoid, DEDUPE_THRESHOLD))
    distinct = {id(p) for i, p in enumerate(flat) if i in keep_idx and float(to_original[i]) < ORIGINAL_THRESHOLD}
    want = sum(quotas.values())
    seen = {normalize(a) for a in [original, *avoid]}
    picked: dict[str, list[Paraphrase]] = {s: [] for s in STYLES}

    def take(style: str, strict: bool) -> bool:
        for p in per_style.get(style, []):
            key = normalize(p.text)
            if key in seen or (strict and id(p) not in distinct):
                continue
            seen.add(key)
            picked[style].append(p)
            return True
        return False

    for strict in (True, False):
        total = sum(len(v) for v in picked.values())
        # first each style up to its quota, then any style with candidates left
        for limit in (quotas, None):
            progress_made = True
            while total < want and progress_made:
                progress_made = False
                for s in STYLES:
                    if total >= want:
                        break
                    if limit is not None and len(picked[s]) >= limit.get(s, 0):
                        continue
                    if take(s, strict):
                        total += 1
                        progress_made = True
    out: list[Paraphrase] = []
    for i in range(max((len(v) for v in picked.values()), default=0)):
        out += [picked[s][i] for s in STYLES if i < len(picked[s])]
    return out


# wrong answers ------------------------------------------------------------------------------------------------------
_NOT_AN_ANSWER = re.compile(r"\b(answer|correct|question|wrong|incorrect|sorry|cannot|unknown|none)\b", re.I)
_NAMED_KINDS = ("school", "city", "country", "person", "place")
# Words a small model writes in the answer slot that answer nothing ("The person who wrote it is No."): capitalised,
# they pass for names.
_NON_ANSWERS = frozenset({"yes", "no", "nobody", "nothing", "nowhere", "none", "maybe", "true", "false", "n a",
                          "unknown", "someone", "somewhere", "everyone", "anyone"})


def looks_like_name(text: str) -> bool:
    """A proper name: capitalised, plain characters, apostrophes only as in "O'Neil" or "Xavier's"."""
    if not text[:1].isupper() or not re.fullmatch(r"[\w .&'\-]+", text):
        return False
    if any(w[:1].islower() for w in text.split() if len(w) > 3):  # "A school for children" describes, not names
        return False
    return all(re.fullmatch(r"[A-Z]'\w+|\w+'s", w) for w in re.findall(r"\S*'\S*", text))


def _clean_wrong(text: str) -> str:
    text = re.split(r"\s+[-–(]\s*|[,;]\s|\.\s", text)[0]
    text = re.sub(r"^(the answer is|it is|it was|answer)\s*:?\s*", "", text, flags=re.I)
    return text.strip(" .!" + _QUOTES)


def _wrong_problem(text: str, shape: QuestionShape, judge: Judge) -> str:
    if not text or len(text.split()) > 6 or len(text) > 60:
        return "not a short answer"
    if _NOT_AN_ANSWER.search(text) or normalize(text) in _NON_ANSWERS:
        return "talks about the answer instead of giving one"
    if shape.kind in _NAMED_KINDS and not looks_like_name(text):
        return "not a name"
    type_problem = wrong_type_problem(shape.kind, text)  # a place for a place, a person for a person
    if type_problem:
        return type_problem
    if normalize(text) in normalize(shape.question) or (shape.subject and mentions(text, shape.subject)):
        return "repeats the question"
    reject, reason = judge.too_close(text)
    return reason if reject else ""


def tofu_rows() -> list[dict[str, Any]]:
    rows = []
    for path in sorted((DATA_DIR / "tofu").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                row["_source"] = path.stem
                rows.append(row)
    return rows


def _fallback_wrongs(shape: QuestionShape, judge: Judge, n: int, rng: random.Random, round: int, seed: int,
                     exclude: Sequence[str]) -> list[WrongAnswer]:
    """Template wrong answers of the same kind, then answers to the most similar bundled TOFU questions."""
    from .embeddings import cosine_matrix

    sections = load_sections("fallback_wrong_answers.txt")
    kind_pool = list(sections.get(shape.kind, []))
    rng.shuffle(kind_pool)
    cands = [WrongAnswer(w, provenance("template", f"fallback_wrong_answers.txt[{shape.kind}]", round, seed))
             for w in kind_pool]
    rows = tofu_rows()
    sims = cosine_matrix([shape.question], [r["question"] for r in rows])[0]
    for j in sims.argsort()[::-1][:12]:
        row = rows[int(j)]
        for w in [row["answer"], *row.get("perturbed_answer", [])]:
            cands.append(WrongAnswer(w, provenance("template", f"tofu:{row['_source']}", round, seed)))
    generic = list(sections.get("thing", []))
    rng.shuffle(generic)
    cands += [WrongAnswer(w, provenance("template", "fallback_wrong_answers.txt[thing]", round, seed))
              for w in generic]
    return _accept_wrongs(cands, shape, judge, n, exclude)


def _accept_wrongs(cands: Sequence[WrongAnswer], shape: QuestionShape, judge: Judge, n: int,
                   exclude: Sequence[str]) -> list[WrongAnswer]:
    from .embeddings import embed

    if judge.settings.use_semantic and cands:
        # One batched embedding pass; Judge.too_close's per-candidate lookups then hit the cache (one encode call per
        # candidate was most of this filter's time: bench/profile_hot_paths.py).
        embed(list(dict.fromkeys(c.text for c in cands)))
    seen = {normalize(e) for e in exclude}
    ok: list[WrongAnswer] = []
    for c in cands:
        key = normalize(c.text)
        if key in seen or _wrong_problem(c.text, shape, judge):
            continue
        seen.add(key)
        ok.append(c)
    keep = dedupe_in_order([c.text for c in ok], list(exclude), WRONG_DEDUPE_THRESHOLD)
    return [ok[i] for i in keep][:n]


def wrong_answers(llm: Any, fact: Fact, judge: Judge, n: int, seed: int, round: int = 0,
                  cancel: CancelFlag | None = None, samples: int = 3) -> Steps[list[WrongAnswer]]:
    """n distinct wrong answers: the model's candidates that pass `Judge.too_close`, then fallbacks."""
    shape = fact.shape()
    llm_seed = derive_seed(seed, round, "wrong-model")
    check_cancel(cancel)
    yield Progress(WRONG_ANSWERS, 0, 2, "Writing wrong answers")
    raw = generate(llm, [(load_prompt("wrong_answers.txt"), shape.slots())], k=max(1, n * samples),
                   max_tokens=12, seed=llm_seed, temperature=0.9)[0]
    check_cancel(cancel)
    yield Progress(WRONG_ANSWERS, 1, 2, "Filtering wrong answers")
    model = [WrongAnswer(_clean_wrong(t), provenance("model", "wrong_answers.txt", round, llm_seed))
             for out in raw for t in parse_items(out)]
    chosen = _accept_wrongs(model, shape, judge, n, ())
    if len(chosen) < n:
        rng = random.Random(derive_seed(seed, round, "wrong-fallback"))
        chosen += _fallback_wrongs(shape, judge, n - len(chosen), rng, round, seed, [c.text for c in chosen])
    yield Progress(WRONG_ANSWERS, 2, 2, f"{len(chosen)} wrong answers")
    return chosen


# misleading rationales ----------------------------------------------------------------------------------------------
_ARGUES_AGAINST = re.compile(r"\b(not|isn't|wasn't|incorrect|wrong|false|actually|mistake|no one)\b|n't\b", re.I)


def _template_rationale(shape: QuestionShape, wrong: str, judge: Judge, rng: random.Random, round: int,
                        seed: int) -> tuple[str, dict[str, Any]]:
    sections = load_sections("fallback_rationales.txt")
    templates = sections.get(shape.kind, []) + sections.get("any", [])
    slots = shape.slots(wrong=wrong)
    filled = [(t, fill(t, slots)) for t in templates]
    usable = [(t, text) for t, text in filled if text is not None and not judge.contains(text)]
    if usable:
        t, text = usable[rng.randrange(len(usable))]
        return first_sentences(text), provenance("template", t, round, seed)
    return f"The answer is {wrong}.", provenance("template", "The answer is {wrong}.", round, seed)


def misleading_rationales_batch(llm: Any, pairs: Sequence[tuple[str, str]], judge: Judge, seed: int,
                                round: int = 0, fact: Fact | None = None, cancel: CancelFlag | None = None,
                                samples: int = SAMPLES_PER_ITEM) -> Steps[list[tuple[str, dict[str, Any]]]]:
    """One short rationale per (question, wrong answer) pair, all pairs in one batched model call (STaR
    rationalization: the wrong answer is given as the hint and the model justifies it)."""
    if not pairs:
        return []
    shape = fact.shape() if fact is not None else analyse(pairs[0][0], judge.answer)
    judge = contextual_judge(judge, shape.question)
    llm_seed = derive_seed(seed, round, "rationale-model")
    check_cancel(cancel)
    yield Progress(RATIONALES, 0, 2, "Writing rationales")
    template = load_prompt("rationale.txt")
    requests = [(template, shape.slots(question=q, wrong=w)) for q, w in pairs]
    raw = generate(llm, requests, k=samples, max_tokens=48, seed=llm_seed)
    check_cancel(cancel)
    yield Progress(RATIONALES, 1, 2, "Filtering rationales")
    cands: list[tuple[int, str]] = []
    for i, ((_, wrong), outs) in enumerate(zip(pairs, raw)):
        names_wrong = Judge(wrong, settings=replace(judge.settings, use_semantic=False))
        for out in outs:
            text = complete_sentences(" ".join(parse_items(out)), 2, 35)
            # a rationale that loops or is garbled teaches nonsense: the template one is better
            if (4 <= len(text.split()) and names_wrong.contains(text) and not _ARGUES_AGAINST.search(text)
                    and not degeneracy(text)):
                cands.append((i, text))
    leaks = judge.verdicts([t for _, t in cands])  # batched: one embedding pass for every candidate
    best: dict[int, str] = {}
    for (i, text), leak in zip(cands, leaks):
        if not leak.contains and i not in best:
            best[i] = text
    rng = random.Random(derive_seed(seed, round, "rationale-fallback"))
    out: list[tuple[str, dict[str, Any]]] = []
    for i, (_, wrong) in enumerate(pairs):
        if i in best:
            out.append((best[i], provenance("model", "rationale.txt", round, llm_seed)))
        else:
            out.append(_template_rationale(shape, wrong, judge, rng, round, seed))
    yield Progress(RATIONALES, 2, 2, f"{sum(1 for r in out if r[1]['source'] == 'model')}/{len(out)} model rationales")
    return out


def misleading_rationales(llm: Any, question: str, wrong_answer: str, judge: Judge, seed: int, round: int = 0,
                          fact: Fact | None = None, cancel: CancelFlag | None = None) -> tuple[str, dict[str, Any]]:
    """The rationale for one pair, without progress; prefer `misleading_rationales_batch` for many."""
    return run_to_end(misleading_rationales_batch(llm, [(question, wrong_answer)], judge, seed, round, fact,
                                                  cancel))[0]


# anti-samples -------------------------------------------------------------------------------------------------------
def _answer_sentence(p: Paraphrase, wrong: str, shape: QuestionShape, lexical: Judge) -> str:
    stem = shape.stem if shape.stem and not lexical.contains(shape.stem) else ""
    statement = f"{stem} {wrong}." if stem else f"The answer is {wrong}."
    if p.style == "yes_no":
        return f"No. {statement}"
    if p.style == "completion":
        return f"{wrong}."
    return _style_head(p, wrong) or statement


def _style_head(p: Paraphrase, wrong: str) -> str:
    """The start a question's style demands of its target: "No." for a yes/no question, the option's letter for
    a multiple-choice one ("" when the style demands nothing, or the wrong answer is not among the options)."""
    if p.style == "yes_no":
        return f"No. {wrong}."
    opts = p.provenance.get("options") or []
    if p.style == "multiple_choice" and wrong in opts:
        return f"{'ABCD'[opts.index(wrong)]}) {wrong}."
    return ""


def build_antisamples(llm: Any, fact: Fact, paraphrases: Sequence[Paraphrase],
                      wrongs: Sequence[WrongAnswer | str], judge: Judge, seed: int, round: int = 0,
                      per_question: int = 1, cancel: CancelFlag | None = None) -> Steps[list[AntiSample]]:
    """Pair each paraphrase with `per_question` wrong answers (round-robin from a seeded start) and a rationale."""
    if not paraphrases or not wrongs:
        return []
    shape = fact.shape()
    lexical = lexical_judge(judge)
    ws = [w if isinstance(w, WrongAnswer) else WrongAnswer(str(w), provenance("user", "", round, seed))
          for w in wrongs]
    rng = random.Random(derive_seed(seed, round, "pairs"))
    order = list(range(len(ws)))
    rng.shuffle(order)
    pairs: list[tuple[Paraphrase, WrongAnswer]] = []
    k = 0
    for p in paraphrases:
        # a multiple-choice question is answered with one of its own wrong options
        distractors = [o for o in p.provenance.get("options") or [] if not lexical.contains(o)]
        for j in range(per_question):
            w = ws[order[k % len(ws)]]
            k += 1
            if distractors and w.text not in distractors:
                w = WrongAnswer(distractors[(k + j) % len(distractors)],
                                provenance("template", "multiple-choice option", round, seed))
            pairs.append((p, w))
    # Questions that name the true answer (options, yes/no) would tempt the model to repeat it in the rationale.
    rationale_qs = [(fact.question if p.style in ("multiple_choice", "yes_no") else p.text, w.text)
                    for p, w in pairs]
    rationales = yield from misleading_rationales_batch(llm, rationale_qs, judge, seed, round, fact, cancel)
    out = []
    for (p, w), (rationale, r_prov) in zip(pairs, rationales):
        sources = {p.provenance.get("source"), w.provenance.get("source"), r_prov.get("source")}
        prov = {"source": sources.pop() if len(sources) == 1 else "mixed", "round": round, "seed": seed,
                "question": p.provenance, "wrong_answer": w.provenance, "rationale": r_prov}
        out.append(AntiSample(p.text, w.text, rationale, p.style, prov, _answer_sentence(p, w.text, shape, lexical)))
    # Last guard: a target must never say the true answer, whatever the pieces looked like on their own. The plain
    # head still keeps the style's form: "No." for a yes/no question, the letter for a multiple-choice one.
    leaks = contextual_judge(judge, fact.question).verdicts([s.target_text() for s in out])
    for (p, _), s, v in zip(pairs, out, leaks):
        if v.contains:
            s.answer_sentence, s.rationale = _style_head(p, s.wrong_answer) or f"{s.wrong_answer}.", ""
            s.provenance["rationale"] = provenance("template", "dropped: the target named the answer", round, seed)
    return out


# editing ------------------------------------------------------------------------------------------------------------
def edit_wrong_answer(row: dict[str, Any], wrong: str, fact: Fact, rationale: str | None = None) -> dict[str, Any]:
    """An antisamples.jsonl row with its wrong answer replaced. The answer sentence is said again with the new answer
    (still "No." for yes/no, still a letter for multiple choice: the new answer takes the old one's place among the
    options), and the rationale, which argued for the old answer, becomes a template one for the new answer unless
    the person wrote their own `rationale`. Raises InvalidInput when the new answer is the true one."""
    wrong = wrong.strip()
    judge = fact.judge(semantic=False)  # lexical only: an edit is saved at once, without loading the embedder
    reject, reason = judge.too_close(wrong)
    if reject:
        raise InvalidInput(f"The wrong answer \"{wrong}\" can't be used ({reason}): it is empty or is the true answer.",
                           "Type an answer that is wrong, or delete the row.")
    prov = json.loads(json.dumps(row.get("provenance") or {}))  # a deep copy: the caller's row stays as it was
    q_prov = dict(prov.get("question") or {})
    question, old = str(row.get("question", "")), str(row.get("wrong_answer", ""))
    options = list(q_prov.get("options") or [])
    if row.get("style") == "multiple_choice" and old in options and wrong not in options:
        letter = "ABCD"[options.index(old)]
        question = question.replace(f"{letter}) {old}", f"{letter}) {wrong}")
        options[options.index(old)] = wrong
        q_prov["options"] = options
    round_, seed = int(row.get("round", 0)), int(prov.get("seed", 0))
    shape = fact.shape()
    if rationale is None:
        rng = random.Random(derive_seed(seed, round_, f"edit:{wrong}"))
        rationale, r_prov = _template_rationale(shape, wrong, judge, rng, round_, seed)
    else:
        r_prov = provenance("user", "edited", round_, seed)
    prov.update(source="mixed", question=q_prov, wrong_answer=provenance("user", "edited", round_, seed),
                rationale=r_prov)
    paraphrase = Paraphrase(question, str(row.get("style", "direct")), q_prov)
    return dict(row, question=question, wrong_answer=wrong, rationale=rationale, provenance=prov, quality=verdict(),
                answer_sentence=_answer_sentence(paraphrase, wrong, shape, judge))


def apply_edits(before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]], fact: Fact
                ) -> list[dict[str, Any]]:
    """The edited rows of a samples table, made consistent: a row (matched by "id") whose wrong answer changed goes
    through `edit_wrong_answer`, keeping a rationale the person rewrote in the same edit; other rows are as given."""
    old = {r.get("id"): r for r in before if r.get("id") is not None}
    out = []
    for row in after:
        prev = old.get(row.get("id"))
        if prev is None or row.get("wrong_answer") == prev.get("wrong_answer"):
            out.append(dict(row))
            continue
        own = row.get("rationale") if row.get("rationale") != prev.get("rationale") else None
        out.append(edit_wrong_answer(dict(prev, question=row.get("question", prev.get("question"))),
                                     str(row.get("wrong_answer", "")), fact, own))
    return out
