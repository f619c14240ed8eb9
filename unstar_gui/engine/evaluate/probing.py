"""What evaluation reads from a job folder, and batched generation that can be cancelled between batches."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generator, Sequence

from ..errors import Cancelled, JobError
from ..events import Event, Progress
from ..jobs import Job, open_job

# Where probes come from, best first: held-out paraphrases were never trained on, so they say the most.
SPLIT_ORDER = {"heldout": 0, "original": 1, "train": 2}


@dataclass
class JobData:
    job: Job
    info: dict[str, Any]  # job.json
    question: str
    answer: str
    aliases: list[str]
    probes: list[dict[str, Any]]
    retain: list[dict[str, Any]]
    antisamples: list[dict[str, Any]]
    wrong_answers: list[str] = field(default_factory=list)


def load_job_data(job_dir: Path) -> JobData:
    job = open_job(Path(job_dir))
    info = job.read()
    fact = info.get("fact") or {}
    if not fact.get("question") or not fact.get("answer"):
        raise JobError(f"{job.dir}/job.json has no fact (question and answer).",
                       "Pick a folder made by `unstar forget` or the Forget wizard.")
    probes = job.read_rows("probes.jsonl")
    if not probes:
        raise JobError(f"{job.dir} has no probes yet (probes.jsonl is missing or empty).",
                       "Run or resume the forget job first (`unstar forget --resume`).")
    antisamples = job.read_rows("antisamples.jsonl")
    wrongs = list(dict.fromkeys(str(r.get("wrong_answer", "")).strip() for r in antisamples))
    return JobData(job=job, info=info, question=fact["question"], answer=fact["answer"],
                   aliases=list(fact.get("aliases") or []), probes=probes, retain=job.read_rows("retain.jsonl"),
                   antisamples=antisamples, wrong_answers=[w for w in wrongs if w])


def check_cancel(cancel: Any) -> None:
    if cancel is not None and getattr(cancel, "cancelled", False):
        raise Cancelled("Evaluation cancelled.", "Nothing was written; run `unstar eval` again to evaluate.")


def generate(llm: Any, prompts: Sequence[list[int]], *, stage: str, cancel: Any = None, max_tokens: int = 64,
             batch_size: int = 16, message: str = "") -> Generator[Event, None, list[str]]:
    """Generate for token prompts in batches, yielding Progress and checking `cancel` between batches."""
    out: list[str] = []
    for i in range(0, len(prompts), batch_size):
        check_cancel(cancel)
        out += llm.generate_tokens(list(prompts[i:i + batch_size]), max_tokens=max_tokens, batch_size=batch_size)
        yield Progress(stage=stage, done=len(out), total=len(prompts), message=message)
    return out
