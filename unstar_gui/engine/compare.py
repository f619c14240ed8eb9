"""Run several unlearning methods on the same fact, the same probes and the same samples, and compare them.

The probes, anti-samples and retain set are generated once (one job's generate stage, in `samples/`); every method
then gets its own job folder holding copies of those files, is trained by the ordinary pipeline (so rounds, early
stopping and checkpoints are the same for all) and evaluated with the full suite. The result is a table in
comparison.md and comparison.json, and a "Comparison" section in every method's report.html.

Folder layout:  OUT/samples/ (job.json + probes/antisamples/retain.jsonl)  OUT/<method>/ (a full job)
                OUT/comparison.md  OUT/comparison.json
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from .errors import Cancelled, InvalidInput, UnstarError
from .evaluate import ALL, EvalSettings, evaluate_job, parse_attacks, render_html
from .events import Event, Finished, Log, StageStarted
from .fsutil import atomic_write_json, atomic_write_text, human_bytes
from .jobs import SAMPLE_FILES, Job, base_model_dir, create_job
from .methods import METHODS
from .pipeline import CancelToken, ForgetRequest, ForgetSettings, create_forget_job, generate_samples, run_job
from .store import ModelStore, slugify

COMPARISON_VERSION = 1


@dataclass
class CompareSettings:
    forget: ForgetSettings = field(default_factory=ForgetSettings)  # shared by every method (its .method is ignored)
    evaluation: EvalSettings = field(default_factory=EvalSettings)
    attacks: str | Sequence[str] = ALL  # the table needs "quant" (4/8-bit columns) and "relearn"; others optional
    force: bool = False  # go on when the base model doesn't seem to know the fact


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    kind: str  # "share" | "number" | "seconds" | "bytes"
    better: str  # "higher" | "lower"
    meaning: str


COLUMNS = (
    Column("efficacy_heldout", "Efficacy (held-out)", "share", "higher",
           "share of the held-out paraphrases (never trained on) the base model answered right that no longer give "
           "the fact; all probes when none were held out"),
    Column("retention_neighbours", "Neighbour retention", "share", "higher",
           "share of the neighbour and keep facts the base model answered right that are still right"),
    Column("general_utility", "General utility", "share", "higher",
           "share of the held-out general-knowledge questions the base model answered right that are still right"),
    Column("efficacy_4bit", "4-bit efficacy", "share", "higher",
           "efficacy on the attack probes after fusing the adapter and re-quantizing to 4 bits (worst group size)"),
    Column("efficacy_8bit", "8-bit efficacy", "share", "higher", "the same at 8 bits"),
    Column("relearn_recovery", "Relearning recovery", "share", "lower",
           "share of the attack probes the fact comes back on after a few LoRA steps on related or unrelated "
           "facts (worst of the two)"),
    Column("perplexity_after", "Perplexity", "number", "lower",
           "perplexity of the unlearned model on the bundled reference paragraph (the base model's is in "
           "comparison.json as perplexity_before): damage to plain language modelling that no question shows"),
    Column("wall_s", "Wall time", "seconds", "lower",
           "unlearning time: training, re-probes and any regenerated samples (shared sample generation and the "
           "evaluation excluded)"),
    Column("peak_memory_bytes", "Peak memory", "bytes", "lower",
           "peak MLX memory while unlearning (model, activations, adapter and optimizer)"),
)


# the numbers ---------------------------------------------------------------------------------------------------------
# Every share comes with its counts (hits, out of): with a handful of probes one answer moves a share by 25 points,
# and the table says so by printing them.
Measure = tuple[float | None, int, int]
NOT_MEASURED: Measure = (None, 0, 0)


def _worst(measures: Sequence[Measure], pick=min) -> Measure:
    measured = [m for m in measures if m[0] is not None]
    return pick(measured, key=lambda m: m[0]) if measured else NOT_MEASURED


def quantized_efficacy(attacks: Sequence[dict[str, Any]], bits: int) -> Measure:
    """Share of the attack probes that still don't give the fact after re-quantizing to `bits` bits (1 - leak
    rate), worst over its group sizes."""
    rows = [a for a in attacks if a.get("attack") == "quantization" and a.get("bits") == bits and not a.get("skipped")]
    return _worst([NOT_MEASURED if a.get("leak_rate") is None else
                   (1.0 - a["leak_rate"], a["known"] - a["leaking"], a["known"]) for a in rows])


def relearn_recovery(attacks: Sequence[dict[str, Any]]) -> Measure:
    """Share of the attack probes the fact comes back on after relearning, worst over the relearning sets."""
    rows = [a for a in attacks if a.get("attack") == "relearning" and not a.get("skipped")]
    return _worst([(a.get("recovery"), a.get("recovered", 0), a.get("known", 0)) for a in rows], pick=max)


def general_utility(evaluation: dict[str, Any], retain_rows: Sequence[dict[str, Any]]) -> tuple[Measure, str]:
    """Kept share of the general questions the base model knew: held-out ones (never trained on) when there are
    any, else all of them. Returns (measure, scope)."""
    split = {r["question"]: r.get("split", "train") for r in retain_rows}
    rows = [r for r in (evaluation.get("answers") or {}).get("retain", []) if r.get("kind") == "general"
            and r.get("known_before")]
    held = [r for r in rows if split.get(r["question"]) == "heldout"]
    chosen, scope = (held, "held-out") if held else (rows, "all")
    if not chosen:
        return NOT_MEASURED, "none"
    kept = sum(1 for r in chosen if r.get("correct_after"))
    return (kept / len(chosen), kept, len(chosen)), scope


def comparison_row(method: str, job_dir: Path, evaluation: dict[str, Any], report: dict[str, Any],
                   wall_s: float, peak_bytes: int, eval_s: float) -> dict[str, Any]:
    attacks = evaluation.get("attacks") or []
    eff, ret = evaluation.get("efficacy") or {}, evaluation.get("retention") or {}
    scope = "heldout" if eff.get("headline_scope") == "held-out probes" else "all"
    c_eff = (eff.get("counts") or {}).get(scope, {})
    c_ret = (ret.get("counts") or {}).get("neighbours", {})
    utility, utility_scope = general_utility(evaluation, Job(job_dir).read_rows("retain.jsonl"))
    measures = {
        "efficacy_heldout": (eff.get("headline"), c_eff.get("forgotten", 0), c_eff.get("known", 0)),
        "retention_neighbours": (ret.get("neighbours"), c_ret.get("kept", 0), c_ret.get("known", 0)),
        "general_utility": utility,
        "efficacy_4bit": quantized_efficacy(attacks, 4),
        "efficacy_8bit": quantized_efficacy(attacks, 8),
        "relearn_recovery": relearn_recovery(attacks),
    }
    metrics = report.get("metrics") or {}
    fluency = evaluation.get("fluency") or {}
    return {
        "method": method,
        "job_dir": str(job_dir),
        **{k: m[0] for k, m in measures.items()},
        "perplexity_after": fluency.get("perplexity_after"),
        "wall_s": round(wall_s, 1),
        "peak_memory_bytes": int(peak_bytes),
        "counts": {k: [m[1], m[2]] for k, m in measures.items() if m[0] is not None},
        # context for the JSON reader
        "efficacy_scope": eff.get("headline_scope"),
        "general_utility_scope": utility_scope,
        "efficacy_train": eff.get("train"),
        "efficacy_original": eff.get("original"),
        "retention_general_all": ret.get("general"),
        "degenerate_after": fluency.get("degenerate_after"),
        "perplexity_before": fluency.get("perplexity_before"),
        "attack_probes": evaluation.get("attack_probes"),
        "verdict": (evaluation.get("verdict") or {}).get("label"),
        "rounds": metrics.get("rounds"),
        "steps": metrics.get("steps"),
        "eval_s": round(eval_s, 1),
    }


def format_cell(column: Column, value: Any, counts: Sequence[int] | None = None) -> str:
    if value is None:
        return "n/a"
    if column.kind == "share":
        return f"{value:.0%}" + (f" ({counts[0]}/{counts[1]})" if counts else "")
    if column.kind == "number":
        return f"{value:.1f}"
    if column.kind == "seconds":
        return f"{value / 60:.1f} min" if value >= 600 else f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"
    return human_bytes(value)


def table_cells(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells of the comparison table (shared by the markdown and the HTML section)."""
    header = ["Method"] + [c.label for c in COLUMNS]
    return header, [[r["method"] + (" (failed)" if r.get("error") else "")]
                    + [format_cell(c, r.get(c.key), (r.get("counts") or {}).get(c.key)) for c in COLUMNS]
                    for r in rows]


