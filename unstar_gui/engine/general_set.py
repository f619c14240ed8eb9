"""The bundled general-knowledge trivia set (resources/data/general/trivia.jsonl) and its fixed three-way split.

Unlearning one fact must not cost the model what else it knows, so general knowledge is both protected while
training (TRAIN: questions a retain term or a stop rule may look at), tuned on (VALIDATION) and measured on
questions training never saw (EVALUATION). The split of an item depends only on its id, through SHA-256 of
SPLIT_SEED and the id: it is the same on every machine and Python version (no salted `hash()`, no global random
state), and adding items to the file never moves an existing one to another split.

The file ships with the app but is read as untrusted input: a line that is not a JSON object with the right field
types is skipped, never fatal.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from .errors import InvalidInput
from .prompts import DATA_DIR

TRIVIA_FILE = DATA_DIR / "general" / "trivia.jsonl"
SPLIT_SEED = "unstar-general-v1"


class GeneralSplit(str, Enum):
    TRAIN = "train"
    VALIDATION = "validation"
    EVALUATION = "evaluation"


SHARES: dict[GeneralSplit, float] = {
    GeneralSplit.TRAIN: 0.45,
    GeneralSplit.VALIDATION: 0.20,
    GeneralSplit.EVALUATION: 0.35,
}

# Limits on what one line may hold: a hostile or corrupted file cannot make the set huge or slow.
MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_FIELD_CHARS = 1000
MAX_ALIASES = 50


@dataclass(frozen=True)
class TriviaItem:
    id: str
    question: str
    answer: str
    aliases: tuple[str, ...]
    category: str


def _text(value: Any) -> str | None:
    """A stripped non-empty string within MAX_FIELD_CHARS, else None."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if value and len(value) <= MAX_FIELD_CHARS else None


def _item(row: Any) -> TriviaItem | None:
    """One parsed line as an item, or None when any field is missing or of the wrong type."""
    if not isinstance(row, dict):
        return None
    item_id, question, answer = _text(row.get("id")), _text(row.get("question")), _text(row.get("answer"))
    if item_id is None or question is None or answer is None:
        return None
    raw_aliases = row.get("aliases", [])
    if not isinstance(raw_aliases, list) or len(raw_aliases) > MAX_ALIASES:
        return None
    aliases = [_text(a) for a in raw_aliases]
    if any(a is None for a in aliases):
        return None
    category = row.get("category", "")
    if not isinstance(category, str) or len(category) > MAX_FIELD_CHARS:
        return None
    return TriviaItem(item_id, question, answer, tuple(a for a in aliases if a is not None), category.strip())


def load_trivia(path: Path | None = None) -> list[TriviaItem]:
    """The trivia items in file order (the bundled file unless `path` is given).

    Malformed lines (bad JSON, not an object, missing or wrongly typed fields, over-long text) and repeated ids are
    skipped. A missing or unreadable file raises InvalidInput: that is a broken installation, not bad data.
    """
    path = TRIVIA_FILE if path is None else Path(path)
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES)
    except OSError as exc:
        raise InvalidInput(f"The general-knowledge questions are missing ({path}).",
                           "Reinstall UnStar Studio, or restore resources/data/general/trivia.jsonl.") from exc
    items: list[TriviaItem] = []
    seen: set[str] = set()
    for line in data.decode("utf-8", errors="replace").splitlines():
        if not line.strip() or len(line) > 20 * MAX_FIELD_CHARS:
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            continue
        item = _item(row)
        if item is None or item.id in seen:
            continue
        seen.add(item.id)
        items.append(item)
    return items


def _position(item_id: str) -> float:
    """Where an id falls in [0, 1): the first 8 bytes of SHA-256(SPLIT_SEED + ":" + id), stable everywhere."""
    digest = hashlib.sha256(f"{SPLIT_SEED}:{item_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def split_of(item: TriviaItem) -> GeneralSplit:
    """The split an item belongs to; it depends on nothing but the item's id."""
    position, edge = _position(item.id), 0.0
    for split, share in SHARES.items():
        edge += share
        if position < edge:
            return split
    return GeneralSplit.EVALUATION  # only reachable through float rounding at the top edge


def splits(path: Path | None = None) -> dict[GeneralSplit, list[TriviaItem]]:
    """Every split with its items, each list in file order."""
    out: dict[GeneralSplit, list[TriviaItem]] = {split: [] for split in GeneralSplit}
    for item in load_trivia(path):
        out[split_of(item)].append(item)
    return out


def general_split(split: GeneralSplit, path: Path | None = None) -> list[TriviaItem]:
    """The items of one split, in file order."""
    return [item for item in load_trivia(path) if split_of(item) == split]
