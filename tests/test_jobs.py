"""The typed job model (engine/records.py) and the Job verbs (engine/jobs.py), on a job folder written by the code
before the job model existed (tests/data/old_job: the tiny model's job.json, probes/antisamples/retain.jsonl,
metrics.jsonl and report.json with two attack results; no weights)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from unstar_gui.engine.jobs import STATUSES, Job, effective_status, list_jobs, open_job
from unstar_gui.engine.records import (AntiSampleRow, AttackResult, JobRecord, JobStatus, ProbeRow, ProbeSplit,
                                       ProbeStyle, Report, RetainKind, RetainRow, RetainSplit, RoundSummary)
from unstar_gui.engine.store import ModelStore

OLD_JOB = Path(__file__).parent / "data" / "old_job"
ROWS = (("probes.jsonl", ProbeRow), ("retain.jsonl", RetainRow), ("antisamples.jsonl", AntiSampleRow))


@pytest.fixture
def old_job(unstar_home) -> Job:
    """A copy of the old job folder in this test's data folder (jobs/)."""
    target = ModelStore().jobs_dir / "20260101-000000-where-did-harry-potter-go-to-school"
    shutil.copytree(OLD_JOB, target)
    return open_job(target)


def _lines(name: str) -> list[dict]:
    return [json.loads(line) for line in (OLD_JOB / name).read_text().splitlines() if line.strip()]


def _changed(before: dict, after: dict) -> set[str]:
    """The job.json keys a verb changed ("updated" is every write's time stamp)."""
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)} - {"updated"}


# the old folder ------------------------------------------------------------------------------------------------------
def test_an_old_job_folder_opens_as_typed_records(old_job):
    record = old_job.record()
    assert record.status is JobStatus.DONE and record.stage == "done" and record.error is None
    assert record.fact["answer"] == "Hogwarts" and record.keep == [["Who wrote Hamlet?", "Shakespeare"]]
    assert record.settings["steps_per_round"] == 2 and record.placement["keys"] == "all"
    assert [type(r) for r in record.rounds] == [RoundSummary] and record.rounds[0].retention_holds
    assert record.rounds[0].extra == {"event": "ProbeResult"}  # a key the record has no field for is kept
    assert len(record.dropped) == 4 and record.samples_ready

    probes = old_job.probes()
    assert probes[0].split is ProbeSplit.ORIGINAL and probes[0].style is ProbeStyle.ORIGINAL
    assert {p.split for p in probes[1:]} <= {ProbeSplit.TRAIN, ProbeSplit.HELDOUT} and all(p.kept for p in probes)
    retain = old_job.retain()
    assert retain[0].kind is RetainKind.KEEP and retain[0].target == "Shakespeare"
    assert {r.split for r in retain} == {RetainSplit.TRAIN} and all(r.aliases is None for r in retain)
    anti = old_job.antisamples()
    assert anti and all(isinstance(a.style, ProbeStyle) and a.round == 0 for a in anti)
    assert [a.id for a in anti] == list(range(len(anti)))

    report = old_job.report()
    assert report.metrics["probes_total"] == len(probes) and report.rounds == record.rounds
    attacks = report.attacks()
    assert [(a.attack, a.variant) for a in attacks] == [("quantization", "4bit-g32"), ("multihop", "indirect")]
    assert attacks[0].bits == 4 and attacks[0].group_size == 32 and attacks[0].recovery == 0.0
    assert attacks[0].extra == {"weights_changed": 15} and attacks[1].skipped is None


def test_the_jobs_list_and_effective_status_read_an_old_job(old_job):
    (listed,) = list_jobs(ModelStore())
    assert listed["status"] == "done" and listed["dir"] == str(old_job.dir)
    assert effective_status(old_job.read()) == "done"
    running = dict(old_job.read(), status="running", process={"pid": 2 ** 22 + 12345, "host": ""})
    assert effective_status(running) == "interrupted"  # its process is gone


