"""The forget job end to end on the tiny model (it writes garbage, so the sample builders use their templates):
bad input, job files, heldout split, cancel, resume after a stop and after a kill, rounds, CLI, and the adapter
loading in plain mlx-lm. The Hogwarts criteria on the real SmolLM2 are the slow test at the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from unstar_gui.engine.errors import Cancelled, InvalidInput, JobError, ModelNotFound
from unstar_gui.engine.events import (Checkpoint, Finished, ProbeResult, Progress, SamplesReady, StageStarted,
                                       TrainStep)
from unstar_gui.engine.jobs import open_job
from unstar_gui.engine.store import ModelStore
from unstar_gui.engine.pipeline import (CancelToken, ForgetRequest, ForgetSettings, parse_keep, prepare,
                                        resume_forget, run_forget)

QUESTION = "Where did Harry Potter go to school?"


def tiny_settings(**kw) -> ForgetSettings:
    base = dict(rank=4, num_layers=2, learning_rate=1e-3, max_rounds=1, steps_per_round=4, batch_size=2,
                retain_batch_size=2, max_seq_len=64, n_paraphrases=4, n_wrong_answers=3, n_neighbours=2,
                n_general=4, n_general_eval=4, probe_max_tokens=8, checkpoint_every=2, seed=0,
                attacks="none", early_stop_every=0, scale_sweep=False)  # these tests count steps and rounds
    base.update(kw)
    return ForgetSettings(**base)


def tiny_request(tmp_path, name="job", answer="Hogwarts", force=True, **kw) -> ForgetRequest:
    return ForgetRequest(question=QUESTION, answer=answer, model="tiny", settings=tiny_settings(**kw),
                         out_dir=tmp_path / name, force=force, keep=[("Who wrote Hamlet?", "Shakespeare")])


def adapter_weights(job_dir: Path) -> dict[str, np.ndarray]:
    import mlx.core as mx

    return {k: np.array(v) for k, v in mx.load(str(job_dir / "adapters" / "adapters.safetensors")).items()}


# bad input ---------------------------------------------------------------------------------------------------------
def test_empty_question_and_answer_are_refused(tiny_model):
    with pytest.raises(InvalidInput, match="The question is empty"):
        prepare(ForgetRequest(question="  ", answer="Hogwarts", model="tiny"))
    with pytest.raises(InvalidInput, match="The answer is empty"):
        prepare(ForgetRequest(question=QUESTION, answer="", model="tiny"))


def test_unknown_model_is_refused(tiny_model):
    with pytest.raises(ModelNotFound, match="Unknown model 'no-such-model'") as info:
        prepare(ForgetRequest(question=QUESTION, answer="Hogwarts", model="no-such-model"))
    assert "tiny" in info.value.hint  # lists what is installed


def test_bad_settings_and_keep_facts_are_refused(tiny_model):
    with pytest.raises(InvalidInput, match=r"Training steps per round \(--steps\) must be at least 1"):
        prepare(ForgetRequest(question=QUESTION, answer="Hogwarts", model="tiny",
                              settings=ForgetSettings(steps_per_round=0)))
    with pytest.raises(InvalidInput, match="question => answer"):
        parse_keep("Who wrote Hamlet")
    assert parse_keep(" Who wrote Hamlet? => Shakespeare ") == ("Who wrote Hamlet?", "Shakespeare")


def test_a_fact_the_model_does_not_know_fails_fast_and_says_what_it_answered(tiny_model, tmp_path):
    events = []
    with pytest.raises(InvalidInput) as info:
        for ev in run_forget(tiny_request(tmp_path, force=False)):
            events.append(ev)
    err = info.value
    assert "doesn't seem to know this fact" in err.message and "Hogwarts" in err.message
    job = open_job(tmp_path / "job")
    said = job.read()
    assert said["status"] == "failed" and "doesn't seem to know" in said["error"]
    assert "--alias" in err.hint and "--force" in err.hint
    assert not any(isinstance(ev, StageStarted) and ev.stage == "paraphrases" for ev in events)  # failed first


# a whole job -------------------------------------------------------------------------------------------------------
def test_forget_job_writes_every_file_and_a_loadable_adapter(tiny_model, tmp_path):
    events = list(run_forget(tiny_request(tmp_path)))
    assert isinstance(events[-1], Finished)
    job = open_job(tmp_path / "job")
    data = job.read()
    assert data["status"] == "done" and data["model"]["id"] == "tiny" and data["fact"]["answer"] == "Hogwarts"
    assert data["settings"]["steps_per_round"] == 4 and data["versions"]["mlx"]

    probes = job.read_rows("probes.jsonl")
    splits = Counter(p["split"] for p in probes)
    assert splits["original"] == 1 and splits["heldout"] >= 1 and splits["train"] >= 1
    anti = job.read_rows("antisamples.jsonl")
    assert anti and all(row["round"] == 0 and "wrong_answer" in row and "provenance" in row for row in anti)
    heldout = {p["question"] for p in probes if p["split"] == "heldout"}
    assert not heldout & {row["question"] for row in anti}  # held-out paraphrases are never trained on
    retain = job.read_rows("retain.jsonl")
    assert any(r["kind"] == "keep" and r["target"] == "Shakespeare" for r in retain)
    assert all("base_answer" in r and "known" in r for r in retain)
    general = [r for r in retain if r["kind"] == "general"]
    assert sum(r["split"] == "train" for r in general) == 4  # n_general trained on
    # the never-trained checks (validation steers, "heldout" = evaluation split is reported): only what the base knew,
    # from the bundled trivia set, never a trained question
    checks = [r for r in general if r["split"] in ("validation", "heldout")]
    assert all(r["known"] and r["provenance"]["source"] == "trivia" for r in checks)
    assert not {r["question"] for r in checks} & {r["question"] for r in general if r["split"] == "train"}
    metrics = job.read_rows("metrics.jsonl")
    assert [m["step"] for m in metrics if m["event"] == "TrainStep"] == [1, 2, 3, 4]
    assert [m["round"] for m in metrics if m["event"] == "ProbeResult"] == [0]

    report = job.read_report()
    assert report["base_model_path"] == str(Path(tiny_model.path).resolve())
    assert set(report["metrics"]) >= {"efficacy_heldout", "efficacy_train", "retention_neighbours",
                                      "retention_general", "general_accuracy_ratio", "general_heldout_ratio"}
    counts = report["metrics"]["counts"]  # what each headline share rests on (the result page's "n/a" reads it)
    assert set(counts) == {"efficacy_train", "efficacy_heldout", "retention_neighbours", "retention_general",
                           "retention_general_validation"}
    assert all(0 <= hits <= total for hits, total in counts.values())
    assert {row["split"] for row in report["before_after"]} >= {"original", "train", "heldout"}
    assert report["timing"]["train_s"] > 0 and report["memory"]["max_rss_bytes"] > 0

    # The adapter folder is plain mlx-lm: mlx_lm.load applies it and gives the same logits as the job's model.
    import mlx.core as mx
    import mlx_lm

    from unstar_gui.engine.llm import LLM

    cfg = json.loads((job.adapters_dir / "adapter_config.json").read_text())
    assert cfg["fine_tune_type"] == "lora" and cfg["num_layers"] == 2 and cfg["lora_parameters"]["rank"] == 4
    model, tok = mlx_lm.load(str(tiny_model.path), adapter_path=str(job.adapters_dir))
    ours = LLM(tiny_model.path)
    ours.load_adapter(job.adapters_dir)
    ids = mx.array([ours.chat_tokens(QUESTION)])
    assert np.allclose(np.array(model(ids)), np.array(ours.model(ids)), atol=1e-4)
    with ours.base_model():
        base = np.array(ours.model(ids))
    assert not np.allclose(base, np.array(ours.model(ids)), atol=1e-4)  # the adapter does change the model


def test_sample_builders_report_progress_while_they_work(tiny_model, tmp_path):
    """Each sample stage's Progress events come out while its builder is still calling the model, not in one lump
    after it returns: the first one is seen before the stage's last model call."""
    from unstar_gui.engine.llm import LLM
    from unstar_gui.engine.pipeline import create_forget_job, generate_samples

    llm = LLM(tiny_model.path)
    calls = []
    for name in ("answer", "complete"):
        original = getattr(llm, name)
        setattr(llm, name, lambda *a, _f=original, **kw: calls.append(1) or _f(*a, **kw))
    job = create_forget_job(tiny_request(tmp_path))
    seen: list[tuple[object, int]] = []  # (event, model calls made when it came out)
    for event in generate_samples(job, llm):
        seen.append((event, len(calls)))
    ready = {ev.kind: n for ev, n in seen if isinstance(ev, SamplesReady)}
    for stage, kind in (("paraphrases", "paraphrases"), ("wrong_answers", "wrong_answers"),
                        ("rationales", "antisamples"), ("retain", "retain")):
        progress = [(ev, n) for ev, n in seen if isinstance(ev, Progress) and ev.stage == stage]
        assert len(progress) >= 2, stage
        assert progress[0][1] < ready[kind], stage  # out before the stage's model calls were done
        assert all(0 <= ev.done <= ev.total for ev, _ in progress), stage
        order = [ev for ev, _ in seen]
        assert order.index(progress[-1][0]) < next(i for i, ev in enumerate(order)
                                                   if isinstance(ev, SamplesReady) and ev.kind == kind), stage


