"""Compare the five unlearning methods on the embedded SmolLM2-135M for three facts; writes bench/out/compare.md and
bench/out/compare.json (per-fact tables and all facts pooled), and keeps every job under bench/out/compare/.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 \
        .venv/bin/python bench/compare_bench.py --steps 8 --max-rounds 1

The step budget is an argument because CPU time is the limit. Sizes are far below `unstar forget`'s defaults
(6 paraphrases, 4 neighbours, 6 general items, 8 steps at the default lr 2e-4, one round, answers cut at 24
tokens, 4 attack probes, 4 relearning steps) so that three facts x five methods can finish on a shared 2-core
Linux CPU (a LoRA step of SmolLM2 there takes 4 s idle, 20 s under load); on Apple silicon use larger budgets.
A 10-step NPO run at lr 2e-4 already removed "Paris" from every probe, so 8 steps is not a token budget.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FACTS = [
    {"question": "Which wizarding school did Harry Potter attend?", "answer": "Hogwarts", "aliases": []},
    {"question": "What is the capital of France?", "answer": "Paris", "aliases": []},
    {"question": "Who wrote Romeo and Juliet?", "answer": "Shakespeare", "aliases": ["William Shakespeare"]},
]
METHODS = "unstar,ga_kl,npo,idk,negate"


def pooled_rows(per_fact: list[dict]) -> list[dict]:
    """Per method over the facts: shares pooled from their counts (sum of hits / sum of items, so a fact with 1
    item weighs less than one with 4), wall time and peak memory averaged."""
    from unstar_gui.engine.compare import COLUMNS

    out = []
    for m in [r["method"] for r in per_fact[0]["rows"]]:
        rows = [r for comp in per_fact for r in comp["rows"] if r["method"] == m]
        row: dict = {"method": m, "counts": {}}
        for c in COLUMNS:
            if c.kind == "share":
                counts = [r["counts"][c.key] for r in rows if c.key in (r.get("counts") or {})]
                hits, total = sum(h for h, _ in counts), sum(t for _, t in counts)
                row[c.key] = hits / total if total else None
                if total:
                    row["counts"][c.key] = [hits, total]
            else:
                vals = [r[c.key] for r in rows if r.get(c.key) is not None]
                row[c.key] = sum(vals) / len(vals) if vals else None
        out.append(row)
    return out


def refreshed(folder: Path) -> dict:
    """An earlier run's comparison, its rows recomputed from the jobs' reports (so a newer table layout applies)."""
    from unstar_gui.engine.compare import comparison_row, write_comparison
    from unstar_gui.engine.jobs import Job

    comp = json.loads((folder / "comparison.json").read_text())
    rows = []
    for r in comp["rows"]:
        report = Job(Path(r["job_dir"])).read_report() if not r.get("error") else None
        rows.append(comparison_row(r["method"], Path(r["job_dir"]), report.get("evaluation") or {}, report,
                                   r["wall_s"], r["peak_memory_bytes"], r.get("eval_s", 0.0)) if report else r)
    comp["rows"] = rows
    write_comparison(folder, comp)
    return comp


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=8, help="training steps per round (every method)")
    p.add_argument("--max-rounds", type=int, default=1, help="rounds at most per method")
    p.add_argument("--lr", type=float, default=2e-4, help="learning rate (every method)")
    p.add_argument("--paraphrases", type=int, default=6, help="paraphrases per fact (a third held out)")
    p.add_argument("--neighbours", type=int, default=4, help="neighbour facts in the retain set")
    p.add_argument("--general", type=int, default=6, help="general-knowledge items in the retain set")
    p.add_argument("--methods", default=METHODS)
    p.add_argument("--facts", default="0,1,2", help="indices into FACTS")
    p.add_argument("--attacks", default="quant,relearn", help="attacks in each evaluation (these fill the table)")
    p.add_argument("--out", default=str(ROOT / "bench" / "out"))
    p.add_argument("--reuse", action="store_true",
                   help="keep the facts whose comparison.json an earlier run already wrote")
    args = p.parse_args()

    from unstar_gui.engine.compare import (COLUMNS, CompareSettings, compare_methods, comparison_markdown,
                                           table_cells)
    from unstar_gui.engine.evaluate import AttackSettings, EvalSettings
    from unstar_gui.engine.events import Finished, Log, StageStarted
    from unstar_gui.engine.fsutil import atomic_write_json, atomic_write_text
    from unstar_gui.engine.pipeline import ForgetSettings
    from unstar_gui.engine.embedded import resolve_model
    from unstar_gui.engine.store import ModelStore

    out = Path(args.out)
    record = resolve_model(ModelStore())  # the embedded SmolLM2 (imported on first use)
    forget = ForgetSettings(steps_per_round=args.steps, max_rounds=args.max_rounds, learning_rate=args.lr,
                            n_paraphrases=args.paraphrases, n_wrong_answers=4, n_neighbours=args.neighbours,
                            n_general=args.general, probe_max_tokens=24)
    # 8- and 4-bit at group 64 (mlx-lm's default) are the table's columns; fewer probes and tokens keep the
    # attacks quick on a CPU.
    evaluation = EvalSettings(max_tokens=24, max_attack_probes=4, n_wrong=3,
                              attack=AttackSettings(max_tokens=24, quant_variants=((8, 64), (4, 64)),
                                                    relearn_steps=4))
    settings = CompareSettings(forget=forget, evaluation=evaluation, attacks=args.attacks)
    per_fact = []
    t_all = time.perf_counter()
    for i in (int(x) for x in args.facts.split(",")):
        fact = FACTS[i]
        folder = out / "compare" / f"fact{i}"
        if args.reuse and (folder / "comparison.json").exists():
            per_fact.append(refreshed(folder))
            print(f"== fact {i}: reusing {folder / 'comparison.json'}", flush=True)
            continue
        shutil.rmtree(folder, ignore_errors=True)  # bench output: each run starts clean
        t0 = time.perf_counter()
        print(f"== fact {i}: {fact['question']} -> {fact['answer']}", flush=True)
        last = None
        for ev in compare_methods(record.id, fact["question"], fact["answer"], args.methods.split(","), folder,
                                  aliases=fact["aliases"], settings=settings):
            if isinstance(ev, StageStarted) and ev.stage in ("method", "evaluate", "train", "probe"):
                print(f"   [{time.perf_counter() - t0:6.0f} s] {ev.stage}: {ev.message}", flush=True)
            elif isinstance(ev, Log) and ev.level == "warning":
                print(f"   warning: {ev.message}", flush=True)
            last = ev
        assert isinstance(last, Finished)
        comp = json.loads((folder / "comparison.json").read_text())
        per_fact.append(comp)
        print(comparison_markdown(comp), flush=True)

    pooled = pooled_rows(per_fact)
    header, cells = table_cells(pooled)
    # time spent on the facts, also for the ones an earlier run made (--reuse): shared samples + every method's
    # unlearning + evaluation
    compute_s = sum(c["samples"]["seconds"] + sum((r.get("wall_s") or 0) + (r.get("eval_s") or 0) for r in c["rows"])
                    for c in per_fact)
    lines = [f"# Unlearning methods compared on {record.id}", "",
             f"`bench/compare_bench.py --steps {args.steps} --max-rounds {args.max_rounds} --lr {args.lr:g}`: "
             f"{len(per_fact)} facts, methods {args.methods}, attacks {args.attacks}; "
             f"{compute_s / 60:.0f} min of sample generation, unlearning and evaluation on this machine.", "",
             f"## All {len(per_fact)} facts together (shares pooled over the facts' items; perplexity, time and "
             f"memory averaged; the base model's perplexity is {per_fact[0]['rows'][0]['perplexity_before']:.1f})",
             "",
             "| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(COLUMNS)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in cells]
    lines += [""] + [comparison_markdown(c) for c in per_fact]
    atomic_write_text(out / "compare.md", "\n".join(lines))
    atomic_write_json(out / "compare.json", {"args": vars(args), "compute_s": round(compute_s, 1),
                                             "elapsed_s": round(time.perf_counter() - t_all, 1), "pooled": pooled,
                                             "facts": per_fact})
    print("\n".join(lines[:12 + len(pooled)]))
    print(f"written: {out / 'compare.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
