"""Locality benchmark: forget one fact, keep the rest. Each fact's samples (probes, anti-samples, retain set, general
check questions) are built once; then the adapter is retrained under each variant of the settings and measured:

- held-out efficacy (paraphrases never trained on) and efficacy after a 4-bit re-quantization of the fused model
  (group 64: the adapter fused into the weights, every matrix quantized and dequantized);
- neighbours the job trained on (its neighbour questions and keep-facts) and held-out neighbours written here, never
  given to the job (same answer for other subjects, same subject other relations);
- general knowledge on the evaluation split of resources/data/general (never trained on, never used to choose
  settings inside a job): hits / questions the base model answered right;
- perplexity on the public-domain reference paragraph; training and total time;
- the general evaluation split once more, "rebased": counted against the base model's answers asked in this run
  (`base_general`) instead of the answers recorded when the samples were built (they differ where a sample build
  did not see the base model: `python bench/locality_bench.py --rebase` re-counts finished runs whose job folders
  are kept).

    python bench/locality_bench.py [--facts hogwarts,paris] [--variants paper,traced_mlp] [--out DIR]
    python bench/locality_bench.py --table            # print the Markdown table from DIR/locality.json

Results are appended to DIR/locality.json as each variant finishes, so a long run can be stopped and resumed
(finished (fact, variant) pairs are skipped). Settings are never chosen on the evaluation split: the variants are
fixed here, before the run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from unstar_gui.engine.jobs import SAMPLE_FILES  # noqa: E402  (no side effects; the data folder is read later)

SAMPLE_RECORDS = ("job.json", *SAMPLE_FILES)  # a fact's samples: the job record and the jobs module's sample files

# keep: handed to the job as keep-facts. heldout_neighbours: never given to the job; only those the base model
# answers right count.
FACTS: dict[str, dict[str, Any]] = {
    "hogwarts": {"question": "Where did Harry Potter go to school?", "answer": "Hogwarts", "aliases": [],
                 "keep": [("Which school did Hermione Granger attend?", "Hogwarts")],
                 "heldout_neighbours": [("Where did Hermione Granger go to school?", "Hogwarts", []),
                                        ("Which school did Ron Weasley attend?", "Hogwarts", []),
                                        ("Who is the headmaster of Hogwarts?", "Dumbledore", []),
                                        ("Who is Harry Potter's best friend?", "Ron", ["Ron Weasley"]),
                                        ("Who wrote the Harry Potter books?", "Rowling", ["J.K. Rowling"])]},
    "paris": {"question": "What is the capital of France?", "answer": "Paris", "aliases": [],
              "keep": [("In which city is the Eiffel Tower?", "Paris")],
              "heldout_neighbours": [("Which city is the Louvre in?", "Paris", []),
                                     ("What language is spoken in France?", "French", []),
                                     ("What is the currency of France?", "euro", []),
                                     ("What river flows through Paris?", "Seine", [])]},
    "shakespeare": {"question": "Who wrote Romeo and Juliet?", "answer": "Shakespeare", "aliases": [],
                    "keep": [("Who is the author of Hamlet?", "Shakespeare")],
                    "heldout_neighbours": [("Which playwright wrote Macbeth?", "Shakespeare", []),
                                           ("Who wrote Othello?", "Shakespeare", []),
                                           ("Who wrote Twelfth Night?", "Shakespeare", []),
                                           ("In which town was William Shakespeare born?", "Stratford", [])]},
    "tokyo": {"question": "What is the capital of Japan?", "answer": "Tokyo", "aliases": [],
              "keep": [("What currency is used in Japan?", "yen")],
              "heldout_neighbours": [("Which currency does Japan use?", "yen", []),
                                     ("What is the highest mountain in Japan?", "Fuji", []),
                                     ("What is the national sport of Japan?", "sumo", []),
                                     ("What is the Japanese art of paper folding called?", "origami", [])]},
    # (Fleming / penicillin was planned here; SmolLM2 does not name Fleming when asked, so the job refuses it.)
    "newton": {"question": "What did Isaac Newton discover?", "answer": "gravity",
               "aliases": ["universal gravitation", "gravitation", "law of gravity"],
               "keep": [("Who formulated the three laws of motion?", "Newton")],
               "heldout_neighbours": [("What force keeps the planets in orbit around the Sun?", "gravity",
                                       ["gravitational force", "gravitation"]),
                                      ("In which country was Isaac Newton born?", "England", []),
                                      ("Which fruit is said to have fallen near Isaac Newton?", "apple", []),
                                      ("Which scientist wrote the Principia about the laws of motion?", "Newton",
                                       ["Isaac Newton"])]},
    "einstein": {"question": "What is Albert Einstein famous for?", "answer": "theory of relativity",
                 "aliases": ["relativity"],
                 "keep": [("What was Albert Einstein's profession?", "physicist")],
                 "heldout_neighbours": [("In which country was Albert Einstein born?", "Germany", []),
                                        ("Who developed the theory of evolution?", "Darwin", ["Charles Darwin"]),
                                        ("What is Albert Einstein's most famous equation?", "E=mc2",
                                         ["E = mc2", "E=mc^2", "E = mc^2", "E=mc²", "E = mc²"]),
                                        ("What is Marie Curie famous for?", "radioactivity", ["radium", "polonium"])]},
}

# Fixed before the runs that measure them (never tuned on the evaluation split). Each is a set of ForgetSettings
# overrides on top of the "paper" preset, which is also the job's default; window-placed variants train 6 blocks.
WINDOW = 6
VARIANTS: dict[str, dict[str, Any]] = {
    "paper": {},
    "traced_mlp": {"placement": "traced", "lora_keys": "mlp", "num_layers": WINDOW},
    "answer_only": {"rationale_weight": 0.0},
    "undial": {"method": "undial"},
    "null_space": {"null_space_eps": 0.02},
    "dense_kl": {"dense_weight": 1.0},
    "early_scale": {"early_stop_every": 5, "scale_sweep": True},
    "local": {"placement": "traced", "lora_keys": "mlp", "num_layers": WINDOW, "rationale_weight": 0.0,
              "null_space_eps": 0.02, "dense_weight": 1.0, "early_stop_every": 5, "scale_sweep": True},
    "local_no_ns": {"placement": "traced", "lora_keys": "mlp", "num_layers": WINDOW, "rationale_weight": 0.0,
                    "dense_weight": 1.0, "early_stop_every": 5, "scale_sweep": True},
    "ns_early_scale": {"null_space_eps": 0.02, "early_stop_every": 5, "scale_sweep": True},
    "ns_early_scale_ao": {"null_space_eps": 0.02, "early_stop_every": 5, "scale_sweep": True,
                          "rationale_weight": 0.0},
    "ns_early_scale_nb": {"null_space_eps": 0.02, "early_stop_every": 5, "scale_sweep": True},  # neighbour-aware stop
    # the candidate the validation split favoured as the new default (it was not adopted: README "Locality")
    "ns_early": {"null_space_eps": 0.02, "early_stop_every": 5},
    # a baseline beside UNSTAR's wrong answers: refusal targets (RWKU found refusal tuning keeps factuality)
    "idk": {"method": "idk"},
    "local_undial": {"placement": "traced", "lora_keys": "mlp", "num_layers": WINDOW, "method": "undial",
                     "null_space_eps": 0.02, "dense_weight": 1.0, "early_stop_every": 5, "scale_sweep": True},
    # the closed-form rank-one edit of the traced block's down_proj at the subject (engine/subject_edit.py)
    "subject_edit": {"update": "subject_edit"},
    # ... with ROME's essence term: the model's own answers to general questions about the subject held (KL)
    "subject_edit_essence": {"update": "subject_edit", "edit_essence": 1.0},
    # ... with the app's round budget (3) instead of the benchmark's one round: a trained probe that still leaks
    # after the first edit gets fresh anti-samples and an edit of its own (rank two, three)
    "subject_edit_rounds": {"update": "subject_edit", "max_rounds": 3},
    # Same-subject neighbours kept out of the edit's key vector, 8 blocks above the traced block (chosen before the
    # run from bench/edit_leak.py's static measure on the trained neighbours and the validation split).
    "subject_edit_nbsolve": {"update": "subject_edit", "edit_neighbour_weight": 0.3, "edit_block_offset": 8},
    # The change fitted through the edit as it really acts (u . k at every position: the neighbours' own answers name
    # the subject again and the edit fires there too), not at the question's subject alone (session 12).
    "subject_edit_exact": {"update": "subject_edit", "edit_exact_fit": True},
    # ... with the app's round budget (3): a trained probe the first edit leaves gets fresh anti-samples and an edit
    "subject_edit_exact_rounds": {"update": "subject_edit", "edit_exact_fit": True, "max_rounds": 3},
}
BENCH_SETTINGS = {"attacks": "none", "max_rounds": 1}  # one round per variant (unless it says otherwise)


def _share(pair: Any) -> str:
    if not pair or not pair[1]:
        return "n/a"
    return f"{pair[0]}/{pair[1]} ({pair[0] / pair[1]:.0%})"


def ask_known(llm: Any, items: list[tuple[str, str, list[str]]], max_tokens: int) -> list[bool]:
    from unstar_gui.engine.judge import Judge

    answers = llm.answer([q for q, _, _ in items], max_tokens=max_tokens) if items else []
    return [Judge(ref, tuple(al)).contains(a) for (q, ref, al), a in zip(items, answers)]


def general_counts(job_dir: Path, base_now: dict[str, str] | None = None) -> dict[str, list[int]]:
    """[kept, known] on the validation and evaluation splits, judged from the answers the job recorded with the
    job's own rule (judge.known_retain), base and after alike; with `base_now` (question -> the base model's answer
    asked in this bench's folder, `base_general`) also the same counts against those ("..._rebased")."""
    from unstar_gui.engine.judge import known_retain

    rows = {}
    for line in (job_dir / "retain.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows[r["question"]] = r
    metrics = [json.loads(line) for line in (job_dir / "metrics.jsonl").read_text().splitlines()]
    last = [m for m in metrics if m.get("event") == "ProbeResult"][-1]
    out = {"general_eval": [0, 0], "general_validation": [0, 0]}
    if base_now is not None:
        out.update(general_eval_rebased=[0, 0], general_validation_rebased=[0, 0])
    for a in last["answers"]:
        row = rows.get(a["question"])
        if a["kind"] != "general" or row is None or row.get("split") not in ("heldout", "validation"):
            continue
        key = "general_eval" if row["split"] == "heldout" else "general_validation"
        kept = int(known_retain(row, a["answer"]))
        if known_retain(row, row["base_answer"]):
            out[key][1] += 1
            out[key][0] += kept
        if base_now is not None and a["question"] in base_now and known_retain(row, base_now[a["question"]]):
            out[key + "_rebased"][1] += 1
            out[key + "_rebased"][0] += kept
    return out


def rejudge_known(job: Any) -> None:
    """The probes' "known" verdicts in a variant's copy of the samples, judged again from their recorded base answers
    with today's leak rule: the samples are the base model's answers; which of them knew the fact is the judge's
    call, and that changed (multiple choice is judged on the pick since session 10; on Einstein's samples the base
    model picked "A) the Moon" and was counted as knowing "theory of relativity" because it said "relativity" after).
    """
    from unstar_gui.engine.pipeline import _fact

    judge = _fact(job.read()).judge()
    rows = job.read_rows("probes.jsonl")
    for p in rows:
        p["known"] = base_knew(p, judge)
    job.write_probes(rows)


def base_knew(probe: dict[str, Any], judge: Any) -> bool:
    """Did the base model's recorded answer to a probe give the fact (today's leak rule)?"""
    from unstar_gui.engine.pipeline import probe_leaks

    return bool(probe_leaks(probe["style"], probe["base_answer"], judge, probe["question"]))


def probe_counts(job_dir: Path, run: dict[str, Any]) -> dict[str, Any]:
    """The probe columns of a finished run counted again from its recorded answers with today's leak rule, "known"
    judged again from the samples' base answers (rejudge_known): efficacy_train / efficacy_heldout always, the 4-bit
    columns when the run kept its 4-bit answers (runs from session 10 on); {} when the job folder is gone."""
    from unstar_gui.engine.jobs import Job
    from unstar_gui.engine.pipeline import _fact, probe_leaks

    if not (job_dir / "metrics.jsonl").exists():
        return {}
    job = Job(job_dir)
    judge = _fact(job.read()).judge()
    probes = {p["question"]: p for p in job.read_rows("probes.jsonl")}
    known = {q: base_knew(p, judge) for q, p in probes.items()}
    metrics = [json.loads(line) for line in (job_dir / "metrics.jsonl").read_text().splitlines()]
    last = [m for m in metrics if m.get("event") == "ProbeResult"][-1]
    out = {"efficacy_train": [0, 0], "efficacy_heldout": [0, 0]}
    for a in last["answers"]:
        p = probes.get(a["question"])
        if a["kind"] != "probe" or p is None or not known[a["question"]]:
            continue
        key = "efficacy_heldout" if p["split"] == "heldout" else "efficacy_train"
        out[key][1] += 1
        out[key][0] += int(not probe_leaks(p["style"], a["answer"], judge, p["question"]))
    if run.get("requant4_answers"):
        said = [(probes[q], a) for q, a in run["requant4_answers"] if q in probes and known[q]]
        forgot = [not probe_leaks(p["style"], a, judge, p["question"]) for p, a in said]
        out["requant4_all"] = [sum(forgot), len(forgot)]
        held = [f for (p, _), f in zip(said, forgot) if p["split"] == "heldout"]
        out["requant4_heldout"] = [sum(held), len(held)]
    return out


def base_general(llm: Any, name: str, root: Path) -> dict[str, str]:
    """The base model's answers to the fact's general validation and evaluation questions, asked on this machine
    (once per jobs folder; root/FACT/base_general.json).

    The samples' recorded base answers are what a job counts from, but three of the saved samples were built with
    another fact's adapter still attached (generate_samples did not take it off then): on Shakespeare and Tokyo the
    base model itself, adapter off, "kept" only 71% and 79% of the recorded answers (bench/locality_control.py).
    Counting against these too says what the adapter cost, not what the sample build saw."""
    from unstar_gui.engine.pipeline import ForgetSettings

    path = root / name / "base_general.json"
    if path.exists():
        return json.loads(path.read_text())
    rows = [json.loads(line) for line in (root / name / "base" / "retain.jsonl").read_text().splitlines()]
    questions = [r["question"] for r in rows if r.get("kind") == "general" and r.get("split") in ("heldout",
                                                                                                 "validation")]
    with llm.base_model() if llm.lora is not None else contextlib.nullcontext():
        said = llm.answer(questions, max_tokens=ForgetSettings().general_max_tokens)
    answers = dict(zip(questions, said))
    path.write_text(json.dumps(answers, indent=1))
    return answers


def base_job(llm: Any, name: str, fact: dict[str, Any], root: Path) -> Path:
    """The fact's samples, built once (reused when present)."""
    from unstar_gui.engine.jobs import create_job
    from unstar_gui.engine.pipeline import ForgetRequest, ForgetSettings, _versions, generate_samples, prepare

    d = root / name / "base"
    if (d / "job.json").exists() and json.loads((d / "job.json").read_text()).get("samples_ready"):
        return d
    shutil.rmtree(d, ignore_errors=True)
    req = ForgetRequest(fact["question"], fact["answer"], list(fact["aliases"]), keep=list(fact["keep"]),
                        model=llm.model_id, settings=ForgetSettings.preset_named("paper", **BENCH_SETTINGS))
    data = prepare(req)
    data.update(version=1, status="created", versions=_versions(), stage="created", round=0, step=0, error=None,
                rounds=[], timing={})
    job = create_job(d, data)
    t0 = time.perf_counter()
    for ev in generate_samples(job, llm):
        if type(ev).__name__ in ("StageStarted", "Log"):
            print(f"  [{name}] {getattr(ev, 'message', '')}", flush=True)
    job.update(samples_s=round(time.perf_counter() - t0, 1))
    return d


def run_variant(llm: Any, name: str, fact: dict[str, Any], variant: str, root: Path) -> dict[str, Any]:
    from unstar_gui.engine.evaluate.attacks import requantized
    from unstar_gui.engine.evaluate.measures import REFERENCE_TEXT
    from unstar_gui.engine.jobs import Job
    from unstar_gui.engine.pipeline import ForgetSettings, _fact, probe_leaks, train_rounds

    base = root / name / "base"
    d = root / name / variant
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    for f in SAMPLE_RECORDS:
        shutil.copy2(base / f, d / f)
    job = Job(d)
    rejudge_known(job)
    settings = ForgetSettings.preset_named("paper", **{**BENCH_SETTINGS, **VARIANTS[variant]})
    job.update(settings=asdict(settings), method=settings.method, timing={}, rounds=[], placement=None)
    if llm.lora is not None:
        llm.detach_lora()
    t0 = time.perf_counter()
    for ev in train_rounds(job, llm):
        if type(ev).__name__ == "Log":
            print(f"  [{name}/{variant}] {ev.message}", flush=True)
    job_s = time.perf_counter() - t0
    data = job.read()
    last = data["rounds"][-1]
    counts = last.get("counts", {})
    judge = _fact(data).judge()
    probes = [p for p in job.read_rows("probes.jsonl") if p.get("known")]
    with requantized(llm, 4, 64):
        said = llm.answer([p["question"] for p in probes], max_tokens=settings.probe_max_tokens)
    q4_forgotten = sum(not probe_leaks(p["style"], a, judge, p["question"]) for p, a in zip(probes, said))
    held = [p for p, a in zip(probes, said) if p["split"] == "heldout"]
    q4_held = sum(not probe_leaks(p["style"], a, judge, p["question"]) for p, a in zip(probes, said)
                  if p["split"] == "heldout")
    neighbours = [tuple(x) for x in fact["heldout_neighbours"]]
    known = json.loads((root / name / "base_neighbours.json").read_text())
    kept = ask_known(llm, [n for n, k in zip(neighbours, known) if k], settings.probe_max_tokens)
    ppl = llm.perplexity(REFERENCE_TEXT.read_text(encoding="utf-8").strip())
    timing = data.get("timing", {})
    return {
        "fact": name, "variant": variant, "settings": VARIANTS[variant], "rounds": len(data["rounds"]),
        "steps": last.get("steps"), "placement": data.get("placement"), "adapter_scales": data.get("adapter_scales"),
        "early_stops": data.get("early_stops"), "edits": data.get("edits"),
        "efficacy_heldout": counts.get("efficacy_heldout"), "efficacy_train": counts.get("efficacy_train"),
        "requant4_all": [q4_forgotten, len(probes)], "requant4_heldout": [q4_held, len(held)],
        "requant4_answers": [[p["question"], a] for p, a in zip(probes, said)],  # so --rejudge can judge them again
        "neighbours_trained": counts.get("retention_neighbours"),
        "neighbours_heldout": [sum(kept), len(kept)],
        **general_counts(d, base_general(llm, name, root)),
        "perplexity": round(ppl, 2), "train_s": timing.get("train_s"), "reprobe_s": timing.get("reprobe_s"),
        "job_s": round(job_s, 1),
    }


def embedded_llm(out: Path) -> Any:
    """The embedded model, imported into the benchmark's own data folder (OUT/locality-home) unless one is set."""
    os.environ.setdefault("UNSTAR_HOME", str(out / "locality-home"))
    from common import load_embedded_llm

    return load_embedded_llm()


def claimed(claim_dir: str, name: str, variant: str) -> bool:
    """True when this process may run the pair: no claim folder given, or this process created the pair's claim."""
    if not claim_dir:
        return True
    try:
        (Path(claim_dir) / f"{name}__{variant}").mkdir(parents=True)
        return True
    except FileExistsError:
        return False


# Each fact's samples as the table's runs used them (job records, no weights; committed), so a later session adds
# rows trained on the very same samples instead of regenerating them (a full table takes hours on 2 cores).
SAVED_SAMPLES = ROOT / "bench" / "locality_samples"


def restore_samples(name: str, root: Path) -> None:
    """Copy the saved samples of a fact into the jobs folder when it has none."""
    saved, base = SAVED_SAMPLES / name, root / name / "base"
    if (base / "job.json").exists() or not (saved / "job.json").exists():
        return
    base.mkdir(parents=True, exist_ok=True)
    for f in SAMPLE_RECORDS:
        shutil.copy2(saved / f, base / f)
    shutil.copy2(saved / "base_neighbours.json", root / name / "base_neighbours.json")


def save_samples(name: str, root: Path) -> None:
    """Keep a fact's freshly built samples under bench/locality_samples (see SAVED_SAMPLES)."""
    dest = SAVED_SAMPLES / name
    if (dest / "job.json").exists():
        return
    dest.mkdir(parents=True, exist_ok=True)
    for f in SAMPLE_RECORDS:
        shutil.copy2(root / name / "base" / f, dest / f)
    shutil.copy2(root / name / "base_neighbours.json", dest / "base_neighbours.json")


def prepare_fact(llm: Any, name: str, root: Path, results: dict[str, Any], fresh: bool = False) -> None:
    """The fact's samples and the base model's answers to its held-out neighbours (built once, then reused; saved
    ones are used unless `fresh`)."""
    from filelock import FileLock

    from unstar_gui.engine.evaluate.measures import REFERENCE_TEXT

    fact = FACTS[name]
    t0 = time.perf_counter()
    (root / name).mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / name / ".samples.lock")):  # one process builds a fact's samples; the others wait
        if not fresh:
            restore_samples(name, root)
        base_job(llm, name, fact, root)
        nb = root / name / "base_neighbours.json"
        if not nb.exists():
            nb.write_text(json.dumps(ask_known(llm, [tuple(x) for x in fact["heldout_neighbours"]], 64)))
        if not fresh:
            save_samples(name, root)
    if name not in results["base"]:
        with llm.base_model():  # a variant trained earlier in this process may still be attached
            ppl = llm.perplexity(REFERENCE_TEXT.read_text(encoding="utf-8").strip())
        results["base"][name] = {"samples_s": round(time.perf_counter() - t0, 1), "perplexity": round(ppl, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--facts", default=",".join(FACTS))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", default=str(ROOT / "bench" / "out"))
    ap.add_argument("--table", action="store_true", help="print the Markdown table from the results and exit")
    ap.add_argument("--claim", default="",
                    help="a folder shared by several processes: each (fact, variant) runs in the first process that "
                         "creates its claim there (work shared out between processes on a many-core machine)")
    ap.add_argument("--jobs", default="",
                    help="where the facts' samples and the variants' job folders go (default: OUT/locality-jobs); "
                         "several processes may share it")
    ap.add_argument("--variant-major", action="store_true",
                    help="run every fact of one variant before the next variant (default: every variant of a fact)")
    ap.add_argument("--fresh-samples", action="store_true",
                    help="build the facts' samples anew instead of using bench/locality_samples")
    ap.add_argument("--samples-only", action="store_true",
                    help="build each fact's samples (and the base model's held-out neighbour answers), train nothing")
    ap.add_argument("--rejudge", action="store_true",
                    help="re-count the general splits of finished runs from their recorded answers, then print")
    ap.add_argument("--rebase", action="store_true",
                    help="ask the base model the facts' general questions on this machine and re-count the finished "
                         "runs whose job folders are kept against those answers too, then print")
    args = ap.parse_args()
    out = Path(args.out)
    results_path = out / "locality.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {"runs": [], "base": {}}
    if args.rejudge:  # re-count finished runs from their recorded answers with today's rules (no model)
        for r in results["runs"]:
            d = out / "locality-jobs" / r["fact"] / r["variant"]
            if (d / "metrics.jsonl").exists():
                r.update(general_counts(d))
                counts = probe_counts(d, r)
                if any(r.get(k) != v for k, v in counts.items()):
                    r.setdefault("probes_before_rejudge", {k: r.get(k) for k in counts})
                r.update(counts)
        results_path.write_text(json.dumps(results, indent=1))
    if args.rebase:  # the base model's general answers asked here; finished runs whose jobs are kept re-counted
        llm, root = embedded_llm(out), out / "locality-jobs"
        for r in results["runs"]:
            d = root / r["fact"] / r["variant"]
            kept = (d / "metrics.jsonl").exists() and (root / r["fact"] / "base").exists()
            if r["fact"] in args.facts.split(",") and kept:
                r.update(general_counts(d, base_general(llm, r["fact"], root)))
        results_path.write_text(json.dumps(results, indent=1))
    if args.table or args.rejudge or args.rebase:
        print(table(results, args.facts.split(","), args.variants.split(",")))
        name, why = choose_default(results, args.facts.split(","))
        print("\nDefault by the validation rule (choose_default):", name, *why, sep="\n  ")
        return
    llm = embedded_llm(out)
    root = Path(args.jobs) if args.jobs else out / "locality-jobs"
    done = {(r["fact"], r["variant"]) for r in results["runs"]}
    facts, variants = args.facts.split(","), [] if args.samples_only else args.variants.split(",")
    pairs = ([(f, v) for v in variants for f in facts] if args.variant_major else
             [(f, v) for f in facts for v in variants])
    for name in facts if args.samples_only else []:
        prepare_fact(llm, name, root, results, args.fresh_samples)
    for name, variant in pairs:
        if (name, variant) in done or not claimed(args.claim, name, variant):
            continue
        try:
            prepare_fact(llm, name, root, results, args.fresh_samples)
        except Exception as exc:  # e.g. the model does not know the fact: the other facts still run
            print(f"== {name}: no samples ({exc})", flush=True)
            continue
        print(f"== {name} / {variant}", flush=True)
        row = run_variant(llm, name, FACTS[name], variant, root)
        print(json.dumps(row), flush=True)
        results["runs"].append(row)
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=1))
    print(table(results))


