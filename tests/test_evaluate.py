"""Evaluation and attacks: every metric on crafted inputs where the right value is known, the whole suite on a tiny
job, and (slow) all attacks on a real SmolLM2 job with a trained adapter."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser
from pathlib import Path

import pytest

from unstar_gui.engine.errors import Cancelled, InvalidInput, JobError
from unstar_gui.engine.evaluate import EvalSettings, evaluate_job, parse_attacks, render_html
from unstar_gui.engine.evaluate import metrics
from unstar_gui.engine.evaluate.attacks import (AttackSettings, adapter_snapshot, clean_description, mc_choice,
                                                round_trip, says_yes)
from unstar_gui.engine.evaluate.report_html import SECTIONS
from unstar_gui.engine.events import Event, Progress, StageStarted, run_to_end
from unstar_gui.engine.jobs import create_job
from unstar_gui.engine.judge import normalize
from unstar_gui.engine.llm import LLM, LoraSettings

QUESTIONS = ["Which wizarding school did Harry Potter attend?", "Where did Harry Potter go to school?",
             "What school is Harry Potter a student at?", "Harry Potter studied at which school?",
             "Name the school Harry Potter went to."]
SPLITS = ["original", "heldout", "heldout", "train", "train"]
RETAIN_Q = ["What is the capital of France?", "Who wrote Romeo and Juliet?", "Where is the Eiffel Tower?"]


def fast_settings(**attack) -> EvalSettings:
    return EvalSettings(max_tokens=12, semantic_judge=False, max_attack_probes=3,
                        attack=AttackSettings(max_tokens=8, relearn_steps=2, relearn_batch_size=2, **attack))


def first_word(text: str) -> str:
    """A word the model really said, usable as an 'answer' the judge will find word-bounded."""
    for w in normalize(text).split():
        if len(w) >= 3 and not w.isdigit():
            return w
    raise AssertionError(f"no usable word in {text!r}")


def has_word(text: str, word: str) -> bool:
    return f" {normalize(word)} " in f" {normalize(text)} "


def build_job(job_dir: Path, llm: LLM, answer: str, base_probe: list[str], base_retain: list[str],
              references: list[str], known: list[bool] | None = None) -> Path:
    """A job folder as the pipeline writes it; the adapter is whatever LoRA `llm` holds now."""
    create_job(job_dir, {"fact": {"question": QUESTIONS[0], "answer": answer, "aliases": []},
                         "model": {"id": "tiny", "path": str(llm.path)}, "method": "unstar", "settings": {}})
    probes = [{"question": q, "style": "direct", "split": s, "base_answer": a,
               "known": has_word(a, answer) if known is None else known[i]}
              for i, (q, s, a) in enumerate(zip(QUESTIONS, SPLITS, base_probe))]
    retain = [{"question": q, "target": a, "kind": k, "reference": r, "provenance": {}, "base_answer": a}
              for q, a, r, k in zip(RETAIN_Q, base_retain, references, ["neighbour_subject", "neighbour_answer",
                                                                         "general"])]
    anti = [{"question": QUESTIONS[1], "wrong_answer": w, "rationale": f"Because of {w}.", "style": "direct",
             "provenance": {"source": "template"}, "round": 0, "id": i} for i, w in enumerate(["zq", "Ilvermorny",
                                                                                               "Beauxbatons"])]
    for name, rows in (("probes.jsonl", probes), ("retain.jsonl", retain), ("antisamples.jsonl", anti)):
        (job_dir / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    llm.save_adapter(job_dir / "adapters")
    return job_dir


RETAIN_REFS = ["Paris", "Shakespeare", "Paris"]


@pytest.fixture(scope="module")
def taught_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny random model, fully fine-tuned for a few seconds so that it knows the fact and the retain facts: its
    greedy answers are real words (the random model only says newlines)."""
    import shutil

    import mlx.core as mx
    from mlx.utils import tree_flatten

    from unstar_gui.engine.evaluate import lora_finetune

    out = tmp_path_factory.mktemp("taught") / "tiny-taught"
    shutil.copytree(tiny_model_dir, out)
    llm = LLM(out)
    pairs = [(q, "Hogwarts.") for q in QUESTIONS[:4]] + [(q, a + ".") for q, a in zip(RETAIN_Q, RETAIN_REFS)]
    run(lora_finetune(llm, pairs, steps=120, learning_rate=1e-2, batch_size=8, max_seq_len=64, seed=0))
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(llm.model.parameters())),
                        metadata={"format": "mlx"})
    return out