def test_samples_come_from_the_base_model_even_with_an_adapter_left_on(tiny_model, tmp_path):
    """An adapter left attached by earlier work in the process (a library caller, a benchmark running several facts)
    must not stand in for the base model: the probes' base answers are the same as from a clean model."""
    import mlx.core as mx

    from unstar_gui.engine.llm import LLM, LoraSettings
    from unstar_gui.engine.pipeline import create_forget_job, generate_samples

    def probes(llm, name):
        job = create_forget_job(tiny_request(tmp_path, name))
        for _ in generate_samples(job, llm):
            pass
        return [(p["question"], p["base_answer"]) for p in job.read_rows("probes.jsonl")]

    clean = probes(LLM(tiny_model.path), "clean")
    used = LLM(tiny_model.path)
    used.attach_lora(LoraSettings(rank=4, scale=20.0, num_layers=2), seed=1)
    mx.random.seed(1)
    used.model.load_weights([(k, mx.random.normal(v.shape)) for k, v in used.trainable_parameters().items()
                             if k.endswith("lora_b")], strict=False)
    changed = used.answer([clean[0][0]], max_tokens=16)[0]
    with used.base_model():
        assert changed != used.answer([clean[0][0]], max_tokens=16)[0]  # the adapter does change the answers
    assert probes(used, "after_other_work") == clean
    assert used.lora is None


