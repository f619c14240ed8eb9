"""Can the subject edit leave same-subject neighbours alone by keeping their keys out of u? (no training)

The edit changes block L's down_proj by dW = delta u^T; an input k gets u . k of delta (engine/subject_edit.py).
Same-subject neighbour questions ("Who is Harry Potter's best friend?") have keys at the subject that are near copies
of the trained ones, so they get the edit at about full strength (bench/edit_leak.py). `EditSettings.neighbour_weight`
adds those keys to the solve's covariance (u . k ~ 0 there); `edit_block_offset` moves the edit up from the traced
block. For each fact's saved samples this prints, per setting: the trained keys' share (min), the job's held-out
paraphrases (largest share over their prompt's tokens), the trained same-subject neighbours' share at the subject,
anywhere in their prompt, and anywhere in their own base answer (which often names the subject again), and the leak
into the general validation split (per question the largest share over its tokens: median / p90). Settings:

- the job's default (traced block, no neighbour term);
- `neighbour_weight` 0.3 at the traced block, and 8 blocks up (the `subject_edit_nbsolve` benchmark variant);
- the same 8 blocks up, with every position of the neighbours from the subject on, their answers included, kept out.

Writes bench/out/edit_neighbours.json and prints a Markdown table.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from edit_leak import fact_setup, run, sequence_keys, token_keys  # noqa: E402

# (label, blocks above the traced one, neighbour weight, protect every position from the subject on)
SETTINGS = (("default", 0, 0.0, False), ("nb 0.3", 0, 0.3, False), ("nb 0.3, +8 blocks", 8, 0.3, False),
            ("nb 0.3, +8 blocks, answers too", 8, 0.3, True))


def measure(llm, name: str) -> dict:
    from unstar_gui.engine import subject_edit as se

    out = {"fact": name, "settings": []}
    for label, offset, weight, whole in SETTINGS:
        s = fact_setup(llm, name, offset)
        layer, subject, keys = s["layer"], s["subject"], s["keys"]
        pairs = [(r["question"], r["target"]) for r in s["train_rows"]
                 if r.get("kind") == "neighbour_subject" and r.get("known")]
        rows = se.keep_rows(llm, pairs, subject, se.EditSettings().keep_tokens)
        at_subject = se.subject_keys(llm.model, layer, rows)
        whole_keys = sequence_keys(llm, layer, [r.tokens for r in rows])
        protect = at_subject
        if whole:  # from the subject on: the rest of the question and the model's own answer
            protect = np.concatenate([at_subject] + [k[r.position:] for k, r in zip(whole_keys, rows)])
        u, _ = se.solve_edit(keys, np.ones(1), s["cov"], se.EditSettings().l2, protect=protect,
                             protect_weight=weight)
        val = [float(np.abs(k @ u).max()) for k in token_keys(llm, layer, s["validation"])]
        held = token_keys(llm, layer, [p["question"] for p in s["probes"] if p["split"] == "heldout" and p.get("known")])
        out["settings"].append({
            "label": label, "layer": layer, "reach_min": se.reached(keys, u)[0],
            "heldout_paraphrases": [float(np.abs(k @ u).max()) for k in held],
            "neighbours_at_subject": float(np.mean(np.abs(at_subject @ u))),
            "neighbours_prompt": float(np.mean([np.abs(k[:r.start] @ u).max() for k, r in zip(whole_keys, rows)])),
            "neighbours_answer": float(np.mean([np.abs(k[r.start:] @ u).max() for k, r in zip(whole_keys, rows)])),
            "leak_median": float(np.median(val)), "leak_p90": float(np.quantile(val, 0.9)),
            "u_norm": float(np.linalg.norm(u))})
    return out


def table(results: list[dict]) -> str:
    lines = ["| fact | setting (block) | trained keys, least | held-out paraphrases | same-subject neighbours: at "
             "the subject / in the prompt / in their answer | validation questions: leak median / p90 |",
             "|---|---|---:|---:|---:|---:|"]
    for r in results:
        for s in r["settings"]:
            held = ", ".join(f"{x:.2f}" for x in s["heldout_paraphrases"]) or "-"
            lines.append(f"| {r['fact']} | {s['label']} ({s['layer']}) | {s['reach_min']:.2f} | {held} | "
                         f"{s['neighbours_at_subject']:.2f} / {s['neighbours_prompt']:.2f} / "
                         f"{s['neighbours_answer']:.2f} | {s['leak_median']:.3f} / {s['leak_p90']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    run(__doc__.splitlines()[0], measure, table, "edit_neighbours.json")


if __name__ == "__main__":
    main()
