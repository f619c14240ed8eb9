"""evaluate_job: every metric and attack on one job, written into report.json["evaluation"] and report.html."""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Generator, Sequence

from ..errors import JobError
from ..events import Event, Log, StageStarted
from ..fsutil import atomic_write_text
from ..judge import make_judge
from . import measures, metrics
from .attacks import ALL, AttackContext, AttackSettings, parse_attacks, run_attack
from .probing import SPLIT_ORDER, JobData, load_job_data
from .report_html import render_html

EVALUATION_VERSION = 1


@dataclass
class EvalSettings:
    max_tokens: int = 64  # answers to probes and retain questions
    batch_size: int = 16
    max_attack_probes: int = 8  # attacks re-ask at most this many known probes (run time grows linearly)
    n_wrong: int = 5  # wrong answers per truth ratio
    semantic_judge: bool = True  # False: only exact / fuzzy / number matches (fast tests)
    attack: AttackSettings = field(default_factory=AttackSettings)
    thresholds: metrics.VerdictThresholds = field(default_factory=metrics.VerdictThresholds)


def evaluate_job(job_dir: Path | str, llm: Any = None, attacks: str | Sequence[str] | None = ALL, cancel: Any = None,
                 settings: EvalSettings | None = None) -> Generator[Event, None, dict[str, Any]]:
    """Measure a job's adapter: efficacy, retention, answer probabilities, fluency, then the chosen attacks.

    Yields StageStarted / Progress / Log events (no Finished: the forget pipeline runs this as one of its stages);
    `evaluation = yield from evaluate_job(...)` gets the evaluation dict. `llm`: a model already loaded on this
    thread (the job's adapter is loaded into it from adapters/); None loads the job's model. `cancel`: anything with a
    `.cancelled` flag, checked between generation batches; cancelling raises errors.Cancelled and writes nothing.
    """
    settings = settings or EvalSettings()
    keys = parse_attacks(attacks)
    t_start = time.monotonic()
    timing: dict[str, float] = {}
    data = load_job_data(Path(job_dir))
    yield StageStarted(stage="evaluate", message=f"evaluating {data.job.dir.name}")
    llm = yield from _prepare_model(data, llm, timing)
    judge = make_judge(data.answer, data.aliases, semantic=settings.semantic_judge, context=data.question)

    t = time.monotonic()
    yield StageStarted(stage="efficacy", message=f"re-asking {len(data.probes)} probes")
    probe_rows = yield from measures.probe_forgetting(llm, data, judge, cancel=cancel, max_tokens=settings.max_tokens,
                                                      batch_size=settings.batch_size)
    efficacy = measures.efficacy_by_split(probe_rows)
    timing["efficacy_s"] = _since(t)

    t = time.monotonic()
    yield StageStarted(stage="retention", message=f"re-asking {len(data.retain)} retain questions")
    retain_rows = yield from measures.probe_retention(llm, data, cancel=cancel, max_tokens=settings.max_tokens,
                                                      batch_size=settings.batch_size,
                                                      semantic=settings.semantic_judge)
    retention = measures.retention_by_kind(retain_rows)
    timing["retention_s"] = _since(t)

    t = time.monotonic()
    yield StageStarted(stage="probabilities", message="answer log-probs and truth ratio")
    probabilities = yield from measures.answer_probabilities(llm, data, retain_rows, cancel=cancel,
                                                             n_wrong=settings.n_wrong)
    all_rows = [*probe_rows, *retain_rows]
    fluency = measures.fluency(llm, [r["before"] for r in all_rows], [r["after"] for r in all_rows])
    timing["probabilities_s"] = _since(t)

    chosen = attack_probes(probe_rows, settings.max_attack_probes)
    ctx = AttackContext(llm=llm, data=data, judge=judge, questions=[r["question"] for r in chosen],
                        leaks_before=[r["leaks_after"] for r in chosen], settings=settings.attack, cancel=cancel)
    attack_rows: list[dict[str, Any]] = []
    if keys and not chosen:
        yield Log("No probe was known to the base model: attacks have nothing to bring back and were skipped.",
                  "warning")
    for key in keys if chosen else ():
        t = time.monotonic()
        attack_rows += yield from run_attack(key, ctx)
        timing[f"attack_{key}_s"] = _since(t)

    measured = [a for a in attack_rows if not a.get("skipped")]
    kept = retention["neighbours"] if retention["neighbours"] is not None else retention["all"]
    verdict = metrics.summary_verdict(efficacy["headline"], measured, kept, settings.thresholds,
                                      scope=efficacy["headline_scope"])
    timing["total_s"] = _since(t_start)
    evaluation = {
        "version": EVALUATION_VERSION,
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "verdict": verdict,
        "efficacy": efficacy,
        "retention": retention,
        "probabilities": probabilities,
        "fluency": fluency,
        "attacks": attack_rows,
        "attack_probes": len(chosen),
        "attacks_run": list(keys),
        "answers": {"probes": probe_rows, "retain": retain_rows},
        "antisamples": [_antisample_summary(r) for r in data.antisamples[:60]],
        "antisamples_total": len(data.antisamples),
        "timing": timing,
        "settings": asdict(settings),
    }
    write_evaluation(data, evaluation)
    yield Log(f"Verdict: {verdict['label']}. {verdict['detail']}")
    return evaluation


def _prepare_model(data: JobData, llm: Any, timing: dict[str, float]) -> Generator[Event, None, Any]:
    t = time.monotonic()
    if llm is None:
        from ..llm import load_llm

        from ..jobs import base_model_dir

        model = data.info.get("model") or {}
        path = base_model_dir(data.info)
        yield StageStarted(stage="load", message=f"loading {model.get('id') or Path(path).name}")
        llm = load_llm(path, model_id=model.get("id", ""))
    if data.job.has_adapters:
        llm.load_adapter(data.job.adapters_dir)
    elif llm.lora is None:
        raise JobError(f"{data.job.dir} has no trained adapter yet (adapters/ is empty).",
                       "Run or resume the forget job first, then evaluate it.")
    timing["load_s"] = _since(t)
    return llm


def attack_probes(rows: Sequence[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The probes attacks re-ask: known to the base model; forgotten ones first (only they can be recovered), then
    held-out before the original question before training paraphrases."""
    known = [r for r in rows if r["known_before"]]
    known.sort(key=lambda r: (r["leaks_after"], SPLIT_ORDER.get(r["split"], 9)))
    return known[:limit]


def _antisample_summary(row: dict[str, Any]) -> dict[str, Any]:
    prov = row.get("provenance") or {}
    return {"question": row.get("question", ""), "wrong_answer": row.get("wrong_answer", ""),
            "rationale": str(row.get("rationale", ""))[:400], "style": row.get("style", ""),
            "round": row.get("round", 0), "source": prov.get("source") or prov.get("by") or ""}


def write_evaluation(data: JobData, evaluation: dict[str, Any]) -> None:
    """Record it in report.json (the job's verb: the pipeline owns every other key) and render HTML."""
    report = data.job.record_evaluation(
        evaluation, fact={"question": data.question, "answer": data.answer, "aliases": data.aliases},
        model=data.info.get("model", {}), method=data.info.get("method", ""))
    atomic_write_text(data.job.file("report.html"), render_html(report))


def _since(t: float) -> float:
    return round(time.monotonic() - t, 2)