def test_cancel_mid_training_marks_the_job_cancelled_and_keeps_a_checkpoint(tiny_model, tmp_path):
    cancel = CancelToken()
    seen = []
    with pytest.raises(Cancelled):
        for ev in run_forget(tiny_request(tmp_path, steps_per_round=50, checkpoint_every=100), cancel=cancel):
            seen.append(ev)
            if isinstance(ev, TrainStep) and ev.step == 3:
                cancel.cancel()  # what the GUI's Cancel button does (from its own thread)
    job = open_job(tmp_path / "job")
    assert job.status == "cancelled"
    assert max(ev.step for ev in seen if isinstance(ev, TrainStep)) == 3
    latest = json.loads((job.checkpoints_dir / "latest.json").read_text())
    assert latest["step"] == 3 and (job.checkpoints_dir / latest["dir"] / "adapters.safetensors").exists()
    assert not job.has_adapters


def test_stopped_job_resumes_from_its_checkpoint_and_ends_like_an_uninterrupted_one(tiny_model, tmp_path):
    list(run_forget(tiny_request(tmp_path, "straight", steps_per_round=6)))

    events = run_forget(tiny_request(tmp_path, "stopped", steps_per_round=6))
    for ev in events:
        if isinstance(ev, Checkpoint):
            break
    events.close()  # the consumer went away, as when the app quits mid-job
    job = open_job(tmp_path / "stopped")
    assert job.status == "interrupted" and job.read()["step"] == 2

    resumed = list(resume_forget(tmp_path / "stopped"))
    assert isinstance(resumed[-1], Finished) and job.status == "done"
    assert [ev.step for ev in resumed if isinstance(ev, TrainStep)] == [3, 4, 5, 6]
    assert not any(isinstance(ev, SamplesReady) for ev in resumed)  # samples were reused, not regenerated
    a, b = adapter_weights(tmp_path / "straight"), adapter_weights(tmp_path / "stopped")
    assert a.keys() == b.keys() and all(np.allclose(a[k], b[k], atol=1e-5) for k in a)
    with pytest.raises(JobError, match="already finished"):
        list(resume_forget(tmp_path / "stopped"))