@pytest.fixture(scope="module")
def tiny_llm(taught_model_dir):
    llm = LLM(taught_model_dir)
    llm.attach_lora(LoraSettings(rank=4, scale=10.0, num_layers=2), seed=0)  # fresh LoRA: lora_b = 0, no effect
    return llm


@pytest.fixture(scope="module")
def base_answers(tiny_llm):
    with tiny_llm.base_model():
        return tiny_llm.answer(QUESTIONS, max_tokens=12), tiny_llm.answer(RETAIN_Q, max_tokens=12)


@pytest.fixture
def zero_job(tmp_path, tiny_llm, base_answers):
    probe_answers, retain_answers = base_answers
    answer = first_word(probe_answers[1])  # a word the model really says for a held-out probe: it 'knows' it there
    return build_job(tmp_path / "job", tiny_llm, answer, probe_answers, retain_answers,
                     [first_word(a) for a in retain_answers])


def run(gen) -> tuple[list[Event], dict]:
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return events, stop.value


# crafted-input unit tests ------------------------------------------------------------------------------------------
def test_forgotten_share_counts_only_known_items():
    known = [True, True, True, True, False, False]
    leaks = [True, False, False, True, True, False]
    assert metrics.forgotten_share(known, leaks) == (0.5, 2, 4)
    assert metrics.forgotten_share([False, False], [True, False]) == (None, 0, 0)
    assert metrics.kept_share([True, True, False], [True, False, True]) == (0.5, 1, 2)


def test_recovery_on_crafted_lists():
    known = [True, True, True, True, False]
    before = [False, False, False, True, False]  # three forgotten, one still leaking, one never known
    after = [True, False, True, True, True]  # two forgotten ones come back; the unknown one doesn't count
    r = metrics.recovery(known, before, after)
    assert r["recovered"] == 2 and r["known"] == 4 and r["recovery"] == 0.5
    assert r["leaking"] == 3 and r["leak_rate"] == 0.75
    assert metrics.recovery([True], [False], [False])["recovery"] == 0.0
    with pytest.raises(ValueError):
        metrics.recovery([True], [False, True], [False])


def test_truth_ratio_on_crafted_logprobs():
    # P(true)^(1/n) = 0.5, wrong answers 0.25 and 0.75 -> mean 0.5 -> ratio 1.0
    assert metrics.truth_ratio(math.log(0.5), [math.log(0.25), math.log(0.75)]) == pytest.approx(1.0)
    assert metrics.truth_ratio(math.log(0.8), [math.log(0.2)]) == pytest.approx(0.25)
    assert metrics.truth_ratio(-1.0, []) is None


@pytest.mark.parametrize("text,reason", [
    ("", "empty"), ("   \n", "empty"), ("?!... --", "no words"),
    ("the the the the cat", "repeated word"),
    ("Hogwarts is great. Hogwarts is great. Hogwarts is great. Hogwarts is great.", "repeated n-grams"),
    ("aaaaaaaaaaaaaaaaaaaa", "repeated characters"),
    ("Harry Potter attended Hogwarts School of Witchcraft and Wizardry.", ""),
    ("Paris.", ""), ("No, no.", ""),
])
def test_degenerate_detector(text, reason):
    assert metrics.degenerate_reason(text) == reason
    assert metrics.is_degenerate(text) == bool(reason)


def test_degenerate_rate():
    assert metrics.degenerate_rate(["", "fine answer here", "x x x x x", "ok"]) == 0.5
    assert metrics.degenerate_rate([]) is None


def test_quantization_round_trip_error_grows_as_bits_shrink():
    import mlx.core as mx

    mx.random.seed(0)
    w = mx.random.normal((64, 256))
    err = {(b, g): float(mx.abs(round_trip(w, b, g) - w).mean()) for b in (8, 4) for g in (64, 32)}
    assert 0 < err[(8, 64)] < err[(4, 64)]
    assert 0 < err[(8, 32)] < err[(4, 32)]
    assert err[(4, 32)] < err[(4, 64)]  # smaller groups: finer scales
    assert round_trip(w, 8, 64).dtype == w.dtype


