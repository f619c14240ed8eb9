"""How much of a subject edit reaches questions it should leave alone, for each way of solving for its key vector u.

A subject edit changes block L's down_proj by dW = delta u^T (engine/subject_edit.py): an input k gets u . k of
delta. The trained paraphrases should get ~1 (`reach`); every other input as little as can be (`leak`). This script
builds the benchmark facts' trained keys (bench/locality_samples) and compares, without any training:

- `min_norm`: the smallest u with K u ~ 1 (no covariance);
- `projector eps`: u kept in the eps null space of the generic covariance (AlphaEdit's projector; eps 0.005, 0.02,
  0.05), the shared chat prefix taken out;
- `covariance` (the job's solve): u minimising u^T C u subject to K u ~ 1 (ROME/MEMIT).

Leak is measured on the general validation split the job may look at (never the evaluation split): per question the
largest |u . k| over its tokens, chat prefix included; and on the job's trained neighbour questions (the
same-subject ones get the edit by design). Writes bench/out/edit_leak.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

FACTS = ("hogwarts", "paris", "shakespeare", "tokyo", "newton", "einstein")
EPS = (0.005, 0.02, 0.05)


def sequence_keys(llm, layer: int, sequences: list[list[int]]) -> list[np.ndarray]:
    """down_proj's inputs at every token of each token sequence, (tokens, d_in) per sequence."""
    import mlx.core as mx

    from unstar_gui.engine.module_swap import swapped

    parent = llm.model.layers[layer].mlp
    out = []
    for tokens in sequences:
        seen = {}

        def rec(m, x, *a, **k):
            seen["x"] = x
            return m(x, *a, **k)

        with swapped([(parent, "down_proj", rec)]):
            mx.eval(llm.model(mx.array([tokens])))
        out.append(np.asarray(seen["x"][0].astype(mx.float32), dtype=np.float64))
    return out


def token_keys(llm, layer: int, questions: list[str]) -> list[np.ndarray]:
    """down_proj's inputs at every token of each chat prompt, (tokens, d_in) per question."""
    return sequence_keys(llm, layer, [llm.chat_tokens(q) for q in questions])


def fact_setup(llm, name: str, offset: int = 0) -> dict:
    """A benchmark fact's saved samples, the block causal tracing picks for its edit (plus `offset`), the generic
    covariance there as the job computes it, and the trained keys at the subject."""
    from unstar_gui.engine import subject_edit as se
    from unstar_gui.engine.antisamples import Fact
    from unstar_gui.engine.locality import choose_placement
    from unstar_gui.engine.nullspace import default_cache_dir, input_covariances, target_paths
    from unstar_gui.engine.pipeline import _covariance_corpus

    d = ROOT / "bench" / "locality_samples" / name
    job = json.loads((d / "job.json").read_text())
    f = job["fact"]
    fact = Fact(question=f["question"], answer=f["answer"], aliases=list(f.get("aliases", [])))
    subject = fact.shape().subject
    rows = {n: [json.loads(x) for x in (d / n).read_text().splitlines() if x.strip()]
            for n in ("retain.jsonl", "antisamples.jsonl", "probes.jsonl")}
    retain = rows["retain.jsonl"]
    gen = choose_placement(llm, fact.question, fact.answer, subject, "traced", "down", 1)
    try:
        while True:
            next(gen)
    except StopIteration as done:
        layer = min(done.value.window[0] + offset, len(llm.model.layers) - 1)
    train_rows = [r for r in retain if r.get("split", "train") == "train"]
    prompts, texts, own = _covariance_corpus(train_rows)
    path = target_paths(llm.model, [layer], ["mlp.down_proj"])[0]
    covs, _, sinks = input_covariances(llm, prompts, texts, [path], default_cache_dir(), extra_prompts=own)
    keys = se.subject_keys(llm.model, layer, se.forget_rows(llm, rows["antisamples.jsonl"], subject))
    return {"layer": layer, "subject": subject, "retain": retain, "train_rows": train_rows,
            "probes": rows["probes.jsonl"], "cov": covs[path] + sinks[path], "cov_plain": covs[path],
            "sinks": sinks[path], "keys": keys,
            "validation": [r["question"] for r in retain if r.get("known") and r.get("kind") == "general"
                           and r.get("split") == "validation"]}


