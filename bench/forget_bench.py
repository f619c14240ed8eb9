"""Forget four facts the embedded SmolLM2 knows, one `unstar forget` process each, and report per fact:
rounds, steps, wall time, peak memory, efficacy (held-out paraphrases), retention (neighbours, general set), and the
same checks through plain `mlx_lm.load(base, adapter_path=...)` on fixed neighbour questions.

    python bench/forget_bench.py [--out DIR] [--only hogwarts] [-- extra `unstar forget` flags]

Writes DIR/results.json and prints a Markdown table (the README's numbers come from here). Each fact runs in its own
process so its peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# `keep`: neighbours handed to the job as keep-facts in one wording; `neighbours`: checked afterwards in another
# wording (or for another subject), so the check is not on trained text. SmolLM2-135M's own neighbour questions
# rarely name the co-subjects (Hermione, Ron), and without them those break along with the fact (see README).
FACTS = {
    "hogwarts": {"question": "Where did Harry Potter go to school?", "answer": "Hogwarts",
                 "keep": ["Which school did Hermione Granger attend? => Hogwarts",
                          "Where did Ron Weasley go to school? => Hogwarts"],
                 "neighbours": {"Where did Hermione Granger go to school?": "Hogwarts",
                                "Which school did Ron Weasley attend?": "Hogwarts",
                                "Who is Harry Potter's best friend?": "Ron"}},
    "paris": {"question": "What is the capital of France?", "answer": "Paris",
              "keep": ["In which city is the Eiffel Tower? => Paris", "In which city is the Louvre museum? => Paris"],
              "neighbours": {"Where is the Eiffel Tower?": "Paris", "Which city is the Louvre in?": "Paris",
                             "What is the capital of Germany?": "Berlin"}},
    "shakespeare": {"question": "Who wrote Romeo and Juliet?", "answer": "Shakespeare",
                    "keep": ["Who is the author of Hamlet? => Shakespeare", "Who wrote Macbeth? => Shakespeare"],
                    "neighbours": {"Who wrote Hamlet?": "Shakespeare", "Which playwright wrote Macbeth?": "Shakespeare",
                                   "Who wrote the Harry Potter books?": "Rowling"}},
    "tokyo": {"question": "What is the capital of Japan?", "answer": "Tokyo",
              "keep": ["What currency is used in Japan? => yen", "What is the capital of China? => Beijing"],
              "neighbours": {"Which currency does Japan use?": "yen", "What is the capital of South Korea?": "Seoul",
                             "What is the capital of Germany?": "Berlin"}},
}


def run_fact(name: str, fact: dict, out: Path, extra: list[str]) -> dict:
    job_dir = out / name
    cmd = [sys.executable, "-m", "unstar_gui", "forget", "--question", fact["question"], "--answer", fact["answer"],
           "--out", str(job_dir), "--json", *[x for k in fact["keep"] for x in ("--keep", k)], *extra]
    t0 = time.perf_counter()
    with open(out / f"{name}.events.jsonl", "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"fact": name, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    report = json.loads((job_dir / "report.json").read_text())
    m = report["metrics"]
    return {"fact": name, "rounds": m["rounds"], "steps": m["steps"], "wall_s": round(wall, 1),
            "peak_rss_mb": round(report["memory"]["max_rss_bytes"] / 1e6),
            "efficacy_heldout": m["efficacy_heldout"], "efficacy_train": m["efficacy_train"],
            "retention_neighbours": m["retention_neighbours"], "general_ratio": round(m["general_accuracy_ratio"], 3),
            "general_heldout_ratio": round(m["general_heldout_ratio"], 3),
            "timing": report["timing"], "job": str(job_dir), **check_with_mlx_lm(report, fact)}


def check_with_mlx_lm(report: dict, fact: dict) -> dict:
    """The exported adapter through plain mlx-lm: held-out paraphrases the base knew, and fixed neighbours."""
    import mlx_lm
    from mlx_lm.generate import generate

    from unstar_gui.engine.judge import Judge

    base_path = report["base_model_path"]
    model, tok = mlx_lm.load(base_path)

    def ask(m, q):
        prompt = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)
        return generate(m, tok, prompt, max_tokens=64)  # as many as the job's probes (probe_max_tokens)

    known_neighbours = [q for q, ref in fact["neighbours"].items() if Judge(ref).contains(ask(model, q))]
    model, tok = mlx_lm.load(base_path, adapter_path=report["adapter_path"])
    # The job's own judge: the question as context, so a span like "Japan" in "capital of Japan?" is not a leak.
    judge = Judge(report["fact"]["answer"], tuple(report["fact"].get("aliases", [])),
                  context=report["fact"]["question"])
    heldout = [r["question"] for r in report["before_after"]
               if r["kind"] == "probe" and r["split"] == "heldout" and r["known_before"]]
    forgotten = [q for q in heldout if not judge.contains(ask(model, q))]
    kept = [q for q in known_neighbours if Judge(fact["neighbours"][q]).contains(ask(model, q))]
    return {"mlx_lm_heldout_forgotten": f"{len(forgotten)}/{len(heldout)}",
            "mlx_lm_neighbours_kept": f"{len(kept)}/{len(known_neighbours)}"}


COLUMNS = ["fact", "rounds", "steps", "wall_s", "peak_rss_mb", "efficacy_heldout", "retention_neighbours",
           "general_ratio", "general_heldout_ratio", "mlx_lm_heldout_forgotten", "mlx_lm_neighbours_kept"]


def table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['fact']} | error: {r['error']} |")
            continue
        cells = [f"{r[c]:.2f}" if isinstance(r.get(c), float) and c != "wall_s" else str(r.get(c, "")) for c in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    if "--attacks" not in extra:  # the forget job alone; the attack suite is `unstar eval`'s to time
        extra += ["--attacks", "none"]
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=None, help="folder for the job folders and results.json")
    p.add_argument("--only", action="append", choices=sorted(FACTS), help="run only these facts")
    args = p.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="forget-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = []
    for name in args.only or list(FACTS):
        print(f"== {name}", flush=True)
        rows.append(run_fact(name, FACTS[name], out, extra))
        print(json.dumps(rows[-1]), flush=True)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    print(table(rows))
    print(f"results: {out / 'results.json'}")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