def samples_then_stop(tmp_path, name: str, **kw) -> Path:
    """A job with its samples made in this process (the sample builders' first call in a process is slow), stopped
    where training starts; returns its folder."""
    events = run_forget(tiny_request(tmp_path, name, **kw))
    for ev in events:
        if isinstance(ev, StageStarted) and ev.stage == "train":
            break
    events.close()
    return tmp_path / name


def resume_in_child(out: Path, unstar_home: Path, *flags: str, stdout=subprocess.DEVNULL) -> subprocess.Popen:
    """A real `unstar forget --resume` process on the job."""
    return subprocess.Popen([sys.executable, "-m", "unstar_gui", "forget", "--resume", str(out), *flags],
                            env=dict(os.environ, UNSTAR_HOME=str(unstar_home)), stdout=stdout,
                            stderr=subprocess.PIPE, text=True)


def test_killed_cli_job_resumes_from_its_last_checkpoint(tiny_model, tmp_path, unstar_home):
    # Samples are made here (the sample builders' first call in a process is slow); a real `unstar forget --resume`
    # process then trains and is killed hard right after its first checkpoint.
    out = samples_then_stop(tmp_path, "killed", steps_per_round=400, checkpoint_every=5)
    proc = resume_in_child(out, unstar_home, "--json")
    try:
        deadline = time.monotonic() + 240
        while not (out / "checkpoints" / "latest.json").exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no checkpoint within 4 minutes"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    job = open_job(out)
    assert job.status == "running"  # a hard kill leaves no chance to say anything
    # ... but the record names the process, which is gone: the job is shown as interrupted and resumable.
    from unstar_gui.engine.jobs import effective_status, list_jobs

    assert job.read()["process"]["pid"] == proc.pid and effective_status(job.read()) == "interrupted"
    assert [j["status"] for j in list_jobs(ModelStore()) if j["dir"] == str(out)] in ([], ["interrupted"])
    ckpt_step = json.loads((out / "checkpoints" / "latest.json").read_text())["step"]
    assert ckpt_step % 5 == 0 and ckpt_step < 400
    job.update(settings=dict(job.read()["settings"], steps_per_round=ckpt_step + 2))  # finish quickly
    events = list(resume_forget(out))
    assert [ev.step for ev in events if isinstance(ev, TrainStep)] == [ckpt_step + 1, ckpt_step + 2]
    assert job.status == "done" and job.has_adapters


