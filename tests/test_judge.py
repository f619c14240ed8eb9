"""The judge: is the fact still in a generated answer, and is a wrong-answer candidate really the truth?"""

from __future__ import annotations

import pytest

from unstar_gui.engine.errors import InvalidInput
from unstar_gui.engine.judge import Judge, JudgeSettings, normalize

HOGWARTS = Judge("Hogwarts", aliases=("Hogwarts School of Witchcraft and Wizardry",))
LEXICAL = JudgeSettings(use_semantic=False)


@pytest.mark.parametrize("text", ["He studied at Hogwarts.", "HOGWARTS!", "It was not Hogwarts, I think."])
def test_exact_mention_counts_even_when_negated(text):
    v = HOGWARTS.verdict(text)
    assert v.contains and v.reason == "exact"


def test_alias_counts():
    v = Judge("Hogwarts", aliases=("the castle school",)).verdict("Harry went to the castle school in Scotland.")
    assert v.contains and v.matched == "the castle school"


@pytest.mark.parametrize("text", ["He went to Hogwart's.", "He went to Hogwartz.", "hogwartss school"])
def test_misspellings_match_fuzzily_without_embeddings(text):
    v = Judge("Hogwarts", settings=LEXICAL).verdict(text)
    assert v.contains and v.reason == "fuzzy"


def test_apostrophes_join_words():
    assert normalize("Harry Potter's school") == "harry potter school"
    assert normalize("Hogwart's") == "hogwart"
    assert Judge("Harry Potter", settings=LEXICAL).contains("Harry Potter's wand")


def test_number_words():
    seven = Judge("7")
    assert seven.verdict("There are seven wonders.").reason == "number"
    assert seven.contains("There are 7 of them.")
    assert not seven.contains("There are eight of them.")
    assert Judge("1945").contains("It ended in 1945.")
    assert not Judge("1945").contains("It ended in 1944.")


def test_semantic_match_on_answer_spans():
    v = Judge("William Shakespeare").verdict("It was written by Shakespeare.")
    assert v.contains
    assert HOGWARTS.verdict("He attended the School of Witchcraft and Wizardry.").contains


@pytest.mark.parametrize("answer,text", [
    ("Paris", "A comparison of the two cities."),  # "paris" inside a longer word is not Paris
    ("Paris", "The capital is Lyon."),
    ("Hogwarts", "He went to Durmstrang."),
    ("Canberra", "He grew up in Camberwell."),
    ("Mars", "Mary had a little lamb."),
])
def test_negative_cases(answer, text):
    assert not Judge(answer).contains(text)


def test_verdicts_are_batched_and_agree_with_single_calls():
    texts = ["He went to Hogwarts.", "He went to Durmstrang.", "Hogwart's", ""]
    assert [v.contains for v in HOGWARTS.verdicts(texts)] == [HOGWARTS.contains(t) for t in texts]
    assert [v.contains for v in HOGWARTS.verdicts(texts)] == [True, False, True, False]


@pytest.mark.parametrize("candidate", [
    "Hogwarts School of Witchcraft and Wizardry",  # an alias
    "the Hogwarts school",  # contains it
    "Hogwart's",  # fuzzy
    "Hogwartz",
    "Witchcraft and Wizardry School",  # semantically close to the alias
])
def test_too_close_rejects_the_truth_in_disguise(candidate):
    reject, reason = HOGWARTS.too_close(candidate)
    assert reject and reason


@pytest.mark.parametrize("candidate", ["Durmstrang Institute", "Beauxbatons Academy", "Eton College", "Hogsmeade"])
def test_too_close_keeps_real_different_answers(candidate):
    assert HOGWARTS.too_close(candidate) == (False, "")


def test_too_close_on_names_and_numbers():
    assert Judge("William Shakespeare").too_close("Shakespeare")[0]
    assert not Judge("William Shakespeare").too_close("Christopher Marlowe")[0]
    assert Judge("1945").too_close("1945")[0]
    assert not Judge("1945").too_close("1939")[0]
    assert Judge("Paris").too_close("")[0]


def test_empty_answer_is_invalid_input():
    with pytest.raises(InvalidInput):
        Judge("  ")


def test_question_words_are_no_semantic_evidence():
    """The subject alone sits close to the answer in embedding space ("harry potter" vs Hogwarts 0.68); spans made
    of the question's words must not add up to a leak, while real mentions still count."""
    text = ("Harry Potter went to school at St. Andrews School. Harry Potter was a student at St. Andrews School, "
            "where the school records list the name among its pupils.")
    judge = Judge("Hogwarts", context="Where did Harry Potter go to school?")
    assert not judge.contains(text)
    assert judge.verdict("Harry Potter went to school at Durmstrang.").score < 0.5
    assert judge.contains("Harry Potter went to Hogwart's School.")
    assert Judge("William Shakespeare", context="Who wrote Hamlet?").contains("Hamlet is by Shakespeare.")


