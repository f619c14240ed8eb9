"""Quality gates: simple, explainable rules that keep garbage out of what a forget job trains on.

A small model writes some nonsense: keep suggestions built by putting a name into the forgotten question ("What is
the capital of Madrid?"), questions about a place asked as if it were a person ("Who was France?"), base answers that
loop ("El Diablo, el Diablo, el Diablo...") or stop mid-sentence, probes it answers with gibberish. Trained on, they
teach the model nonsense and the model card would list them as facts kept on purpose. Each rule here returns a
reason in plain words ("" when the text passes) so the job can record what it dropped and why:
`verdict(reason)` is the {"kept", "reason"} record rows carry.

The rules only look at the text and at small name lists (resources/data/places.txt, the bundled trivia and TOFU
capitals and authors, the fallback wrong answers), so a reason can always be explained to a person.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

from .judge import normalize
from .prompts import DATA_DIR, answer_kind, load_sections, name_runs

REPEATS = 3  # an n-gram said this many times back to back is a loop, not an answer
MIN_DISTINCT = 0.5  # below this share of distinct words (in a text of MIN_WORDS_FOR_RATIO or more) a text loops
MIN_WORDS_FOR_RATIO = 10
MIN_WORDLIKE = 0.6  # below this share of tokens that read as words or numbers a text is garbled
CUT_OFF_WORDS = 8  # a generated answer this long without a sentence end was cut off by the token limit
NAMED_KINDS = ("school", "city", "country", "person", "place", "language")
PLACE_KINDS = ("school", "city", "country", "place")
_NUMBER_WORDS = frozenset("zero one two three four five six seven eight nine ten eleven twelve twenty thirty forty "
                          "fifty hundred thousand million billion dozen".split())


def verdict(reason: str = "") -> dict[str, Any]:
    """The quality record a row carries: kept unless there is a reason to drop it."""
    return {"kept": not reason, "reason": reason}


# name lists ---------------------------------------------------------------------------------------------------------
def _read_sections(path: Path) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"\[(\w+)\]", line)
        if m:
            current = m.group(1)
        else:
            sections.setdefault(current, []).append(line)
    return sections


def _bundled_rows() -> list[dict[str, Any]]:
    rows = []
    for path in [DATA_DIR / "general" / "trivia.jsonl", *sorted((DATA_DIR / "tofu").glob("*.jsonl"))]:
        rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows


def _key(name: str) -> str:
    return re.sub(r"^the ", "", normalize(name))


_CAPITAL_OF = re.compile(r"\bcapital(?: city)? of (?:the )?(?:u\.?s\.? state of )?(?P<x>[^?,.]+?)\s*\??$", re.I)


@functools.cache
def _places() -> tuple[frozenset[str], frozenset[str]]:
    """(countries and states, cities): a name that has a capital, and one that is a city only."""
    listed = _read_sections(DATA_DIR / "places.txt")
    wrongs = load_sections("fallback_wrong_answers.txt")
    countries = set(listed.get("country", [])) | set(wrongs.get("country", []))
    cities = set(listed.get("city", [])) | set(wrongs.get("city", []))
    for row in _bundled_rows():  # "What is the capital of X?" -> X has a capital, the answers are cities
        m = _CAPITAL_OF.search(str(row.get("question", "")))
        if m:
            countries.add(m.group("x"))
            cities.update([row["answer"], *row.get("perturbed_answer", [])])
    country_keys = {_key(c) for c in countries}
    return frozenset(country_keys), frozenset(_key(c) for c in cities) - country_keys


@functools.cache
def _people() -> frozenset[str]:
    """People named by the fallback wrong answers and the bundled who-questions (authors, inventors...)."""
    people = set(load_sections("fallback_wrong_answers.txt").get("person", []))
    for row in _bundled_rows():
        if re.match(r"(who|which author)\b", str(row.get("question", "")), re.I):
            aliases = row.get("aliases") if isinstance(row.get("aliases"), list) else []
            people.update([row["answer"], *row.get("perturbed_answer", []), *aliases])
    return frozenset(_key(p) for p in people)


def is_country(name: str) -> bool:
    return _key(name) in _places()[0]


def is_city(name: str) -> bool:
    """A city and nothing else (Mexico and Singapore are countries too, so they have capitals)."""
    return _key(name) in _places()[1]


def is_place(name: str) -> bool:
    return is_country(name) or is_city(name)


def is_person(name: str) -> bool:
    return _key(name) in _people()


# text shape ---------------------------------------------------------------------------------------------------------
def _loops(words: list[str]) -> bool:
    """The same 1-4 word n-gram REPEATS times back to back ("el diablo el diablo el diablo")."""
    for n in range(1, 5):
        for i in range(len(words) - REPEATS * n + 1):
            gram = words[i:i + n]
            if all(words[i + k * n:i + (k + 1) * n] == gram for k in range(1, REPEATS)):
                return True
    return False


def is_looping(text: str) -> bool:
    """Stuck in a loop somewhere ("who is a vampire who is a vampire who is a vampire")."""
    return _loops(normalize(text).split())


def is_repetitive(text: str) -> bool:
    """Looping, or saying the same few words over and over (few distinct words in a text of some length)."""
    words = normalize(text).split()
    if _loops(words):
        return True
    return len(words) >= MIN_WORDS_FOR_RATIO and len(set(words)) / len(words) < MIN_DISTINCT


_WORDLIKE = re.compile(r"[\"'“‘(\[]*(?:[^\W\d_]+(?:['’\-.][^\W\d_]+)*\.?|\d[\d,.:%/\-]*)[\"'”’)\],.;:!?]*")


def is_garbled(text: str) -> bool:
    """Most tokens are neither words nor numbers ("@@ ## 1a2b!!")."""
    tokens = text.split()
    return bool(tokens) and sum(bool(_WORDLIKE.fullmatch(t)) for t in tokens) / len(tokens) < MIN_WORDLIKE


def is_cut_off(text: str) -> bool:
    """A long generated answer with no sentence end stopped at the token limit, mid-sentence or mid-word."""
    return len(text.split()) >= CUT_OFF_WORDS and not re.search(r"[.!?…][\"'”’)\]]*\s*$", text)


def has_words(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def degeneracy(text: str) -> str:
    """The one rule for text that reads as no language: "empty", "loop" or "garbled" ("" when it reads fine).
    Keep answers and probe answers word the reason their own way."""
    if not has_words(text):
        return "empty"
    if is_repetitive(text):
        return "loop"
    if is_garbled(text):
        return "garbled"
    return ""


# questions ----------------------------------------------------------------------------------------------------------
_WHO_IS = re.compile(r"^who (?:is|was|are|were) (?:the )?(?P<x>[^?]+?)\s*\??$", re.I)
# Questions only a person can be the subject of: "Where was France born?", "Who is London's best friend?", "Where
# did Home of the Dead go to school?" (a name put into the forgotten question's person slot).
_PERSON_ONLY = re.compile(r"^(?:where|when) (?:was|were|is) (?P<x>.+?) (?:born|buried|married)\b|"
                          r"^who (?:is|was|are|were) (?P<y>.+?)['’]s? (?:best friend|parents|mother|father|wife|"
                          r"husband)\b|"
                          r"^(?:where|when) did (?P<z>.+?) (?:go to school|study|grow up|get married)\b", re.I)
# Words that make a name an institution or a place, not a person or a country.
_INSTITUTION = re.compile(r"\b(school|university|college|academy|institute|home|house|city|town|village|church|"
                          r"museum|company|society|kingdom|empire|republic)\b", re.I)
_SETTLEMENT = re.compile(r"\b(city|town|village)\b", re.I)


def question_problem(question: str) -> str:
    """Why a keep/neighbour question is malformed ("" when it reads fine)."""
    q = question.strip()
    if len(q.split()) < 3:
        return "not a question"
    degenerate = degeneracy(q)
    if degenerate:
        return {"empty": "not a question", "loop": "repetitive question", "garbled": "garbled question"}[degenerate]
    m = _CAPITAL_OF.search(q)
    if m and (is_city(m.group("x")) or _SETTLEMENT.search(m.group("x"))):
        return f"asks for the capital of a city ({m.group('x')})"
    m = _WHO_IS.match(q)
    if m and is_place(m.group("x")):
        return f"asks who a place is ({m.group('x')})"
    m = _PERSON_ONLY.match(q)
    name = m and (m.group("x") or m.group("y") or m.group("z"))
    if name and (is_place(name) or _INSTITUTION.search(name)):
        return f"asks a person's question about a place ({name})"
    return ""


# answers ------------------------------------------------------------------------------------------------------------
_FUNCTION_WORDS = frozenset("what which where when who whom whose does did that this with from about into there their "
                            "they them have been were would could should tell known famous name some other than "
                            "also only first".split())


def _content_words(text: str) -> set[str]:
    return {w for w in normalize(text).split() if len(w) >= 4 and w not in _FUNCTION_WORDS}


def shares_topic(question: str, answer: str) -> bool:
    """The answer repeats one of the question's content words (or a word with the same first five letters)."""
    q_words = _content_words(question)
    return any(a == q or (len(a) >= 5 and a[:5] == q[:5]) for a in _content_words(answer) for q in q_words)


