"""What the subject edit's 4-bit check buys: a finished subject-edit job's edit applied at each strength the check
tries (1, 1.5, 2.25, 3.375x of the fitted change), measured on trained items only.

Per strength: the trained probes the base model knew (the question and its trained paraphrases, the ones the
check looks at) forgotten as the model is and after every matrix is re-quantized to 4 bits (group 64), the trained
neighbours and keep-facts kept, and the first words of "Tell me about {subject}." (does the model still know who the
subject is?), and which probes leak (style and question; does the edit miss the probes that name the answer?).
Results are appended to OUT (one JSON line per strength).

    python bench/edit_strength.py --job bench/out/locality-jobs/einstein/subject_edit [--strengths 1,3.375]
        [--out bench/out/edit_strength.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

STRENGTHS = (1.0, 1.5, 2.25, 3.375)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--job", required=True, help="a finished job folder with update=subject_edit")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "edit_strength.jsonl"))
    ap.add_argument("--strengths", default=",".join(f"{s:g}" for s in STRENGTHS))
    args = ap.parse_args()
    os.environ.setdefault("UNSTAR_HOME", str(ROOT / "bench" / "out" / "locality-home"))
    from common import load_embedded_llm

    from unstar_gui.engine.evaluate.attacks import requantized
    from unstar_gui.engine.jobs import Job
    from unstar_gui.engine.judge import known_retain
    from unstar_gui.engine.pipeline import _fact, probe_leaks, trained_neighbours, trained_probes

    job = Job(Path(args.job))
    data = job.read()
    fitted = float(data["edits"][0]["strength"])  # the adapter holds the edit at the strength the job kept
    subject = data["placement"]["traced"]["subject"]
    judge = _fact(data).judge()
    probes = trained_probes(job)  # the rows the job's own checks look at
    kept_rows = trained_neighbours(job)
    llm = load_embedded_llm()
    llm.load_adapter(job.adapters_dir)

    def forgotten(answers: list[str]) -> tuple[list[int], list[list[str]]]:
        leaks = [[p["style"], p["question"]] for p, a in zip(probes, answers)
                 if probe_leaks(p["style"], a, judge, p["question"])]
        return [len(probes) - len(leaks), len(probes)], leaks

    with open(args.out, "a", encoding="utf-8") as out:
        for strength in (float(s) for s in args.strengths.split(",")):
            with llm.adapter_scale(strength / fitted):
                as_is, leaks = forgotten(llm.answer([p["question"] for p in probes], max_tokens=64))
                with requantized(llm, 4, 64):
                    after_4bit, leaks_4bit = forgotten(llm.answer([p["question"] for p in probes], max_tokens=64))
                said = llm.answer([r["question"] for r in kept_rows], max_tokens=64)
                about = llm.answer([f"Tell me about {subject}."], max_tokens=30)[0]
            row = {"job": str(args.job), "fact": data["fact"]["question"], "job_strength": fitted,
                   "strength": strength, "trained_forgotten": as_is, "trained_forgotten_4bit": after_4bit,
                   "neighbours_trained": [sum(known_retain(r, a) for r, a in zip(kept_rows, said)), len(kept_rows)],
                   "tell_me_about": about, "leaking": leaks, "leaking_4bit": leaks_4bit}
            print(json.dumps(row), flush=True)
            out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
