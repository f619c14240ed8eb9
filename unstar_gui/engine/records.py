"""What a job folder holds, as types: job.json, its rounds, the rows of probes/retain/antisamples.jsonl, report.json
and the attack results in it. jobs.py owns the folder and is the only writer (its Job verbs); everything else reads.

Every record is a frozen dataclass with `from_dict` and `to_dict`. `from_dict` is tolerant, so job folders written by
older versions still open: a missing key gets its default, an unknown key is kept in `extra` (and written back by
`to_dict`), an enum value this version does not know stays a plain string. `to_dict` gives the JSON shape on disk,
with the key names the files have always used; optional keys that were absent stay absent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, ClassVar, TypeVar


class _Values(str, Enum):
    """A str enum that reads and prints as its value (json.dumps writes it as a plain string)."""

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(m.value for m in cls)


class JobStatus(_Values):
    CREATED = "created"
    RUNNING = "running"
    INTERRUPTED = "interrupted"
    CANCELLED = "cancelled"
    FAILED = "failed"
    DONE = "done"


class ProbeSplit(_Values):
    ORIGINAL = "original"  # the fact's own question
    TRAIN = "train"  # a paraphrase training may look at
    HELDOUT = "heldout"  # a paraphrase never trained on: the evaluation's headline


class ProbeStyle(_Values):
    ORIGINAL = "original"  # the fact's own question
    DIRECT = "direct"
    INDIRECT = "indirect"
    COMPLETION = "completion"
    MULTIPLE_CHOICE = "multiple_choice"
    YES_NO = "yes_no"
    TELL_ME_ABOUT = "tell_me_about"


class RetainKind(_Values):
    NEIGHBOUR_SUBJECT = "neighbour_subject"  # another fact about the fact's subject
    NEIGHBOUR_ANSWER = "neighbour_answer"  # another fact about the answer
    KEEP = "keep"  # a fact the person asked to keep
    GENERAL = "general"  # general knowledge


class RetainSplit(_Values):
    TRAIN = "train"  # trained on
    VALIDATION = "validation"  # never trained on; steers the stop rule
    HELDOUT = "heldout"  # never trained on; only reported (the general set's evaluation split)


E = TypeVar("E", bound=_Values)
R = TypeVar("R", bound="Record")


def _member(enum: type[E], value: Any) -> E | Any:
    """The enum member for `value`; a value this version does not know is kept as it is."""
    try:
        return enum(value)
    except ValueError:
        return value


def _plain(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True, kw_only=True)
class Record:
    """The from_dict / to_dict behind every record below."""

    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as they were

    _enums: ClassVar[dict[str, type[_Values]]] = {}  # field -> its enum
    _lists: ClassVar[dict[str, type["Record"]]] = {}  # field -> the record type of its items
    _optional: ClassVar[frozenset[str]] = frozenset()  # fields left out of to_dict while None

    @classmethod
    def from_dict(cls: type[R], data: Any) -> R:
        if isinstance(data, cls):
            return data
        data = data if isinstance(data, Mapping) else {}
        names = {f.name for f in fields(cls)} - {"extra"}
        values: dict[str, Any] = {}
        for name in names & data.keys():
            value = data[name]
            if name in cls._enums:
                value = _member(cls._enums[name], value)
            elif name in cls._lists and isinstance(value, list):
                value = tuple(cls._lists[name].from_dict(v) for v in value if isinstance(v, Mapping))
            values[name] = value
        return cls(**values, extra={k: v for k, v in data.items() if k not in names})

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or (value is None and f.name in self._optional):
                continue
            out[f.name] = _plain(value)
        out.update(_plain(self.extra))
        return out

    def get(self, key: str, default: Any = None) -> Any:
        """A field or an extra key by its JSON name (for readers moving over from dicts)."""
        if key != "extra" and key in {f.name for f in fields(self)}:
            return getattr(self, key)
        return self.extra.get(key, default)


# jsonl rows ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class ProbeRow(Record):
    """One line of probes.jsonl: a question the job re-asks, with the base model's answer to it."""

    _enums = {"style": ProbeStyle, "split": ProbeSplit}
    _optional = frozenset({"quality"})

    question: str = ""
    style: ProbeStyle | str = ProbeStyle.DIRECT
    split: ProbeSplit | str = ProbeSplit.TRAIN
    base_answer: str = ""
    known: bool = False  # the base model's answer gives the fact
    quality: dict[str, Any] | None = None  # {"kept", "reason"} (quality.verdict); absent in the oldest jobs

    @property
    def kept(self) -> bool:
        return bool((self.quality or {"kept": True}).get("kept", True))


@dataclass(frozen=True, kw_only=True)
class RetainRow(Record):
    """One line of retain.jsonl: a fact that must survive, with the base model's answer."""

    _enums = {"kind": RetainKind, "split": RetainSplit}
    _optional = frozenset({"quality", "aliases"})

    question: str = ""
    target: str = ""  # what the retain term trains towards
    kind: RetainKind | str = RetainKind.GENERAL
    reference: str = ""  # the right answer, for the judge
    aliases: list[str] | None = None  # other right answers (general questions)
    split: RetainSplit | str = RetainSplit.TRAIN
    provenance: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] | None = None
    base_answer: str = ""
    known: bool = False  # the base model answered it right