def fits_answer_type(question: str, answer: str) -> bool:
    """Whether the answer has the kind of thing the question asks for: a name for who/where/which-city questions,
    a year for when, a number for how many; anything for the rest (no rule can tell)."""
    q = question.strip().lower()
    if re.match(r"how (many|much|old|long|tall|far)\b", q):
        return bool(re.search(r"\d", answer)) or bool(_NUMBER_WORDS & set(normalize(answer).split()))
    kind = answer_kind(question, "")
    if kind == "year":
        return bool(re.search(r"\b\d{2,4}\b|centur", answer, re.I))
    if kind in NAMED_KINDS:
        return bool(name_runs(answer))
    return True


def answer_problem(question: str, answer: str, generated: bool = True) -> str:
    """Why an answer to keep is unusable ("" when fine). `generated`: a base model wrote it, so a missing sentence
    end means the token limit cut it and an answer with neither the question's topic nor its type is off-topic; a
    person's short answer ("Shakespeare") needs neither."""
    degenerate = degeneracy(answer)
    if degenerate:
        return {"empty": "empty answer", "loop": "repetitive answer", "garbled": "garbled answer"}[degenerate]
    if generated and is_cut_off(answer):
        return "answer cut off mid-sentence"
    if generated and not shares_topic(question, answer) and not fits_answer_type(question, answer):
        return "off-topic answer"
    if generated and _only_repeats(question, answer):
        return "answer only repeats the question"
    return ""


