"""The job-wide estimator (engine/eta.py) on crafted event sequences with a fake clock."""

from __future__ import annotations

import pytest

from unstar_gui.engine.eta import ANSWER, STEP, JobEta, Phase, format_duration, job_eta, plan_job
from unstar_gui.engine.events import Finished, Progress, StageStarted, TrainStep

SETTINGS = dict(n_paraphrases=4, n_wrong_answers=2, n_neighbours=2, n_general=4, n_general_eval=4, max_rounds=2,
                steps_per_round=10, attacks="quant")


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_plan_covers_every_stage_of_a_new_job():
    keys = [p.key for p in plan_job({"settings": SETTINGS})]
    assert keys == ["samples", "train:0", "reprobe:0", "train:1", "reprobe:1", "evaluate", "attacks"]


def test_plan_of_a_resumed_job_skips_what_is_done():
    data = {"settings": SETTINGS, "samples_ready": True, "rounds": [{"round": 0}], "round": 1, "step": 4}
    phases = plan_job(data, {"probes": 5, "retain": 10})
    assert [p.key for p in phases] == ["train:1", "reprobe:1", "evaluate", "attacks"]
    assert phases[0].done == 4 and phases[1].items == 15
    no_attacks = plan_job({**data, "settings": {**SETTINGS, "attacks": "none"}})
    assert [p.key for p in no_attacks][-1] == "evaluate"


def test_no_estimate_until_a_rate_is_measured_then_it_covers_later_phases():
    clock = Clock()
    eta = JobEta([Phase("train:0", "Training, round 1", STEP, 10),
                  Phase("reprobe:0", "Checking round 1", ANSWER, 20)], clock=clock)
    eta.feed(StageStarted("train", round=0))
    assert eta.snapshot().eta_s is None and eta.snapshot().text == "Estimating the time left…"
    for step in range(1, 3):
        clock.t += 2.0
        eta.feed(TrainStep(0, step, 10, 1.0, 1.0, 1.0))
    # Steps measured (2 s each) but answers not: the check after training has no rate yet, so still no estimate.
    assert eta.per_item(STEP) == pytest.approx(2.0)
    assert eta.snapshot().eta_s is None
    assert eta.snapshot().count == "step 2 of 10"
    eta.feed(StageStarted("reprobe", round=0))
    clock.t += 4.0
    eta.feed(Progress("reprobe", 8, 20))
    snap = eta.snapshot()
    assert eta.per_item(ANSWER) == pytest.approx(0.5)
    assert snap.eta_s == pytest.approx(12 * 0.5)  # 12 answers left at 0.5 s; training counts as done
    assert snap.phase == "Checking round 1" and snap.count == "8 of 20 answers"
    assert 0.5 < snap.fraction < 1.0


def test_eta_includes_evaluation_and_attacks_not_only_the_round():
    clock = Clock()
    eta = job_eta({"settings": SETTINGS, "samples_ready": True}, {"probes": 5, "retain": 5}, clock=clock)
    eta.feed(StageStarted("probe"))  # a stray sample stage: not in this plan, ignored
    eta.feed(StageStarted("train", round=0))
    for step in (1, 2):
        clock.t += 1.0
        eta.feed(TrainStep(0, step, 10, 1.0, 1.0, 1.0))
    eta.feed(StageStarted("reprobe", round=0))
    clock.t += 1.0
    eta.feed(Progress("reprobe", 10, 10))
    snap = eta.snapshot()
    # Left: round 2 (10 steps, 10 answers), evaluation (10 answers) and attacks (32 answer-equivalents) at 1 s per
    # step and 0.1 s per answer; round 1's remaining steps were skipped when its check began.
    assert snap.eta_s == pytest.approx(10 * 1.0 + 10 * 0.1 + 10 * 0.1 + 32 * 0.1, rel=0.02)


def test_skipped_rounds_drop_out_and_finished_ends_at_one():
    clock = Clock()
    eta = job_eta({"settings": SETTINGS, "samples_ready": True}, clock=clock)
    eta.feed(StageStarted("train", round=0))
    eta.feed(StageStarted("evaluate"))  # round 1 stopped early: round 2 never runs
    assert all(p.finished for p in eta.phases[:4])
    assert eta.snapshot().phase == "Evaluating"
    eta.feed(Finished())
    assert eta.snapshot().fraction == 1.0 and eta.snapshot().text == "Done"


def test_time_driven_phase_moves_and_never_claims_done():
    clock = Clock()
    eta = JobEta([Phase("samples", "Writing", ANSWER, 10, by_items=False),
                  Phase("evaluate", "Evaluating", ANSWER, 10)], clock=clock)
    eta.feed(StageStarted("paraphrases"))
    clock.t += 1.0
    eta.feed(Progress("probe", 2, 2))  # 0.5 s per answer measured
    first = eta.snapshot().fraction
    clock.t += 2.0
    second = eta.snapshot().fraction
    assert 0 < first < second < 0.5
    clock.t += 1000.0  # far past the estimate: the bar stays short of the end and the estimate grows
    late = eta.snapshot()
    assert late.fraction < 0.999 and late.eta_s is not None and late.eta_s > 5


def test_resumed_round_measures_from_its_first_step():
    clock = Clock()
    eta = JobEta([Phase("train:0", "Training, round 1", STEP, 20)], clock=clock)
    eta.feed(StageStarted("train", round=0))
    clock.t += 3.0
    eta.feed(TrainStep(0, 8, 20, 1.0, 1.0, 1.0))  # resumed at step 7: one step in 3 s, not eight
    assert eta.per_item(STEP) == pytest.approx(3.0)
    assert eta.snapshot().eta_s == pytest.approx(12 * 3.0)


def test_format_duration():
    assert format_duration(0.2) == "1 s"
    assert format_duration(389) == "6 min 29 s"
    assert format_duration(29 * 60) == "29 min"
    assert format_duration(3 * 3600 + 5 * 60) == "3 h 05 min"
