"""Performance, side by side in one run: where a forget job's time and memory go, against mlx-lm and the seed design.

    .venv/bin/python bench/perf.py [--quick] [--only train,generate,e2e,blas,memory,hotpaths]

Sections (each in its own child process, so peak memory and model loads are its own):
  train     our Trainer vs mlx-lm's `tuner.trainer.train`: same model (SmolLM2, dequantized float32), same data,
            batch, sequence length, LoRA layers and rank; tokens/s of real (non-padding) tokens, alternating blocks
            so load changes on a shared machine hit both; peak memory vs engine/memory.py's estimate; gradient
            checkpointing on vs off.
  generate  anti-sample generation prompts: one batched `LLM.generate_tokens` call vs one prompt at a time.
  e2e       forget one fact end to end (reduced settings, in-process, instrumented): wall time per pipeline stage and
            per activity (generation, judging/embeddings, training, scoring, evaluation), peak memory, and I/O per
            round (model loads, bytes written) against the seed pipeline's design.
  blas      the Linux OpenBLAS preload (bench/blas_speedup.py's children).
  memory    engine/memory.py's estimate vs measured peak on the tiny model; estimates for the catalog's Mistral 7B
            4-bit on 8 GB and 16 GB Macs.
  hotpaths  bench/profile_hot_paths.py's before/after comparisons (judging, wrong-answer filtering, collation).
Writes bench/results.json and bench/out/perf.md (the README table). The machine's load average is recorded: on a
shared machine absolute times move, ratios measured side by side much less.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

SECTIONS = ("train", "generate", "e2e", "blas", "memory", "hotpaths")
RESULTS = ROOT / "bench" / "results.json"
TABLE = ROOT / "bench" / "out" / "perf.md"


from common import load_model, quiet as _quiet, tofu_pairs  # noqa: E402 (bench/ is on sys.path above)


class Timers:
    """Wall time per activity, from wrapped functions; nested wrapped calls count for the outermost only."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._depth = 0
        self._undo: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, name: str, key: str) -> None:
        original = getattr(owner, name)
        timers = self

        def wrapper(*args, **kwargs):
            if timers._depth:
                return original(*args, **kwargs)
            timers._depth += 1
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                timers._depth -= 1
                timers.add(key, time.perf_counter() - t0)

        setattr(owner, name, wrapper)
        self._undo.append((owner, name, original))

    def wrap_generator(self, owner: Any, name: str, key: str) -> None:
        """Time spent inside a generator function's steps (not in its consumer's code between yields)."""
        original = getattr(owner, name)
        timers = self

        def wrapper(*args, **kwargs):
            gen = original(*args, **kwargs)
            while True:
                timers._depth += 1
                t0 = time.perf_counter()
                try:
                    ev = next(gen)
                except StopIteration as stop:
                    return stop.value
                finally:
                    timers._depth -= 1
                    timers.add(key, time.perf_counter() - t0)
                yield ev

        setattr(owner, name, wrapper)
        self._undo.append((owner, name, original))

    def add(self, key: str, seconds: float) -> None:
        self.totals[key] = self.totals.get(key, 0.0) + seconds
        self.calls[key] = self.calls.get(key, 0) + 1

    def undo(self) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()


def proc_io() -> dict[str, int]:
    """This process's I/O counters (Linux): bytes passed to read/write calls and bytes that reached the disk."""
    path = Path("/proc/self/io")
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        k, _, v = line.partition(":")
        out[k.strip()] = int(v)
    return out


def peak() -> dict[str, int]:
    from unstar_gui.engine.memory import measured_peak

    return measured_peak()