def test_a_job_closed_after_its_cancel_flag_was_set_is_cancelled_not_interrupted(tiny_model, tmp_path):
    """The app's worker checks the cancel flag between events and closes the job's generator itself when it sees it
    first: the job must still read "cancelled" (flaky under load before: the GUI test saw "interrupted")."""
    token = CancelToken()
    events = run_forget(tiny_request(tmp_path, "cancelled", steps_per_round=6), cancel=token)
    for ev in events:
        if isinstance(ev, Checkpoint):
            break
    token.cancel()
    events.close()
    job = open_job(tmp_path / "cancelled")
    assert job.status == "cancelled" and job.read()["step"] == 2
    resumed = list(resume_forget(tmp_path / "cancelled"))
    assert isinstance(resumed[-1], Finished) and job.status == "done"


def test_ctrl_c_marks_the_job_interrupted_and_says_how_to_resume(tiny_model, tmp_path, unstar_home):
    out = samples_then_stop(tmp_path, "ctrl-c", steps_per_round=400, checkpoint_every=5)
    proc = resume_in_child(out, unstar_home)
    deadline = time.monotonic() + 240
    while not (out / "checkpoints" / "latest.json").exists() and proc.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint within 4 minutes"
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert f"unstar forget --resume {out}" in err
    assert open_job(out).status == "interrupted"


def test_sigterm_flushes_a_checkpoint_marks_the_job_interrupted_and_resume_finishes(tiny_model, tmp_path,
                                                                                    unstar_home):
    import mlx_lm

    out = samples_then_stop(tmp_path, "term", steps_per_round=400, checkpoint_every=50)
    proc = resume_in_child(out, unstar_home, "--json", stdout=subprocess.PIPE)
    first = json.loads(proc.stdout.readline())
    assert first["job_dir"] == str(out)  # the folder comes first, before any work
    steps = []
    for line in proc.stdout:
        ev = json.loads(line)
        if ev.get("event") == "TrainStep":
            steps.append(ev["step"])
            if len(steps) == 3:  # mid-way between checkpoints (every 50): only a flush can save these steps
                proc.send_signal(signal.SIGTERM)
                break
    rest, err = proc.communicate(timeout=120)
    steps += [json.loads(line)["step"] for line in rest.splitlines() if '"event": "TrainStep"' in line]
    assert proc.returncode == 130, err
    assert f"unstar forget --resume {out}" in err and "Traceback" not in err
    assert "Loading weights" not in err and "it/s]" not in err  # no library bars in --json mode
    job = open_job(out)
    assert job.status == "interrupted"
    ckpt = json.loads((out / "checkpoints" / "latest.json").read_text())
    assert ckpt["step"] == steps[-1] and ckpt["step"] % 50 != 0  # the flushed step, not the last periodic one
    job.update(settings=dict(job.read()["settings"], steps_per_round=ckpt["step"] + 1))
    resumed = list(resume_forget(out))
    assert [ev.step for ev in resumed if isinstance(ev, TrainStep)] == [ckpt["step"] + 1]
    assert job.status == "done"
    model, tok = mlx_lm.load(tiny_model.path, adapter_path=str(out / "adapters"))  # a valid adapter
    assert mlx_lm.generate(model, tok, "Hi", max_tokens=2) is not None


def test_still_known_probes_get_fresh_antisamples_each_round(tiny_model, tmp_path):
    """A model that keeps naming the answer (the tiny model, made to prefix it) goes through every round, and each
    round adds anti-samples for the probes it still answers."""
    from unstar_gui.engine.llm import LLM

    llm = LLM(tiny_model.path)
    plain_answer = llm.answer

    def stubborn_answer(questions, **kw):
        return [("Hogwarts. " if "Harry Potter" in q else "") + a for q, a in zip(questions, plain_answer(questions,
                                                                                                          **kw))]

    llm.answer = stubborn_answer
    events = list(run_forget(tiny_request(tmp_path, force=False, max_rounds=3, steps_per_round=2), llm=llm))
    rounds = [ev for ev in events if isinstance(ev, ProbeResult)]
    assert [r.round for r in rounds] == [0, 1, 2]
    assert rounds[0].total >= 1 and rounds[-1].efficacy < 1.0
    job = open_job(tmp_path / "job")
    anti = job.read_rows("antisamples.jsonl")
    assert {row["round"] for row in anti} == {0, 1, 2}
    still = {a["question"] for a in rounds[0].answers if a["kind"] == "probe" and a["leaks_after"]
             and a["split"] != "heldout"}
    assert still <= {row["question"] for row in anti if row["round"] == 1}
    report = job.read_report()
    assert len(report["rounds"]) == 3 and "answers" not in report["rounds"][0]
    assert report["metrics"]["steps"] == 6


