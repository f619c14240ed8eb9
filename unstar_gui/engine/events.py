"""Typed events that long jobs yield. The CLI prints them, the GUI charts them, tests assert on them.

Every event is a small dataclass; `to_dict()` gives a JSON-able dict with an "event" key (for --json output and
metrics.jsonl).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Generator, TypeVar

T = TypeVar("T")


@dataclass
class Event:
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["event"] = type(self).__name__
        return d


@dataclass
class StageStarted(Event):
    stage: str  # "load", "probe", "paraphrases", "wrong_answers", "rationales", "retain", "train", "evaluate", ...
    message: str = ""
    round: int = 0


@dataclass
class Progress(Event):
    """Generic progress inside a stage: `done` of `total` units (total 0 = unknown)."""

    stage: str
    done: float
    total: float
    message: str = ""
    eta_s: float | None = None


@dataclass
class Log(Event):
    message: str
    level: str = "info"  # info / warning


@dataclass
class TrainStep(Event):
    round: int
    step: int
    total_steps: int
    forget_loss: float
    retain_loss: float
    loss: float
    tokens_per_s: float = 0.0
    eta_s: float | None = None


@dataclass
class ProbeResult(Event):
    """One re-probe of the model: how much of the fact is gone and how much of the rest is kept."""

    round: int
    efficacy: float  # share of known probes that no longer yield the fact
    retention: float  # share of neighbour / keep facts still answered right
    forgotten: int = 0
    total: int = 0
    answers: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class SamplesReady(Event):
    kind: str  # "paraphrases", "wrong_answers", "antisamples", "retain", "probes"
    count: int
    round: int = 0


@dataclass
class Checkpoint(Event):
    round: int
    step: int
    path: str


@dataclass
class DownloadProgress(Event):
    done_bytes: int
    total_bytes: int
    speed_bps: float
    eta_s: float | None
    file: str = ""


@dataclass
class AnswerPiece(Event):
    """A piece of a streamed chat answer. `side` names the model that spoke ("base" or "adapted"); an empty piece
    with `done` set closes that side's answer."""

    side: str
    text: str
    done: bool = False


@dataclass
class Finished(Event):
    job_dir: str = ""
    summary: dict[str, Any] = field(default_factory=dict)


# A step of a long job that reports progress as it goes and returns its result: `x = yield from step(...)` inside
# another job forwards the events; `run_to_end(step(...))` when only the result is wanted.
Steps = Generator[Event, None, T]


def run_to_end(steps: Generator[Any, Any, T]) -> T:
    """Drive a generator to its end, dropping what it yields, and return its return value."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value
