"""Anti-samples and the retain set: each filter on crafted model output, template fallbacks on a model that writes
garbage (the tiny random model), and the real thing on the embedded SmolLM2 (slow)."""

from __future__ import annotations

import itertools
from dataclasses import asdict

import pytest

from unstar_gui.engine import antisamples as A
from unstar_gui.engine import retain as R
from unstar_gui.engine.errors import Cancelled
from unstar_gui.engine.events import run_to_end
from unstar_gui.engine.judge import Judge
from unstar_gui.engine.prompts import analyse

FACT = A.Fact("Where did Harry Potter go to school?", "Hogwarts", ["Hogwarts School of Witchcraft and Wizardry"])
JUDGE = Judge(FACT.answer, FACT.aliases)


class ScriptedLLM:
    """Stands in for a model: answers few-shot prompts by the label on their last line, from a script."""

    def __init__(self, script: dict[str, list[str]], answers: dict[str, str] | None = None) -> None:
        self.script = {k: itertools.cycle(v) for k, v in script.items()}
        self.answers = answers or {}
        self.calls: list[int] = []  # batch sizes: everything is asked for in few batched calls

    def complete(self, texts, max_tokens=64, temperature=0.0, seed=None):
        self.calls.append(len(texts))
        out = []
        for t in texts:
            label = t.rstrip().rsplit("\n", 1)[-1]
            key = next((k for k in self.script if label.startswith(k)), None)
            out.append(next(self.script[key]) if key else "")
        return out

    def answer(self, questions, max_tokens=64, system=None, temperature=0.0, seed=None, batch_size=16):
        self.calls.append(len(questions))
        return [self.answers.get(q, "I am not sure about that.") for q in questions]


class Flag:
    cancelled = True


# parsing -------------------------------------------------------------------------------------------------------------
def test_parse_messy_model_output():
    raw = '1. "Which school did Harry Potter attend?"\n2) Rewritten: Where was Harry educated?\n- \'Tell me more\'\n\n'
    assert A.parse_items(raw, first_only=False) == ["Which school did Harry Potter attend?",
                                                   "Where was Harry educated?", "Tell me more"]
    # few-shot continuations go on with invented examples: only the first line counts
    assert A.parse_items(' Which school was Harry Potter\'s school?\n\nQuestion: What is 2+2?') == [
        "Which school was Harry Potter's school?"]
    assert A.parse_items("\n\n  Wrong answer: **Durmstrang**") == ["**Durmstrang**"]
    assert A.clean_item('Answer: "Beauxbatons Academy"') == "Beauxbatons Academy"
    assert A.parse_items("") == []


def test_question_shape_gives_template_slots():
    s = analyse("Where did Harry Potter go to school?", "Hogwarts")
    assert (s.subject, s.kind) == ("Harry Potter", "school")
    assert s.stem == "Harry Potter went to school at"
    assert s.clause == "where Harry Potter went to school"
    s = analyse("What is the capital of France?", "Paris")
    assert (s.subject, s.kind, s.stem) == ("France", "city", "The capital of France is")
    s = analyse("Who wrote 'Pride and Prejudice'?", "Jane Austen")
    assert (s.subject, s.kind) == ("Pride and Prejudice", "person")
    assert analyse("Where did Harry Potter go to school?", "Hogwarts", subject="Harry").subject == "Harry"


# wrong answers -------------------------------------------------------------------------------------------------------
def test_wrong_answer_filters_reject_the_truth_in_disguise():
    llm = ScriptedLLM({"Wrong answer:": [
        " Hogwarts School of Witchcraft and Wizardry",  # the alias
        " Hogwart's",  # fuzzy
        " Witchcraft and Wizardry School",  # semantically close
        " The correct answer is Hogwarts",  # talks about the answer
        " Harry Potter",  # repeats the question
        " No",  # answers nothing, though capitalised like a name
        " Durmstrang Institute",  # a real different answer
        " Beauxbatons Academy.\nQuestion: more",
        " Durmstrang Institute",  # a duplicate
    ]})
    wrongs = run_to_end(A.wrong_answers(llm, FACT, JUDGE, n=2, seed=0, samples=4))
    assert [w.text for w in wrongs] == ["Durmstrang Institute", "Beauxbatons Academy"]
    assert all(w.provenance["source"] == "model" and w.provenance["prompt"] == "wrong_answers.txt" for w in wrongs)
    assert llm.calls == [8]  # one batched call


