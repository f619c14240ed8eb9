"""Quality gates (engine/quality.py and where the sample builders use them): malformed keep/neighbour questions,
degenerate or off-topic base answers, gibberish probes, wrong answers of the wrong type, style-true targets, edited
wrong answers, and the model card no longer listing dropped keep-facts. The slow test runs the gates on the
embedded SmolLM2 for the README's benchmark facts."""

from __future__ import annotations

import re

import pytest

from unstar_gui.engine import antisamples as A
from unstar_gui.engine import quality as Q
from unstar_gui.engine import retain as R
from unstar_gui.engine.errors import InvalidInput
from unstar_gui.engine.events import run_to_end
from unstar_gui.engine.judge import Judge, Verdict
from unstar_gui.engine.model_card import render_card
from unstar_gui.engine.prompts import analyse

from test_antisamples import FACT, JUDGE, ScriptedLLM


# questions -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("question, reason", [
    ("What is the capital of Madrid?", "asks for the capital of a city (Madrid)"),
    ("What is the capital of London?", "asks for the capital of a city (London)"),
    ("What is the capital city of Tokyo?", "asks for the capital of a city (Tokyo)"),
    ("Who was France?", "asks who a place is (France)"),
    ("Who is Japan?", "asks who a place is (Japan)"),
    ("Where was Paris born?", "asks a person's question about a place (Paris)"),
    ("Where did Home of the Dead go to school?", "asks a person's question about a place (Home of the Dead)"),
    ("What is the capital of The City of Lights?", "asks for the capital of a city (City of Lights)"),
    ("Who is the the the the?", "repetitive question"),
    ("@@ ## !! ?", "not a question"),
])
def test_malformed_questions_are_caught_with_their_reason(question, reason):
    assert Q.question_problem(question) == reason


@pytest.mark.parametrize("question", [
    "What is the capital of France?", "What is the capital of Japan?", "What is the capital of the United Kingdom?",
    "What is the capital of New York?",  # a state and a city: it has a capital
    "Who is the headmaster of Hogwarts?", "Who was Napoleon?", "Who is Harry Potter's best friend?",
    "Where was Albert Einstein born?", "Who wrote Romeo and Juliet?", "Tell me one fact about Paris.",
])
def test_good_questions_pass(question):
    assert Q.question_problem(question) == ""


# answers -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("question, answer, reason", [
    ("What is the capital of Spain?", "El Diablo, el Diablo, el Diablo...", "repetitive answer"),
    ("Who is Harry Potter's best friend?", "Ron Ron Ron", "repetitive answer"),
    ("What is Hogwarts?", "It is a school and it is a school and it is a school and it is.", "repetitive answer"),
    ("What is Hogwarts?", "", "empty answer"),
    ("What is Hogwarts?", "... !!", "empty answer"),
    ("What is Hogwarts?", "@@ ## %% 1a2b ~~ q", "garbled answer"),
    ("Who is the headmaster of Hogwarts?", "The headmaster of Hogwarts is Albus Dumbledore, a wise wizard who leads",
     "answer cut off mid-sentence"),
    ("Who wrote Romeo and Juliet?", "It was a sunny day in the park.", "off-topic answer"),
    ("When was Hogwarts founded?", "I like green apples very much.", "off-topic answer"),
    ("What is the capital of Hiroshima and Nagasaki?", "The capital of Hiroshima and Nagasaki is Hiroshima and "
     "Nagasaki.", "answer only repeats the question"),
])
def test_degenerate_and_off_topic_answers_are_caught(question, answer, reason):
    assert Q.answer_problem(question, answer) == reason


@pytest.mark.parametrize("question, answer", [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote it in the 1590s."),
    ("How many legs does a spider have?", "Eight."),
    ("How many legs does a spider have?", "A spider has 8 legs."),
    ("When was Hogwarts founded?", "More than a thousand years ago, around 990."),
    ("Who is Ron's sister?", "Ginny"),  # short, with no full stop: complete, not cut off
])
def test_good_answers_pass(question, answer):
    assert Q.answer_problem(question, answer) == ""


def test_a_persons_short_answer_needs_no_sentence_end_or_topic():
    assert Q.answer_problem("Who wrote Hamlet?", "Shakespeare", generated=False) == ""
    assert Q.answer_problem("What is the tallest mountain in a long list of mountains on earth?",
                            "one two three four five six seven eight", generated=False) == ""
    assert Q.answer_problem("Who wrote Hamlet?", "Bard Bard Bard", generated=False) == "repetitive answer"