def _only_repeats(question: str, answer: str) -> bool:
    """Every word of the answer but a copula is in the question ("The capital of Hiroshima and Nagasaki is Hiroshima
    and Nagasaki."): it says nothing to keep. Numbers and short words count ("A spider has 8 legs." adds "8")."""
    new = set(normalize(answer).split()) - set(normalize(question).split()) - _FILLERS
    return bool(normalize(answer)) and not new


_FILLERS = frozenset("is are was were a an it its".split())


def retain_problem(question: str, answer: str, generated: bool = True) -> str:
    """The gate for a fact to keep: a well-formed question with a usable answer."""
    return question_problem(question) or answer_problem(question, answer, generated)


def gibberish_problem(answer: str) -> str:
    """Why a probe's base answer is gibberish ("" when it reads as language): such a probe measures nothing, and a
    question the base model does not read as a question is no paraphrase to train on."""
    return {"": "", "empty": "the base model gave no answer", "loop": "the base model answered in a loop",
            "garbled": "the base model answered with gibberish"}[degeneracy(answer)]


# wrong answers ------------------------------------------------------------------------------------------------------
def wrong_type_problem(kind: str, wrong: str) -> str:
    """Why a wrong answer is not the answer's type ("" when it fits): a year for a year, a number for a number, a
    place for a place and a person for a person, where the name lists can tell."""
    text = wrong.strip()
    if kind == "year" and not re.fullmatch(r"\d{1,4}(?: (?:BC|AD|BCE|CE))?", text):
        return "not a year"
    if kind == "number" and not (re.search(r"\d", text) or _NUMBER_WORDS & set(normalize(text).split())):
        return "not a number"
    if kind == "person" and is_place(text):
        return "a place, not a person"
    if kind in PLACE_KINDS and is_person(text):
        return "a person, not a place"
    return ""