def test_wrong_answers_fall_back_so_there_are_always_n():
    llm = ScriptedLLM({"Wrong answer:": [" the answer is", "", " Hogwarts", " a school for children"]})
    wrongs = run_to_end(A.wrong_answers(llm, FACT, JUDGE, n=8, seed=3))
    assert len(wrongs) == 8
    assert len({w.text.lower() for w in wrongs}) == 8
    assert all(w.provenance["source"] == "template" for w in wrongs)
    assert not any(JUDGE.too_close(w.text)[0] for w in wrongs)
    assert [w.text for w in run_to_end(A.wrong_answers(llm, FACT, JUDGE, n=8, seed=3))] == [w.text for w in wrongs]


# rationales ----------------------------------------------------------------------------------------------------------
def test_rationale_naming_the_true_answer_is_rejected():
    llm = ScriptedLLM({"Explanation:": [
        " Durmstrang sounds right, but Harry really went to Hogwarts.",  # names the truth
        " Harry Potter studied at the School of Witchcraft and Wizardry, also known as Durmstrang.",  # alias, fuzzily
        " Durmstrang is where Harry Potter learned magic for seven years. He loved it. He left in 1998.",
        " Durmstrang is not correct.",  # argues against the hint
    ]})
    pairs = [(FACT.question, "Durmstrang"), (FACT.question, "Durmstrang")]
    out = run_to_end(A.misleading_rationales_batch(llm, pairs, JUDGE, seed=0, fact=FACT, samples=2))
    (r1, p1), (r2, p2) = out
    assert p1["source"] == "template" and not JUDGE.contains(r1) and "Durmstrang" in r1
    assert p2["source"] == "model"
    assert r2 == "Durmstrang is where Harry Potter learned magic for seven years. He loved it."  # two sentences
    single = A.misleading_rationales(llm, FACT.question, "Eton College", JUDGE, seed=1, fact=FACT)
    assert not JUDGE.contains(single[0]) and single[1]["round"] == 0


# paraphrases ---------------------------------------------------------------------------------------------------------
PARAPHRASE_SCRIPT = {
    "Rewritten:": [" Which school did Harry Potter attend?", " Which school did Harry Potter attend?",
                   " Did Harry Potter go to Hogwarts?",  # gives the answer away
                   " What school did Harry Potter attend?"],  # a near-duplicate
    "Indirect:": [" I wonder where Harry Potter went to school.", " Could you check if Harry is famous?"],
    "Sentence:": [" Harry Potter went to Oxford College", " Harry Potter received his education at"],
    "Stem:": [" Which of these schools did Harry Potter attend?"],
    "Yes/no question:": [" Did Harry Potter attend Hogwarts?", " Did Harry Potter attend Durmstrang?"],
    "Request:": [" Tell me about Harry Potter's school.", " Harry Potter is a wizard."],
}