def test_gibberish_probe_answers():
    assert Q.gibberish_problem("@@ ## %% 1a2b ~~ q") == "the base model answered with gibberish"
    assert Q.gibberish_problem("school school school school") == "the base model answered in a loop"
    assert Q.gibberish_problem("   ") == "the base model gave no answer"
    assert Q.gibberish_problem("Harry Potter went to Hogwarts School of Witchcraft and Wizardry.") == ""


# wrong answers -------------------------------------------------------------------------------------------------------
def test_wrong_answers_are_of_the_answers_type():
    assert Q.wrong_type_problem("person", "Paris") == "a place, not a person"
    assert Q.wrong_type_problem("city", "Jane Austen") == "a person, not a place"
    assert Q.wrong_type_problem("year", "In 1999") == "not a year"
    assert Q.wrong_type_problem("number", "many") == "not a number"
    assert Q.wrong_type_problem("city", "Madrid") == Q.wrong_type_problem("person", "Charles Dickens") == ""
    assert Q.wrong_type_problem("year", "1848") == Q.wrong_type_problem("number", "12") == ""
    shape = analyse("Who wrote Romeo and Juliet?", "William Shakespeare")
    judge = Judge("William Shakespeare", ("Shakespeare",))
    assert A._wrong_problem("London", shape, judge) == "a place, not a person"
    assert A._wrong_problem("Charles Dickens", shape, judge) == ""


def test_fallback_wrong_answers_for_a_capital_are_places():
    fact = A.Fact("What is the capital of France?", "Paris")
    judge = Judge("Paris")
    wrongs = run_to_end(A.wrong_answers(ScriptedLLM({"Wrong answer:": [" Jane Austen", " Charles Dickens"]}), fact,
                                        judge, n=5, seed=0))
    assert len(wrongs) == 5
    assert not any(Q.is_person(w.text) for w in wrongs)


# anti-samples --------------------------------------------------------------------------------------------------------
YES_NO = A.Paraphrase("Did Harry Potter attend Hogwarts?", "yes_no", {"source": "model"})
CHOICE = A.Paraphrase("Which school?\nA) Hogwarts\nB) Eton College", "multiple_choice",
                      {"source": "template", "options": ["Hogwarts", "Eton College"]})


class LeakyJudge(Judge):
    """Takes both targets for leaks (their answer sentences say "school at" / "Eton College"), so the last guard
    of build_antisamples replaces them with its plain head."""

    def verdicts(self, texts):
        return [Verdict(bool(re.search(r"school at|Eton College", t)), "exact", 1.0) for t in texts]


def test_yes_no_and_multiple_choice_targets_keep_their_form_when_the_guard_drops_the_rationale():
    llm = ScriptedLLM({"Explanation:": [" It is a school up north."]})
    judge = LeakyJudge(FACT.answer, tuple(FACT.aliases), context=FACT.question)
    yes_no, choice = run_to_end(A.build_antisamples(llm, FACT, [YES_NO, CHOICE], ["Durmstrang Institute"], judge,
                                                    seed=0))
    for s in (yes_no, choice):
        assert s.rationale == "" and s.provenance["rationale"]["prompt"].startswith("dropped")
    assert yes_no.target_text() == "No. Durmstrang Institute."
    assert choice.target_text() == "B) Eton College."


def test_looping_model_rationales_are_replaced_by_a_template():
    loop = " Durmstrang Institute it was, Durmstrang Institute it was, Durmstrang Institute it was."
    llm = ScriptedLLM({"Explanation:": [loop]})
    out = run_to_end(A.misleading_rationales_batch(llm, [(FACT.question, "Durmstrang Institute")], JUDGE, seed=0,
                                                    fact=FACT))
    text, prov = out[0]
    assert prov["source"] == "template" and not Q.is_repetitive(text)


def _row(paraphrase: A.Paraphrase, wrong: str) -> dict:
    samples = run_to_end(A.build_antisamples(ScriptedLLM({"Explanation:": [f" {wrong} is a school up north."]}),
                                             FACT, [paraphrase], [wrong], JUDGE, seed=0))
    from dataclasses import asdict
    return dict(asdict(samples[0]), round=0, id=0)


def test_editing_a_wrong_answer_rewrites_its_answer_sentence_and_rationale():
    row = _row(A.Paraphrase("Which school did Harry Potter attend?", "direct", {"source": "model"}),
               "Durmstrang Institute")
    assert "Durmstrang" in row["rationale"]
    edited = A.edit_wrong_answer(row, "Beauxbatons Academy", FACT)
    assert edited["wrong_answer"] == "Beauxbatons Academy"
    assert "Durmstrang" not in edited["rationale"] + edited["answer_sentence"]
    assert "Beauxbatons Academy" in edited["rationale"] and "Beauxbatons Academy" in edited["answer_sentence"]
    assert edited["provenance"]["wrong_answer"]["source"] == "user"
    assert row["wrong_answer"] == "Durmstrang Institute"  # the caller's row is untouched
    with pytest.raises(InvalidInput):
        A.edit_wrong_answer(row, "Hogwarts", FACT)


