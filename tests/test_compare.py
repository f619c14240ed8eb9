"""`compare_methods` and `unstar compare` on the tiny model: samples made once and shared, every method trained and
evaluated on them, and a table with every column in markdown, JSON and each method's HTML report."""

from __future__ import annotations

import json
import shutil

import pytest

from unstar_gui.engine.compare import (COLUMNS, CompareSettings, check_methods, compare_methods, format_cell,
                                       general_utility, quantized_efficacy, relearn_recovery)
from unstar_gui.engine.errors import InvalidInput
from unstar_gui.engine.evaluate import AttackSettings, EvalSettings
from unstar_gui.engine.events import Finished, StageStarted, TrainStep
from unstar_gui.engine.llm import LLM
from unstar_gui.engine.pipeline import ForgetSettings

QUESTION = "Where did Harry Potter go to school?"
ANSWER = "Hogwarts"


@pytest.fixture(scope="module")
def taught_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model fine-tuned to answer Harry Potter school questions with "Hogwarts." (so it knows the fact)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from unstar_gui.engine.evaluate import lora_finetune

    out = tmp_path_factory.mktemp("compare") / "tiny-taught"
    shutil.copytree(tiny_model_dir, out)
    llm = LLM(out)
    pairs = [(q, "Hogwarts.") for q in (QUESTION, "Which school did Harry Potter attend?",
                                        "Harry Potter studied at which school?")]
    pairs += [("What is the capital of France?", "Paris."), ("Who wrote Romeo and Juliet?", "Shakespeare.")]
    for _ in lora_finetune(llm, pairs, steps=100, learning_rate=1e-2, batch_size=5, max_seq_len=64, seed=0):
        pass
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(llm.model.parameters())),
                        metadata={"format": "mlx"})
    return out


@pytest.fixture
def taught(taught_dir, unstar_home):
    from unstar_gui.engine.importers import import_mlx_folder
    from unstar_gui.engine.store import ModelStore

    return import_mlx_folder(ModelStore(), taught_dir, model_id="taught")


PROBES = [(QUESTION, "original"), ("Which school did Harry Potter attend?", "train"),
          ("Harry Potter studied at which school?", "heldout"), ("Name the school Harry Potter went to.", "heldout")]
RETAIN = [("What is the capital of France?", "Paris", "neighbour_answer", "train"),
          ("Who wrote Romeo and Juliet?", "Shakespeare", "general", "heldout"),
          ("What is the capital of France, the country?", "Paris", "general", "train")]


@pytest.fixture
def crafted_samples(monkeypatch):
    """Replace the generate stage by one that writes crafted probes / anti-samples / retain rows with the base
    model's real answers (the real stage on a random tiny model spends minutes filtering its gibberish; the
    pipeline's own tests cover it). Counts its calls: compare must generate once."""
    from unstar_gui.engine import compare
    from unstar_gui.engine.judge import make_judge

    calls = []

    def generate(job, llm, cancel=None):
        calls.append((job.dir, llm.lora is None))  # samples must come from the base model
        answers = llm.answer([q for q, _ in PROBES] + [r[0] for r in RETAIN], max_tokens=8)
        judge = make_judge(ANSWER, semantic=False)
        job.write_rows("probes.jsonl", [{"question": q, "style": "direct", "split": sp, "base_answer": a,
                                         "known": judge.contains(a)} for (q, sp), a in zip(PROBES, answers)])
        job.write_rows("antisamples.jsonl", [
            {"question": q, "wrong_answer": w, "rationale": f"It is {w}.", "style": "direct",
             "provenance": {"source": "template"}, "round": 0, "id": i}
            for i, ((q, _), w) in enumerate(zip(PROBES[:2], ["Durmstrang", "Beauxbatons"]))])
        job.write_rows("retain.jsonl", [
            {"question": q, "target": a, "kind": k, "reference": ref, "provenance": {}, "base_answer": a,
             "known": ref.lower() in a.lower(), "split": sp}
            for (q, ref, k, sp), a in zip(RETAIN, answers[len(PROBES):])])
        job.update(samples_ready=True, samples_round=0, stage="train")
        yield StageStarted("samples", "crafted")

    monkeypatch.setattr(compare, "generate_samples", generate)
    return calls


