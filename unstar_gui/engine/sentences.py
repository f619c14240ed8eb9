"""Cutting generated text down to whole sentences: targets, references and answers are judged on their first ones.

Kept apart from the sample builders because the judge needs it too (judge.known_retain reads a trivia answer's first
sentence), and the judge sits below them.
"""

from __future__ import annotations

import re


def first_sentences(text: str, n: int = 2, max_words: int = 40) -> str:
    """The first n sentences, cut to max_words (a cut one ends with a full stop)."""
    parts = re.split(r"(?<=[.!?])\s+", text.strip())
    out = " ".join(parts[:n]).strip()
    words = out.split()
    if len(words) > max_words:
        out = " ".join(words[:max_words]).rstrip(",;:") + "."
    return out


def complete_sentences(text: str, n: int = 2, max_words: int = 40) -> str:
    """At most n sentences, without a last one that the token limit cut off ("" if none is complete)."""
    parts = [p for p in re.split(r"(?<=[.!?])\s+", text.strip()) if p][:n]
    while parts and not re.search(r"[.!?][\"')\]]*$", parts[-1]):
        parts.pop()
    out = " ".join(parts)
    while parts and len(out.split()) > max_words:
        parts.pop()
        out = " ".join(parts)
    return out