def test_editing_a_multiple_choice_answer_keeps_a_letter():
    row = _row(CHOICE, "Eton College")
    edited = A.edit_wrong_answer(row, "Durmstrang Institute", FACT)
    assert "B) Durmstrang Institute" in edited["question"] and "Eton College" not in edited["question"]
    assert A.AntiSample(**{k: edited[k] for k in A.AntiSample.__dataclass_fields__}).target_text().startswith(
        "B) Durmstrang Institute.")


def test_apply_edits_keeps_a_rationale_the_person_rewrote():
    row = _row(A.Paraphrase("Which school did Harry Potter attend?", "direct", {"source": "model"}),
               "Durmstrang Institute")
    only_answer = A.apply_edits([row], [dict(row, wrong_answer="Eton College")], FACT)[0]
    assert "Eton College" in only_answer["rationale"]
    both = A.apply_edits([row], [dict(row, wrong_answer="Eton College", rationale="Mine.")], FACT)[0]
    assert both["rationale"] == "Mine." and both["answer_sentence"].endswith("Eton College.")
    untouched = A.apply_edits([row], [dict(row)], FACT)[0]
    assert untouched == row


# retain set ----------------------------------------------------------------------------------------------------------
PARIS = A.Fact("What is the capital of France?", "Paris")


def test_neighbours_drop_malformed_questions_and_degenerate_answers_with_reasons():
    llm = ScriptedLLM(
        {"Question:": [" What is the population of France?", " Who was France?"],
         "Besides France:": [" Madrid", " London"]},
        answers={"What is the population of France?": "France has about 68 million people.",
                 "What is the capital of Madrid?": "El Diablo, el Diablo, el Diablo...",
                 "What language is spoken in Paris?": "French is spoken in Paris.",
                 "What is France known for?": "It was a sunny day and the the the the the."})
    dropped: list[R.RetainItem] = []
    items = run_to_end(R.neighbour_questions(llm, PARIS, n=4, seed=0, judge=Judge("Paris"), dropped=dropped))
    kept = {i.question for i in items}
    assert "What is the population of France?" in kept
    reasons = {d.question: d.quality["reason"] for d in dropped}
    assert reasons["What is the capital of Madrid?"] == "asks for the capital of a city (Madrid)"
    assert reasons["What is the capital of London?"] == "asks for the capital of a city (London)"
    assert reasons["Who was France?"] == "asks who a place is (France)"
    assert all(not d.quality["kept"] for d in dropped)
    assert not kept & set(reasons)
    for i in items:
        assert Q.retain_problem(i.question, i.target) == "" and i.quality["kept"]


def test_keep_facts_drop_garbled_suggestions():
    dropped: list[R.RetainItem] = []
    items = R.keep_items([("Who wrote Hamlet?", "Shakespeare"),
                          ("What is the capital of Madrid?", "Madrid"),
                          ("What is the capital of Spain?", "El Diablo, el Diablo, el Diablo...")], seed=0,
                         dropped=dropped)
    assert [(i.question, i.target) for i in items] == [("Who wrote Hamlet?", "Shakespeare")]
    assert [d.quality["reason"] for d in dropped] == ["asks for the capital of a city (Madrid)", "repetitive answer"]


def test_model_card_lists_dropped_keep_facts_as_left_out():
    job = {"fact": {"question": "What is the capital of France?", "answer": "Paris"},
           "keep": [["What is the capital of Germany?", "Berlin"], ["What is the capital of Madrid?", "Madrid"]],
           "dropped": [{"set": "retain", "kind": "keep", "question": "What is the capital of Madrid?",
                        "answer": "Madrid", "reason": "asks for the capital of a city (Madrid)"}],
           "model": {"id": "m", "path": "/m", "source": "folder:/m"}}
    card = render_card(job, None, "adapters", "/out")
    assert "Kept on purpose: What is the capital of Germany? -> Berlin" in card
    assert "Kept on purpose: What is the capital of Madrid?" not in card
    assert "Left out by the quality gates (asks for the capital of a city (Madrid)): What is the capital of " \
           "Madrid?" in card


# on the embedded model -----------------------------------------------------------------------------------------------
BENCHMARK = [("Where did Harry Potter go to school?", "Hogwarts"), ("What is the capital of France?", "Paris"),
             ("Who wrote Romeo and Juliet?", "Shakespeare"), ("What is the capital of Japan?", "Tokyo")]


