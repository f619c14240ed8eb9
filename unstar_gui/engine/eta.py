"""One progress bar and time estimate for a whole forget job, fed by the job's own events.

A job is a plan of phases (anti-samples, training and re-probing per round, evaluation, attacks), each with an
expected amount of work counted in one of two units: a generated answer or a training step. The seconds each unit
takes are measured from the events as they arrive (Progress batches from `ask`/`generate`, TrainStep), so the
estimate covers every phase left, not only the one running; until a unit has been measured, a prior keeps the bar
moving and the estimate says it is still estimating.

The engine never imports Qt: the UI keeps a `JobEta`, feeds it every event and reads `snapshot()` on a timer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from .events import Event, Finished, Progress, StageStarted, TrainStep

ANSWER, STEP = "answer", "step"
# Seconds per unit before anything was measured: only the bar's split between phases uses them (no ETA is shown).
PRIORS = {ANSWER: 1.0, STEP: 3.0}
# Answer-equivalents per attack at the default AttackSettings and 8 attack probes: re-quantization asks 4 variants;
# relearning fine-tunes 10 steps twice and asks twice; formats translate into 3 languages and ask several framings;
# multi-hop describes the subject and asks a few indirect questions.
ATTACK_WORK = {"quant": 32.0, "relearn": 56.0, "format": 64.0, "multihop": 16.0}
# Event stages whose Progress counts generated answers (the rest report coarse sub-steps, e.g. "1 of 2").
ANSWER_STAGES = frozenset({"probe", "retain", "general", "reprobe", "check", "efficacy", "retention",
                           "quantization", "format", "multihop"})
SAMPLE_STAGES = frozenset({"probe", "paraphrases", "wrong_answers", "rationales", "retain", "general"})
TRAIN_STAGES = frozenset({"placement", "trace", "null_space", "train"})
EVAL_STAGES = frozenset({"evaluate", "efficacy", "retention", "probabilities"})


@dataclass
class Phase:
    key: str  # "samples", "train:0", "reprobe:0", "evaluate", "attacks"
    label: str  # what the person reads: "Training, round 1"
    unit: str  # ANSWER or STEP
    items: float  # the expected amount of work, in `unit`s
    by_items: bool = True  # progress from counted items; False: from time (one long generation call, no counts)
    done: float = 0.0
    started_at: float | None = None
    finished: bool = False


@dataclass
class EtaSnapshot:
    fraction: float  # 0..1 of the whole job
    eta_s: float | None  # None: no rate measured yet
    phase: str  # the running phase's label
    count: str  # "12 of 40 answers" / "step 7 of 20" / ""

    @property
    def text(self) -> str:
        """'About 12 min left' / 'Estimating the time left…' (the UI shows it as is)."""
        if self.fraction >= 1.0:
            return "Done"
        return "Estimating the time left…" if self.eta_s is None else f"About {format_duration(self.eta_s)} left"


def format_duration(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{max(s, 1)} s"
    if s < 3600:
        m, s = divmod(s, 60)
        return f"{m} min {s:02d} s" if m < 10 else f"{m} min"
    h, m = divmod(s // 60, 60)
    return f"{h} h {m:02d} min"


@dataclass
class _Rate:
    seconds: float = 0.0
    items: float = 0.0

    def per_item(self) -> float | None:
        return self.seconds / self.items if self.items > 0 else None


@dataclass
class JobEta:
    phases: list[Phase]
    clock: Callable[[], float] = time.monotonic
    rates: dict[str, _Rate] = field(default_factory=lambda: {ANSWER: _Rate(), STEP: _Rate()})
    current: int = -1
    _last_tick: dict[str, float] = field(default_factory=dict)  # per unit: when its last measured item ended
    _stage_done: dict[str, float] = field(default_factory=dict)  # per event stage: its last Progress.done

    # feeding -------------------------------------------------------------------------------------------------------
    def feed(self, event: Event | Any) -> None:
        now = self.clock()
        if isinstance(event, StageStarted):
            key = _phase_key(event.stage, event.round)
            if key is not None:
                self._enter(key, now)
            self._stage_done.pop(event.stage, None)
            for unit in self._last_tick:  # time spent before this stage's first batch counts toward that batch
                self._last_tick[unit] = now
        elif isinstance(event, TrainStep):
            self._enter(f"train:{event.round}", now)
            phase = self.phases[self.current]
            phase.items = max(float(event.total_steps), 1.0)
            previous = phase.done if phase.done else event.step - 1  # a resumed round starts past step 0
            self._measure(STEP, event.step - previous, now)
            phase.done = float(event.step)
        elif isinstance(event, Progress) and event.stage in ANSWER_STAGES and event.total:
            before = self._stage_done.get(event.stage, 0.0)
            delta = event.done - before if event.done >= before else event.done  # a new ask in the same stage
            self._stage_done[event.stage] = float(event.done)
            self._measure(ANSWER, delta, now)
            if 0 <= self.current < len(self.phases):
                phase = self.phases[self.current]
                if phase.unit == ANSWER:
                    phase.done += delta
                    # More asked than planned: the plan was short; keep room for what this ask has left.
                    phase.items = max(phase.items, phase.done + (event.total - event.done))
        elif isinstance(event, Finished):
            for phase in self.phases:
                phase.finished = True
            self.current = len(self.phases)

    def _enter(self, key: str, now: float) -> None:
        index = next((i for i, p in enumerate(self.phases) if p.key == key), None)
        if index is None or index == self.current:
            return
        for phase in self.phases[:index]:  # skipped phases (a job that stopped early) are done
            phase.finished = True
        self.current = index
        phase = self.phases[index]
        phase.finished = False
        if phase.started_at is None:
            phase.started_at = now
        self._last_tick = {unit: now for unit in self.rates}

    def _measure(self, unit: str, items: float, now: float) -> None:
        last = self._last_tick.get(unit)
        if items > 0 and last is not None:
            self.rates[unit].seconds += now - last
            self.rates[unit].items += items
        self._last_tick[unit] = now

    # reading -------------------------------------------------------------------------------------------------------
    def per_item(self, unit: str) -> float | None:
        return self.rates[unit].per_item()

    def snapshot(self) -> EtaSnapshot:
        now = self.clock()
        measured = {u: self.per_item(u) for u in self.rates}
        cost = {u: measured[u] if measured[u] is not None else PRIORS[u] for u in self.rates}
        total = done = left = 0.0
        known = True  # every phase still to run has a measured unit
        for i, phase in enumerate(self.phases):
            expected = phase.items * cost[phase.unit]
            if i == self.current and not phase.by_items and phase.started_at is not None:
                # A time-driven phase running past its estimate: it takes at least a little longer than so far.
                expected = max(expected, (now - phase.started_at) * 1.1)
            total += expected
            if phase.finished or i < self.current:
                done += expected
                continue
            share = self._share(phase, expected, now) if i == self.current else 0.0
            done += share * expected
            left += (1 - share) * expected
            known = known and measured[phase.unit] is not None
        if self.current >= len(self.phases):
            return EtaSnapshot(1.0, 0.0, "Done", "")
        fraction = done / total if total > 0 else 0.0
        running = self.phases[self.current] if self.current >= 0 else None
        return EtaSnapshot(min(fraction, 0.999), left if known else None,
                           running.label if running else "Starting", _count(running))

    @staticmethod
    def _share(phase: Phase, expected_s: float, now: float) -> float:
        if phase.by_items and phase.items > 0 and phase.done > 0:
            return min(phase.done / phase.items, 0.99)
        if phase.started_at is None or expected_s <= 0:
            return 0.0
        # Time-driven: a long generation call yields nothing until it returns; never claim it is finished.
        return min((now - phase.started_at) / expected_s, 0.95)


def _count(phase: Phase | None) -> str:
    if phase is None or not phase.by_items or phase.done <= 0:
        return ""
    if phase.unit == STEP:
        return f"step {int(phase.done)} of {int(phase.items)}"
    return f"{int(phase.done)} of {int(phase.items)} answers"


def _phase_key(stage: str, round_no: int) -> str | None:
    if stage in SAMPLE_STAGES:
        return "samples"
    if stage in TRAIN_STAGES:
        return f"train:{round_no}"
    if stage in ("reprobe", "scale"):
        return f"reprobe:{round_no}"
    if stage == "regenerate":  # harder anti-samples for the next round: the end of the round before it
        return f"reprobe:{max(round_no - 1, 0)}"
    if stage in EVAL_STAGES:
        return "evaluate"
    if stage.startswith("attack:"):
        return "attacks"
    return None


# plans ---------------------------------------------------------------------------------------------------------------
def samples_phase(settings: dict[str, Any]) -> Phase:
    """Probes, paraphrases, wrong answers, rationales, neighbours, the retain set's base answers and the general
    questions, in answer-equivalents (generation with several samples per request counts each sample)."""
    n_para = int(settings.get("n_paraphrases", 12))
    n_wrong = int(settings.get("n_wrong_answers", 6))
    n_neigh = int(settings.get("n_neighbours", 8))
    n_general = int(settings.get("n_general", 24))
    n_eval = int(settings.get("n_general_eval", 0)) or 40
    work = 3 * n_para + 2 * n_wrong + n_para + 3 * n_neigh + (n_para + 1) + n_general + 2 * n_eval
    return Phase("samples", "Writing anti-samples and the facts to keep", ANSWER, float(work), by_items=False)


def plan_job(data: dict[str, Any], counts: dict[str, int] | None = None, *, evaluation: bool = True) -> list[Phase]:
    """The phases a job (job.json `data`) has left: samples unless made, the rounds from its saved round and step,
    then the evaluation and its attacks. `counts`: rows in probes.jsonl / retain.jsonl when they exist."""
    s = data.get("settings") or {}
    counts = counts or {}
    phases: list[Phase] = []
    if not data.get("samples_ready"):
        phases.append(samples_phase(s))
    probes = counts.get("probes") or int(s.get("n_paraphrases", 12)) + 1
    retain = counts.get("retain") or (int(s.get("n_neighbours", 8)) + len(data.get("keep") or [])
                                      + int(s.get("n_general", 24)) + (int(s.get("n_general_eval", 0)) or 40))
    rounds_done = len(data.get("rounds") or [])
    steps = int(s.get("steps_per_round", 20))
    for r in range(rounds_done, int(s.get("max_rounds", 3))):
        train = Phase(f"train:{r}", f"Training, round {r + 1}", STEP, float(steps))
        if r == int(data.get("round", 0)):
            train.done = float(min(int(data.get("step", 0)), steps))
        if train.done < steps:
            phases.append(train)
        phases.append(Phase(f"reprobe:{r}", f"Checking round {r + 1}", ANSWER, float(probes + retain)))
    if evaluation:
        phases += plan_evaluation(s, probes, retain)
    return phases


def plan_evaluation(settings: dict[str, Any], probes: int, retain: int) -> list[Phase]:
    from .evaluate.attacks import parse_attacks

    try:
        keys: Sequence[str] = parse_attacks(settings.get("attacks", "all"))
    except Exception:  # an odd saved value: plan every attack rather than fail the progress display
        keys = tuple(ATTACK_WORK)
    phases = [Phase("evaluate", "Evaluating", ANSWER, float(probes + retain))]
    if keys:
        phases.append(Phase("attacks", "Attacks", ANSWER, sum(ATTACK_WORK.get(k, 32.0) for k in keys),
                            by_items=False))
    return phases


def job_eta(data: dict[str, Any], counts: dict[str, int] | None = None, *, evaluation: bool = True,
            clock: Callable[[], float] = time.monotonic) -> JobEta:
    return JobEta(plan_job(data, counts, evaluation=evaluation), clock=clock)


def feed_all(eta: JobEta, events: Iterable[Event]) -> JobEta:
    for event in events:
        eta.feed(event)
    return eta