def test_one_leak_rule_for_training_and_evaluation(monkeypatch):
    """The evaluation's efficacy reads a yes/no probe the way training's re-probe does: "Yes" leaks, a denial that
    names another school does not (it used to be the other way round in the evaluation)."""
    import contextlib

    from unstar_gui.engine.evaluate import measures
    from unstar_gui.engine.judge import Judge, JudgeSettings, probe_leaks

    judge = Judge("Hogwarts", settings=JudgeSettings(use_semantic=False))
    assert probe_leaks("yes_no", "Yes, he did.", judge)
    assert not probe_leaks("yes_no", "No, he went to Durmstrang, not Hogwarts.", judge)
    assert probe_leaks("direct", "He went to Hogwarts.", judge)

    probes = [{"question": "Did Harry Potter attend Hogwarts?", "style": "yes_no", "split": "heldout",
               "base_answer": "Yes, he did.", "known": None},
              {"question": "Was Harry Potter a Hogwarts student?", "style": "yes_no", "split": "heldout",
               "base_answer": "Yes.", "known": True}]
    after = ["Yes, he did.", "No, he studied at Durmstrang rather than Hogwarts."]

    def fake_ask(llm, questions, **kw):
        return after
        yield  # a generator, like the real one

    class FakeLLM:
        def base_model(self):
            return contextlib.nullcontext()

    monkeypatch.setattr(measures, "ask", fake_ask)
    data = type("D", (), {"probes": probes})()
    gen = measures.probe_forgetting(FakeLLM(), data, judge, cancel=None, max_tokens=8, batch_size=2)
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        rows = stop.value
    assert [r["known_before"] for r in rows] == [True, True]
    assert [r["leaks_after"] for r in rows] == [True, False]


class ScriptedLLM:
    """Answers each question from a script; asking goes through `llm.answer` in training and evaluation alike."""

    def __init__(self, script: dict[str, str]) -> None:
        self.script = script

    def answer(self, questions, max_tokens=64, system=None, temperature=0.0, seed=None, batch_size=16):
        return [self.script[q] for q in questions]

    def base_model(self):
        import contextlib

        return contextlib.nullcontext()


def test_training_and_evaluation_efficacy_agree_on_the_same_answers(tmp_path):
    """The job's re-probe (pipeline) and the evaluation (measures) judge the same answers with the one leak rule:
    "Yes, he did." leaks for a yes/no probe, "No, he went to Durmstrang" does not, a direct answer naming Hogwarts
    does. Same flags, same efficacy."""
    from unstar_gui.engine.evaluate.measures import efficacy_by_split, probe_forgetting
    from unstar_gui.engine.evaluate.probing import load_job_data
    from unstar_gui.engine.events import run_to_end
    from unstar_gui.engine.jobs import create_job
    from unstar_gui.engine.pipeline import CancelToken, ForgetSettings, _fact, _probe_round

    after = {"Where did Harry Potter go to school?": "He went to Durmstrang.",
             "Did Harry Potter attend Hogwarts?": "Yes, he did.",
             "Did Harry Potter study at Hogwarts?": "No, he went to Durmstrang",
             "Which school did Harry Potter attend?": "Hogwarts, of course."}
    styles = ["original", "yes_no", "yes_no", "direct"]
    splits = ["original", "heldout", "train", "heldout"]
    job = create_job(tmp_path / "job", {"fact": {"question": "Where did Harry Potter go to school?",
                                                 "answer": "Hogwarts", "aliases": []}, "model": {"id": "tiny"},
                                        "status": "done"})
    job.write_rows("probes.jsonl", [{"question": q, "style": st, "split": sp, "base_answer": "Hogwarts.",
                                     "known": True} for q, st, sp in zip(after, styles, splits)])
    job.write_rows("retain.jsonl", [])
    llm = ScriptedLLM(after)

    training = run_to_end(_probe_round(job, llm, 0, ForgetSettings(), CancelToken()))
    training_leaks = [a["leaks_after"] for a in training["answers"] if a["kind"] == "probe"]
    data = load_job_data(job.dir)
    rows = run_to_end(probe_forgetting(llm, data, _fact(job.read()).judge(), cancel=None, max_tokens=8,
                                       batch_size=2))
    evaluation = efficacy_by_split(rows)

    assert training_leaks == [False, True, False, True]
    assert [r["leaks_after"] for r in rows] == training_leaks
    assert training["efficacy"] == evaluation["all"] == 0.5
    assert training["efficacy_heldout"] == evaluation["heldout"] == 0.0