@pytest.mark.parametrize("name,kind", ROWS)
def test_old_rows_round_trip(name, kind):
    for line in _lines(name):
        record = kind.from_dict(line)
        assert record.to_dict() == line  # same keys, same values: the file reads the same after a rewrite
        assert kind.from_dict(record.to_dict()) == record


def test_old_job_and_report_round_trip():
    job = json.loads((OLD_JOB / "job.json").read_text())
    record = JobRecord.from_dict(job)
    assert record.to_dict() == job and JobRecord.from_dict(record.to_dict()) == record
    assert json.loads(json.dumps(record.to_dict())) == job  # enums are written as their plain values
    report = json.loads((OLD_JOB / "report.json").read_text())
    typed = Report.from_dict(report)
    assert typed.to_dict() == report and Report.from_dict(typed.to_dict()) == typed
    for row in report["evaluation"]["attacks"]:
        assert AttackResult.from_dict(row).to_dict() == row


def test_records_are_tolerant_of_what_older_and_newer_versions_write():
    oldest = ProbeRow.from_dict({"question": "Q?", "style": "direct", "split": "train", "base_answer": "A",
                                 "known": True})  # before the quality gates: no "quality"
    assert oldest.quality is None and oldest.kept and "quality" not in oldest.to_dict()
    newer = ProbeRow.from_dict({"question": "Q?", "style": "haiku", "split": "train", "score": 0.5})
    assert newer.style == "haiku" and newer.extra == {"score": 0.5}  # an unknown style stays a plain string
    assert newer.to_dict()["style"] == "haiku" and newer.to_dict()["score"] == 0.5
    check = {"question": "Q?", "target": "A", "kind": "general", "reference": "A", "aliases": ["a"],
             "split": "validation", "provenance": {}, "base_answer": "A", "known": True}  # a general check row
    assert RetainRow.from_dict(check).split is RetainSplit.VALIDATION and RetainRow.from_dict(check).to_dict() == check
    assert JobRecord.from_dict({}).status is JobStatus.CREATED and JobRecord.from_dict({}).rounds == ()
    assert Report.from_dict({"metrics": {}}).to_dict() == {"metrics": {}}  # a partial report stays partial
    assert Report.from_dict({}).attacks() == [] and Report.from_dict({"evaluation": {"attacks": None}}).attacks() == []
    with pytest.raises(Exception):
        oldest.known = False  # frozen


def test_enums_are_strings_with_the_values_on_disk():
    assert STATUSES == ("created", "running", "interrupted", "cancelled", "failed", "done") == JobStatus.values()
    assert JobStatus.DONE == "done" and str(JobStatus.DONE) == "done" and f"{ProbeSplit.HELDOUT}" == "heldout"
    assert json.dumps([RetainKind.KEEP, ProbeStyle.YES_NO]) == '["keep", "yes_no"]'
    from unstar_gui.engine.antisamples import STYLES
    from unstar_gui.engine.retain import KINDS

    assert STYLES == ("direct", "indirect", "completion", "multiple_choice", "yes_no", "tell_me_about")
    assert KINDS == ("neighbour_subject", "neighbour_answer", "keep", "general")


