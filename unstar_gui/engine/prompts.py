"""Editable prompt templates (resources/prompts/*.txt) and the slots that fill them.

Two kinds of file live there:
- model prompts (`paraphrase_direct.txt`, `wrong_answers.txt`, `rationale.txt`, ...): one prompt with `{slots}`.
  Header lines starting with `#` are comments; `# mode: chat` sends the prompt through the model's chat template,
  the default `# mode: complete` continues the raw text (few-shot continuation is what small models do best).
- fallback lists (`fallback_*.txt`): `[section]` headers, one template per line, `#` comments.

A person can copy the folder, edit it and point `UNSTAR_PROMPTS_DIR` at the copy: files found there win.

`analyse()` derives the slots from a question heuristically (subject, answer kind, a statement stem that the answer
would complete, an embedded wh-clause), because template fallbacks have to make sense without any model help.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidInput

RESOURCES_DIR = Path(__file__).resolve().parents[2] / "resources"
PROMPTS_DIR = RESOURCES_DIR / "prompts"
DATA_DIR = RESOURCES_DIR / "data"


def prompt_path(name: str) -> Path:
    override = os.environ.get("UNSTAR_PROMPTS_DIR")
    if override and (Path(override) / name).exists():
        return Path(override) / name
    path = PROMPTS_DIR / name
    if not path.exists():
        raise InvalidInput(f"The prompt template {name} is missing from {PROMPTS_DIR}.",
                           "Reinstall UnStar Studio, or restore the file from the project's resources/prompts.")
    return path


class _Slots(dict):
    """format_map mapping that reports which slot a template asked for but we could not fill."""

    def __missing__(self, key: str) -> str:
        raise KeyError(key)


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    text: str
    mode: str = "complete"  # "complete" (raw continuation) | "chat" (through the chat template)

    def render(self, **slots: str) -> str:
        try:
            return self.text.format_map(_Slots(slots))
        except (KeyError, IndexError, ValueError) as exc:
            raise InvalidInput(f"The prompt template {self.name} uses an unknown slot {exc}.",
                               f"Use only these slots: {', '.join(sorted(slots))}.") from exc


_CACHE: dict[tuple[str, float], object] = {}


def _read(name: str) -> tuple[Path, str]:
    path = prompt_path(name)
    return path, path.read_text(encoding="utf-8")


def load_prompt(name: str) -> PromptTemplate:
    path, text = _read(name)
    key = (str(path), path.stat().st_mtime)
    if key not in _CACHE:
        mode, body = "complete", []
        for line in text.splitlines():
            if not body and line.startswith("#"):
                m = re.match(r"#\s*mode:\s*(\w+)", line)
                if m:
                    mode = m.group(1).lower()
                continue
            body.append(line)
        if mode not in ("complete", "chat"):
            raise InvalidInput(f"The prompt template {name} has an unknown mode '{mode}'.",
                               "Write `# mode: complete` or `# mode: chat` at the top.")
        # Trailing whitespace is dropped: a completion prompt must end right where the model should continue.
        _CACHE[key] = PromptTemplate(name, "\n".join(body).strip("\n").rstrip(" "), mode)
    return _CACHE[key]  # type: ignore[return-value]


def load_sections(name: str) -> dict[str, list[str]]:
    """A fallback list: {section: [lines]}, comments and blank lines dropped."""
    path, text = _read(name)
    key = (str(path), path.stat().st_mtime)
    if key not in _CACHE:
        sections: dict[str, list[str]] = {}
        current = ""
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            m = re.fullmatch(r"\[([\w:\-]+)\]", line)
            if m:
                current = m.group(1).lower()
                sections.setdefault(current, [])
            else:
                sections.setdefault(current, []).append(line.replace("\\n", "\n"))
        _CACHE[key] = sections
    return _CACHE[key]  # type: ignore[return-value]


def fill(template: str, slots: dict[str, str]) -> str | None:
    """A fallback template filled in, or None when it needs a slot that is empty for this question."""
    names = set(re.findall(r"{(\w+)}", template))
    if any(not slots.get(n) for n in names):
        return None
    return template.format_map(_Slots(slots))


# question analysis -------------------------------------------------------------------------------------------------
_WH = {"what", "where", "who", "whom", "whose", "which", "when", "how", "why", "in", "at", "on", "did", "does", "do",
       "is", "was", "are", "were", "can", "name", "tell"}
_JOINERS = {"of", "the", "and", "de", "da", "van", "von", "la", "le", "du", "del", "di", "al", "bin"}
_IRREGULAR_PAST = {
    "go": "went", "be": "was", "write": "wrote", "grow": "grew", "do": "did", "have": "had", "get": "got",
    "make": "made", "win": "won", "find": "found", "teach": "taught", "take": "took", "come": "came", "meet": "met",
    "become": "became", "begin": "began", "leave": "left", "build": "built", "see": "saw", "give": "gave",
    "know": "knew", "speak": "spoke", "say": "said", "run": "ran", "sing": "sang", "fight": "fought",
    "lead": "led", "buy": "bought", "think": "thought", "bring": "brought", "hold": "held", "draw": "drew",
    "fly": "flew", "ride": "rode", "steal": "stole", "wear": "wore", "choose": "chose", "lose": "lost",
    "sell": "sold", "tell": "told", "feel": "felt", "keep": "kept", "sleep": "slept", "spend": "spent",
}
_PERSON_VERBS = re.compile(r"\b(school|born|attend|study|studied|married|marry|live|lived|wife|husband|friend|"
                           r"parents?|mother|father|work|graduate|grew up|raised|die|died)\b")
_KINDS = [  # (kind, question pattern) checked in order; the answer's own shape is checked first
    ("school", r"\b(school|college|university|academy|studied|study|educated|graduate)"),
    ("city", r"\b(capital|city|town)\b"),
    ("country", r"\b(country|nation)\b"),
    ("language", r"\blanguage\b"),
    ("color", r"\b(colou?r)\b"),
    ("person", r"^(who|whom|whose)\b|\b(author|wrote|painted|invented|founded|discovered|composed|directed|"
               r"created|who)\b"),
    ("place", r"^(where|in which place)\b|\b(located|where)\b"),
    ("year", r"^(when|in what year|in which year|what year)\b"),
]


def past_tense(verb: str) -> str:
    v = verb.lower()
    if v in _IRREGULAR_PAST:
        return _IRREGULAR_PAST[v]
    if v.endswith("e"):
        return verb + "d"
    if re.search(r"[^aeiou]y$", v):
        return verb[:-1] + "ied"
    return verb + "ed"


@dataclass(frozen=True)
class QuestionShape:
    question: str
    answer: str
    subject: str  # the entity the question is about ("Harry Potter"); "" when none was found
    kind: str  # what sort of thing the answer is: school, city, country, person, place, year, number, ...
    stem: str  # a statement the answer completes ("Harry Potter went to school at"); "" when the shape is unknown
    clause: str  # the question as an embedded clause ("where Harry Potter went to school"); "" when unknown
    subject_is_person: bool

    def slots(self, **extra: str) -> dict[str, str]:
        q_body = self.question.rstrip(" ?")
        statement = f"{self.stem} {self.answer}" if self.stem else ""
        slots = {"question": self.question, "answer": self.answer, "subject": self.subject, "kind": self.kind,
                 "stem": self.stem, "clause": self.clause, "statement": statement,
                 "question_lc": q_body[:1].lower() + q_body[1:] + "?" if q_body else ""}
        slots.update(extra)
        return slots


_STARTERS = _WH | {"the", "a", "an", "it", "he", "she", "they", "this", "that", "there", "yes", "no", "his", "her",
                   "its", "their", "i", "you", "we", "my", "our", "your"}


def name_runs(text: str) -> list[str]:
    """Runs of capitalised words (joined by of/the/de...) in order: the names a sentence mentions."""
    words = re.findall(r"[\w.\-’']+", text)
    runs: list[list[str]] = []
    cur: list[str] = []
    for w in words:
        base = re.sub(r"(['’]s|['’])$", "", w)
        capital = base[:1].isupper() and not (not cur and base.lower() in _STARTERS)
        if capital or (base.isdigit() and cur):
            cur.append(base.rstrip("."))
        elif cur and base.lower() in _JOINERS:
            cur.append(base)
        else:
            if cur:
                runs.append(cur)
            cur = []
        if (w != base or w.endswith(".")) and cur:  # a possessive or a full stop ends the name
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    out = []
    for run in runs:
        while run and run[-1].lower() in _JOINERS:
            run = run[:-1]
        while run and run[0].lower() in _JOINERS:
            run = run[1:]
        if run:
            out.append(" ".join(run))
    return out


# Words that end the subject of a question typed in lower case ("where did harry potter GO to school"): the verbs
# questions ask with, in the forms they take after an auxiliary or a wh-word. A past participle ending in -ed counts
# too ("where was x founded").
_VERBS = frozenset(_IRREGULAR_PAST) | frozenset(_IRREGULAR_PAST.values()) | {
    "attend", "study", "live", "work", "die", "marry", "graduate", "play", "invent", "discover", "paint", "compose",
    "direct", "create", "start", "end", "happen", "belong", "mean", "stand", "use", "call", "born", "known",
    "located", "invented", "discovered", "painted", "composed", "directed", "created", "founded"}
_AUX_WORDS = r"(?:did|does|do|is|was|are|were|has|have|had|can|could|will|would)"


def _lower_case_subject(question: str) -> str:
    """The subject of a question typed without capitals: what follows the auxiliary up to the verb ("where did
    harry potter go to school" -> "harry potter"), what follows "who wrote" ("who wrote hamlet" -> "hamlet"), or
    what follows a last "of" ("what is the capital of france" -> "france"); "" when none of these reads."""
    q = re.sub(r"\s+", " ", question.strip().lower()).rstrip(" ?.!")
    m = re.search(r"\bof (?:the )?([\w\- ]+?)$", q)
    if m:
        return m.group(1).strip()
    m = re.fullmatch(rf"(?:(?:what|which|who|whom|where|when|why|how|in which|at which)(?: \w+){{0,2}}? )?"
                     rf"{_AUX_WORDS} (.+)", q)
    if m:
        words = m.group(1).split()
        end = next((i for i, w in enumerate(words) if w in _VERBS or (len(w) > 4 and w.endswith("ed"))), None)
        if end:  # a subject of at least one word before the verb
            subject = words[:end]
            while subject and subject[0] in ("the", "a", "an"):
                subject = subject[1:]
            return " ".join(subject) if 0 < len(subject) <= 4 else ""
        return ""
    m = re.fullmatch(r"(?:who|what) ([a-z]\w*) (?:the )?(.+)", q)
    if m and m.group(1) in _VERBS and len(m.group(2).split()) <= 4:
        return m.group(2)
    return ""


def find_subject(question: str, answer: str = "") -> str:
    """Who or what the question is about: a quoted title, else the longest name in it that is not the answer, else
    (a question typed in lower case) the words where a subject stands; "" if none. The one subject finder: the
    anti-samples, the retain set and the multi-hop attack all call it.

    "Who wrote Romeo and Juliet?" -> "Romeo and Juliet"; "Who wrote 'Pride and Prejudice'?" -> "Pride and
    Prejudice"; "where did harry potter go to school?" -> "harry potter"."""
    quoted = re.findall(r"(?:^|(?<=\W))[\"'‘“]([^\"'’”]{2,80})[\"'’”](?=\W|$)", question)
    if quoted:
        return max(quoted, key=len).strip()
    norm_answer = answer.strip().lower()
    cands = [r for r in name_runs(question) if r.lower() != norm_answer]
    if cands:
        return max(cands, key=lambda t: (len(t.split()), len(t)))
    return _lower_case_subject(question)


def answer_kind(question: str, answer: str) -> str:
    a = answer.strip()
    q = question.strip().lower()
    if re.fullmatch(r"(1\d|20)\d\d", a):
        return "year"
    if re.fullmatch(r"[\d.,\s]+", a):
        return "number"
    for kind, pattern in _KINDS:
        if re.search(pattern, q):
            return kind
    if re.search(r"\b(school|college|university|academy)\b", a.lower()):
        return "school"
    return "thing"


_AUX = r"(did|does|do|is|was|are|were|has|have|had)"


def _stem_and_clause(question: str, kind: str) -> tuple[str, str]:
    q = re.sub(r"\s+", " ", question.strip()).rstrip("?").strip()
    q = q[:1].lower() + q[1:]  # patterns below are case-sensitive: a lowercase word after the subject is its verb
    prep = "at" if kind == "school" else "in"
    # "Where/When did X go to school" -> "X went to school at" / "where X went to school"
    m = re.fullmatch(r"(where|when|in which \w+|at which \w+|what \w+|which \w+) (did|does|do) (.+?) ([a-z]\w*)( .*)?",
                     q)
    if m:
        wh, aux, subj, verb, rest = m.group(1), m.group(2), m.group(3), m.group(4), m.group(5) or ""
        tensed = past_tense(verb) if aux == "did" else verb + ("s" if aux == "does" else "")
        if wh in ("where", "when"):
            tail = f" {prep}" if wh == "where" else " in"
            return f"{subj} {tensed}{rest}{tail}", f"{wh} {subj} {tensed}{rest}"
        lead = wh.split()[0]
        if lead in ("in", "at"):
            return f"{subj} {tensed}{rest} {lead} the {wh.split()[-1]}", f"{wh} {subj} {tensed}{rest}"
        noun = wh.split()[-1]
        return f"The {noun} {subj} {tensed}{rest} is", f"{wh} {subj} {tensed}{rest}"
    # "Where was X born" -> "X was born in"
    m = re.fullmatch(r"(where|when) (is|was|are|were) (.+?) (born|located|founded|buried|built|set|made)", q)
    if m:
        wh, aux, subj, part = m.groups()
        return f"{subj} {aux} {part} in", f"{wh} {subj} {aux} {part}"
    # "What is the capital of France" -> "The capital of France is"
    m = re.fullmatch(r"(what|who|which) (is|was|are|were) (the .+|[A-Z].+|\w+'s .+)", q)
    if m:
        wh, aux, rest = m.groups()
        return f"{rest[:1].upper()}{rest[1:]} {aux}", f"{wh} {rest} {aux}"
    # "Who wrote Hamlet" -> "The person who wrote Hamlet is"
    m = re.fullmatch(r"who ([a-z]\w*) (.+)", q)
    if m and not re.fullmatch(_AUX, m.group(1)):
        return f"The person who {m.group(1)} {m.group(2)} is", f"who {m.group(1)} {m.group(2)}"
    # "Which country gifted the Statue of Liberty ..." -> "The country that gifted ... is"
    m = re.fullmatch(r"(which|what) ([a-z]\w*) ([a-z]\w*(?:ed|s)|wrote|won|made|gave|built|began|became) (.+)", q)
    if m and not re.fullmatch(_AUX, m.group(3)):
        wh, noun, verb, rest = m.groups()
        return f"The {noun} that {verb} {rest} is", f"{wh} {noun} {verb} {rest}"
    # "Which planet is known as the Red Planet" -> "The planet that is known as the Red Planet is"
    m = re.fullmatch(r"(which|what) ([a-z]\w*) (is|was|are|were) (.+)", q)
    if m:
        wh, noun, aux, rest = m.groups()
        return f"The {noun} that {aux} {rest} is", f"{wh} {noun} {aux} {rest}"
    return "", ""


def analyse(question: str, answer: str, subject: str = "") -> QuestionShape:
    """Heuristic shape of a question: good enough to fill templates, never fatal when it is wrong."""
    question = question.strip()
    kind = answer_kind(question, answer)
    subject = subject.strip() or find_subject(question, answer)
    stem, clause = _stem_and_clause(question, kind)
    person = bool(_PERSON_VERBS.search(question.lower())) or kind == "school"
    return QuestionShape(question, answer.strip(), subject, kind, stem, clause, person)