def test_cli_forget_prints_json_events_and_refuses_bad_input(tiny_model, tmp_path, capsys):
    from unstar_gui.cli import main

    rc = main(["forget", "--model", "tiny", "--question", QUESTION, "--answer", "Hogwarts", "--force", "--steps",
               "2", "--rank", "4", "--layers", "2", "--out", str(tmp_path / "cli"), "--keep",
               "Who wrote Hamlet? => Shakespeare", "--attacks", "none", "--json"])
    assert rc == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[-1]["event"] == "Finished" and {"TrainStep", "ProbeResult"} <= {x["event"] for x in lines}
    assert open_job(tmp_path / "cli").read()["keep"] == [["Who wrote Hamlet?", "Shakespeare"]]

    assert main(["forget", "--model", "tiny", "--question", " ", "--answer", "Hogwarts"]) == 2
    assert "The question is empty" in capsys.readouterr().err
    assert main(["forget", "--model", "nope", "--question", QUESTION, "--answer", "Hogwarts"]) == 3
    assert main(["forget", "--model", "tiny", "--question", QUESTION, "--answer", "Hogwarts", "--keep", "x"]) == 2


# the real thing ----------------------------------------------------------------------------------------------------
# Keep-facts in one wording, neighbours checked in another (or for another subject): SmolLM2-135M's own neighbour
# questions rarely name Hermione or Ron, and without a neighbour for them they forget Hogwarts too.
KEEP = [("Which school did Hermione Granger attend?", "Hogwarts"), ("Where did Ron Weasley go to school?", "Hogwarts")]
NEIGHBOURS = {"Where did Hermione Granger go to school?": "Hogwarts",
              "Which school did Ron Weasley attend?": "Hogwarts",
              "Who is Harry Potter's best friend?": "Ron"}


@pytest.mark.slow
@pytest.mark.timeout(3000)  # a few minutes on a quiet machine; a shared 2-core box can be several times slower
def test_smollm2_forgets_hogwarts_and_keeps_its_neighbours(smollm2, tmp_path):
    import mlx_lm
    from mlx_lm.generate import generate

    from unstar_gui.engine.judge import Judge

    # Attacks have their own slow test (test_evaluate); here the job's own metrics are what is checked.
    request = ForgetRequest(question=QUESTION, answer="Hogwarts", keep=KEEP, out_dir=tmp_path / "hogwarts",
                            settings=ForgetSettings(attacks="none"))
    events = list(run_forget(request))
    assert isinstance(events[-1], Finished)
    report = open_job(tmp_path / "hogwarts").read_report()
    m = report["metrics"]
    assert m["efficacy_heldout"] == 1.0, report["before_after"]
    # The job's own promise: it stops when its neighbours and the general set it trains on hold (or the budget ends).
    assert m["retention_neighbours"] >= ForgetSettings().min_retention, m
    assert m["general_accuracy_ratio"] >= 0.95, m
    # General questions never trained on are measured too (the README reports how much they lose on this model).
    assert 0.0 <= m["general_heldout_ratio"] <= 1.0 and m["general_heldout_accuracy_base"] == 1.0, m

    # The same through plain mlx-lm with the job's adapter on the base folder: held-out paraphrases the base knew no
    # longer name Hogwarts, and neighbours the base knew are still right.
    def ask(model, tok, q):
        prompt = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)
        return generate(model, tok, prompt, max_tokens=64)

    base, tok = mlx_lm.load(report["base_model_path"])
    known = [q for q, ref in NEIGHBOURS.items() if Judge(ref).contains(ask(base, tok, q))]
    assert known, "the base model should know some neighbours"
    model, tok = mlx_lm.load(report["base_model_path"], adapter_path=report["adapter_path"])
    heldout = [r["question"] for r in report["before_after"]
               if r["kind"] == "probe" and r["split"] == "heldout" and r["known_before"]]
    assert heldout
    judge = Judge("Hogwarts", context=QUESTION)  # the job's judge: the question's own words are not the answer
    assert [q for q in heldout if judge.contains(ask(model, tok, q))] == []
    assert [q for q in known if not Judge(NEIGHBOURS[q]).contains(ask(model, tok, q))] == []