@dataclass(frozen=True, kw_only=True)
class AntiSampleRow(Record):
    """One line of antisamples.jsonl: a question with the wrong answer and misleading rationale trained on."""

    _enums = {"style": ProbeStyle}
    _optional = frozenset({"quality", "id"})

    question: str = ""
    wrong_answer: str = ""
    rationale: str = ""
    style: ProbeStyle | str = ProbeStyle.DIRECT
    provenance: dict[str, Any] = field(default_factory=dict)
    answer_sentence: str = ""
    quality: dict[str, Any] | None = None
    round: int = 0  # the round it was written for (0: before training)
    id: int | None = None


# job.json ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class RoundSummary(Record):
    """One entry of job.json's "rounds" (and report.json's): the re-probe after a round of training."""

    round: int = 0
    efficacy: float = 0.0
    retention: float = 0.0
    forgotten: int = 0
    total: int = 0
    efficacy_train: float = 0.0
    efficacy_heldout: float = 0.0
    retention_neighbours: float = 0.0
    retention_general: float = 0.0
    counts: dict[str, list[int]] = field(default_factory=dict)  # (hits, out of) behind each share
    retention_general_all: float = 0.0
    retention_general_train: float = 0.0
    retention_general_validation: float = 0.0
    retention_holds: bool = True
    steps: int = 0
    probe_s: float = 0.0


@dataclass(frozen=True, kw_only=True)
class JobRecord(Record):
    """job.json: the request (fact, keep list, model, settings), where the job stands and what it recorded."""

    _enums = {"status": JobStatus}
    _lists = {"rounds": RoundSummary}
    _optional = frozenset({"version", "created", "updated", "process", "samples_from", "dropped", "placement",
                           "early_stops", "adapter_scales", "edits", "ui_step", "ui_keep_reviewed"})

    fact: dict[str, Any] = field(default_factory=dict)  # {"question", "answer", "aliases"}
    keep: list[list[str]] = field(default_factory=list)  # [question, answer] pairs
    model: dict[str, Any] = field(default_factory=dict)  # {"id", "path", "source", "revision", ...}
    settings: dict[str, Any] = field(default_factory=dict)  # ForgetSettings as a dict
    method: str = ""
    seed: int = 0
    force: bool = False
    version: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    status: JobStatus | str = JobStatus.CREATED
    stage: str = "created"
    round: int = 0
    step: int = 0
    error: str | None = None
    rounds: tuple[RoundSummary, ...] = ()
    timing: dict[str, float] = field(default_factory=dict)
    created: str | None = None
    updated: str | None = None
    process: dict[str, Any] | None = None  # who runs it (jobs.this_process)
    samples_ready: bool = False
    samples_round: int = 0
    samples_from: str | None = None  # a comparison's shared samples folder
    dropped: list[dict[str, Any]] | None = None  # what the quality gates left out
    placement: dict[str, Any] | None = None
    early_stops: list[dict[str, int]] | None = None
    adapter_scales: list[dict[str, Any]] | None = None
    edits: list[dict[str, Any]] | None = None
    ui_step: str | int | None = None  # the wizard's step (a key; a position in jobs saved before keys)
    ui_keep_reviewed: bool | None = None


# report.json ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class AttackResult(Record):
    """One row of report.json's evaluation["attacks"]: how much of the fact one attack variant brought back."""

    _optional = frozenset({"skipped", "bits", "group_size", "attack_wall_s"})

    attack: str = ""  # "quantization", "relearning", "format", "multihop"
    variant: str = ""  # e.g. "4bit-g64"
    title: str = ""
    recovery: float | None = None  # forgotten probes that leak again under the attack (None: not measured)
    leak_rate: float | None = None
    recovered: int = 0
    leaking: int = 0
    known: int = 0
    wall_s: float = 0.0
    base_leak_rate: float | None = None
    examples: list[dict[str, Any]] = field(default_factory=list)
    skipped: str | None = None  # why the attack did not run
    bits: int | None = None  # re-quantization only
    group_size: int | None = None
    attack_wall_s: float | None = None


@dataclass(frozen=True, kw_only=True)
class Report(Record):
    """report.json. The pipeline writes everything but "evaluation" (evaluate) and "comparison" (compare); a report
    may be partial (an evaluation of a job the pipeline never reported), so every part is optional."""

    _lists = {"rounds": RoundSummary}
    _optional = frozenset({"fact", "keep", "model", "base_model_path", "adapter_path", "method", "settings", "seed",
                           "versions", "rounds", "before_after", "metrics", "timing", "memory", "evaluation",
                           "comparison"})

    fact: dict[str, Any] | None = None
    keep: list[list[str]] | None = None
    model: dict[str, Any] | None = None
    base_model_path: str | None = None
    adapter_path: str | None = None
    method: str | None = None
    settings: dict[str, Any] | None = None
    seed: int | None = None
    versions: dict[str, str] | None = None
    rounds: tuple[RoundSummary, ...] | None = None
    before_after: list[dict[str, Any]] | None = None
    metrics: dict[str, Any] | None = None
    timing: dict[str, float] | None = None
    memory: dict[str, int] | None = None
    evaluation: dict[str, Any] | None = None
    comparison: dict[str, Any] | None = None

    def attacks(self) -> list[AttackResult]:
        """The evaluation's attack results (none when there is no evaluation)."""
        rows = (self.evaluation or {}).get("attacks") if isinstance(self.evaluation, Mapping) else None
        return [AttackResult.from_dict(r) for r in rows or () if isinstance(r, Mapping)]