# 1. training throughput -----------------------------------------------------------------------------------------------
def section_train(cfg: dict[str, Any]) -> dict[str, Any]:
    import mlx.core as mx

    from unstar_gui.engine.llm import LoraSettings
    from unstar_gui.engine.memory import estimate_memory
    from unstar_gui.engine.methods import MethodContext, get_method
    from unstar_gui.engine.trainer import Trainer, TrainSettings, batch_indices, encode_pairs

    b, seq, rank, layers, steps, blocks = (cfg[k] for k in ("batch", "seq", "rank", "layers", "steps", "blocks"))
    lora = LoraSettings(rank=rank, num_layers=layers)
    llm = load_model()
    examples = encode_pairs(llm, tofu_pairs(64), seq)

    def ours(block: int, checkpoint: bool = False, compile: bool = False) -> dict[str, Any]:
        method = get_method("unstar")
        method.prepare(MethodContext("q", "a"))
        settings = TrainSettings(batch_size=b, retain_batch_size=0, max_seq_len=seq, grad_checkpoint=checkpoint,
                                 compile=compile)
        trainer = Trainer(llm, method, settings, seed=0)
        trainer.attach(lora)
        mx.clear_cache()
        mx.reset_peak_memory()
        times, cpu, tokens, padded = [], [], 0, 0
        t0, c0 = time.perf_counter(), time.process_time()
        for ev in trainer.train_round(examples, [], block, steps + 1):
            t1, c1 = time.perf_counter(), time.process_time()
            step = ev.step - 1
            if step > 0:  # step 0 warms up (graph building, allocator)
                times.append(t1 - t0)
                cpu.append(c1 - c0)
                rows = [examples[i] for i in batch_indices(len(examples), b, step, f"0:{block}:forget")]
                tokens += sum(len(e.tokens) for e in rows)
                width = max(len(e.tokens) for e in rows)
                padded += len(rows) * (width + (-width) % 16)
            t0, c0 = time.perf_counter(), time.process_time()
        llm.detach_lora()
        return {"seconds": sum(times), "cpu_seconds": sum(cpu), "steps": len(times), "tokens": tokens,
                "padded_tokens": padded,
                "peak_mlx_bytes": int(mx.get_peak_memory())}

    def theirs(block: int) -> dict[str, Any]:
        import mlx.optimizers as optim
        from mlx_lm.tuner import trainer as mt

        llm.attach_lora(lora, seed=0)
        dataset = [(e.tokens, e.start) for e in examples]
        record = {"times": [], "cpu": [], "tokens": 0, "padded": 0}
        last = [0.0, 0.0]

        def timed_batches(*args, **kwargs):
            for i, (batch, lengths) in enumerate(mt.iterate_batches(*args, **kwargs)):
                now, now_cpu = time.perf_counter(), time.process_time()
                if i >= 2:  # the time since the previous batch was handed out is one whole step
                    record["times"].append(now - last[0])
                    record["cpu"].append(now_cpu - last[1])
                    record["tokens"] += pending[0]
                    record["padded"] += pending[1]
                pending[:] = [int(lengths[:, 1].sum().item()), int(batch.shape[0] * batch.shape[1])]
                last[:] = [now, now_cpu]
                yield batch, lengths

        pending = [0, 0]
        args = mt.TrainingArgs(batch_size=b, iters=steps + 2, steps_per_report=10 ** 6, steps_per_eval=10 ** 6,
                               steps_per_save=10 ** 6, max_seq_length=seq,
                               adapter_file=str(Path(tempfile.mkdtemp()) / "adapters.safetensors"))
        mx.clear_cache()
        mx.reset_peak_memory()
        with _quiet():
            mt.train(model=llm.model, optimizer=optim.Adam(learning_rate=2e-4), train_dataset=dataset, args=args,
                     iterate_batches=timed_batches)
        llm.detach_lora()
        return {"seconds": sum(record["times"]), "cpu_seconds": sum(record["cpu"]), "steps": len(record["times"]),
                "tokens": record["tokens"],
                "padded_tokens": record["padded"], "peak_mlx_bytes": int(mx.get_peak_memory())}

    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "mlx_lm": [], "checkpointed": [], "compiled": []}
    for block in range(blocks):  # alternate, so a change in machine load hits every side
        runs["ours"].append(ours(block))
        runs["mlx_lm"].append(theirs(block))
        runs["checkpointed"].append(ours(block, checkpoint=True))
        runs["compiled"].append(ours(block, compile=True))
    plain_peak = max(r["peak_mlx_bytes"] for r in runs["ours"])

    def total(rs):
        s = sum(r["seconds"] for r in rs)
        tok = sum(r["tokens"] for r in rs)
        pad = sum(r["padded_tokens"] for r in rs)
        cpu = sum(r["cpu_seconds"] for r in rs)
        return {"tokens_per_s": tok / s, "padded_tokens_per_s": pad / s, "s_per_step": s / sum(r["steps"] for r in rs),
                "tokens_per_cpu_s": tok / cpu, "padded_tokens_per_cpu_s": pad / cpu,
                "steps": sum(r["steps"] for r in rs), "padding_share": 1 - tok / pad if pad else 0.0,
                "blocks": [round(r["tokens"] / r["seconds"], 1) for r in rs],
                "peak_mlx_bytes": max(r["peak_mlx_bytes"] for r in rs)}

    result = {"config": cfg, "ours": total(runs["ours"]), "mlx_lm": total(runs["mlx_lm"]),
              "ours_compiled": total(runs["compiled"])}
    result["ratio_compiled"] = result["ours_compiled"]["tokens_per_s"] / result["mlx_lm"]["tokens_per_s"]
    result["ratio_compiled_cpu"] = result["ours_compiled"]["tokens_per_cpu_s"] / result["mlx_lm"]["tokens_per_cpu_s"]
    result["ratio"] = result["ours"]["tokens_per_s"] / result["mlx_lm"]["tokens_per_s"]
    result["ratio_padded"] = result["ours"]["padded_tokens_per_s"] / result["mlx_lm"]["padded_tokens_per_s"]
    result["ratio_cpu"] = result["ours"]["tokens_per_cpu_s"] / result["mlx_lm"]["tokens_per_cpu_s"]
    result["ratio_padded_cpu"] = result["ours"]["padded_tokens_per_cpu_s"] / result["mlx_lm"]["padded_tokens_per_cpu_s"]
    est = estimate_memory(llm, {"rank": rank, "num_layers": layers, "batch_size": b, "retain_batch_size": 0,
                                "max_seq_len": seq}, device="cpu", available_bytes=1 << 40, include_evaluation=False)
    est_ck = estimate_memory(llm, {"rank": rank, "num_layers": layers, "batch_size": b, "retain_batch_size": 0,
                                   "max_seq_len": seq, "grad_checkpoint": True}, device="cpu",
                             available_bytes=1 << 40, include_evaluation=False)
    train_part = lambda e: e.weights_bytes + e.lora_bytes + e.optimizer_bytes + e.activations_bytes  # noqa: E731
    # the estimate is for full-length rows; these batches are shorter, so compare at the widths actually trained
    width = result["ours"]["padded_tokens_per_s"] and (sum(r["padded_tokens"] for r in runs["ours"]) /
                                                        sum(r["steps"] for r in runs["ours"]) / b)
    est_w = estimate_memory(llm, {"rank": rank, "num_layers": layers, "batch_size": b, "retain_batch_size": 0,
                                  "max_seq_len": int(round(width))}, device="cpu", available_bytes=1 << 40,
                            include_evaluation=False)
    checkpointed = total(runs["checkpointed"])
    result["checkpointing"] = {"s_per_step": checkpointed["s_per_step"],
                               "tokens_per_cpu_s": checkpointed["tokens_per_cpu_s"],
                               "peak_mlx_bytes": checkpointed["peak_mlx_bytes"], "peak_without": plain_peak,
                               "estimate_without": train_part(est), "estimate_with": train_part(est_ck)}
    result["memory"] = {"mean_width": width, "estimate_at_mean_width": train_part(est_w), "measured": plain_peak,
                        "ratio": train_part(est_w) / plain_peak}
    # full-length rows: the estimate's own case (the pipeline's max_seq_len), one step each way
    result["full_length"] = full_length_memory(llm, cfg)
    return result