def comparison_markdown(comparison: dict[str, Any]) -> str:
    header, cells = table_cells(comparison["rows"])
    fact = comparison["fact"]
    lines = [f"## Forgetting \"{fact['question']}\" -> {fact['answer']}", "",
             f"Model: {comparison['model'].get('id', '')}. Same probes, anti-samples and retain set for every "
             f"method ({comparison['samples']['probes']} probes, {comparison['samples']['antisamples']} anti-samples, "
             f"{comparison['samples']['retain']} retain items); {comparison['settings']['steps_per_round']} steps per "
             f"round, at most {comparison['settings']['max_rounds']} round(s)."
             + _base_perplexity(comparison["rows"]), "",
             "| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(COLUMNS)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    lines += [f"\n{r['method']} failed: {r['error']}" for r in comparison["rows"] if r.get("error")]
    lower = [c.label for c in COLUMNS if c.better == "lower"]
    lines += ["", f"Higher is better except for {', '.join(lower[:-1])} and {lower[-1]}. In brackets: items that "
                  "count, out of those the base model answered right (one item can move a share a lot).", ""]
    lines += [f"- **{c.label}**: {c.meaning}." for c in COLUMNS]
    return "\n".join(lines) + "\n"


def _base_perplexity(rows: Sequence[dict[str, Any]]) -> str:
    base = next((r["perplexity_before"] for r in rows if r.get("perplexity_before") is not None), None)
    return "" if base is None else f" The base model's perplexity on the reference paragraph: {base:.1f}."


def html_section(comparison: dict[str, Any], current: str) -> dict[str, Any]:
    """What a method's report.json carries under "comparison" for report_html to render."""
    header, cells = table_cells(comparison["rows"])
    return {"title": f"{len(cells)} methods on the same probes and samples", "columns": header, "rows": cells,
            "current": current, "note": "; ".join(f"{c.label}: {c.meaning}" for c in COLUMNS) + ".",
            "dir": comparison["dir"]}


# the run -------------------------------------------------------------------------------------------------------------
def check_methods(methods: Sequence[str]) -> list[str]:
    names = [m.strip() for m in methods if m and m.strip()]
    if not names:
        raise InvalidInput("No method to compare.", f"Name one or more of: {', '.join(sorted(METHODS))}.")
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise InvalidInput(f"Unknown unlearning method '{unknown[0]}'.", f"Pick from: {', '.join(sorted(METHODS))}.")
    if len(set(names)) != len(names):
        raise InvalidInput("A method is listed twice.", "Name each method once.")
    return names


def default_out_dir(question: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return ModelStore().root / "comparisons" / f"{stamp}-{slugify(question)[:40]}"


def _method_job(samples: Job, method: str, directory: Path) -> Job:
    """A job folder for `method` holding the shared samples, ready to train (generation is skipped)."""
    data = samples.read()
    settings = dict(data["settings"], method=method)
    keep = ("fact", "keep", "model", "seed", "force", "version", "versions", "samples_round", "dropped")
    job = create_job(directory, {**{k: data[k] for k in keep if k in data}, "settings": settings, "method": method,
                                 "status": "created", "stage": "train", "round": 0, "step": 0, "error": None,
                                 "rounds": [], "timing": {}, "samples_ready": True, "samples_from": str(samples.dir)})
    job.copy_samples_from(samples)
    return job


def _train(job: Job, llm: Any, cancel: CancelToken) -> Iterator[Event]:
    """run_job, passing its events on; returns the MLX peak memory of the unlearning part (before any evaluation
    the pipeline itself may run)."""
    import mlx.core as mx

    peak = None
    for ev in run_job(job, cancel, llm):
        if peak is None and isinstance(ev, StageStarted) and ev.stage == "evaluate":
            peak = mx.get_peak_memory()
        yield ev
    return int(peak if peak is not None else mx.get_peak_memory())


def _run_method(job: Job, llm: Any, attacks: Sequence[str], settings: CompareSettings,
                cancel: CancelToken) -> Iterator[Event]:
    """Unlearn with the job's method, evaluate it (unless the pipeline already did), return its table row."""
    t0 = time.perf_counter()
    peak = yield from _train(job, llm, cancel)
    wall = time.perf_counter() - t0
    report = job.read_report() or {}
    evaluation = report.get("evaluation") or {}
    t1 = time.perf_counter()
    if not evaluation:  # the pipeline did not evaluate: run the suite here
        evaluation = yield from evaluate_job(job.dir, llm=llm, attacks=attacks, cancel=cancel,
                                             settings=settings.evaluation)
        report = job.read_report() or {}
    eval_s = time.perf_counter() - t1
    wall = (report.get("timing") or {}).get("total_s", wall)  # excludes any evaluation the pipeline ran
    return comparison_row(job.read()["method"], job.dir, evaluation, report, wall, peak, eval_s)


def write_comparison(out: Path, comparison: dict[str, Any]) -> None:
    """comparison.json, comparison.md, and the table in every (not failed) method's report.json / report.html."""
    atomic_write_json(out / "comparison.json", comparison)
    atomic_write_text(out / "comparison.md", comparison_markdown(comparison))
    for row in comparison["rows"]:
        if row.get("error"):
            continue
        job = Job(Path(row["job_dir"]))
        report = job.record_comparison(html_section(comparison, row["method"]))
        atomic_write_text(job.file("report.html"), render_html(report))


def compare_methods(model: str | None, question: str, answer: str, methods: Sequence[str],
                    out_dir: Path | str | None, aliases: Sequence[str] = (), keep: Sequence[tuple[str, str]] = (),
                    settings: CompareSettings | None = None, cancel: CancelToken | None = None) -> Iterator[Event]:
    """Generate samples once, then unlearn + evaluate with every method on them; ends with Finished(out_dir, summary
    with "rows" and the table's paths). Raises UnstarError (Cancelled on cancel)."""
    from .llm import load_llm

    settings = settings or CompareSettings()
    cancel = cancel or CancelToken()
    names = check_methods(methods)
    attacks = parse_attacks(settings.attacks)
    out = Path(out_dir) if out_dir else default_out_dir(question)
    if out.exists() and any(out.iterdir()):
        raise InvalidInput(f"{out} is not empty.", "Pick a new --out folder (or delete that one).")
    request = ForgetRequest(question=question, answer=answer, aliases=list(aliases), keep=list(keep), model=model,
                            settings=dataclasses.replace(settings.forget, method=names[0]), out_dir=out / "samples",
                            force=settings.force)
    samples = create_forget_job(request)  # validates everything before the model loads
    yield Log(f"Comparison folder: {out}")
    data = samples.read()
    yield StageStarted("load", f"Loading {data['model']['id']}")
    llm = load_llm(base_model_dir(data), model_id=data["model"]["id"])
    if llm.lora is not None:  # the cached model still holds an earlier job's adapter: samples come from the base
        llm.detach_lora()
    t0 = time.perf_counter()
    yield from generate_samples(samples, llm, cancel)
    shared_s = time.perf_counter() - t0

    rows = []
    for i, name in enumerate(names):
        cancel.check()
        yield StageStarted("method", f"{name} ({i + 1} of {len(names)}): {METHODS[name].description}")
        job = _method_job(samples, name, out / name)
        try:
            rows.append((yield from _run_method(job, llm, attacks, settings, cancel)))
        except (Cancelled, KeyboardInterrupt, GeneratorExit):
            raise
        except Exception as exc:  # one method failing must not cost the others' results
            message = exc.message if isinstance(exc, UnstarError) else f"{type(exc).__name__}: {exc}"
            yield Log(f"{name} failed: {message}", "warning")
            rows.append({"method": name, "job_dir": str(job.dir), "error": message,
                         **{c.key: None for c in COLUMNS}})

    comparison = {
        "version": COMPARISON_VERSION,
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "dir": str(out), "fact": data["fact"], "model": data["model"], "methods": names,
        "settings": data["settings"], "attacks": list(attacks), "evaluation_settings":
            dataclasses.asdict(settings.evaluation),
        "samples": {"dir": str(samples.dir), "seconds": round(shared_s, 1),
                    **{n.split(".")[0]: len(samples.read_rows(n)) for n in SAMPLE_FILES}},
        "columns": [dataclasses.asdict(c) for c in COLUMNS], "rows": rows,
    }
    write_comparison(out, comparison)
    yield Finished(str(out), {"rows": rows, "markdown": str(out / "comparison.md"),
                              "json": str(out / "comparison.json")})