def test_answer_readers():
    opts = ["Ilvermorny", "Hogwarts", "Beauxbatons", "Durmstrang"]
    assert mc_choice("B) Hogwarts", opts) == 1
    assert mc_choice("(C)", opts) == 2
    assert mc_choice("The answer is D.", opts) == 3
    assert mc_choice("It is Hogwarts, of course", opts) == 1
    assert mc_choice("Hogwarts or Ilvermorny", opts) is None
    assert mc_choice("I am not sure", opts) is None
    assert says_yes("Yes, he did.") and says_yes("Correct.") and not says_yes("No.")
    assert not says_yes("I do not know") and not says_yes("")
    assert clean_description("Harry Potter is a young wizard who lives with the Dursleys.", "Harry Potter") == \
        "a young wizard who lives with the Dursleys"
    assert clean_description("the author of the Harry Potter books", "Harry Potter") == "the author"
    assert clean_description("Harry Potter.", "Harry Potter") == ""


def test_one_subject_finder_reads_titles_and_lower_case_questions():
    from unstar_gui.engine.prompts import find_subject

    assert find_subject("Which wizarding school did Harry Potter attend?") == "Harry Potter"
    assert find_subject("Who wrote The Lord of the Rings?") == "Lord of the Rings"
    assert find_subject("Who wrote Romeo and Juliet?") == "Romeo and Juliet"  # a title with "and" is one name
    assert find_subject("Who wrote 'Pride and Prejudice'?") == "Pride and Prejudice"
    assert find_subject("What is Harry Potter's wand made of?") == "Harry Potter"  # an apostrophe is no quote
    assert find_subject("where did harry potter go to school?") == "harry potter"
    assert find_subject("did harry potter attend hogwarts?", "Hogwarts") == "harry potter"
    assert find_subject("where was albert einstein born?") == "albert einstein"
    assert find_subject("who wrote hamlet?") == "hamlet"
    assert find_subject("what is the capital of france?") == "france"
    assert find_subject("what is two plus two?") == ""


def test_multihop_attack_finds_its_subject_with_the_one_finder(monkeypatch):
    from unstar_gui.engine import prompts
    from unstar_gui.engine.evaluate import attacks
    from unstar_gui.engine.evaluate.probing import JobData

    assert attacks.find_subject is prompts.find_subject and not hasattr(attacks, "guess_subject")
    asked = []
    monkeypatch.setattr(attacks, "find_subject", lambda q, a="": asked.append((q, a)) or "")
    data = JobData(job=None, info={}, question="where did harry potter go to school?", answer="Hogwarts",
                   aliases=[], probes=[], retain=[], antisamples=[])
    ctx = attacks.AttackContext(llm=None, data=data, judge=None, questions=[], leaks_before=[])
    rows = run_to_end(attacks.multihop_attack(ctx))
    assert asked == [("where did harry potter go to school?", "Hogwarts")]
    assert rows[0]["skipped"] == "no named subject found in the question"


def test_parse_attacks():
    assert parse_attacks("all") == ("quant", "relearn", "format", "multihop")
    assert parse_attacks("multihop,quant") == ("quant", "multihop")
    assert parse_attacks("quantization, relearning") == ("quant", "relearn")
    assert parse_attacks("none") == () and parse_attacks("") == ()
    with pytest.raises(InvalidInput):
        parse_attacks("quant,telepathy")


def test_verdict_labels():
    t = metrics.VerdictThresholds()
    robust = [{"title": "4-bit", "recovery": 0.0}]
    assert metrics.summary_verdict(1.0, robust, 1.0, t)["label"] == "Forgotten and robust"
    v = metrics.summary_verdict(0.9, [{"title": "4-bit quantization (group 64)", "recovery": 0.6}], 1.0, t)
    assert v["label"].startswith("Forgotten but recoverable by 4-bit quantization") and v["level"] == "bad"
    assert metrics.summary_verdict(0.2, robust, 1.0, t)["label"] == "Not forgotten"
    assert "nearby facts damaged" in metrics.summary_verdict(1.0, robust, 0.5, t)["label"]
    assert metrics.summary_verdict(None, [], None, t)["level"] == "none"


