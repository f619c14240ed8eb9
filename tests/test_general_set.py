"""The bundled general-knowledge trivia set: content checks and the fixed, hash-based split (no model needed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from unstar_gui.engine.errors import InvalidInput
from unstar_gui.engine.general_set import (SHARES, TRIVIA_FILE, GeneralSplit, TriviaItem, general_split, load_trivia,
                                           split_of, splits)
from unstar_gui.engine.judge import normalize

# Subjects of the forget benchmark and their close neighbours: general knowledge must not overlap with them.
EXCLUDED = [
    "harry potter", "potter", "hogwarts", "hermione", "weasley", "dumbledore", "rowling", "wizard",
    "france", "french", "paris", "eiffel", "louvre",
    "japan", "japanese", "tokyo", "fuji", "yen",
    "shakespeare", "romeo", "juliet", "hamlet", "macbeth", "othello", "king lear", "stratford",
    "leonardo", "da vinci", "mona lisa", "last supper",
    "newton", "gravity", "gravitational", "laws of motion",
    "einstein", "relativity",
    "armstrong", "moon", "moon landing", "apollo",
    "washington",
]


@pytest.fixture(scope="module")
def items() -> list[TriviaItem]:
    return load_trivia()


def _copy(tmp_path: Path, extra: list[str] | None = None) -> Path:
    path = tmp_path / "trivia.jsonl"
    text = TRIVIA_FILE.read_text(encoding="utf-8")
    path.write_text(text + "".join(line + "\n" for line in (extra or [])), encoding="utf-8")
    return path


def test_bundled_file_is_large_with_unique_ids_and_questions(items):
    assert len(items) >= 300
    assert len(TRIVIA_FILE.read_text(encoding="utf-8").splitlines()) == len(items)  # no line of ours was skipped
    assert len({i.id for i in items}) == len(items)
    assert len({normalize(i.question) for i in items}) == len(items)


def test_every_item_is_well_formed(items):
    for item in items:
        assert item.question.strip() and item.question.endswith("?"), item.id
        assert item.answer.strip(), item.id
        assert all(a.strip() for a in item.aliases), item.id
        assert item.category, item.id


def test_no_item_touches_the_excluded_entities(items):
    for item in items:
        text = normalize(" ".join([item.question, item.answer, *item.aliases]))
        for word in EXCLUDED:
            assert not re.search(rf"\b{re.escape(normalize(word))}\b", text), (item.id, word)


def test_splits_are_disjoint_cover_everything_and_follow_the_shares(items):
    parts = splits()
    ids = [[i.id for i in parts[s]] for s in GeneralSplit]
    assert sum(len(p) for p in ids) == len(items)
    assert set().union(*map(set, ids)) == {i.id for i in items}
    assert all(len(p) >= 50 for p in ids)
    for split in GeneralSplit:
        assert abs(len(parts[split]) / len(items) - SHARES[split]) < 0.05, split
        assert parts[split] == general_split(split)  # file order, same items
        assert all(split_of(i) is split for i in parts[split])


def test_split_is_deterministic_and_stable_when_items_are_added(tmp_path, items):
    assert splits() == splits()
    extra = json.dumps({"id": "zzz-999", "question": "What is 1 plus 3?", "answer": "4", "aliases": ["four"],
                        "category": "arithmetic"})
    grown = splits(_copy(tmp_path, [extra]))
    before = splits()
    for split in GeneralSplit:
        assert [i for i in grown[split] if i.id != "zzz-999"] == before[split]
    assert sum(len(v) for v in grown.values()) == len(items) + 1


def test_split_does_not_depend_on_the_rest_of_the_item():
    a = TriviaItem("geo-001", "Q?", "A", (), "geography")
    b = TriviaItem("geo-001", "Other?", "B", ("x",), "science")
    assert split_of(a) is split_of(b)
    assert split_of(a) is split_of(TriviaItem("geo-001", "Q?", "A", (), "geography"))


def test_malformed_lines_are_skipped(tmp_path, items):
    bad = [
        "not json at all",
        "[1, 2, 3]",
        '"just a string"',
        "{}",
        '{"id": 5, "question": "Q?", "answer": "A"}',
        '{"id": "bad-1", "question": null, "answer": "A"}',
        '{"id": "bad-2", "question": "Q?", "answer": ["A"]}',
        '{"id": "bad-3", "question": "Q?", "answer": "A", "aliases": "A"}',
        '{"id": "bad-4", "question": "Q?", "answer": "A", "aliases": [1, 2]}',
        '{"id": "bad-5", "question": "Q?", "answer": "A", "category": 3}',
        '{"id": "bad-6", "question": "   ", "answer": "A"}',
        '{"id": "bad-7", "question": "' + "x" * 5000 + '?", "answer": "A"}',
        "[" * 5000 + "]" * 5000,  # nested past the recursion limit
        '{"id": "geo-001", "question": "Duplicate id?", "answer": "A"}',
        '{"id": "ok-1", "question": "What is 2 plus 5?", "answer": "7"',
    ]
    path = _copy(tmp_path, bad)
    with path.open("ab") as fh:
        fh.write(b'\xff\xfe{"id": "bin"\n')
    loaded = load_trivia(path)
    assert loaded == items


def test_a_minimal_valid_line_loads(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"id": "a", "question": " What is 2 plus 5? ", "answer": "7"}\n\n', encoding="utf-8")
    assert load_trivia(path) == [TriviaItem("a", "What is 2 plus 5?", "7", (), "")]


def test_missing_file_raises_a_user_error(tmp_path):
    with pytest.raises(InvalidInput):
        load_trivia(tmp_path / "nope.jsonl")