def fast() -> CompareSettings:
    forget = ForgetSettings(rank=4, num_layers=2, steps_per_round=3, max_rounds=1, batch_size=2,
                            retain_batch_size=2, max_seq_len=64, n_paraphrases=4, n_wrong_answers=2,
                            n_neighbours=2, n_general=4, n_general_eval=4, probe_max_tokens=8,
                            learning_rate=1e-3, early_stop_every=0, scale_sweep=False)
    evaluation = EvalSettings(max_tokens=8, semantic_judge=False, max_attack_probes=3,
                              attack=AttackSettings(max_tokens=8, relearn_steps=2, relearn_batch_size=2,
                                                    quant_variants=((8, 64), (4, 64), (4, 32))))
    return CompareSettings(forget=forget, evaluation=evaluation, attacks="quant,relearn", force=True)


def test_column_helpers_on_crafted_rows():
    attacks = [{"attack": "quantization", "bits": 4, "group_size": 64, "leak_rate": 0.25, "leaking": 1, "known": 4},
               {"attack": "quantization", "bits": 4, "group_size": 32, "leak_rate": 0.5, "leaking": 2, "known": 4},
               {"attack": "quantization", "bits": 8, "group_size": 64, "leak_rate": 0.0, "leaking": 0, "known": 4},
               {"attack": "relearning", "variant": "neighbours", "recovery": 0.25, "recovered": 1, "known": 4},
               {"attack": "relearning", "variant": "unrelated", "recovery": 0.5, "recovered": 2, "known": 4},
               {"attack": "relearning", "variant": "x", "recovery": None, "skipped": "no data"}]
    assert quantized_efficacy(attacks, 4) == (0.5, 2, 4)  # the worst group size
    assert quantized_efficacy(attacks, 8) == (1.0, 4, 4)
    assert quantized_efficacy(attacks, 3) == (None, 0, 0)
    assert relearn_recovery(attacks) == (0.5, 2, 4)
    ev = {"answers": {"retain": [
        {"question": "a", "kind": "general", "known_before": True, "correct_after": True},
        {"question": "b", "kind": "general", "known_before": True, "correct_after": False},
        {"question": "c", "kind": "general", "known_before": True, "correct_after": False},
        {"question": "d", "kind": "general", "known_before": False, "correct_after": False},
        {"question": "e", "kind": "neighbour_subject", "known_before": True, "correct_after": False}]}}
    splits = [{"question": q, "split": s} for q, s in zip("abcde", ["heldout", "heldout", "train", "heldout", "train"])]
    assert general_utility(ev, splits) == ((0.5, 1, 2), "held-out")
    assert general_utility(ev, [dict(r, split="train") for r in splits]) == ((pytest.approx(1 / 3), 1, 3), "all")
    by_key = {c.key: c for c in COLUMNS}
    assert format_cell(by_key["efficacy_4bit"], 0.5) == "50%" and format_cell(by_key["wall_s"], None) == "n/a"
    assert format_cell(by_key["efficacy_4bit"], 0.5, [2, 4]) == "50% (2/4)"
    assert format_cell(by_key["peak_memory_bytes"], 2_500_000) == "2.5 MB"