def full_length_memory(llm, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Measured peak of one training step on rows filling the whole window, vs the estimate, with and without
    gradient checkpointing."""
    import mlx.core as mx

    from unstar_gui.engine.llm import LoraSettings
    from unstar_gui.engine.memory import estimate_memory
    from unstar_gui.engine.methods import MethodContext, get_method
    from unstar_gui.engine.trainer import Trainer, TrainSettings, encode_pairs

    long = "Hogwarts is a school in Scotland where young wizards learn magic and many other things. " * 20
    rows = encode_pairs(llm, [(f"Question {i}: where did Harry Potter go to school?", long) for i in range(8)],
                        cfg["seq"])
    out = []
    for checkpoint in (False, True):
        method = get_method("unstar")
        method.prepare(MethodContext("q", "a"))
        settings = TrainSettings(batch_size=cfg["batch"], retain_batch_size=cfg["batch"], max_seq_len=cfg["seq"],
                                 grad_checkpoint=checkpoint)
        trainer = Trainer(llm, method, settings)
        trainer.attach(LoraSettings(rank=cfg["rank"], num_layers=cfg["layers"]))
        mx.clear_cache()
        mx.reset_peak_memory()
        t0 = time.perf_counter()
        list(trainer.train_round(rows, rows, 0, 1))
        seconds = time.perf_counter() - t0
        measured = int(mx.get_peak_memory())
        llm.detach_lora()
        est = estimate_memory(llm, settings.__dict__ | {"rank": cfg["rank"], "num_layers": cfg["layers"]},
                              device="cpu", available_bytes=1 << 40, include_evaluation=False)
        estimate = est.weights_bytes + est.lora_bytes + est.optimizer_bytes + est.activations_bytes
        out.append({"grad_checkpoint": checkpoint, "rows": 2 * cfg["batch"], "seq": cfg["seq"], "seconds": seconds,
                    "measured_bytes": measured, "estimate_bytes": estimate, "ratio": estimate / measured})
    return out


# 2. batched vs one-at-a-time generation -------------------------------------------------------------------------------
def generation_prompts(llm, n: int) -> list[list[int]]:
    """The rationale prompts anti-sample generation really sends (few-shot, completion mode)."""
    from unstar_gui.engine.antisamples import Fact
    from unstar_gui.engine.prompts import load_prompt

    template = load_prompt("rationale.txt")
    shape = Fact("Where did Harry Potter go to school?", "Hogwarts").shape()
    pairs = tofu_pairs(n)
    texts = [template.render(**shape.slots(question=q, wrong=t.split(".")[0])) for q, t in pairs]
    return [llm.chat_tokens(t) if template.mode == "chat" else llm.encode(t) for t in texts]


def section_generate(cfg: dict[str, Any]) -> dict[str, Any]:
    import mlx.core as mx

    from unstar_gui.engine.memory import estimate_memory

    llm = load_model()
    prompts = generation_prompts(llm, cfg["prompts"])
    max_tokens = cfg["max_tokens"]
    llm.generate_tokens(prompts[:2], max_tokens=4)  # warm-up
    out: dict[str, Any] = {"config": cfg, "prompt_tokens_mean": sum(map(len, prompts)) / len(prompts)}
    for rep in range(cfg["repeats"]):  # alternate, so load changes hit both
        mx.reset_peak_memory()
        t0 = time.perf_counter()
        batched = llm.generate_tokens(prompts, max_tokens=max_tokens)
        tb = time.perf_counter() - t0
        gen_peak = int(mx.get_peak_memory())
        t0 = time.perf_counter()
        single = [llm.generate_tokens([p], max_tokens=max_tokens)[0] for p in prompts]
        ts = time.perf_counter() - t0
        t0 = time.perf_counter()
        chunked = llm.generate_tokens(prompts, max_tokens=max_tokens, batch_size=cfg["chunk"])
        tc = time.perf_counter() - t0
        for key, seconds, texts in (("batched", tb, batched), ("one_at_a_time", ts, single),
                                    ("chunked", tc, chunked)):
            tokens = sum(len(llm.encode(t)) for t in texts)
            slot = out.setdefault(key, {"seconds": 0.0, "tokens": 0})
            slot["seconds"] += seconds
            slot["tokens"] += tokens
        out["same_outputs"] = sum(a == b for a, b in zip(batched, single))
        out["peak_mlx_bytes"] = max(out.get("peak_mlx_bytes", 0), gen_peak)
    for key in ("batched", "one_at_a_time", "chunked"):
        out[key]["tokens_per_s"] = out[key]["tokens"] / out[key]["seconds"]
    out["speedup"] = out["one_at_a_time"]["seconds"] / out["batched"]["seconds"]
    out["speedup_vs_chunked"] = out["chunked"]["seconds"] / out["batched"]["seconds"]
    est = estimate_memory(llm, {"generation_batch": len(prompts), "prompt_tokens": int(out["prompt_tokens_mean"]),
                                "answer_tokens": max_tokens}, device="cpu", available_bytes=1 << 40)
    out["memory"] = {"measured": out["peak_mlx_bytes"], "estimate": est.weights_bytes + est.generation_bytes,
                     "ratio": (est.weights_bytes + est.generation_bytes) / out["peak_mlx_bytes"]}
    return out


# 3 + 4. end to end, stages, I/O ---------------------------------------------------------------------------------------
def section_e2e(cfg: dict[str, Any]) -> dict[str, Any]:
    import mlx.core as mx
    import mlx_lm

    from forget_bench import FACTS
    from unstar_gui.engine import embeddings, judge, llm as llm_mod, pipeline, trainer
    from unstar_gui.engine.events import Checkpoint, Finished, StageStarted
    from unstar_gui.engine.fsutil import dir_size
    from unstar_gui.engine.embedded import resolve_model
    from unstar_gui.engine.store import ModelStore

    fact = FACTS[cfg["fact"]]
    timers = Timers()
    loads = {"mlx_lm.load": 0}
    original_load = mlx_lm.load

    def counting_load(*args, **kwargs):
        loads["mlx_lm.load"] += 1
        return original_load(*args, **kwargs)

    mlx_lm.load = counting_load
    timers.wrap(llm_mod.LLM, "generate_tokens", "generation")
    timers.wrap(llm_mod.LLM, "answer_logprobs", "scoring")
    timers.wrap(llm_mod.LLM, "perplexity", "scoring")
    for name in ("verdicts", "too_close"):
        timers.wrap(judge.Judge, name, "judging")
    timers.wrap(embeddings, "embed", "judging")
    timers.wrap_generator(trainer.Trainer, "train_round", "training")

    extra = {"attacks": ",".join(cfg["attacks"])} if "attacks" in pipeline.ForgetSettings.__dataclass_fields__ else {}
    settings = pipeline.ForgetSettings(**cfg["settings"], **extra)
    out_dir = Path(tempfile.mkdtemp(prefix="perf-e2e-")) / "job"
    request = pipeline.ForgetRequest(question=fact["question"], answer=fact["answer"], settings=settings,
                                     out_dir=out_dir)
    resolve_model(ModelStore())  # the embedded model is imported before the clock starts
    io0 = proc_io()
    mx.reset_peak_memory()
    stages: list[tuple[str, float]] = []
    checkpoints = 0
    finished = None
    t0 = time.perf_counter()
    with _quiet():
        for ev in pipeline.run_forget(request):
            if isinstance(ev, StageStarted):
                stages.append((ev.stage, time.perf_counter()))
            elif isinstance(ev, Checkpoint):
                checkpoints += 1
            elif isinstance(ev, Finished):
                finished = ev
    t_pipeline = time.perf_counter() - t0
    io1 = proc_io()
    pipeline_timers = dict(timers.totals)
    report = json.loads((out_dir / "report.json").read_text())
    evaluation_ran = bool(report.get("evaluation"))
    eval_seconds = 0.0
    if not evaluation_ran:  # the pipeline's evaluation hook isn't wired yet: run the suite on the same model
        from unstar_gui.engine.evaluate import evaluate_job
        from unstar_gui.engine.evaluate.attacks import AttackSettings
        from unstar_gui.engine.evaluate.runner import EvalSettings

        llm = llm_mod._LOADED[next(iter(llm_mod._LOADED))]
        es = EvalSettings(max_attack_probes=cfg["attack_probes"],
                          attack=AttackSettings(quant_variants=((4, 64),), relearn_steps=cfg["relearn_steps"],
                                                languages=("French",)))
        t1 = time.perf_counter()
        with _quiet():
            gen = evaluate_job(out_dir, llm=llm, attacks=cfg["attacks"], settings=es)
            for _ in gen:
                pass
        eval_seconds = time.perf_counter() - t1
    timers.undo()
    mlx_lm.load = original_load
    io2 = proc_io()
    memory = peak()
    total = time.perf_counter() - t0
    data = json.loads((out_dir / "job.json").read_text())
    rounds = len(data.get("rounds") or []) or 1
    stage_times: dict[str, float] = {}
    marks = stages + [("end", t0 + t_pipeline)]
    for (name, start), (_, end) in zip(marks, marks[1:]):
        stage_times[name] = stage_times.get(name, 0.0) + (end - start)
    activities = {k: v for k, v in timers.totals.items()}
    eval_activities = {k: activities.get(k, 0.0) - pipeline_timers.get(k, 0.0) for k in activities}
    pipeline_other = t_pipeline - sum(pipeline_timers.values())
    model_bytes = sum(f.stat().st_size for f in Path(data["model"]["path"]).glob("*.safetensors"))
    written = io1.get("wchar", 0) - io0.get("wchar", 0)
    return {
        "config": cfg, "fact": fact["question"], "finished": finished is not None,
        "metrics": report.get("metrics", {}), "rounds": rounds, "steps": report.get("metrics", {}).get("steps"),
        "seconds": {"total": total, "pipeline": t_pipeline,
                    "evaluation": eval_seconds or report.get("timing", {}).get("evaluation_s", 0.0),
                    "evaluation_in_pipeline": evaluation_ran},
        "stages_s": stage_times,
        "activities_s": {"pipeline": {**pipeline_timers, "other": pipeline_other},
                         "evaluation": {**eval_activities, "other": eval_seconds - sum(eval_activities.values())}},
        "job_timing": report.get("timing", {}),
        "memory": memory, "report_memory": report.get("memory", {}),
        "io": {"model_loads": loads["mlx_lm.load"], "model_bytes": model_bytes,
               "written_bytes_pipeline": written, "written_bytes_per_round": written / rounds,
               "disk_write_bytes_pipeline": io1.get("write_bytes", 0) - io0.get("write_bytes", 0),
               "written_bytes_evaluation": io2.get("wchar", 0) - io1.get("wchar", 0),
               "job_folder_bytes": dir_size(out_dir), "checkpoints": checkpoints,
               "checkpoint_bytes": max((dir_size(d) for d in (out_dir / "checkpoints").iterdir() if d.is_dir()),
                                       default=0),
               "read_bytes_pipeline": io1.get("rchar", 0) - io0.get("rchar", 0)},
    }


def seed_io(model_bytes: int, rounds: int = 1) -> dict[str, int]:
    """The seed pipeline per round: four subprocesses each loaded the model, and a fused model was written."""
    return {"model_loads": 4 * rounds, "read_bytes": 4 * model_bytes * rounds, "written_bytes": model_bytes * rounds}


# 5. BLAS --------------------------------------------------------------------------------------------------------------
def section_blas(cfg: dict[str, Any]) -> dict[str, Any]:
    import blas_speedup

    from unstar_gui.engine.backend import find_blas

    lib = find_blas()
    if not lib:
        return {"skipped": "no OpenBLAS found (apt-get install libopenblas0-pthread)"}
    ref = blas_speedup.run(None)
    fast = blas_speedup.run(lib)
    return {"blas": lib, "reference": ref, "openblas": fast,
            "matmul_speedup": ref["matmul_1024_x10_s"] / fast["matmul_1024_x10_s"],
            "generate_speedup": fast["generate_tok_per_s"] / ref["generate_tok_per_s"]}


# 6. memory estimates --------------------------------------------------------------------------------------------------
def section_memory(cfg: dict[str, Any]) -> dict[str, Any]:
    import mlx.core as mx

    from tests.helpers.tiny import make_tiny_model
    from unstar_gui.engine.catalog import get_entry
    from unstar_gui.engine.llm import LLM, LoraSettings
    from unstar_gui.engine.memory import GIB, choose_batch_and_seq, estimate_memory, mac_working_set
    from unstar_gui.engine.methods import MethodContext, get_method
    from unstar_gui.engine.trainer import Trainer, TrainSettings, encode_pairs

    tiny_dir = make_tiny_model(Path(tempfile.mkdtemp()) / "tiny")
    with _quiet():
        llm = LLM(tiny_dir)
    long = "Hogwarts is a school in Scotland where young wizards learn magic. " * 30
    rows = encode_pairs(llm, [(f"Question {i}?", long) for i in range(8)], 128)
    settings = TrainSettings(batch_size=4, retain_batch_size=4, max_seq_len=128)
    method = get_method("unstar")
    method.prepare(MethodContext("q", "a"))
    trainer = Trainer(llm, method, settings)
    trainer.attach(LoraSettings(rank=8, num_layers=2))
    mx.clear_cache()
    mx.reset_peak_memory()
    base = int(mx.get_active_memory())
    list(trainer.train_round(rows, rows, 0, 2))
    measured = int(mx.get_peak_memory())
    est = estimate_memory(tiny_dir, {"batch_size": 4, "retain_batch_size": 4, "max_seq_len": 128, "rank": 8,
                                     "num_layers": 2}, device="cpu", available_bytes=1 << 40, include_evaluation=False)
    train_part = est.weights_bytes + est.lora_bytes + est.optimizer_bytes + est.activations_bytes
    tiny = {"measured_bytes": measured, "active_before_bytes": base, "estimate_bytes": train_part,
            "ratio": train_part / measured}

    macs = []
    entry = get_entry(cfg["big_model"])
    for gb in (8, 16):
        available = mac_working_set(gb * GIB)
        for include_eval in (True, False):
            e = estimate_memory(entry, None, device="gpu", available_bytes=available, include_evaluation=include_eval)
            choice = choose_batch_and_seq(available, entry, None, device="gpu", include_evaluation=include_eval)
            macs.append({"mac_gb": gb, "available_bytes": available, "with_requant_attack": include_eval,
                         "estimate": e.to_dict(), "choice": {"batch_size": choice.batch_size,
                                                             "retain_batch_size": choice.retain_batch_size,
                                                             "max_seq_len": choice.max_seq_len,
                                                             "grad_checkpoint": choice.grad_checkpoint,
                                                             "generation_batch": choice.generation_batch,
                                                             "fits": choice.fits, "changed": choice.changed,
                                                             "advice": choice.estimate.advice}})
    return {"tiny": tiny, "big_model": entry.id, "macs": macs}


# 7. hot paths ---------------------------------------------------------------------------------------------------------
def section_hotpaths(cfg: dict[str, Any]) -> dict[str, Any]:
    import profile_hot_paths

    return profile_hot_paths.compare_all(cfg)


RUNNERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "train": section_train, "generate": section_generate, "e2e": section_e2e, "blas": section_blas,
    "memory": section_memory, "hotpaths": section_hotpaths}


def configs(quick: bool) -> dict[str, dict[str, Any]]:
    return {
        "train": {"batch": 4, "seq": 160, "rank": 8, "layers": 16, "steps": 2 if quick else 3, "blocks": 2},
        "generate": {"prompts": 8 if quick else 16, "max_tokens": 40, "repeats": 1, "chunk": 8},
        "e2e": {"fact": "hogwarts", "attacks": ["quant"], "attack_probes": 4, "relearn_steps": 2,
                "settings": {"n_paraphrases": 6, "n_wrong_answers": 3, "n_neighbours": 4, "n_general": 6,
                             "max_rounds": 2, "steps_per_round": 4 if quick else 6, "checkpoint_every": 3}},
        "blas": {},
        "memory": {"big_model": "mistral-7b-instruct-v0.3-4bit"},
        "hotpaths": {"texts": 12 if quick else 24, "pairs": 64},
    }


# the driver -----------------------------------------------------------------------------------------------------------
def run_child(name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """One section in a fresh process (its own peak memory, its own model loads)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", name, "--config", json.dumps(cfg)],
                          capture_output=True, text=True, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {"error": " / ".join(tail) or f"exit code {proc.returncode}", "wall_s": time.perf_counter() - t0}
    result = json.loads(lines[-1])
    result["wall_s"] = time.perf_counter() - t0
    return result


def machine() -> dict[str, Any]:
    import mlx.core as mx
    import mlx_lm

    from unstar_gui.engine.backend import detect

    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "backend": detect().label, "mlx": mx.__version__, "mlx_lm": mlx_lm.__version__}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections: " + ", ".join(SECTIONS))
    p.add_argument("--quick", action="store_true", help="fewer steps and prompts (a smoke run, not for the README)")
    p.add_argument("--render", action="store_true", help="only rewrite bench/out/perf.md from bench/results.json")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(RUNNERS[args.child](json.loads(args.config))))
        return 0

    if args.render:
        TABLE.write_text(markdown(json.loads(RESULTS.read_text())))
        print(TABLE.read_text())
        return 0
    from unstar_gui.engine.backend import maybe_reexec_with_blas

    maybe_reexec_with_blas([sys.executable, __file__, *sys.argv[1:]])  # the app's own CPU setup (no-op on a Mac)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    home = os.environ.setdefault("UNSTAR_HOME", tempfile.mkdtemp(prefix="perf-home-"))
    from unstar_gui.engine.embedded import resolve_model
    from unstar_gui.engine.store import ModelStore

    resolve_model(ModelStore())  # import the embedded model once, before any clock starts
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    cfgs = configs(args.quick)
    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(),
                               "load_average_start": os.getloadavg(), "quick": args.quick, "home": home}
    t0 = time.perf_counter()
    for name in chosen:
        print(f"== {name}", flush=True)
        results[name] = run_child(name, cfgs[name])
        print(json.dumps(results[name])[:400], flush=True)
    results["load_average_end"] = os.getloadavg()
    results["wall_s"] = time.perf_counter() - t0
    if RESULTS.exists() and set(chosen) != set(SECTIONS):  # a partial run keeps the other sections' last numbers
        previous = json.loads(RESULTS.read_text())
        for name in SECTIONS:
            if name not in chosen and name in previous:
                results[name] = previous[name]
    RESULTS.write_text(json.dumps(results, indent=2, default=str))
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    TABLE.write_text(markdown(results))
    print(TABLE.read_text())
    print(f"results: {RESULTS}\ntable: {TABLE}")
    return 0


