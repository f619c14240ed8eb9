"""A control for the locality table's 4-bit column: the base model alone (no adapter), every matrix re-quantized to
4 bits (group 64) as the quantization attack does (and to 8 bits, the attack's mildest setting), asked each
benchmark fact's probes that the full-precision base model knew. A probe the re-quantized base model no longer
answers with the fact counts as "forgotten after 4-bit" for every variant without any adapter's doing, so the
column is only as strict as this control says.

    python bench/requant_base.py [--facts hogwarts,paris] [--bits 4,8] [--out bench/out/requant_base.json]

Needs the facts' samples (bench/locality_bench.py builds them in OUT/locality-jobs/<fact>/base).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from locality_bench import FACTS, embedded_llm  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--facts", default=",".join(FACTS))
    ap.add_argument("--jobs", default=str(ROOT / "bench" / "out" / "locality-jobs"))
    ap.add_argument("--bits", default="4,8", help="re-quantize to each of these widths (group 64)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "requant_base.json"))
    args = ap.parse_args()
    from unstar_gui.engine.evaluate.attacks import requantized
    from unstar_gui.engine.jobs import Job
    from unstar_gui.engine.pipeline import _fact, probe_leaks
    from unstar_gui.engine.settings import ForgetSettings

    llm = embedded_llm(ROOT / "bench" / "out")
    max_tokens = ForgetSettings().probe_max_tokens
    rows = []
    for name in args.facts.split(","):
        job = Job(Path(args.jobs) / name / "base")
        judge = _fact(job.read()).judge()
        probes = [p for p in job.read_rows("probes.jsonl") if p.get("known")]
        for bits in (int(b) for b in args.bits.split(",")):
            with requantized(llm, bits, 64):
                said = llm.answer([p["question"] for p in probes], max_tokens=max_tokens)
            lost = [(p["style"], p["question"], a) for p, a in zip(probes, said)
                    if not probe_leaks(p["style"], a, judge, p["question"])]
            rows.append({"fact": name, "bits": bits, "group_size": 64, "known": len(probes),
                         "lost_by_requantization_alone": len(lost), "lost": [list(x) for x in lost]})
            print(f"{name}, {bits}-bit: the re-quantized base model no longer gives {len(lost)} of the {len(probes)} "
                  f"probes it knew", flush=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