def test_efficacy_and_retention_by_split_on_crafted_rows():
    from unstar_gui.engine.evaluate.measures import efficacy_by_split, retention_by_kind

    rows = [{"split": s, "known_before": k, "leaks_after": lk} for s, k, lk in [
        ("heldout", True, False), ("heldout", True, True), ("heldout", True, False), ("heldout", False, False),
        ("train", True, False), ("original", True, True)]]
    eff = efficacy_by_split(rows)
    assert eff["heldout"] == pytest.approx(2 / 3) and eff["headline"] == eff["heldout"]
    assert eff["train"] == 1.0 and eff["original"] == 0.0 and eff["all"] == pytest.approx(3 / 5)
    assert eff["counts"]["heldout"] == {"forgotten": 2, "known": 3, "probes": 4}
    ret = retention_by_kind([{"kind": k, "known_before": kb, "correct_after": ca} for k, kb, ca in [
        ("neighbour_subject", True, True), ("neighbour_answer", True, False), ("general", True, True),
        ("general", False, False)]])
    assert ret["neighbours"] == 0.5 and ret["general"] == 1.0 and ret["by_kind"]["neighbour_answer"] == 0.0


# model-backed tests on the tiny model ------------------------------------------------------------------------------
def test_adapter_that_does_nothing_gives_efficacy_0_and_retention_1(zero_job, tiny_llm, base_answers):
    events, ev = run(evaluate_job(zero_job, llm=tiny_llm, attacks="none", settings=fast_settings()))
    probe_answers, _ = base_answers
    answer = json.loads((zero_job / "job.json").read_text())["fact"]["answer"]
    known = [has_word(a, answer) for a in probe_answers]
    assert known[1], "the held-out probe the answer was taken from must be known"
    assert ev["efficacy"]["heldout"] == 0.0 and ev["efficacy"]["all"] == 0.0
    assert ev["efficacy"]["counts"]["all"]["known"] == sum(known)
    assert ev["retention"]["neighbours"] == 1.0 and ev["retention"]["general"] == 1.0
    # a zero adapter is the base model: identical answers and probabilities
    for r in ev["answers"]["probes"]:
        assert r["before"] == r["after"]
    p = ev["probabilities"]
    assert p["after"]["forget_logprob"] == pytest.approx(p["before"]["forget_logprob"], abs=1e-4)
    assert p["after"]["truth_ratio"] == pytest.approx(p["before"]["truth_ratio"], rel=1e-3)
    assert ev["fluency"]["perplexity_after"] == pytest.approx(ev["fluency"]["perplexity_before"], rel=1e-4)
    assert ev["verdict"]["label"] == "Not forgotten"
    report = json.loads((zero_job / "report.json").read_text())
    assert report["evaluation"]["efficacy"]["heldout"] == 0.0
    assert (zero_job / "report.html").exists()
    assert any(isinstance(e, StageStarted) and e.stage == "efficacy" for e in events)


def test_rows_without_base_answers_are_asked_of_the_base_model(zero_job, tiny_llm, base_answers):
    """Jobs written before base answers were recorded: the evaluation asks the base model (adapter off) once and
    fills them in, for probes and retain rows alike, with exactly what the base model says."""
    for name in ("probes.jsonl", "retain.jsonl"):
        path = zero_job / name
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "base_answer"}) + "\n" for r in rows))
    events, ev = run(evaluate_job(zero_job, llm=tiny_llm, attacks="none", settings=fast_settings()))
    probe_answers, retain_answers = base_answers
    assert [r["before"] for r in ev["answers"]["probes"]] == probe_answers
    retain_before = {r["question"]: r["before"] for r in ev["answers"]["retain"]}
    assert retain_before and all(retain_before[q] == a for q, a in zip(RETAIN_Q, retain_answers) if q in retain_before)