# the README table -----------------------------------------------------------------------------------------------------
def _mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def _error_row(number: int, what: str, section: dict[str, Any]) -> str:
    reason = section.get("skipped") or f"error: {section.get('error', '')}"
    return f"| {number} | {what} | {reason[:200]} | | | |"


def _goal(ok: bool | None) -> str:
    return "—" if ok is None else ("met" if ok else "not met")


def rows_train(t: dict[str, Any], r: dict[str, Any]) -> list[str]:
    c, ours, theirs = t["config"], t["ours"], t["mlx_lm"]
    goal = _goal(t["ratio"] >= 1.0)
    if t["ratio"] < 1.0 and t.get("ratio_compiled", 0) >= 1.0:
        goal += " by default; met with compile=True (1c)"
    rows = [f"| 1 | LoRA training throughput, SmolLM2-135M float32, batch {c['batch']}, ≤{c['seq']} tokens, rank "
            f"{c['rank']} on {c['layers']} blocks (real tokens/s) | {ours['tokens_per_s']:.0f} tok/s "
            f"({ours['s_per_step']:.2f} s/step) | mlx-lm `train`: {theirs['tokens_per_s']:.0f} tok/s "
            f"({theirs['s_per_step']:.2f} s/step) | {t['ratio']:.2f}x | ≥ 1.0: {goal} |",
            f"| 1a | same, per CPU-second (less sensitive to other people's load) | {ours['tokens_per_cpu_s']:.0f} "
            f"tok/cpu-s | {theirs['tokens_per_cpu_s']:.0f} tok/cpu-s | {t['ratio_cpu']:.2f}x | |",
            f"| 1b | same, counting padded tokens (compute per step) | {ours['padded_tokens_per_s']:.0f} tok/s "
            f"(padding {ours['padding_share']:.0%}) | {theirs['padded_tokens_per_s']:.0f} tok/s (padding "
            f"{theirs['padding_share']:.0%}) | {t['ratio_padded']:.2f}x (per CPU-second {t['ratio_padded_cpu']:.2f}x) "
            f"| |"]
    if "ours_compiled" in t:
        oc = t["ours_compiled"]
        rows.append(f"| 1c | ours with `TrainSettings(compile=True)` (mx.compile, as mlx-lm's step) | "
                    f"{oc['tokens_per_s']:.0f} tok/s, {oc['tokens_per_cpu_s']:.0f} tok/cpu-s | mlx-lm as above | "
                    f"{t['ratio_compiled']:.2f}x (per CPU-second {t['ratio_compiled_cpu']:.2f}x) | |")
    return rows


