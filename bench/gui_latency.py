"""GUI event-loop latency while a forget job trains in the app's MLX worker thread.

A QTimer ticks every 10 ms on the GUI thread; each tick records how late it fired. Meanwhile the worker runs a real
forget job (`pipeline.run_forget`, the same task the wizard runs) and its events are plotted on the live loss
chart, so the measurement includes the GUI's own work. Goal: p95 and max under 100 ms.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 QT_QPA_PLATFORM=offscreen \
        python bench/gui_latency.py [--model ID] [--steps 30] [--baseline 60] [--json out.json]

Without --model it uses the built-in SmolLM2-135M (imported from its package on first use, no network).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

TICK_MS = 10


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model id (default: the built-in SmolLM2)")
    parser.add_argument("--steps", type=int, default=30, help="training steps (one round)")
    parser.add_argument("--home", default=None, help="data folder (default: a temporary one)")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    parser.add_argument("--baseline", type=float, default=0.0,
                        help="first measure this many seconds with the worker idle (the machine's own noise)")
    parser.add_argument("--no-job", action="store_true", help="only the idle baseline")
    args = parser.parse_args()
    if args.home or not os.environ.get("UNSTAR_HOME"):
        os.environ["UNSTAR_HOME"] = args.home or tempfile.mkdtemp(prefix="unstar-latency-")

    from PySide6.QtCore import QElapsedTimer, QTimer
    from PySide6.QtWidgets import QApplication

    from unstar_gui.engine.events import TrainStep
    from unstar_gui.ui.charts import LossChart
    from unstar_gui.ui.workers import MlxWorker

    app = QApplication(sys.argv)
    chart = LossChart()
    chart.resize(800, 400)
    chart.show()
    worker = MlxWorker()
    clock = QElapsedTimer()
    clock.start()
    lateness: list[tuple[float, float]] = []  # (time since start s, ms late)
    last = [clock.elapsed()]
    train_window: list[float] = []  # times of TrainStep events: the training phase
    stats = {"events": 0, "train_steps": 0}

    def tick() -> None:
        now = clock.elapsed()
        lateness.append((now / 1000, max(0.0, now - last[0] - TICK_MS)))
        last[0] = now

    timer = QTimer()
    timer.setInterval(TICK_MS)
    timer.timeout.connect(tick)
    timer.start()

    def on_event(event) -> None:
        stats["events"] += 1
        if isinstance(event, TrainStep):
            stats["train_steps"] += 1
            train_window.append(clock.elapsed() / 1000)
            chart.add_step(event.step, event.forget_loss, event.retain_loss)

    outcome: dict = {}
    model = args.model
    steps = args.steps

    def job(ctx):
        from unstar_gui.engine.pipeline import ForgetRequest, ForgetSettings, run_forget

        settings = ForgetSettings(max_rounds=1, steps_per_round=steps, n_paraphrases=6, n_wrong_answers=3,
                                  n_neighbours=4, n_general=8, n_general_eval=8, checkpoint_every=10)
        request = ForgetRequest("Which wizarding school did Harry Potter attend?", "Hogwarts",
                                aliases=["Hogwarts School of Witchcraft and Wizardry"], model=model,
                                settings=settings, force=True)
        return run_forget(request, cancel=ctx.cancel, llm=ctx.llm(model))

    started = time.perf_counter()
    job_start = [0.0]

    def start_job() -> None:
        job_start[0] = clock.elapsed() / 1000
        if args.no_job:
            app.quit()
            return
        print("job started", file=sys.stderr, flush=True)
        worker.submit(job, name="latency benchmark", on_event=on_event,
                      on_result=lambda r: outcome.update(ok=True),
                      on_error=lambda info: outcome.update(error=f"{info.message} {info.hint}\n{info.details}"),
                      on_done=app.quit)

    QTimer.singleShot(int(args.baseline * 1000), start_job)
    app.exec()
    wall = time.perf_counter() - started
    timer.stop()
    worker.stop()
    if "error" in outcome:
        print(outcome["error"], file=sys.stderr)
        return 1

    def summary(values: list[float]) -> dict:
        if not values:
            return {}
        ordered = sorted(values)
        return {"ticks": len(values), "max_ms": round(ordered[-1], 1),
                "over_100ms": sum(1 for v in values if v > 100),
                "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 1),
                "p50_ms": round(statistics.median(ordered), 1)}

    t0, t1 = (train_window[0], train_window[-1]) if train_window else (0, 0)
    result = {
        "model": model or "smollm2-135m-instruct (built in)", "steps": steps, "wall_s": round(wall, 1),
        "events": stats["events"], "train_steps": stats["train_steps"],
        "idle_baseline": summary([ms for t, ms in lateness if t < job_start[0]]),
        "whole_job": summary([ms for t, ms in lateness if t >= job_start[0]]),
        "training_phase": summary([ms for t, ms in lateness if t0 <= t <= t1]),
        "goal_ms": 100,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
