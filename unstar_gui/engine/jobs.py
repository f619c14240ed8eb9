"""Job folders: one per forget job, under the data folder's jobs/.

    job.json          inputs, settings, seed, versions, status, model (id + path)
    antisamples.jsonl paraphrase / wrong answer / rationale / provenance rows
    retain.jsonl      neighbour, keep and general-utility facts with the base model's answers
    probes.jsonl      paraphrases used as probes (split: train / heldout) with the base model's answers
    metrics.jsonl     one line per training step and per probe round
    checkpoints/      adapter snapshots for resume
    adapters/         the final adapter in mlx-lm format
    report.json       before/after answers and metrics; report.html
Every write is atomic (fsutil), so a killed job leaves readable files.

`Job` owns the folder: its verbs (set_status, record_round, write_report, discard_samples, ...) are the only writers,
each writing the keys it owns and leaving the others as they are; the typed records (records.py) are how the files
read. `update` and `write_rows` are the primitives under the verbs.
"""

from __future__ import annotations

import datetime as _dt
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .errors import JobError, ModelNotFound, StorageError
from .fsutil import append_jsonl, atomic_write_json, atomic_write_jsonl, corrupt_record, read_json, read_jsonl
from .records import AntiSampleRow, JobRecord, JobStatus, ProbeRow, Record, Report, RetainRow, RoundSummary
from .store import ModelStore

STATUSES = JobStatus.values()
# What a job generates before training (generate_samples in pipeline.py): the probes, the anti-samples and the
# retain set. A comparison copies them between runs; the wizard discards them when the fact or keep list changes.
SAMPLE_FILES = ("probes.jsonl", "antisamples.jsonl", "retain.jsonl")
_KEEP: Any = object()  # set_status: leave the recorded error as it is
_JOB_HINT = ("Restore job.json from a backup, or delete this job (Jobs page, or remove the folder) and start it "
             "again; the other files in the folder were not touched.")


def check_job_record(data: Any, path: Path) -> dict[str, Any]:
    """job.json's shape, checked where it is read: a damaged record is reported and never rewritten."""
    def bad(what: str) -> Exception:
        return corrupt_record(path, what, _JOB_HINT)

    if not isinstance(data, dict):
        raise bad("it is not a JSON object")
    fact, model = data.get("fact"), data.get("model")
    if not isinstance(fact, dict) or not all(isinstance(fact.get(k), str) for k in ("question", "answer")):
        raise bad("it has no fact (question and answer)")
    if not isinstance(model, dict) or not isinstance(model.get("id"), str):
        raise bad("it names no model")
    if data.get("status", "created") not in STATUSES:
        raise bad(f"its status {data.get('status')!r} is unknown")
    for key in ("settings", "timing"):
        if key in data and not isinstance(data[key], (dict, type(None))):
            raise bad(f"its '{key}' is not an object")
    if "rounds" in data and not isinstance(data["rounds"], list):
        raise bad("its 'rounds' is not a list")
    return data


def base_model_dir(data: dict[str, Any], store: ModelStore | None = None) -> Path:
    """The base model folder of a job, vouched for by the registry.

    A job file is untrusted input: its recorded path is used only when it is the folder of a registered model;
    otherwise the registered model of the recorded id. Nothing is ever loaded from a path job.json alone names."""
    store = store or ModelStore()
    model = data.get("model") or {}
    recorded = str(model.get("path") or "")
    if recorded:
        target = Path(recorded).resolve()
        for record in store.list():
            if Path(record.path).resolve() == target and (target / "config.json").exists():
                return target
    if model.get("id"):
        from .embedded import resolve_model  # the embedded default is installed again if its folder went

        record = resolve_model(store, str(model["id"]))  # ModelNotFound lists the installed ids
        if (Path(record.path) / "config.json").exists():
            return Path(record.path)
    raise ModelNotFound(f"The base model of this job ({model.get('id') or recorded or 'unknown'}) is not in the "
                        "model library any more.",
                        "Import that model again (`unstar models import`) under the same id, then try again.")


def _slug(text: str, n: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:n] or "job"