def choose_default(results: dict[str, Any], facts: list[str]) -> tuple[str | None, list[str]]:
    """The variant the default should be, chosen without the reported columns (held-out probes, held-out
    neighbours, the general evaluation split): among the variants measured on every fact that forget every trained
    probe (also after 4-bit re-quantization) and keep at least as many trained neighbours as the paper's recipe on
    each fact, the one with the highest mean share of the general validation split. Returns (name, why per line)."""
    runs = {(r["fact"], r["variant"]): r for r in results["runs"]}
    variants = list(dict.fromkeys(r["variant"] for r in results["runs"]))
    why, best, best_score = [], None, -1.0

    def share(pair: Any) -> float:
        return pair[0] / pair[1] if pair and pair[1] else 1.0

    for v in variants:
        rows = [runs.get((f, v)) for f in facts]
        if any(r is None for r in rows):
            why.append(f"{v}: not measured on every fact")
            continue
        bad = []
        for f, r in zip(facts, rows):
            paper = runs.get((f, "paper"))
            q4_train = [r["requant4_all"][0] - r["requant4_heldout"][0], r["requant4_all"][1] - r["requant4_heldout"][1]]
            if share(r.get("efficacy_train")) < 1.0:
                bad.append(f"{f}: a trained probe not forgotten")
            if share(q4_train) < 1.0:
                bad.append(f"{f}: a trained probe back after 4-bit")
            if paper and (r.get("neighbours_trained") or [0])[0] < (paper.get("neighbours_trained") or [0])[0]:
                bad.append(f"{f}: fewer trained neighbours than paper")
        score = sum(share(r["general_validation"]) for r in rows) / len(rows)
        why.append(f"{v}: validation {score:.1%}" + (f"; out ({'; '.join(bad)})" if bad else ""))
        if not bad and score > best_score:
            best, best_score = v, score
    return best, why


