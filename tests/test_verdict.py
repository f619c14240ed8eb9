"""The Results step's words (pages/forget/verdict.py): three outcomes against the job's bars, attacks summed up."""

from __future__ import annotations

from unstar_gui.ui.pages.forget.verdict import after_words, attack_failed, attacks_sentence, headline, outcomes

METRICS = {"efficacy_heldout": 0.9, "efficacy_train": 1.0, "retention_neighbours": 0.9, "retention_general": 0.42,
           "counts": {"efficacy_heldout": [9, 10], "retention_neighbours": [9, 10], "retention_general": [5, 12]}}


def test_each_outcome_is_judged_against_the_jobs_own_bar():
    items = outcomes(METRICS, {"min_retention": 0.85, "min_general_retention": 0.5})
    assert [o.ok for o in items] == [True, True, False]
    assert items[2].sentence == "Is general knowledge kept? No: 42% (the bar is 50%)."
    stricter = outcomes(METRICS, {"min_retention": 0.95, "min_general_retention": 0.4})
    assert [o.ok for o in stricter] == [True, False, True]


def test_headline_names_what_was_lost_and_the_incomplete_evaluation():
    text, level = headline(outcomes(METRICS, {}), None)
    assert level == "warn" and "lost too much general knowledge" in text and "incomplete" in text
    text, level = headline(outcomes({**METRICS, "efficacy_heldout": 0.3}, {}), {"attacks": []})
    assert level == "bad" and text.startswith("The fact is not forgotten.")


def test_nothing_known_is_not_a_perfect_score():
    empty = {"counts": {"efficacy_heldout": [0, 0], "efficacy_train": [0, 0], "retention_neighbours": [0, 0],
                        "retention_general": [0, 0]}, "efficacy_heldout": 1.0, "retention_general": 1.0}
    items = outcomes(empty, {})
    assert all(o.value is None and o.ok is None for o in items)
    assert headline(items, {})[1] == "none"


def test_attacks_and_rows_in_words():
    attacks = [{"recovery": 0.6}, {"recovery": 0.0}, {"recovery": None, "skipped": "no subject"}]
    assert [attack_failed(a) for a in attacks] == [True, False, False]
    assert attacks_sentence({"attacks": attacks}) == "1 of 2 attacks brought the fact back (highlighted below)."
    assert after_words({"known_before": False, "kind": "probe", "leaks_after": False}) == \
        "the base model didn't know it"
    assert after_words({"known_before": True, "kind": "probe", "leaks_after": True}) == "still gives the fact"
    assert after_words({"known_before": True, "kind": "general", "kept_after": False}) == "lost"