@dataclass
class Job:
    dir: Path

    # files -------------------------------------------------------------------------------------------------------
    @property
    def job_path(self) -> Path:
        return self.dir / "job.json"

    @property
    def adapters_dir(self) -> Path:
        return self.dir / "adapters"

    @property
    def checkpoints_dir(self) -> Path:
        return self.dir / "checkpoints"

    def file(self, name: str) -> Path:
        return self.dir / name

    # job.json ----------------------------------------------------------------------------------------------------
    def read(self) -> dict[str, Any]:
        try:
            data = read_json(self.job_path)
        except StorageError as exc:
            raise corrupt_record(self.job_path, "it is not valid JSON", _JOB_HINT) from exc
        if data is None:
            raise JobError(f"{self.dir} is not a job folder (job.json missing).",
                           "Pick a folder made by `unstar forget` or the Forget wizard.")
        return check_job_record(data, self.job_path)

    def write(self, data: dict[str, Any]) -> None:
        data["updated"] = _now()
        atomic_write_json(self.job_path, data)

    def update(self, **fields: Any) -> dict[str, Any]:
        data = self.read()
        data.update(fields)
        self.write(data)
        return data

    def record(self) -> JobRecord:
        """job.json as a typed record."""
        return JobRecord.from_dict(self.read())

    @property
    def status(self) -> str:
        return self.read().get("status", "created")

    def set_status(self, status: JobStatus | str, *, error: str | None = _KEEP, stage: str | None = None,
                   process: dict[str, Any] | None = None) -> None:
        """The job's status; with the error to show (None clears it), the stage and the process running it."""
        status = JobStatus(status)
        fields: dict[str, Any] = {"status": status.value}
        if error is not _KEEP:
            fields["error"] = error
        if stage is not None:
            fields["stage"] = stage
        if process is not None:
            fields["process"] = process
        self.update(**fields)

    # job.json verbs: each writes the keys it names and no others ---------------------------------------------------
    def set_stage(self, stage: str) -> None:
        self.update(stage=stage)

    def set_position(self, round: int, step: int, stage: str | None = None) -> None:
        """Where training stands (the round and step a resume continues from)."""
        self.update(round=round, step=step, **({"stage": stage} if stage else {}))

    def add_timing(self, stage: str, seconds: float) -> None:
        """Add `seconds` to timing["<stage>_s"] (a resumed stage adds up)."""
        timing = dict(self.read().get("timing") or {})
        timing[f"{stage}_s"] = round(timing.get(f"{stage}_s", 0.0) + seconds, 2)
        self.update(timing=timing)

    def record_round(self, summary: RoundSummary | Mapping[str, Any]) -> tuple[RoundSummary, ...]:
        """A round's re-probe summary into "rounds" (replacing an earlier one of the same round); returns them all."""
        summary = RoundSummary.from_dict(summary)
        rounds = [r for r in self.record().rounds if r.round != summary.round] + [summary]
        rounds.sort(key=lambda r: r.round)
        self.update(rounds=[r.to_dict() for r in rounds])
        return tuple(rounds)

    def record_placement(self, placement: Mapping[str, Any]) -> None:
        self.update(placement=dict(placement))

    def record_early_stop(self, round: int, step: int, steps_per_round: int) -> None:
        """Training stopped early in `round` at `step`: the round counts as trained (a resume moves on)."""
        stops = list(self.read().get("early_stops") or []) + [{"round": round, "step": step}]
        self.update(round=round, step=steps_per_round, early_stops=stops)

    def record_edit(self, round: int, layer: int, info: Mapping[str, Any]) -> None:
        """A subject edit's round (engine/subject_edit.py): which block, how big, how much each paraphrase gets."""
        edits = [e for e in self.read().get("edits") or [] if e.get("round") != round]
        self.update(edits=edits + [{"round": round, "layer": layer, **dict(info)}])

    def record_adapter_scale(self, round: int, factor: float, edge: float) -> None:
        scales = list(self.read().get("adapter_scales") or []) + [{"round": round, "factor": factor, "edge": edge}]
        self.update(adapter_scales=scales)

    def mark_samples_ready(self, dropped: Sequence[Mapping[str, Any]]) -> None:
        """The samples are written: training comes next; `dropped` is what the quality gates left out."""
        self.update(samples_ready=True, samples_round=0, stage="train", dropped=[dict(d) for d in dropped])

    def set_samples_round(self, round: int) -> None:
        """The anti-samples for `round` are written (a resume does not write them again)."""
        self.update(samples_round=round)

    # the wizard's verbs ----------------------------------------------------------------------------------------------
    def set_fact(self, fact: Mapping[str, Any]) -> None:
        """Another fact: the samples, the keep list (made for the old fact) and its review go."""
        self.discard_samples()
        self.update(fact=dict(fact), keep=[], ui_keep_reviewed=False)

    def set_keep(self, pairs: Iterable[Sequence[str]], reviewed: bool = True) -> None:
        self.update(keep=[list(p) for p in pairs], ui_keep_reviewed=reviewed)

    def set_force(self, force: bool) -> None:
        self.update(force=bool(force))

    def merge_settings(self, settings: Mapping[str, Any]) -> None:
        """Settings changed before the job ran: merged over the recorded ones."""
        self.update(settings={**(self.read().get("settings") or {}), **settings})

    def set_ui_step(self, key: str) -> None:
        self.update(ui_step=key)

    # samples ---------------------------------------------------------------------------------------------------------
    def probes(self) -> list[ProbeRow]:
        return [ProbeRow.from_dict(r) for r in self.read_rows("probes.jsonl")]

    def retain(self) -> list[RetainRow]:
        return [RetainRow.from_dict(r) for r in self.read_rows("retain.jsonl")]

    def antisamples(self) -> list[AntiSampleRow]:
        return [AntiSampleRow.from_dict(r) for r in self.read_rows("antisamples.jsonl")]

    def write_probes(self, rows: Iterable[ProbeRow | Mapping[str, Any]]) -> None:
        self._write_records("probes.jsonl", ProbeRow, rows)

    def write_retain(self, rows: Iterable[RetainRow | Mapping[str, Any]]) -> None:
        self._write_records("retain.jsonl", RetainRow, rows)

    def write_antisamples(self, rows: Iterable[AntiSampleRow | Mapping[str, Any]]) -> None:
        self._write_records("antisamples.jsonl", AntiSampleRow, rows)

    def _write_records(self, name: str, kind: type[Record], rows: Iterable[Record | Mapping[str, Any]]) -> None:
        self.write_rows(name, [kind.from_dict(r).to_dict() for r in rows])

    def discard_samples(self) -> None:
        """Samples made for an older fact or keep list would teach the wrong thing: the next run makes new ones."""
        for name in SAMPLE_FILES:
            self.file(name).unlink(missing_ok=True)
        self.update(samples_ready=False)

    def copy_samples_from(self, other: "Job") -> None:
        """Another job's probes, anti-samples and retain set (a comparison trains every method on the same)."""
        for name in SAMPLE_FILES:
            shutil.copyfile(other.file(name), self.file(name))

    # jsonl files -------------------------------------------------------------------------------------------------
    def read_rows(self, name: str) -> list[dict[str, Any]]:
        return read_jsonl(self.file(name))

    def write_rows(self, name: str, rows: list[dict[str, Any]]) -> None:
        atomic_write_jsonl(self.file(name), rows)

    def append_metric(self, row: dict[str, Any]) -> None:
        append_jsonl(self.file("metrics.jsonl"), row)

    # report.json: the pipeline writes the report, evaluate its "evaluation", compare its "comparison" ---------------
    def read_report(self) -> dict[str, Any] | None:
        return read_json(self.file("report.json"))

    def report(self) -> Report | None:
        """report.json as a typed record; None before anything was reported."""
        data = self.read_report()
        return Report.from_dict(data) if data is not None else None

    def write_report(self, report: Report | Mapping[str, Any]) -> Report:
        """The pipeline's report; the evaluation and comparison already recorded stay unless it brings its own."""
        data = Report.from_dict(report).to_dict()
        for key in ("evaluation", "comparison"):
            if key not in data and (old := (self.read_report() or {}).get(key)) is not None:
                data[key] = old
        atomic_write_json(self.file("report.json"), data)
        return Report.from_dict(data)

    def record_evaluation(self, evaluation: Mapping[str, Any], *, fact: Mapping[str, Any],
                          model: Mapping[str, Any], method: str) -> dict[str, Any]:
        """report.json["evaluation"]; the fact, model and method are filled in when no report names them yet.
        Returns the whole report as written."""
        return self._write_report_part("evaluation", evaluation, fact=dict(fact), model=dict(model), method=method)

    def record_comparison(self, section: Mapping[str, Any]) -> dict[str, Any]:
        """report.json["comparison"] (compare.html_section); returns the whole report as written."""
        return self._write_report_part("comparison", section)

    def _write_report_part(self, key: str, value: Mapping[str, Any], **defaults: Any) -> dict[str, Any]:
        """One key of report.json, re-read just before writing so the other writers' keys stay."""
        data = self.read_report() or {}
        for name, default in defaults.items():
            data.setdefault(name, default)
        data[key] = dict(value)
        atomic_write_json(self.file("report.json"), data)
        return data

    @property
    def has_adapters(self) -> bool:
        return (self.adapters_dir / "adapters.safetensors").exists() and (
            self.adapters_dir / "adapter_config.json").exists()

    @property
    def trained(self) -> bool:
        """Training finished and its adapter is saved (only the evaluation may be missing: a job stopped there
        still has a usable model)."""
        return self.has_adapters and self.read().get("stage") in ("evaluate", "done")

    def resume_point(self) -> tuple[int, int] | None:
        """(round, step) of the newest checkpoint (checkpoints/latest.json, as the trainer writes it), or None."""
        pointer = read_json(self.checkpoints_dir / "latest.json")
        if not isinstance(pointer, dict) or "round" not in pointer:
            return None
        return int(pointer["round"]), int(pointer.get("step", 0))