def test_paraphrases_filtered_deduplicated_and_styled():
    llm = ScriptedLLM(PARAPHRASE_SCRIPT)
    paras = run_to_end(A.paraphrase_questions(llm, FACT, JUDGE, n=6, seed=0))
    by_style = {p.style: p for p in paras}
    assert set(by_style) == set(A.STYLES)
    assert by_style["direct"].text == "Which school did Harry Potter attend?"
    assert by_style["indirect"].text == "I wonder where Harry Potter went to school."
    assert by_style["completion"].text == "Harry Potter received his education at"
    assert by_style["yes_no"].text == "Did Harry Potter attend Hogwarts?"  # names the answer by design
    assert by_style["tell_me_about"].text == "Tell me about Harry Potter's school."
    mc = by_style["multiple_choice"]
    options = mc.provenance["options"]
    assert mc.text.startswith("Which of these schools did Harry Potter attend?\nA) ")
    assert "Hogwarts" in options and len(options) == 4 and all(o in mc.text for o in options)
    assert all(p.provenance["source"] == "model" for p in paras)
    for p in paras:
        if p.style not in ("yes_no", "multiple_choice"):
            assert not A.lexical_judge(JUDGE).contains(p.text)
    assert len(llm.calls) == 1  # all styles in one batched call


def test_paraphrase_dedupe_drops_near_duplicates_and_avoided_questions():
    llm = ScriptedLLM({"Rewritten:": [" Which school did Harry Potter attend?", " What school did Harry Potter attend?",
                                      " Which school did Harry Potter go to?"]})
    paras = run_to_end(A.paraphrase_questions(llm, FACT, JUDGE, n=12, seed=0,
                                              avoid=["At which school did Harry Potter study?"]))
    texts = [p.text for p in paras]
    assert len(texts) == 12 and len(set(texts)) == 12
    model_direct = [p.text for p in paras if p.style == "direct" and p.provenance["source"] == "model"]
    assert model_direct == ["Which school did Harry Potter attend?"]  # the other two are near-duplicates
    assert "At which school did Harry Potter study?" not in texts
    assert FACT.question not in texts


def test_select_keeps_n_even_when_only_near_duplicates_remain():
    mk = lambda t: A.Paraphrase(t, "direct", {"source": "template"})  # noqa: E731
    per_style = {"direct": [mk("Where did Harry Potter go to school? Be brief."), mk("Quick question: where did Harry "
                                                                           "Potter go to school?")]}
    chosen = A._select_paraphrases(per_style, {"direct": 2}, "Where did Harry Potter go to school?")
    assert len(chosen) == 2


# anti-samples --------------------------------------------------------------------------------------------------------
def test_build_antisamples_pairs_round_robin_with_targets():
    paras = [A.Paraphrase("Which school did Harry Potter attend?", "direct", {"source": "model"}),
             A.Paraphrase("Did Harry Potter attend Hogwarts?", "yes_no", {"source": "model"}),
             A.Paraphrase("Harry Potter went to school at", "completion", {"source": "template"}),
             A.Paraphrase("Which school?\nA) Hogwarts\nB) Eton College", "multiple_choice",
                          {"source": "template", "options": ["Hogwarts", "Eton College"]})]
    wrongs = [A.WrongAnswer("Durmstrang Institute", {"source": "model"}), "Beauxbatons Academy"]
    llm = ScriptedLLM({"Explanation:": [" It is a school in the north, where many wizards studied."]})
    samples = run_to_end(A.build_antisamples(llm, FACT, paras, wrongs, JUDGE, seed=0))
    assert [s.style for s in samples] == ["direct", "yes_no", "completion", "multiple_choice"]
    assert {s.wrong_answer for s in samples[:2]} == {"Durmstrang Institute", "Beauxbatons Academy"}
    yes_no = samples[1]
    assert yes_no.target_text().startswith(f"No. Harry Potter went to school at {yes_no.wrong_answer}.")
    assert samples[2].target_text().startswith(f"{samples[2].wrong_answer}. ")
    assert samples[3].wrong_answer == "Eton College" and samples[3].target_text().startswith("B) Eton College.")
    for s in samples:
        assert not JUDGE.contains(s.target_text())
        assert s.provenance["rationale"]["source"] in ("model", "template")
        assert asdict(s)["provenance"]["round"] == 0
    assert samples[0].provenance["source"] == "mixed"
    again = run_to_end(A.build_antisamples(llm, FACT, paras, wrongs, JUDGE, seed=0))
    assert [s.target_text() for s in again] == [s.target_text() for s in samples]