def test_known_leak_count_gives_the_right_share(tmp_path, tiny_llm, base_answers):
    """Mark which probes the base 'knew' by hand; efficacy = known probes whose (real) answer lacks the word."""
    probe_answers, retain_answers = base_answers
    answer = first_word(probe_answers[0])
    leaks = [has_word(a, answer) for a in probe_answers]
    known = [True, True, True, True, False]
    refs = ["zzz-never-said", *RETAIN_REFS[1:]]
    job = build_job(tmp_path / "job", tiny_llm, answer, probe_answers, retain_answers, refs, known=known)
    _, ev = run(evaluate_job(job, llm=tiny_llm, attacks="none", settings=fast_settings()))
    expected = sum(1 for k, lk in zip(known, leaks) if k and not lk) / 4
    assert ev["efficacy"]["all"] == pytest.approx(expected)
    assert ev["efficacy"]["counts"]["all"]["known"] == 4
    # the retain item whose reference the base never said is not counted
    said = has_word(retain_answers[1], "shakespeare")
    assert ev["retention"]["counts"]["neighbours"] == {"kept": int(said), "known": int(said)}


def test_pipeline_report_keys_survive(zero_job, tiny_llm):
    (zero_job / "report.json").write_text(json.dumps({"rounds": [{"round": 1}], "metrics": {"efficacy_train": 1.0},
                                                      "evaluation": {"stale": True}}))
    run(evaluate_job(zero_job, llm=tiny_llm, attacks="none", settings=fast_settings()))
    report = json.loads((zero_job / "report.json").read_text())
    assert report["rounds"] == [{"round": 1}] and report["metrics"] == {"efficacy_train": 1.0}
    assert "stale" not in report["evaluation"] and "efficacy" in report["evaluation"]


def test_all_attacks_on_tiny_job_restore_the_model(zero_job, tiny_llm):
    import mlx.core as mx
    from mlx.utils import tree_flatten

    snapshot = {k: mx.array(v) for k, v in tree_flatten(tiny_llm.model.parameters())}
    events, ev = run(evaluate_job(zero_job, llm=tiny_llm, attacks="all", settings=fast_settings()))
    after = dict(tree_flatten(tiny_llm.model.parameters()))
    assert snapshot.keys() == after.keys()
    assert all(mx.array_equal(snapshot[k], after[k]).item() for k in snapshot), "an attack left the weights changed"
    kinds = {a["attack"] for a in ev["attacks"]}
    assert kinds == {"quantization", "relearning", "format", "multihop"}
    variants = {a["variant"] for a in ev["attacks"]}
    assert {"8bit-g64", "8bit-g32", "4bit-g64", "4bit-g32", "neighbours", "unrelated", "completion",
            "multiple_choice", "yes_no", "translation_french", "translation_german", "translation_spanish",
            "many_shot", "ignore_training"} <= variants
    for a in ev["attacks"]:
        if not a.get("skipped"):
            assert a["known"] > 0 and 0.0 <= a["recovery"] <= 1.0 and a["wall_s"] >= 0
            assert len(a["examples"]) == a["known"]
    # a zero adapter forgot nothing: whatever leaked before still leaks, nothing can be 'recovered'
    quant8 = next(a for a in ev["attacks"] if a["variant"] == "8bit-g64")
    assert quant8["recovery"] == 0.0
    for key in ("quant", "relearn", "format", "multihop"):
        assert f"attack_{key}_s" in ev["timing"]
    stages = [e.stage for e in events if isinstance(e, StageStarted)]
    assert [s for s in stages if s.startswith("attack:")] == ["attack:quant", "attack:relearn", "attack:format",
                                                             "attack:multihop"]
    assert any(isinstance(e, Progress) and e.stage == "relearning" for e in events)


def test_adapter_snapshot_restores_after_training(tiny_llm):
    import mlx.core as mx

    from unstar_gui.engine.evaluate import lora_finetune

    saved = {k: mx.array(v) for k, v in tiny_llm.trainable_parameters().items()}
    with adapter_snapshot(tiny_llm):
        _, losses = run(lora_finetune(tiny_llm, [("What is the capital of France?", "Paris.")], steps=3,
                                      learning_rate=1e-2, batch_size=1, max_seq_len=64, seed=0))
        changed = tiny_llm.trainable_parameters()
        assert any(not mx.array_equal(saved[k], changed[k]).item() for k in saved)
    assert len(losses) == 3 and losses[-1] < losses[0]
    now = tiny_llm.trainable_parameters()
    assert all(mx.array_equal(saved[k], now[k]).item() for k in saved)


def test_cancel_stops_between_batches(zero_job, tiny_llm):
    class Flag:
        cancelled = True

    with pytest.raises(Cancelled):
        run(evaluate_job(zero_job, llm=tiny_llm, attacks="none", cancel=Flag(), settings=fast_settings()))