# the verbs: each writes the keys it owns and leaves every other key as it was -----------------------------------------
@pytest.mark.parametrize("verb,owned", [
    (lambda j: j.set_status("failed", error="boom"), {"status", "error"}),
    (lambda j: j.set_status("running", error=None, process={"pid": 1}), {"status", "process"}),
    (lambda j: j.set_status(JobStatus.INTERRUPTED, stage="train"), {"status", "stage"}),
    (lambda j: j.set_stage("reprobe"), {"stage"}),
    (lambda j: j.set_position(1, 3), {"round", "step"}),
    (lambda j: j.set_position(1, 0, stage="train"), {"round", "step", "stage"}),
    (lambda j: j.add_timing("train", 1.5), {"timing"}),
    (lambda j: j.record_round({"round": 1, "efficacy": 0.5}), {"rounds"}),
    (lambda j: j.record_placement({"keys": "mlp"}), {"placement"}),
    (lambda j: j.record_early_stop(0, 1, 2), {"round", "step", "early_stops"}),
    (lambda j: j.record_adapter_scale(0, 0.5, 0.375), {"adapter_scales"}),
    (lambda j: j.mark_samples_ready([]), {"samples_ready", "samples_round", "stage", "dropped"}),
    (lambda j: j.set_samples_round(1), {"samples_round"}),
    (lambda j: j.set_fact({"question": "Q?", "answer": "A", "aliases": []}),
     {"fact", "keep", "ui_keep_reviewed", "samples_ready"}),
    (lambda j: j.set_keep([("Q?", "A")]), {"keep", "ui_keep_reviewed"}),
    (lambda j: j.set_force(False), {"force"}),
    (lambda j: j.merge_settings({"rank": 2}), {"settings"}),
    (lambda j: j.set_ui_step("keep"), {"ui_step"}),
    (lambda j: j.discard_samples(), {"samples_ready"}),
])
def test_each_verb_writes_only_what_it_owns(old_job, verb, owned):
    before = old_job.read()
    verb(old_job)
    after = old_job.read()
    assert _changed(before, after) and _changed(before, after) <= owned
    assert after["updated"] >= before["updated"]


def test_the_verbs_write_the_right_values(old_job):
    old_job.set_status("failed", error="boom")
    old_job.set_status("done")  # leaves the error as it is
    assert old_job.record().error == "boom"
    with pytest.raises(ValueError):
        old_job.set_status("finished")
    timing = old_job.record().timing
    old_job.add_timing("train", 1.5)
    assert old_job.record().timing["train_s"] == round(timing["train_s"] + 1.5, 2)
    old_job.record_early_stop(1, 3, 5)
    assert old_job.record().early_stops == [{"round": 1, "step": 3}] and old_job.record().step == 5
    old_job.merge_settings({"rank": 2})
    settings = old_job.record().settings
    assert settings["rank"] == 2 and settings["steps_per_round"] == 2

    first = old_job.record().rounds[0]
    rounds = old_job.record_round(RoundSummary(round=1, efficacy_train=0.5, retention_holds=False))
    assert [r.round for r in rounds] == [0, 1] and rounds[0] == first
    rounds = old_job.record_round({"round": 1, "efficacy_train": 1.0})  # the same round again replaces it
    assert [r.efficacy_train for r in rounds] == [first.efficacy_train, 1.0] and old_job.record().rounds == rounds


def test_discard_set_fact_and_copy_samples(old_job, tmp_path):
    other = Job(tmp_path / "other")
    other.dir.mkdir()
    other.copy_samples_from(old_job)
    for name, _ in ROWS:
        assert other.read_rows(name) == old_job.read_rows(name)
    old_job.set_fact({"question": "Who wrote Hamlet?", "answer": "Shakespeare", "aliases": []})
    assert not any(old_job.file(name).exists() for name, _ in ROWS)
    record = old_job.record()
    assert record.keep == [] and record.ui_keep_reviewed is False and not record.samples_ready
    assert other.probes()  # the copy is the other job's own


def test_sample_writers_keep_the_shape(old_job):
    for name, kind in ROWS:
        rows = old_job.read_rows(name)
        typed = [kind.from_dict(r) for r in rows]
        getattr(old_job, "write_" + name.split(".")[0])(typed)  # records ...
        assert old_job.read_rows(name) == rows
        getattr(old_job, "write_" + name.split(".")[0])(rows)  # ... or their dicts
        assert old_job.read_rows(name) == rows