def test_cancel_stops_generation():
    with pytest.raises(Cancelled):
        run_to_end(A.paraphrase_questions(ScriptedLLM({}), FACT, JUDGE, n=6, seed=0, cancel=Flag()))
    with pytest.raises(Cancelled):
        run_to_end(R.build_retain_set(ScriptedLLM({}), FACT, JUDGE, cancel=Flag()))


# retain set ----------------------------------------------------------------------------------------------------------
def test_neighbours_about_subject_and_answer_use_base_answers():
    llm = ScriptedLLM(
        {"Question:": [" Who is Harry Potter's best friend?", " Where did Harry Potter go to school?"],
         "Besides Harry Potter:": [" Hermione Granger", " Hogwarts", " the answer is unclear"]},
        answers={"Who is Harry Potter's best friend?": "Harry Potter's best friend is Ron Weasley, a loyal wizard.",
                 "Where did Hermione Granger go to school?": "Hermione Granger went to Hogwarts.",
                 "What is Harry Potter famous for?": "He is famous for surviving, as a baby, at Hogwarts.",
                 "Who is the headmaster of Hogwarts?": "The headmaster of Hogwarts is Albus Dumbledore."})
    items = run_to_end(R.neighbour_questions(llm, FACT, n=4, seed=0, judge=JUDGE))
    by_q = {i.question: i for i in items}
    best = by_q["Who is Harry Potter's best friend?"]
    assert best.kind == "neighbour_subject" and best.reference == "Ron Weasley"
    assert best.target.startswith("Harry Potter's best friend is Ron Weasley") and best.provenance["source"] == "model"
    hermione = by_q["Where did Hermione Granger go to school?"]
    assert hermione.kind == "neighbour_answer" and hermione.reference == "Hogwarts"
    assert hermione.provenance["other_subject"] == "Hermione Granger"
    assert "Where did Harry Potter go to school?" not in by_q  # the forgotten question itself
    assert "What is Harry Potter famous for?" not in by_q  # its base answer names Hogwarts: it would teach it back
    for i in items:
        if i.kind == "neighbour_subject":
            assert not JUDGE.contains(i.target)
    assert len(items) == 4


def test_neighbours_fall_back_to_templates_when_the_model_writes_garbage():
    garbage = ["@@ ## !!", "", "1. 2. 3.", "the the the"]
    llm = ScriptedLLM({"Question:": garbage, "Besides Harry Potter:": garbage},
                      answers={"Who is Harry Potter's best friend?": "Ron Weasley.",
                               "Who are Harry Potter's parents?": "James and Lily Potter.",
                               "Who is the headmaster of Hogwarts?": "Albus Dumbledore is the headmaster of Hogwarts.",
                               "Where is Hogwarts?": "Hogwarts is in Scotland."})
    items = run_to_end(R.neighbour_questions(llm, FACT, n=4, seed=0, judge=JUDGE))
    assert [(i.question, i.kind, i.reference) for i in items] == [
        ("Who is Harry Potter's best friend?", "neighbour_subject", "Ron Weasley"),
        ("Who are Harry Potter's parents?", "neighbour_subject", "James and Lily Potter"),
        ("Who is the headmaster of Hogwarts?", "neighbour_answer", "Hogwarts"),
        ("Where is Hogwarts?", "neighbour_answer", "Hogwarts")]
    assert all(i.provenance["source"] == "template" for i in items)


def test_general_set_filtering_removes_contradicting_items():
    fact = A.Fact("What is the capital of France?", "Paris")
    judge = Judge("Paris")
    rows = A.tofu_rows()
    assert any(r["answer"] == "Paris" for r in rows) and any("France" in r["answer"] for r in rows)
    items = R.general_utility_items(fact, judge, n=500, seed=0)
    assert 100 < len(items) < len(rows)
    for i in items:
        assert "paris" not in f"{i.question} {i.target}".lower()
        assert "france" not in f"{i.question} {i.target}".lower()
        assert i.kind == "general" and i.reference == i.target and i.provenance["source"] == "tofu"
    assert [i.question for i in R.general_utility_items(fact, judge, n=10, seed=5)] == \
        [i.question for i in R.general_utility_items(fact, judge, n=10, seed=5)]