def test_job_without_adapter_or_probes_is_refused(tmp_path, tiny_llm):
    create_job(tmp_path / "j", {"fact": {"question": "Q?", "answer": "A"},
                                "model": {"id": "tiny", "path": str(tiny_llm.path)}})
    with pytest.raises(JobError, match="no probes"):
        run(evaluate_job(tmp_path / "j", llm=tiny_llm))


# HTML ----------------------------------------------------------------------------------------------------------------
class _Checker(HTMLParser):
    VOID = {"meta", "br", "rect", "img", "hr", "input", "link"}

    def __init__(self):
        super().__init__()
        self.stack, self.ids, self.errors, self.svgs = [], set(), [], 0

    def handle_starttag(self, tag, attrs):
        self.ids.update(v for k, v in attrs if k == "id")
        self.svgs += tag == "svg"
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.svgs += tag == "svg"

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()


def check_html(text: str) -> _Checker:
    c = _Checker()
    c.feed(text)
    assert not c.errors, c.errors[:5]
    assert c.stack == [], c.stack
    assert text.startswith("<!DOCTYPE html>") and "<script" not in text and "http://" not in text.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    return c


def test_html_has_every_section_and_is_well_formed(zero_job, tiny_llm):
    run(evaluate_job(zero_job, llm=tiny_llm, attacks="quant", settings=fast_settings()))
    report = json.loads((zero_job / "report.json").read_text())
    html = render_html(report)
    c = check_html(html)
    assert set(SECTIONS) <= c.ids and c.svgs == 2
    for text in ("Summary", "Metrics", "Attacks", "Before and after", "Anti-samples used", "Ilvermorny",
                 "4-bit quantization (group 32)", "Truth ratio"):
        assert text in html
    assert (zero_job / "report.html").read_text() == html


def test_html_escapes_and_renders_without_evaluation():
    report = {"fact": {"question": "<b>Q</b> & co?", "answer": "<script>x</script>"},
              "before_after": [{"question": "q<", "split": "heldout", "before": "a>", "after": "b&",
                                "known_before": True, "leaks_after": False}]}
    html = render_html(report)
    c = check_html(html)
    assert set(SECTIONS) <= c.ids
    assert "&lt;b&gt;Q&lt;/b&gt; &amp; co?" in html and "Not evaluated yet" in html and "b&amp;" in html


def test_cli_eval_and_report(zero_job, taught_model_dir, tmp_path, capsys, monkeypatch):
    from unstar_gui.cli import main
    from unstar_gui.engine.importers import import_mlx_folder
    from unstar_gui.engine.store import ModelStore

    import_mlx_folder(ModelStore(), taught_model_dir, model_id="tiny")  # the job's model must be in the library

    assert main(["eval", "--job", str(zero_job), "--attacks", "none", "--max-probes", "2"]) == 0
    out = capsys.readouterr().out
    assert "verdict: Not forgotten" in out and "efficacy: held-out 0%" in out
    html = tmp_path / "out" / "r.html"
    assert main(["report", "--job", str(zero_job), "--html", str(html)]) == 0
    check_html(html.read_text())
    assert main(["eval", "--job", str(zero_job), "--attacks", "bogus"]) == InvalidInput.exit_code
    assert main(["report", "--job", str(tmp_path), "--html", str(html)]) == JobError.exit_code