def test_methods_are_checked_before_anything_runs(tmp_path):
    assert check_methods(["unstar", " npo "]) == ["unstar", "npo"]
    for bad, match in ((["unstar", "nope"], "Unknown unlearning method 'nope'"), ([], "No method"),
                       (["npo", "npo"], "twice")):
        with pytest.raises(InvalidInput, match=match):
            list(compare_methods(None, QUESTION, ANSWER, bad, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_two_methods_on_the_same_samples_write_every_column(taught, crafted_samples, tmp_path):
    out = tmp_path / "cmp"
    events = list(compare_methods("taught", QUESTION, ANSWER, ["unstar", "negate"], out, settings=fast()))
    assert isinstance(events[-1], Finished) and events[-1].job_dir == str(out)
    assert [e.message.split(" ")[0] for e in events if isinstance(e, StageStarted) and e.stage == "method"] == [
        "unstar", "negate"]
    assert sum(isinstance(e, TrainStep) for e in events) == 6  # 3 steps each
    assert crafted_samples == [(out / "samples", True)]  # generated once, for both, by the base model

    # generated once, the same files for both methods
    samples = {n: (out / "samples" / n).read_text() for n in ("probes.jsonl", "antisamples.jsonl", "retain.jsonl")}
    for m in ("unstar", "negate"):
        for n, text in samples.items():
            assert (out / m / n).read_text() == text
        job = json.loads((out / m / "job.json").read_text())
        assert job["method"] == m and job["settings"]["method"] == m and job["status"] == "done"
    assert json.loads((out / "negate" / "adapters" / "adapter_config.json").read_text())[
        "lora_parameters"]["scale"] < 0  # finalize ran before the adapter was saved

    comp = json.loads((out / "comparison.json").read_text())
    assert [r["method"] for r in comp["rows"]] == ["unstar", "negate"]
    for row in comp["rows"]:
        for c in COLUMNS:
            assert c.key in row
        assert row["wall_s"] > 0 and row["peak_memory_bytes"] > 0
        assert row["efficacy_4bit"] is not None and row["efficacy_8bit"] is not None  # the quant attack ran
        for c in COLUMNS:  # the taught model knows the fact and the retain facts: every column is measured
            assert row[c.key] is not None, c.key
        assert row["general_utility_scope"] == "held-out"
    md = (out / "comparison.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Method"))
    assert [h.strip() for h in header.strip("|").split("|")] == ["Method"] + [c.label for c in COLUMNS]
    assert md.count("\n| unstar |") == 1 and md.count("\n| negate |") == 1
    row = comp["rows"][0]
    assert f"{row['efficacy_4bit']:.0%} ({row['counts']['efficacy_4bit'][0]}/{row['counts']['efficacy_4bit'][1]})" in md
    for m in ("unstar", "negate"):
        html = (out / m / "report.html").read_text()
        assert 'id="comparison"' in html and "Relearning recovery" in html and f"<b>{m}</b>" in html
        assert json.loads((out / m / "report.json").read_text())["comparison"]["current"] == m

    # The model stays loaded (and cached) with negate's adapter on it; the next comparison must not generate its
    # samples through that adapter.
    list(compare_methods("taught", QUESTION, ANSWER, ["idk"], tmp_path / "again", settings=fast()))
    assert crafted_samples[-1] == (tmp_path / "again" / "samples", True)


def test_cli_compare_prints_the_table(taught, crafted_samples, tmp_path, capsys, monkeypatch):
    import dataclasses

    from unstar_gui.cli import main

    def tiny_sizes(forget, **kw):  # the command's settings, on the tiny sizes of fast()
        base = fast()
        steps = forget.steps_per_round
        return dataclasses.replace(base, forget=dataclasses.replace(base.forget, steps_per_round=steps))

    monkeypatch.setattr("unstar_gui.engine.compare.CompareSettings", tiny_sizes)
    rc = main(["compare", "--model", "taught", "-q", QUESTION, "-a", ANSWER, "--methods", "ga_kl,npo", "--steps", "2",
               "--out", str(tmp_path / "c"), "--force"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| ga_kl |" in text and "| npo |" in text and "Neighbour retention" in text
    assert json.loads((tmp_path / "c" / "comparison.json").read_text())["settings"]["steps_per_round"] == 2


def test_a_failing_method_is_reported_and_the_others_still_run(taught, crafted_samples, tmp_path, monkeypatch):
    from unstar_gui.engine.methods.negate import NegateMethod

    def broken(self, model, batch):
        raise RuntimeError("loss exploded")

    monkeypatch.setattr(NegateMethod, "loss", broken)
    out = tmp_path / "cmp"
    events = list(compare_methods("taught", QUESTION, ANSWER, ["negate", "idk"], out, settings=fast()))
    assert isinstance(events[-1], Finished)
    assert any("negate failed: RuntimeError: loss exploded" in getattr(e, "message", "") for e in events)
    rows = {r["method"]: r for r in json.loads((out / "comparison.json").read_text())["rows"]}
    assert rows["negate"]["error"] and all(rows["negate"][c.key] is None for c in COLUMNS)
    assert rows["idk"]["efficacy_4bit"] is not None and not rows["idk"].get("error")
    md = (out / "comparison.md").read_text()
    assert "| negate (failed) |" in md and "negate failed: RuntimeError: loss exploded" in md
    assert json.loads((out / "negate" / "job.json").read_text())["status"] == "failed"