def test_report_writers_keep_each_others_keys(old_job):
    evaluation = old_job.read_report()["evaluation"]
    old_job.record_comparison({"title": "2 methods", "rows": []})
    written = old_job.write_report(Report(metrics={"efficacy": 1.0}, rounds=old_job.record().rounds))
    on_disk = old_job.read_report()
    assert on_disk["evaluation"] == evaluation and on_disk["comparison"]["title"] == "2 methods"  # kept
    assert on_disk["metrics"] == {"efficacy": 1.0} and "before_after" not in on_disk  # the pipeline's part: new
    assert written == old_job.report() and written.rounds == old_job.record().rounds

    report = old_job.record_evaluation({"verdict": {"label": "x"}}, fact={"question": "other"}, model={},
                                       method="npo")
    assert report["evaluation"] == {"verdict": {"label": "x"}} and report["metrics"] == {"efficacy": 1.0}
    assert report["comparison"]["title"] == "2 methods" and report["rounds"] == on_disk["rounds"]
    assert report["fact"] == {"question": "other"} and report["method"] == "npo"  # the partial report had none
    report = old_job.record_evaluation({}, fact={"question": "third"}, model={}, method="ga")
    assert report["fact"] == {"question": "other"} and report["method"] == "npo"  # defaults only fill gaps

    fresh = Job(old_job.dir.parent / "fresh")
    fresh.dir.mkdir()
    report = fresh.record_evaluation({"attacks": []}, fact={"question": "Q?"}, model={"id": "tiny"}, method="unstar")
    assert report == {"fact": {"question": "Q?"}, "model": {"id": "tiny"}, "method": "unstar",
                      "evaluation": {"attacks": []}}


def test_the_model_card_reads_typed_attack_results(old_job):
    from unstar_gui.engine.model_card import attack_results, quantization_findings

    report = old_job.read_report()
    assert all(isinstance(a, AttackResult) for a in attack_results(report))
    (finding,) = quantization_findings(report)
    assert (finding.bits, finding.group_size, finding.recovery, finding.total) == (4, 32, 0.0, 2)
    assert quantization_findings(None) == [] and attack_results({"evaluation": "garbled"}) == []
    legacy = {"evaluation": {"attacks": [{"attack": "quant", "variant": "8bit-g64", "recovery": 0.25}]}}
    (finding,) = quantization_findings(legacy)  # bits and group size read from the label when not recorded
    assert (finding.bits, finding.group_size, finding.recovery) == (8, 64, 0.25)


def test_only_jobs_py_writes_a_job_folder():
    """Job's verbs are the only writers: no module outside engine/jobs.py calls the primitives under them or writes
    job.json / report.json itself."""
    root = Path(__file__).parents[1] / "unstar_gui"
    primitive = re.compile(r"\bjob\.(update|write|write_rows)\(|\.write_rows\(")
    by_hand = re.compile(r"atomic_write\w*\(.*(job|report)\.json")
    offenders = [f"{path.relative_to(root)}:{n}: {line.strip()}"
                 for path in root.rglob("*.py") if path != root / "engine" / "jobs.py"
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if primitive.search(line) or by_hand.search(line)]
    assert not offenders, "\n".join(offenders)


def test_an_old_job_folder_resumes_and_exports(old_job, tiny_model, tmp_path):
    """The old folder, as a job killed after its samples were written (before any training), resumes with today's
    code and its adapter exports in mlx-lm's layout: the issue's "opens, resumes and exports"."""
    from unstar_gui.engine.events import Finished, TrainStep
    from unstar_gui.engine.export import export_adapters
    from unstar_gui.engine.pipeline import resume_forget

    data = json.loads((old_job.dir / "job.json").read_text())
    assert data["model"]["id"] == tiny_model.id  # the registry vouches for the base model by its id
    data.update(status="interrupted", stage="training", round=0, step=0, rounds=[], process=None)
    (old_job.dir / "job.json").write_text(json.dumps(data))
    (old_job.dir / "report.json").unlink()
    events = list(resume_forget(old_job.dir))
    steps = data["settings"]["steps_per_round"]
    assert [ev.step for ev in events if isinstance(ev, TrainStep)][:steps] == list(range(1, steps + 1))
    assert isinstance(events[-1], Finished)
    job = open_job(old_job.dir)
    assert job.status == "done" and job.has_adapters and job.report().rounds
    out = tmp_path / "adapter"
    exported = list(export_adapters(old_job.dir, out))
    assert isinstance(exported[-1], Finished)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["lora_parameters"]["rank"] == data["settings"]["rank"] and (out / "adapters.safetensors").exists()