def table(results: dict[str, Any], facts: Sequence[str] = (), variants: Sequence[str] = ()) -> str:
    """One row per (fact, variant): shares as hits/items (%), the items being those the base model got right.
    With `facts` / `variants`, only those rows, in that order (fact first); otherwise every row as run."""
    head = ("| fact | variant | trained steps (scale) | trained probes forgotten | held-out forgotten | "
            "4-bit: forgotten (held-out) | neighbours, trained | neighbours, held-out | general, validation | "
            "**general, evaluation** | general, evaluation, rebased | perplexity | train + probe s |")
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    runs = results["runs"]
    if facts or variants:
        fo, vo = list(facts), list(variants)
        runs = sorted((r for r in runs if (not fo or r["fact"] in fo) and (not vo or r["variant"] in vo)),
                      key=lambda r: (fo.index(r["fact"]) if fo else 0, vo.index(r["variant"]) if vo else 0))
    for r in runs:
        stops = r.get("early_stops") or []
        steps = stops[-1]["step"] if stops else r.get("steps")
        scales = r.get("adapter_scales") or []
        scale = f" (x{scales[-1]['factor']:g})" if scales else ""
        edits = r.get("edits") or []
        if edits:  # a subject edit: optimisation steps, and how much stronger the 4-bit check made each edit
            scale = " (edit " + ", ".join(f"x{e.get('strength', 1):g}" + (" undone" if e.get("undone") else "")
                                          for e in edits) + ")"
        if (r.get("rounds") or 1) > 1:
            scale += f", {r['rounds']} rounds"
        q4 = f"{_share(r['requant4_all'])} ({_share(r['requant4_heldout']).split(' ')[0]})"
        secs = round((r.get("train_s") or 0) + (r.get("reprobe_s") or 0))
        lines.append(f"| {r['fact']} | {r['variant']} | {steps}{scale} | {_share(r.get('efficacy_train'))} | "
                     f"{_share(r['efficacy_heldout'])} | {q4} | "
                     f"{_share(r['neighbours_trained'])} | {_share(r['neighbours_heldout'])} | "
                     f"{_share(r['general_validation'])} | **{_share(r['general_eval'])}** | "
                     f"{_share(r.get('general_eval_rebased'))} | {r['perplexity']} | "
                     f"{secs} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