def rows_generate(g: dict[str, Any], r: dict[str, Any]) -> list[str]:
    c, fast, slow = g["config"], g["batched"], g["one_at_a_time"]
    return [f"| 2 | anti-sample generation, {c['prompts']} few-shot rationale prompts (~{g['prompt_tokens_mean']:.0f} "
            f"tokens) x {c['max_tokens']} new tokens, greedy | batched: {fast['seconds']:.1f} s "
            f"({fast['tokens_per_s']:.1f} tok/s) | one at a time: {slow['seconds']:.1f} s ({slow['tokens_per_s']:.1f} "
            f"tok/s) | {g['speedup']:.1f}x | ≥ 3x: {_goal(g['speedup'] >= 3)} |",
            f"| 2b | same prompts, one call vs calls of {c['chunk']} prompts | {fast['seconds']:.1f} s | "
            f"{g['chunked']['seconds']:.1f} s | {g['speedup_vs_chunked']:.2f}x | |"]


def rows_e2e(e: dict[str, Any], r: dict[str, Any]) -> list[str]:
    from unstar_gui.engine.memory import estimate_memory

    st, act, ev = e["stages_s"], e["activities_s"]["pipeline"], e["activities_s"]["evaluation"]
    s, total = e["config"]["settings"], e["seconds"]["total"]
    gen_stages = sum(v for k, v in st.items() if k in ("probe", "paraphrases", "wrong_answers", "rationales",
                                                      "retain", "regenerate"))
    both = {k: act.get(k, 0.0) + ev.get(k, 0.0) for k in ("generation", "judging", "training", "scoring", "other")}
    where = "evaluation inside the pipeline" if e["seconds"].get("evaluation_in_pipeline") else \
        "pipeline + evaluation run after it"
    est = estimate_memory("smollm2-135m-instruct", s, device="cpu", available_bytes=1 << 40)
    mlx_ratio = est.mlx_bytes / e["memory"]["mlx_peak_bytes"]
    rows = [f"| 3 | forget one fact end to end (SmolLM2, \"{e['fact']}\"; {s['n_paraphrases']} paraphrases, "
            f"{e['rounds']} round(s) x {s['steps_per_round']} steps, 4+4 rows) | {total:.0f} s: sample generation "
            f"stages {gen_stages:.0f} s, training {both['training']:.0f} s, re-probing {st.get('reprobe', 0):.0f} s, "
            f"evaluation (attacks: {', '.join(e['config']['attacks'])}) {e['seconds']['evaluation']:.0f} s | | | |",
            f"| 3b | ...by activity ({where}) | " + ", ".join(
                f"{k} {v:.0f} s ({v / max(total, 1e-9):.0%})" for k, v in both.items()) + " | | | |",
            f"| 3c | peak memory of that job vs the estimate logged when it started (rows at full length: an upper "
            f"bound) | measured: MLX {_mb(e['memory']['mlx_peak_bytes'])}, process {_mb(e['memory']['max_rss_bytes'])} "
            f"| estimate: MLX {_mb(est.mlx_bytes)}, process {_mb(est.total_bytes)} | {mlx_ratio:.2f}x, "
            f"{est.total_bytes / e['memory']['max_rss_bytes']:.2f}x | 0.5-2x: {_goal(0.5 <= mlx_ratio <= 2)} |"]
    return rows + rows_io(e, r)