def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (Linux /proc; None elsewhere): tells a reused pid from the job's process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def this_process() -> dict[str, Any]:
    """What job.json records about the process running a job, so a later reader can tell if it is still alive."""
    import os
    import socket

    return {"pid": os.getpid(), "start": _process_start(os.getpid()), "host": socket.gethostname(),
            "since": _now()}


def process_alive(info: Any) -> bool:
    """Whether the process a job record names still runs. Another host's process can't be checked: assume alive."""
    import os
    import socket

    if not isinstance(info, dict) or not isinstance(info.get("pid"), int) or info["pid"] <= 0:
        return False
    if info.get("host") and info["host"] != socket.gethostname():
        return True
    try:
        os.kill(info["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process holds the pid now
        return False
    start = _process_start(info["pid"])
    return start is None or info.get("start") in (None, start)


def effective_status(data: dict[str, Any]) -> str:
    """The status to show: a job recorded as running whose process is gone was interrupted (killed, crashed)."""
    status = str(data.get("status", "created"))
    if status == "running" and not process_alive(data.get("process")):
        return "interrupted"
    return status


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def new_job_dir(store: ModelStore, question: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = store.jobs_dir / f"{stamp}-{_slug(question)}"
    path, i = base, 2
    while path.exists():
        path = Path(f"{base}-{i}")
        i += 1
    return path


def create_job(directory: Path, data: dict[str, Any]) -> Job:
    directory = Path(directory)
    if (directory / "job.json").exists():
        raise JobError(f"{directory} already holds a job.", "Use --resume to continue it, or pick another --out.")
    directory.mkdir(parents=True, exist_ok=True)
    job = Job(directory)
    data = dict(data)
    data.setdefault("status", "created")
    data.setdefault("created", _now())
    job.write(data)
    return job


def open_job(directory: Path) -> Job:
    job = Job(Path(directory))
    job.read()
    return job


def list_jobs(store: ModelStore) -> list[dict[str, Any]]:
    """Every job with its status, newest first. Unreadable folders are listed as 'failed' rather than hidden."""
    out = []
    if not store.jobs_dir.exists():
        return out
    for d in sorted(store.jobs_dir.iterdir(), reverse=True):
        if not d.is_dir():
            continue
        try:
            data = Job(d).read()
            data["status"] = effective_status(data)
        except JobError:
            continue
        except StorageError as exc:  # a damaged job.json: show it (untouched) so the user can delete it
            data = {"status": "failed", "error": str(exc), "damaged": True}
        data["dir"] = str(d)
        out.append(data)
    return out


def delete_job(directory: Path) -> None:
    directory = Path(directory)
    if not (directory / "job.json").exists():
        raise JobError(f"{directory} is not a job folder.", "Nothing was deleted.")
    shutil.rmtree(directory)