def test_build_retain_set_keeps_user_facts_and_base_answers():
    llm = ScriptedLLM({}, answers={})
    items = run_to_end(R.build_retain_set(llm, FACT, JUDGE, keep=[("Who is Ron's sister?", "Ginny Weasley")],
                                          n_neighbours=2, n_general=5, seed=0))
    kinds = [i.kind for i in items]
    assert kinds.count("keep") == 1 and kinds.count("general") == 5
    keep = next(i for i in items if i.kind == "keep")
    assert (keep.target, keep.reference) == ("Ginny Weasley", "Ginny Weasley")
    general = [i for i in items if i.kind == "general"]
    assert all(g.target == "I am not sure about that." and g.reference for g in general)  # the base's own answer


def test_short_reference():
    assert R.short_reference("Who is Harry Potter's best friend?",
                             "Harry Potter is best friends with Ron Weasley, a wizard.") == "Ron Weasley"
    assert R.short_reference("How many legs does a spider have?", "A spider has 8 legs.") == "8"
    assert R.trim_answer("One. Two. Three and a half") == "One. Two."


# a model that writes garbage -----------------------------------------------------------------------------------------
def test_garbage_model_falls_back_to_templates(tiny_model_dir):
    from unstar_gui.engine.llm import LLM

    llm = LLM(tiny_model_dir)
    paras = run_to_end(A.paraphrase_questions(llm, FACT, JUDGE, n=12, seed=0))
    assert len(paras) == 12 and {p.style for p in paras} == set(A.STYLES)
    assert all(p.provenance["source"] == "template" for p in paras)
    assert all(set(p.provenance) >= {"source", "prompt", "round", "seed"} for p in paras)
    wrongs = run_to_end(A.wrong_answers(llm, FACT, JUDGE, n=6, seed=0))
    assert len(wrongs) == 6 and all(w.provenance["source"] == "template" for w in wrongs)
    samples = run_to_end(A.build_antisamples(llm, FACT, paras, wrongs, JUDGE, seed=0))
    assert len(samples) == 12
    assert all(s.provenance["rationale"]["source"] == "template" for s in samples)
    assert not any(JUDGE.contains(s.target_text()) for s in samples)
    retain = run_to_end(R.build_retain_set(llm, FACT, JUDGE, n_neighbours=4, n_general=3, seed=0))
    general = [i for i in retain if i.kind == "general"]
    assert len(general) == 3 and all(g.reference and g.provenance["target"] == "base" for g in general)
    again = run_to_end(A.paraphrase_questions(llm, FACT, JUDGE, n=12, seed=0))
    assert [p.text for p in again] == [p.text for p in paras]


@pytest.mark.slow
def test_smollm2_writes_its_own_anti_samples(smollm2_dir):
    from unstar_gui.engine.llm import LLM

    llm = LLM(smollm2_dir)
    fact = A.Fact("Where did Harry Potter go to school?", "Hogwarts")
    judge = Judge("Hogwarts")
    paras = run_to_end(A.paraphrase_questions(llm, fact, judge, n=12, seed=0))
    wrongs = run_to_end(A.wrong_answers(llm, fact, judge, n=6, seed=0))
    assert len(paras) == 12 and len(wrongs) == 6
    assert sum(p.provenance["source"] == "model" for p in paras) >= 3
    assert any(w.provenance["source"] == "model" for w in wrongs)
    assert not any(judge.too_close(w.text)[0] or judge.contains(w.text) for w in wrongs)
    samples = run_to_end(A.build_antisamples(llm, fact, paras[:6], wrongs, judge, seed=0))
    assert len(samples) == 6 and not any(judge.contains(s.rationale) for s in samples)