def measure(llm, name: str) -> dict:
    from unstar_gui.engine import subject_edit as se
    from unstar_gui.engine.nullspace import null_projector, without_directions

    s = fact_setup(llm, name)
    layer, train_rows, keys, cov = s["layer"], s["train_rows"], s["keys"], s["cov"]
    val = token_keys(llm, layer, s["validation"])
    nb = {kind: token_keys(llm, layer, [r["question"] for r in train_rows if r.get("known") and r.get("kind") == kind])
          for kind in ("neighbour_subject", "neighbour_answer", "keep")}
    solves = {"min_norm": se.solve_edit(keys, np.ones(1), None, 1e-6)[0]}
    for eps in EPS:
        p = without_directions(null_projector(s["cov_plain"], eps), s["sinks"]).astype(np.float64)
        # AlphaEdit's solve inside the projector's range: u = (P K^T K + lam I)^-1 P K^T 1
        pk = keys @ p
        lam = 1e-2 * float((pk ** 2).sum(axis=1).mean())
        solves[f"projector eps {eps:g}"] = np.linalg.solve(p @ keys.T @ keys + lam * np.eye(p.shape[0]),
                                                           p @ keys.T @ np.ones(len(keys)))
    solves["covariance (job)"] = se.solve_edit(keys, np.ones(1), cov, se.EditSettings().l2)[0]
    out = {"fact": name, "layer": layer, "keys": len(keys), "solves": {}}
    for label, u in solves.items():
        per_q = np.array([np.abs(k @ u).max() for k in val])
        lo, mean = se.reached(keys, u)
        out["solves"][label] = {
            "reach_min": lo, "reach_mean": mean,
            "leak_median": float(np.median(per_q)), "leak_p90": float(np.quantile(per_q, 0.9)),
            "leak_max": float(per_q.max()),
            "neighbours": {kind: float(np.mean([np.abs(k @ u).max() for k in ks])) if ks else None
                           for kind, ks in nb.items()}}
    return out


def table(results: list[dict]) -> str:
    lines = ["| fact (block) | solve for u | reach (min / mean) | validation questions: leak median / p90 / max | "
             "same-subject neighbours | other neighbours and keep-facts |", "|---|---|---:|---:|---:|---:|"]
    for r in results:
        for label, s in r["solves"].items():
            nb = s["neighbours"]
            other = [v for k, v in nb.items() if k != "neighbour_subject" and v is not None]
            lines.append(f"| {r['fact']} ({r['layer']}) | {label} | {s['reach_min']:.2f} / {s['reach_mean']:.2f} | "
                         f"{s['leak_median']:.3f} / {s['leak_p90']:.3f} / {s['leak_max']:.3f} | "
                         f"{nb['neighbour_subject'] if nb['neighbour_subject'] is not None else float('nan'):.2f} | "
                         f"{np.mean(other) if other else float('nan'):.2f} |")
    return "\n".join(lines)


def run(description: str, measure, table, default_out: str) -> None:
    """The command line of a per-fact measurement without training: measure each fact's saved samples on the
    embedded model, write the results as JSON, print them as a Markdown table (`--table`: print only)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--facts", default=",".join(FACTS))
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / default_out))
    ap.add_argument("--table", action="store_true", help="print the table from the results file and exit")
    args = ap.parse_args()
    out = Path(args.out)
    if args.table:
        print(table(json.loads(out.read_text())))
        return
    os.environ.setdefault("UNSTAR_HOME", str(ROOT / "bench" / "out" / "locality-home"))
    from common import load_embedded_llm

    llm = load_embedded_llm()
    results = [measure(llm, name) for name in args.facts.split(",")]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(table(results))


def main() -> None:
    run(__doc__.splitlines()[0], measure, table, "edit_leak.json")


if __name__ == "__main__":
    main()
