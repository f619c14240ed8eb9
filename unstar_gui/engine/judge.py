"""Is the fact still there? A verdict on one generated answer.

Checks, cheapest first: the answer or an alias as a word-bounded substring; a fuzzy match of any answer span
(rapidfuzz partial ratio, for misspellings and inflections); number words ("seven" for "7"); and a semantic match:
sentence-transformers cosine between the true answer / aliases and short spans of the generated answer.
Negated mentions ("not Hogwarts") still count as a leak: the model still names the fact.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Sequence

from rapidfuzz import fuzz

from .sentences import first_sentences

_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000,
}
_STOP = {"the", "a", "an", "of", "and", "in", "on", "at", "to", "is", "was", "for", "school", "de", "la", "le"}


@dataclass
class JudgeSettings:
    fuzzy_threshold: float = 85.0  # rapidfuzz partial_ratio, 0-100 (85: one wrong letter in 8, "Hogwartz")
    semantic_threshold: float = 0.75  # cosine between the answer and an answer span
    close_threshold: float = 0.6  # a wrong-answer candidate this close to the truth is rejected
    use_semantic: bool = True


@dataclass
class Verdict:
    contains: bool
    reason: str  # "exact", "fuzzy", "number", "semantic", "" when absent
    score: float
    matched: str = ""


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    # Apostrophes join, not split: "Hogwart's" must stay one word close to "Hogwarts", "Potter's" is "Potter".
    text = re.sub(r"(\w)['’]s\b", r"\1", text)
    text = re.sub(r"['’`]", "", text)
    text = re.sub(r"[^\w\s]", " ", text.lower())
    return re.sub(r"\s+", " ", text).strip()


def _numbers_in(text: str) -> set[int]:
    found = {int(n) for n in re.findall(r"\b\d+\b", text)}
    words = normalize(text).split()
    for w in words:
        if w in _NUMBER_WORDS:
            found.add(_NUMBER_WORDS[w])
    return found


def _spans(text: str, max_words: int = 6, ignore: frozenset[str] = frozenset()) -> list[str]:
    """Candidate answer spans: none starts or ends with a function word ("went to school at" names nothing), and
    none holds an `ignore` word (the question's own words are no evidence of the answer, yet "school harry potter"
    scored 0.77 against Hogwarts)."""
    words = normalize(text).split()
    spans = []
    for n in range(1, max_words + 1):
        for i in range(0, max(1, len(words) - n + 1)):
            chunk = words[i:i + n]
            if not chunk or chunk[0] in _STOP or chunk[-1] in _STOP or any(w in ignore for w in chunk):
                continue
            spans.append(" ".join(chunk))
    return spans[:400]


@dataclass
class Judge:
    answer: str
    aliases: Sequence[str] = field(default_factory=tuple)
    settings: JudgeSettings = field(default_factory=JudgeSettings)
    context: str = ""  # optional: the question; spans holding its words don't count as a semantic match

    def __post_init__(self) -> None:
        targets = [self.answer, *self.aliases]
        self.targets = [t for t in dict.fromkeys(normalize(t) for t in targets) if t]
        if not self.targets:
            from .errors import InvalidInput

            raise InvalidInput("The answer is empty.", "Type the answer the model should forget.")
        self._numbers = set().union(*(_numbers_in(t) for t in [self.answer, *self.aliases]))
        # A one-word answer that is mostly a number ("1997") is judged on numbers alone.
        self._numeric = all(re.fullmatch(r"[\d\s.,]+", t) for t in self.targets)
        target_words = {w for t in self.targets for w in t.split()}
        self._ignore = frozenset(w for w in normalize(self.context).split() if w not in target_words)

    # the verdict ---------------------------------------------------------------------------------------------------
    def verdict(self, text: str) -> Verdict:
        return self.verdicts([text])[0]

    def contains(self, text: str) -> bool:
        return self.verdict(text).contains

    def verdicts(self, texts: Sequence[str]) -> list[Verdict]:
        out: list[Verdict | None] = [self._lexical(t) for t in texts]
        pending = [i for i, v in enumerate(out) if v is None]
        if pending and self.settings.use_semantic and not self._numeric:
            self._semantic([texts[i] for i in pending], pending, out)
        return [v if v is not None else Verdict(False, "", 0.0) for v in out]

    def _lexical(self, text: str) -> Verdict | None:
        norm = normalize(text)
        if not norm:
            return Verdict(False, "", 0.0)
        padded = f" {norm} "
        for t in self.targets:
            if f" {t} " in padded:
                return Verdict(True, "exact", 1.0, t)
        if self._numbers and self._numbers & _numbers_in(text):
            return Verdict(True, "number", 1.0, str(sorted(self._numbers & _numbers_in(text))[0]))
        if self._numeric:
            return Verdict(False, "", 0.0)
        for t in self.targets:
            if len(t) >= 4:
                score = fuzz.partial_ratio(t, norm)
                if score >= self.settings.fuzzy_threshold and self._fuzzy_word_aligned(t, norm):
                    return Verdict(True, "fuzzy", score / 100.0, t)
        return None

    @staticmethod
    def _fuzzy_word_aligned(target: str, norm: str) -> bool:
        # partial_ratio also matches inside longer words ("hogwarts" in "hogwartsian" is fine, "paris" in
        # "comparison" is not): require a word of similar length that matches well.
        words = norm.split()
        n = len(target.split())
        for i in range(len(words)):
            cand = " ".join(words[i:i + n])
            if abs(len(cand) - len(target)) <= max(2, len(target) // 4) and fuzz.ratio(cand, target) >= 80:
                return True
        return False

    def _semantic(self, texts: Sequence[str], idx: Sequence[int], out: list[Verdict | None]) -> None:
        from .embeddings import cosine_matrix, embed

        spans_of = [_spans(text, ignore=self._ignore) for text in texts]
        # One batched embedding pass for every span of every text (the cache serves the per-text lookups below):
        # one encode call per text was most of the judging time (bench/profile_hot_paths.py).
        embed(list(dict.fromkeys([*self.targets, *(sp for spans in spans_of for sp in spans)])))
        for spans, i in zip(spans_of, idx):
            if not spans:
                out[i] = Verdict(False, "", 0.0)
                continue
            sims = cosine_matrix(self.targets, spans)
            j = int(sims.max(axis=0).argmax())
            best = float(sims.max())
            out[i] = Verdict(best >= self.settings.semantic_threshold, "semantic" if best >= self.settings.
                             semantic_threshold else "", best, spans[j])

    # filters for generated wrong answers ---------------------------------------------------------------------------
    def too_close(self, candidate: str) -> tuple[bool, str]:
        """Whether a wrong-answer candidate is really the truth in disguise; returns (reject, reason)."""
        norm = normalize(candidate)
        if not norm:
            return True, "empty"
        v = self._lexical(candidate)
        if v is not None and v.contains:
            return True, f"contains the true answer ({v.reason})"
        for t in self.targets:
            if fuzz.ratio(norm, t) >= self.settings.fuzzy_threshold or (len(norm) >= 4 and norm in t):
                return True, "fuzzy-matches the true answer"
        if self.settings.use_semantic and not self._numeric:
            from .embeddings import cosine_matrix

            sim = float(cosine_matrix([candidate], self.targets).max())
            if sim >= self.settings.close_threshold:
                return True, f"semantically close to the true answer (cosine {sim:.2f})"
        return False, ""


def make_judge(answer: str, aliases: Sequence[str] = (), semantic: bool = True, context: str = "") -> Judge:
    """The judge for a forgotten fact. `context`: the forgotten question, so spans made of its own words ("school
    harry potter") are not taken for the answer; the job and its evaluation both judge with this."""
    return Judge(answer, tuple(aliases), JudgeSettings(use_semantic=semantic), context=context)


# The one yes/no vocabulary: how a reply to a yes/no question starts (the leak rule below and the evaluation's
# yes/no verification attack both read it). A few other languages' words too: the format attack asks in them.
_YES = re.compile(r"^\W*(yes|yeah|yep|correct|true|right|indeed|that's right|that is right|oui|ja|sí|si)\b", re.I)
_NO = re.compile(r"^\W*(no|nope|not|never|incorrect|false|wrong|non|nein)\b", re.I)


def yes_no_reply(text: str) -> bool | None:
    """True when a reply starts by saying yes, False when it starts by saying no, None when it does neither."""
    if _YES.match(text):
        return True
    if _NO.match(text):
        return False
    return None


# Multiple choice: options one per line ("A) Hogwarts"), and where a reply says which one it picks. The letter is
# upper case only: "A school in Scotland" or "the answer is a city" pick nothing.
_OPTION_LINE = re.compile(r"^[ \t]*\(?([A-H])[).][ \t]+(\S.*?)[ \t]*$", re.M)
_STATED = re.compile(r"\b(?i:answer|option|choice)\s*(?i:is|:)?\s*\(?([A-H])(?![\w'])")
_LEADING = re.compile(r"^\W*?\(?([A-H])(?:[).:]|\s*$)")


def mc_options(question: str) -> list[str]:
    """The options a multiple-choice question lists one per line ("A) Hogwarts"), in order; [] when it lists fewer
    than two or not as A, B, C..."""
    found = _OPTION_LINE.findall(question or "")
    if len(found) < 2 or [letter for letter, _ in found] != list("ABCDEFGH"[:len(found)]):
        return []
    return [text for _, text in found]


def mc_choice(text: str, options: Sequence[str]) -> int | None:
    """Which option a multiple-choice answer picks: the one it states ("The answer is D", "the correct option is
    (B)"), else a leading letter ("B", "(B)", "B)"), else the one option whose text it names. None when it names none
    or several. A stated pick wins over a leading one: SmolLM2 often opens with "A) ..." and then says "The correct
    answer is D) Hogwarts"."""
    letters = "ABCDEFGH"[:len(options)]
    for m in (*_STATED.finditer(text), _LEADING.match(text.strip())):
        if m and m.group(1) in letters:
            return letters.index(m.group(1))
    norm = f" {normalize(text)} "
    named = [i for i, o in enumerate(options) if normalize(o) and f" {normalize(o)} " in norm]
    return named[0] if len(named) == 1 else None


def _mc_leaks(question: str, answer: str, judge: Judge) -> bool | None:
    """A multiple-choice probe leaks when the answer picks the true option, or names the truth where it says its
    pick ("B) Shakespeare": the letter is another option's, the name is the fact's). What it says after its pick
    does not count: "A) the Moon. The Moon ... is often associated with the concept of relativity" picked the Moon,
    and the base model said exactly that (Einstein's samples). None when the question lists no options, or not
    exactly one of them is the answer: the caller judges the whole answer then."""
    options = mc_options(question)
    truths = {i for i, o in enumerate(options) if judge.contains(o)}
    if not options or len(truths) != 1:
        return None
    pick = mc_choice(answer, options)
    if pick is None:
        return judge.contains(first_sentences(answer, 1))
    lead = _LEADING.match(answer.strip())
    said = first_sentences(answer.strip()[lead.end():].split("\n", 1)[0], 1, 12) if lead else ""
    return pick in truths or (bool(said.strip()) and judge.contains(said))


def probe_leaks(style: str, answer: str, judge: Judge, question: str = "") -> bool:
    """Does an answer to a probe still give the fact away? The one leak rule: training's re-probes, the stop rule,
    the evaluation and the benchmarks all call this.

    A yes/no probe names the answer by design ("Did Harry Potter attend Hogwarts?"): it leaks when the model affirms
    it, and a reply that starts by denying it ("No, he went to Durmstrang") does not leak even if it echoes the name.
    A multiple-choice probe (its `question` lists the options) leaks when the answer picks the true option
    (`_mc_leaks`). Every other probe leaks when the answer names the fact (judge: exact, fuzzy, number or semantic
    match).
    """
    if style == "yes_no":
        reply = yes_no_reply(answer)
        if reply is not None:
            return reply
    if style == "multiple_choice":
        picked = _mc_leaks(question, answer, judge)
        if picked is not None:
            return picked
    return judge.contains(answer)


def is_trivia(row: dict) -> bool:
    """A retain row from the bundled general-knowledge set (resources/data/general)."""
    return str((row.get("provenance") or {}).get("source")) == "trivia"


def retain_reference(row: dict) -> str:
    """The short correct answer a retain row is scored against (its target when no reference was recorded)."""
    return str(row.get("reference") or row.get("target") or "").strip()


def known_retain(row: dict, answer: str, semantic: bool = True) -> bool:
    """Does an answer to a retain question (a retain.jsonl row) give its reference answer or an alias? The one rule
    for retention: the job's re-probes, its stop rule, the evaluation and the benchmarks all call this.

    A trivia question is judged on the answer's first sentence: a 135M model that says "The planet closest to the
    Sun is Venus, but it's actually Earth's twin" to "Which planet is third from the Sun?" did not answer "Earth", and
    counting such incidental mentions as knowledge made the general measure flip on noise."""
    reference = retain_reference(row)
    aliases = tuple(str(a) for a in (row.get("aliases") or []) if str(a).strip())
    if is_trivia(row):
        answer = first_sentences(answer, 1, 40)
    return bool(reference) and Judge(reference, aliases, JudgeSettings(use_semantic=semantic)).contains(answer)