# SmolLM2: all attacks on a real job --------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(3000)  # minutes on a quiet machine; the shared 2-core box can be several times slower
def test_all_attacks_on_smollm2_job(smollm2_dir, tmp_path, artifacts_dir):
    import time

    from unstar_gui.engine.evaluate import lora_finetune
    from unstar_gui.engine.judge import Judge

    llm = LLM(smollm2_dir)
    answer, judge = "Hogwarts", Judge("Hogwarts")
    questions = QUESTIONS + ["Which school of witchcraft did Harry Potter attend?"]
    splits = SPLITS + ["heldout"]
    retain_q = ["Which school did Hermione Granger attend?", "Who is Harry Potter's best friend?",
                "What is the capital of France?", "Who wrote Romeo and Juliet?"]
    refs = ["Hogwarts", "Ron", "Paris", "Shakespeare"]
    kinds = ["neighbour_subject", "neighbour_subject", "general", "general"]
    base_p = llm.answer(questions, max_tokens=48)
    base_r = llm.answer(retain_q, max_tokens=48)
    assert sum(judge.contains(a) for a in base_p) >= 3, base_p  # SmolLM2 knows it
    # A real, non-zero adapter: a few steps on (training probe -> wrong answer) plus retain answers.
    llm.attach_lora(LoraSettings(rank=8, scale=20.0, num_layers=16), seed=0)
    train = [(q, "Harry Potter attended Ilvermorny School of Witchcraft and Wizardry.")
             for q, s in zip(questions, splits) if s in ("train", "original")]
    train += list(zip(retain_q, base_r))
    run(lora_finetune(llm, train, steps=12, learning_rate=5e-4, batch_size=4, max_seq_len=96, seed=0))

    job = tmp_path / "job"
    create_job(job, {"fact": {"question": questions[0], "answer": answer, "aliases": []},
                     "model": {"id": "smollm2", "path": str(smollm2_dir)}, "method": "unstar", "settings": {}})
    rows = [{"question": q, "style": "direct", "split": s, "base_answer": a, "known": judge.contains(a)}
            for q, s, a in zip(questions, splits, base_p)]
    (job / "probes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (job / "retain.jsonl").write_text("".join(json.dumps({"question": q, "target": a, "kind": k, "reference": r,
                                                          "base_answer": a}) + "\n"
                                              for q, a, k, r in zip(retain_q, base_r, kinds, refs)))
    (job / "antisamples.jsonl").write_text("".join(json.dumps(
        {"question": q, "wrong_answer": w, "rationale": f"Harry's letter came from {w}.", "style": "direct",
         "provenance": {"source": "test"}, "round": 0}) + "\n" for q, w in zip(questions, ["Ilvermorny",
                                                                                          "Beauxbatons",
                                                                                          "Durmstrang"])))
    llm.save_adapter(job / "adapters")

    settings = EvalSettings(max_tokens=48, max_attack_probes=4)
    t0 = time.monotonic()
    gen = evaluate_job(job, llm=llm, attacks="all", settings=settings)
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            ev = stop.value
            break
        if isinstance(event, StageStarted):
            print(f"[{time.monotonic() - t0:7.1f} s] {event.stage}: {event.message}", flush=True)
    total = time.monotonic() - t0
    (artifacts_dir / "eval_smollm2_report.json").write_text((job / "report.json").read_text())
    (artifacts_dir / "eval_smollm2_report.html").write_text((job / "report.html").read_text())
    timing = {k: v for k, v in ev["timing"].items()}
    print("\nSmolLM2 evaluation timings (s):", json.dumps(timing), f"total {total:.1f}")
    print("verdict:", ev["verdict"]["label"])
    for a in ev["attacks"]:
        print(f"  {a['title']}: recovery {a['recovery']} leak {a['leak_rate']} base {a['base_leak_rate']} "
              f"{a['wall_s']} s {a.get('skipped', '')}")

    def is_num(v):
        return isinstance(v, (int, float)) and not math.isnan(v)

    assert is_num(ev["efficacy"]["heldout"]) and is_num(ev["efficacy"]["all"])
    assert is_num(ev["retention"]["neighbours"]) and is_num(ev["retention"]["general"])
    for phase in ("before", "after"):
        assert all(is_num(v) for v in ev["probabilities"][phase].values())
    assert ev["probabilities"]["after"]["forget_logprob"] < ev["probabilities"]["before"]["forget_logprob"]
    assert all(is_num(ev["fluency"][k]) for k in ("degenerate_before", "degenerate_after", "perplexity_before",
                                                    "perplexity_after"))
    measured = [a for a in ev["attacks"] if not a.get("skipped")]
    assert {a["attack"] for a in measured} == {"quantization", "relearning", "format", "multihop"}, \
        [(a["attack"], a.get("skipped")) for a in ev["attacks"]]
    assert all(is_num(a["recovery"]) and is_num(a["leak_rate"]) for a in measured)
    assert ev["verdict"]["label"]
    check_html((job / "report.html").read_text())
    assert total < 2400, f"all attacks took {total:.0f} s"  # minutes, not hours, even on a loaded machine