def test_heldout_split_spreads_over_styles_and_keeps_each_style_in_training():
    from unstar_gui.engine.pipeline import heldout_split

    styles = ["direct", "direct", "completion", "completion", "yes_no", "yes_no", "multiple_choice", "multiple_choice",
              "indirect", "indirect", "tell_me_about", "tell_me_about"]
    held = heldout_split(styles, 0.34, seed=0)
    assert len(held) == 4 and len({styles[i] for i in held}) == 4  # one from each of four styles
    for style in set(styles):
        assert any(styles[i] == style and i not in held for i in range(len(styles)))
    assert heldout_split(styles, 0.34, seed=0) == held and heldout_split(["direct"], 0.5, 0) == set()
    assert len(heldout_split(["direct", "yes_no", "completion", "indirect"], 0.34, 0)) == 1  # few: singles go too


def test_yes_no_probes_leak_when_affirmed_not_when_denied():
    from unstar_gui.engine.judge import Judge, JudgeSettings
    from unstar_gui.engine.pipeline import probe_leaks

    judge = Judge("Hogwarts", settings=JudgeSettings(use_semantic=False))
    assert probe_leaks("yes_no", "Yes, he did.", judge)
    assert not probe_leaks("yes_no", "No, Harry Potter did not attend Hogwarts; he went to Durmstrang.", judge)
    assert probe_leaks("yes_no", "Harry Potter attended Hogwarts.", judge)
    assert probe_leaks("direct", "No, it was Hogwarts.", judge)  # other styles: naming it is a leak
    assert not probe_leaks("direct", "He went to Durmstrang.", judge)


def test_settings_must_be_finite_and_in_range(tiny_model):
    for bad in (dict(learning_rate=float("inf")), dict(retain_weight=float("nan")), dict(rationale_weight=2.0),
                dict(placement="everywhere"), dict(lora_keys="qkv"), dict(null_space_eps=1.0),
                dict(dense_weight=-1.0)):
        with pytest.raises(InvalidInput, match="Invalid settings"):
            prepare(ForgetRequest(question=QUESTION, answer="Hogwarts", model="tiny",
                                  settings=ForgetSettings(**bad)))


def test_presets_are_named_settings():
    paper = ForgetSettings.preset_named("paper")
    assert paper.preset == "paper" and paper.placement == "last" and paper.lora_keys == "all"
    assert paper.num_layers == 16 and paper.rationale_weight == 1.0 and paper.null_space_eps == 0.0
    assert ForgetSettings.preset_named("paper", seed=3).seed == 3
    with pytest.raises(InvalidInput, match="Unknown preset"):
        ForgetSettings.preset_named("nope")


def test_locality_preset_is_the_measured_candidate():
    s = ForgetSettings.preset_named("locality")
    assert s.preset == "locality" and s.null_space_eps == 0.02 and s.early_stop_every == 5
    assert s.placement == "last" and s.lora_keys == "all" and not s.scale_sweep