def rows_io(e: dict[str, Any], r: dict[str, Any]) -> list[str]:
    io_, s = e["io"], e["config"]["settings"]
    seed = seed_io(io_["model_bytes"])
    per_round, ckpt_bytes = io_["written_bytes_per_round"], io_.get("checkpoint_bytes", 0)
    defaults = 40 // 10 * ckpt_bytes + (per_round - ckpt_bytes * io_["checkpoints"] / e["rounds"])
    rows = [f"| 4 | I/O per round (SmolLM2, {_mb(io_['model_bytes'])} of weights; this run: {s['steps_per_round']} "
            f"steps, a checkpoint every {s['checkpoint_every']}) | {io_['model_loads']} model load per job "
            f"({io_['model_loads'] / e['rounds']:.1f} per round); {_mb(per_round)} written per round (job files; "
            f"checkpoints of adapter + optimizer state, {_mb(ckpt_bytes)} each) | seed design: {seed['model_loads']} "
            f"loads ({_mb(seed['read_bytes'])} read) + a fused model ({_mb(seed['written_bytes'])}) per round | "
            f"{seed['model_loads'] * e['rounds'] / max(io_['model_loads'], 1):.0f}x fewer loads, "
            f"{seed['written_bytes'] / max(per_round, 1):.1f}x fewer bytes written | |",
            f"| 4a | same, projected to the default 40 steps with a checkpoint every 10 | {_mb(defaults)} written per "
            f"round | {_mb(seed['written_bytes'])} written + {_mb(seed['read_bytes'])} read per round | "
            f"{seed['written_bytes'] / max(defaults, 1):.1f}x fewer bytes written | |"]
    big = r.get("memory", {}).get("big_model")
    if big:
        from unstar_gui.engine.catalog import get_entry
        from unstar_gui.engine.memory import MemorySettings, lora_param_count, model_shape

        size = get_entry(big).size_bytes
        ckpt = lora_param_count(model_shape(big), MemorySettings()) * 4 * 3  # adapter + Adam's two moments
        rows.append(f"| 4b | same design on {big} ({_mb(size)}), defaults | 1 load per job; 4 checkpoints of "
                    f"{_mb(ckpt)} = {_mb(4 * ckpt)} written per round | 4 loads ({_mb(4 * size)} read) + {_mb(size)} "
                    f"written per round | {size / (4 * ckpt):.0f}x fewer bytes written, 4 x rounds fewer loads | |")
    return rows


