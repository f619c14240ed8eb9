""""I don't know" targets: train every forget question toward a refusal (a bundled list of phrasings, one picked per
question with a seeded hash so a job is reproducible), with the same loss as UNSTAR: CE on the target + retain term.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any, Sequence

from ..errors import InvalidInput
from ..prompts import DATA_DIR
from .ga_kl import forget_questions
from .unstar import UnstarMethod

REFUSALS_FILE = DATA_DIR / "refusals.txt"


@functools.lru_cache(maxsize=1)
def refusals() -> tuple[str, ...]:
    """The bundled refusal phrasings (one per line; blank lines and # comments skipped)."""
    try:
        lines = REFUSALS_FILE.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InvalidInput(f"The refusal phrasings are missing ({REFUSALS_FILE}).",
                           "Reinstall UnStar Studio, or restore resources/data/refusals.txt.") from exc
    out = tuple(line.strip() for line in lines if line.strip() and not line.startswith("#"))
    if not out:
        raise InvalidInput(f"{REFUSALS_FILE} holds no refusal phrasings.", "Add one phrasing per line.")
    return out


def pick_refusal(question: str, seed: int = 0) -> str:
    """The refusal for one question: stable across runs and processes (not Python's salted hash)."""
    options = refusals()
    digest = hashlib.sha256(f"{seed}:{question.strip().lower()}".encode()).digest()
    return options[int.from_bytes(digest[:8], "big") % len(options)]


class IdkMethod(UnstarMethod):
    name = "idk"
    description = "Train the forget questions toward \"I don't know\" refusals, plus a retain term."

    def forget_pairs(self, antisamples: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
        assert self.ctx is not None, "prepare() first"
        seed = int(self.ctx.seed)
        return [(q, pick_refusal(q, seed)) for q in forget_questions(antisamples, self.ctx.question)]