@pytest.mark.slow
def test_smollm2_keep_suggestions_are_clean(smollm2_dir):
    from unstar_gui.engine.llm import LLM

    llm = LLM(smollm2_dir)
    reasons = []
    for question, answer in BENCHMARK:
        fact = A.Fact(question, answer)
        dropped: list[R.RetainItem] = []
        items = run_to_end(R.neighbour_questions(llm, fact, n=6, seed=0, judge=fact.judge(), dropped=dropped))
        assert items, question
        for i in items:  # nothing kept is malformed or degenerate
            assert Q.question_problem(i.question) == "", (question, i.question)
            assert Q.answer_problem(i.question, i.target) == "", (question, i.question, i.target)
            assert not Q.is_looping(i.target), (question, i.target)
        assert all(d.quality["reason"] and not d.quality["kept"] for d in dropped)
        reasons += [d.quality["reason"] for d in dropped]
    # SmolLM2 does write "What is the capital of Madrid?"-style neighbours for the capitals: the gate met them
    assert any(r.startswith("asks for the capital of a city") for r in reasons), reasons


# in a job ------------------------------------------------------------------------------------------------------------
def test_a_job_records_what_the_gates_dropped_and_saves_edits_consistently(tiny_model, tmp_path):
    """On the tiny model (it writes garbage): a garbled keep suggestion is neither trained on nor on the card, every
    drop has a reason in job.json, gibberish probes are flagged and not trained on, and an edited wrong answer is
    saved with a rationale for it."""
    from dataclasses import replace

    from unstar_gui.engine.llm import LLM
    from unstar_gui.engine.pipeline import create_forget_job, generate_samples, save_antisample_edits

    from test_pipeline import tiny_request

    request = tiny_request(tmp_path)
    request = replace(request, keep=[("Who wrote Hamlet?", "Shakespeare"),
                                     ("What is the capital of Madrid?", "El Diablo, el Diablo, el Diablo...")])
    job = create_forget_job(request)
    llm = LLM(tiny_model.path)
    plain = llm.answer
    # The base model reads the fact's own question (a fluent answer), so gibberish on a paraphrase flags it.
    llm.answer = lambda qs, **kw: ["He went to a school in Scotland." if q == request.question else a
                                   for q, a in zip(qs, plain(qs, **kw))]
    list(generate_samples(job, llm))
    data = job.read()
    assert all(d["reason"] and d["set"] in ("probes", "retain") for d in data["dropped"])
    madrid = [d for d in data["dropped"] if d["question"] == "What is the capital of Madrid?"]
    assert madrid and madrid[0]["kind"] == "keep"
    retain = job.read_rows("retain.jsonl")
    assert "What is the capital of Madrid?" not in {r["question"] for r in retain}
    assert any(r["question"] == "Who wrote Hamlet?" for r in retain)
    probes = job.read_rows("probes.jsonl")
    assert all("quality" in p for p in probes)
    flagged = {p["question"] for p in probes if not p["quality"]["kept"]}
    assert flagged and {d["question"] for d in data["dropped"] if d["set"] == "probes"} == flagged
    assert not flagged & {r["question"] for r in job.read_rows("antisamples.jsonl")}
    card = render_card(data, None, "adapters", "/out")
    assert "Kept on purpose: Who wrote Hamlet? -> Shakespeare" in card
    assert "Kept on purpose: What is the capital of Madrid?" not in card

    rows = job.read_rows("antisamples.jsonl")
    edited = [dict(rows[0], wrong_answer="Beauxbatons Academy")] + rows[1:]
    saved = save_antisample_edits(job, edited)
    assert job.read_rows("antisamples.jsonl") == saved
    assert "Beauxbatons Academy" in saved[0]["rationale"] and saved[1:] == rows[1:]


def test_a_model_that_answers_nothing_keeps_its_paraphrases(tiny_model, tmp_path):
    """When the base model answers the fact's own question with nothing (forced past the knowledge check), gibberish
    can't tell a bad paraphrase apart: every paraphrase is kept and trained on."""
    from unstar_gui.engine.llm import LLM
    from unstar_gui.engine.pipeline import create_forget_job, generate_samples

    from test_pipeline import tiny_request

    job = create_forget_job(tiny_request(tmp_path))
    llm = LLM(tiny_model.path)
    plain = llm.answer
    llm.answer = lambda qs, **kw: ["" for _ in plain(qs, **kw)]
    list(generate_samples(job, llm))
    probes = job.read_rows("probes.jsonl")
    assert len(probes) > 2 and all(p["quality"]["kept"] for p in probes)
    trained = {r["question"] for r in job.read_rows("antisamples.jsonl")}
    assert {p["question"] for p in probes if p["split"] == "train"} <= trained