def rows_blas(b: dict[str, Any], r: dict[str, Any]) -> list[str]:
    ref, fast = b["reference"], b["openblas"]
    return [f"| 5 | Linux BLAS preload: 1024² float32 matmul x10 | OpenBLAS {fast['matmul_1024_x10_s']:.2f} s | "
            f"bundled {ref['matmul_1024_x10_s']:.2f} s | {b['matmul_speedup']:.0f}x | |",
            f"| 5b | Linux BLAS preload: SmolLM2 batched generation | {fast['generate_tok_per_s']:.1f} tok/s | "
            f"{ref['generate_tok_per_s']:.1f} tok/s | {b['generate_speedup']:.1f}x | |"]


def _estimate_row(label: str, estimate: float, measured: float) -> str:
    ratio = estimate / measured
    return (f"| 6b | memory estimate vs measured, {label} | {_mb(estimate)} | {_mb(measured)} | {ratio:.2f}x | "
            f"0.5-2x: {_goal(0.5 <= ratio <= 2)} |")


def rows_train_memory(t: dict[str, Any], r: dict[str, Any]) -> list[str]:
    ck, ours = t["checkpointing"], t["ours"]
    rows = [f"| 6 | gradient checkpointing, same training (peak MLX memory; time per step, per CPU-second) | on: "
            f"{_mb(ck['peak_mlx_bytes'])}, {ck['s_per_step']:.2f} s/step, {ck['tokens_per_cpu_s']:.0f} tok/cpu-s | "
            f"off: {_mb(ck['peak_without'])}, {ours['s_per_step']:.2f} s/step, {ours['tokens_per_cpu_s']:.0f} "
            f"tok/cpu-s | {ck['peak_mlx_bytes'] / ck['peak_without']:.2f}x memory, "
            f"{ours['tokens_per_cpu_s'] / ck['tokens_per_cpu_s']:.2f}x CPU time | |"]
    for row in t.get("full_length", []):
        rows.append(_estimate_row(f"SmolLM2 training, {row['rows']} rows x {row['seq']} tokens, checkpointing "
                                  f"{'on' if row['grad_checkpoint'] else 'off'}", row["estimate_bytes"],
                                  row["measured_bytes"]))
    mm = t["memory"]
    rows.append(_estimate_row(f"SmolLM2 training, the throughput run (mean width {mm['mean_width']:.0f})",
                              mm["estimate_at_mean_width"], mm["measured"]))
    return rows