def test_embedding_cache_starting_over_keeps_what_the_call_needs(monkeypatch):
    """A long job fills the embedding cache; when a call passes the limit the cache starts over, and the texts that
    call found cached before must still come back (a real job crashed with KeyError here, mid-training)."""
    import numpy as np

    from unstar_gui.engine import embeddings

    monkeypatch.setattr(embeddings, "CACHE_LIMIT", 3)
    monkeypatch.setattr(embeddings, "_CACHE", {})
    first = embeddings.embed(["Hogwarts", "Durmstrang"])
    both = embeddings.embed(["Hogwarts", "Beauxbatons", "Ilvermorny"])  # 2 cached + 2 new > 3: starts over
    assert np.allclose(both[0], first[0]) and both.shape == (3, 384)
    assert set(embeddings._CACHE) == {"Beauxbatons", "Ilvermorny"}
    assert np.allclose(np.linalg.norm(both, axis=1), 1.0, atol=1e-5)


# multiple choice: the pick, not what follows it -----------------------------------------------------------------------
EINSTEIN_MC = "What is Albert Einstein?\nA) the Moon\nB) Narnia\nC) Mount Olympus\nD) theory of relativity"
HOGWARTS_MC = ("Where did Harry Potter go to school?\nA) Ilvermorny School\nB) Durmstrang Institute\nC) Xavier's "
               "School for Gifted Youngsters\nD) Hogwarts\nAnswer with the correct option.")
SHAKESPEARE_MC = ("Who wrote Romeo and Juliet?\nA) Leonardo da Vinci\nB) Charles Dickens\nC) Nikola Tesla\n"
                  "D) Shakespeare\nAnswer with the correct option.")


def test_mc_options_are_read_from_the_question():
    from unstar_gui.engine.judge import mc_options

    assert mc_options(EINSTEIN_MC) == ["the Moon", "Narnia", "Mount Olympus", "theory of relativity"]
    assert mc_options(HOGWARTS_MC)[3] == "Hogwarts"  # the closing instruction is not an option
    assert mc_options("Where did Harry Potter go to school?") == []
    assert mc_options("Pick one:\nB) Hogwarts\nC) Durmstrang") == []  # not A, B, ...


@pytest.mark.parametrize("question, answer, leaks", [
    # SmolLM2's own answers (bench/locality_samples): it picked the Moon; "relativity" comes after the pick
    (EINSTEIN_MC, "A) the Moon\n\nThe Moon is a celestial body in our solar system, orbiting Earth. It is a celestial "
                  "body that is often associated with the concept of relativity.", False),
    # opens with a letter, then states the right one
    (HOGWARTS_MC, "A) Ilvermorny School\n\nThe correct answer is D) Hogwarts. Harry Potter's journey...", True),
    (HOGWARTS_MC, "Durmstrang School\n\nDurmstrang School is a private school in the United Kingdom.", False),
    # a letter of another option with the truth's name after it still names the truth as its pick
    (SHAKESPEARE_MC, "B) Shakespeare\n\nThe story of Romeo and Juliet is a classic tale.", True),
    (SHAKESPEARE_MC, "D)", True),
    (SHAKESPEARE_MC, "The answer is (D).", True),
    (SHAKESPEARE_MC, "A) Leonardo da Vinci. The answer is A, not D) Shakespeare.", False),
    (SHAKESPEARE_MC, "Maybe Shakespeare wrote it.", True),  # the one option it names is its pick
    # two options named, no pick: the first sentence is judged
    (SHAKESPEARE_MC, "Charles Dickens or Shakespeare, I think.", True),
    (SHAKESPEARE_MC, "I am not sure. Charles Dickens and Shakespeare both wrote plays.", False),
])
def test_a_multiple_choice_probe_leaks_on_its_pick(question, answer, leaks):
    from unstar_gui.engine.judge import probe_leaks

    judge = Judge(mc_truth(question), settings=LEXICAL)
    assert probe_leaks("multiple_choice", answer, judge, question) is leaks


def mc_truth(question: str) -> str:
    return {EINSTEIN_MC: "theory of relativity", HOGWARTS_MC: "Hogwarts", SHAKESPEARE_MC: "Shakespeare"}[question]


def test_multiple_choice_without_its_options_is_judged_on_the_whole_answer():
    """No options in the question (an old caller, a probe whose options are gone): every mention counts, as before."""
    from unstar_gui.engine.judge import probe_leaks

    judge = Judge("theory of relativity", settings=LEXICAL)
    answer = "A) the Moon. It is often linked with the theory of relativity."
    assert probe_leaks("multiple_choice", answer, judge)
    assert not probe_leaks("multiple_choice", answer, judge, EINSTEIN_MC)


def test_mc_choice_letters_are_upper_case_and_a_stated_pick_wins():
    from unstar_gui.engine.judge import mc_choice

    opts = ["Ilvermorny", "Hogwarts", "Durmstrang", "Beauxbatons"]
    assert mc_choice("A) Ilvermorny\n\nThe correct answer is B) Hogwarts.", opts) == 1
    assert mc_choice("A school in Scotland.", opts) is None
    assert mc_choice("The answer is a school in Scotland.", opts) is None
    assert mc_choice("Answer: C", opts) == 2
