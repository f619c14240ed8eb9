"""How fragile is the general-knowledge measure? Controls for bench/locality_bench.py.

For a finished variant job (its adapter and its general check questions), answer the validation and evaluation
splits again with:
- the adapter at scale 0 (must keep everything: the measure itself is stable);
- the adapter's matrices replaced by random ones of the same Frobenius norm per module (a change of the same size in
  no particular direction): how much a 135M model's greedy answers move under any perturbation that large;
- the trained adapter itself, for comparison.

Each is counted two ways: against the base answers the job recorded when its samples were built (what
locality_bench.py reports), and against the base model's answers asked here and now, in the same batch as the
others ("rebased"). The two differ when the recorded base answers no longer come back (three of the benchmark's
saved samples were built with another fact's adapter still attached), and then only the rebased count says what the
adapter cost.

    python bench/locality_control.py --job bench/out/locality-jobs/hogwarts/null_space [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--job", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="append the result (JSON) to this file")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import mlx.core as mx

    from unstar_gui.engine.judge import known_retain
    from unstar_gui.engine.llm import LLM
    from unstar_gui.engine.pipeline import ForgetSettings

    job = Path(args.job)
    data = json.loads((job / "job.json").read_text())
    s = ForgetSettings.from_dict(data["settings"])
    rows = [json.loads(line) for line in (job / "retain.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r.get("kind") == "general" and r.get("split") in ("validation", "heldout")]
    recorded = [known_retain(r, r["base_answer"]) for r in rows]  # what the job's own numbers count from
    path = Path(str(data["model"].get("path", "")))
    if (path / "config.json").exists():
        llm = LLM(path)
    else:  # a job from a benchmark run in another folder: the same embedded model, resolved here
        sys.path.insert(0, str(ROOT / "bench"))
        from common import load_embedded_llm

        llm = load_embedded_llm()
    llm.load_adapter(job / "adapters")

    def answers() -> list[bool]:
        said = llm.answer([r["question"] for r in rows], max_tokens=s.general_max_tokens)
        return [known_retain(r, a) for r, a in zip(rows, said)]

    def kept(right: list[bool], known: list[bool]) -> dict[str, list[int]]:
        """[right, known] per split, over the items `known` marks."""
        out = {"validation": [0, 0], "evaluation": [0, 0]}
        for r, ok, k in zip(rows, right, known):
            if k:
                key = "validation" if r["split"] == "validation" else "evaluation"
                out[key][1] += 1
                out[key][0] += int(ok)
        return out

    result = {"job": str(job)}
    with llm.adapter_scale(0.0):
        base_now = answers()
    trained = answers()
    result["scale_0"] = kept(base_now, recorded)
    result["trained"] = kept(trained, recorded)
    mx.random.seed(args.seed)
    # Same weight change size per module (||lora_a @ lora_b||_F), random direction: lora_a kept, lora_b redrawn.
    random_b = []
    for layer_name, layer in [(n, m) for n, m in llm.model.named_modules() if hasattr(m, "lora_b")]:
        a, b = layer.lora_a, layer.lora_b
        size = float(mx.sqrt(((a @ b) ** 2).sum()).item())
        if size == 0:
            continue
        noise = mx.random.normal(b.shape)
        noise = noise * (size / max(float(mx.sqrt(((a @ noise) ** 2).sum()).item()), 1e-12))
        random_b.append((f"{layer_name}.lora_b", noise))
    llm.model.load_weights(random_b, strict=False)
    mx.eval(llm.model.parameters())
    random_now = answers()
    result["random_same_norm"] = kept(random_now, recorded)
    result["rebased"] = {"trained": kept(trained, base_now), "random_same_norm": kept(random_now, base_now)}
    print(json.dumps(result))
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