def rows_generate_memory(g: dict[str, Any], r: dict[str, Any]) -> list[str]:
    return [_estimate_row("SmolLM2 batched generation", g["memory"]["estimate"], g["memory"]["measured"])]


def rows_memory(mem: dict[str, Any], r: dict[str, Any]) -> list[str]:
    ti = mem["tiny"]
    rows = [_estimate_row("tiny test model training, 8 rows x 128 tokens", ti["estimate_bytes"], ti["measured_bytes"])]
    for row in mem["macs"]:
        est, ch = row["estimate"], row["choice"]
        attack = "with" if row["with_requant_attack"] else "without"
        rows.append(f"| 6c | {mem['big_model']} on a {row['mac_gb']} GB Mac (Metal, {_mb(row['available_bytes'])} "
                    f"usable), defaults, {attack} the re-quantization attack | needs {_mb(est['total_bytes'])} "
                    f"(weights "
                    f"{_mb(est['weights_bytes'])}, training activations {_mb(est['activations_bytes'])}; "
                    f"{est['peak_phase']} peak) | {'fits' if est['fits'] else 'does not fit'} | | chosen: batch "
                    f"{ch['batch_size']}+{ch['retain_batch_size']}, {ch['max_seq_len']} tokens, checkpointing "
                    f"{'on' if ch['grad_checkpoint'] else 'off'}, generation batch {ch.get('generation_batch', 16)}: "
                    f"{'fits' if ch['fits'] else 'does not fit'} |")
    return rows


def rows_hotpaths(h: dict[str, Any], r: dict[str, Any]) -> list[str]:
    rows = [f"| 7 | {row['what']} | after: {row['after_s']:.2f} s | before: {row['before_s']:.2f} s | "
            f"{row['before_s'] / max(row['after_s'], 1e-9):.1f}x | |" for row in h["rows"]]
    gs = h.get("general_set")
    if gs:
        rows.append(f"| 7 | general retain set filter: spans embedded (shuffle first, judge only the rows needed) | "
                    f"{gs['spans_after']:,} spans, {gs['seconds']:.1f} s | {gs['spans_before']:,} spans (all bundled "
                    f"rows) | {gs['spans_before'] / max(gs['spans_after'], 1):.1f}x fewer | |")
    co = h.get("collation")
    if co:
        rows.append(f"| 7 | {co['what']} | {co['seconds']:.2f} s | | | not a hot path |")
    return rows


# (section, key present when it ran, row number and name for an error row or None, rows)
TABLE_ROWS = [("train", "ours", 1, "training throughput", rows_train),
              ("generate", "batched", 2, "generation", rows_generate),
              ("e2e", "seconds", 3, "end to end", rows_e2e),
              ("blas", "matmul_speedup", 5, "BLAS preload", rows_blas),
              ("train", "ours", None, "", rows_train_memory),
              ("generate", "batched", None, "", rows_generate_memory),
              ("memory", "tiny", 6, "memory estimates", rows_memory),
              ("hotpaths", "rows", 7, "hot paths", rows_hotpaths)]


def markdown(r: dict[str, Any]) -> str:
    la0, la1 = r.get("load_average_start", (0, 0, 0)), r.get("load_average_end", (0, 0, 0))
    m = r.get("machine", {})
    lines = [f"Measured {r.get('started', '')} on {m.get('platform', '')} ({m.get('cpus')} CPUs, {m.get('backend')}; "
             f"mlx {m.get('mlx')}, mlx-lm {m.get('mlx_lm')}), load average {la0[0]:.1f} at the start and "
             f"{la1[0]:.1f} at the end (the machine is shared: absolute times are noisy, side-by-side ratios less), "
             f"whole run {r.get('wall_s', 0) / 60:.1f} min.", "",
             "| # | measurement | ours | baseline | ratio | goal |", "|---|---|---|---|---|---|"]
    train = r.get("train", {})
    if "ours" in train and "tokens_per_cpu_s" not in train["ours"]:  # left over from an older version of this script
        r = dict(r, train={"error": "stale results from an older bench/perf.py: run --only train again"})
    for name, key, number, what, rows in TABLE_ROWS:
        section = r.get(name, {})
        if key in section:
            lines += rows(section, r)
        elif section and number is not None:
            lines.append(_error_row(number, what, section))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
