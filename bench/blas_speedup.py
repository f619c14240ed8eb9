"""Linux: how much faster MLX's CPU backend runs with an optimized BLAS preloaded.

Runs the same workloads in two child processes, one with the bundled reference BLAS and one with Debian's OpenBLAS
preloaded (what the `unstar` launchers do), and prints a markdown table. Results go to bench/out/blas.json.

    .venv/bin/python bench/blas_speedup.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, sys, time
import mlx.core as mx
res = {}
a = mx.random.normal((1024, 1024)); b = mx.random.normal((1024, 1024)); mx.eval(a, b)
t = time.perf_counter()
for _ in range(10):
    mx.eval(a @ b)
res["matmul_1024_x10_s"] = time.perf_counter() - t
from unstar_gui.engine.embedded import resolve_model
from unstar_gui.engine.store import ModelStore
from unstar_gui.engine.llm import LLM
rec = resolve_model(ModelStore())
llm = LLM(rec.path)
qs = ["What is the capital of France?", "Who wrote Romeo and Juliet?", "Which planet is the largest?",
      "Where did Harry Potter go to school?"]
llm.answer(qs[:1], max_tokens=4)
t = time.perf_counter()
outs = llm.answer(qs, max_tokens=32)
dt = time.perf_counter() - t
toks = sum(len(llm.encode(o)) for o in outs)
res["generate_tok_per_s"] = toks / dt
print(json.dumps(res))
"""


def run(preload: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD",)}
    if preload:
        env["LD_PRELOAD"] = preload
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, cwd=ROOT,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    from unstar_gui.engine.backend import find_blas

    blas = find_blas()
    if not blas:
        print("No optimized BLAS found (apt-get install libopenblas0-pthread); nothing to compare.")
        return 1
    ref = run(None)
    fast = run(blas)
    rows = [
        ("1024x1024 float32 matmul x10", f"{ref['matmul_1024_x10_s']:.2f} s", f"{fast['matmul_1024_x10_s']:.3f} s",
         ref["matmul_1024_x10_s"] / fast["matmul_1024_x10_s"]),
        ("SmolLM2-135M batched greedy generation", f"{ref['generate_tok_per_s']:.1f} tok/s",
         f"{fast['generate_tok_per_s']:.1f} tok/s", fast["generate_tok_per_s"] / ref["generate_tok_per_s"]),
    ]
    print("| workload | bundled BLAS | OpenBLAS preloaded | speed-up |")
    print("|---|---|---|---|")
    for name, a, b, x in rows:
        print(f"| {name} | {a} | {b} | {x:.1f}x |")
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "blas.json").write_text(json.dumps({"reference": ref, "openblas": fast, "blas": blas}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
