"""Unlearning methods behind one interface (methods.base.Method); `get_method(name)` builds one by name."""

from __future__ import annotations

from ..errors import InvalidInput
from .base import Batch, Method, MethodContext, TokenBatch
from .unstar import UnstarMethod

METHODS: dict[str, type[Method]] = {UnstarMethod.name: UnstarMethod}


def get_method(name: str) -> Method:
    cls = METHODS.get(name)
    if cls is None:
        raise InvalidInput(f"Unknown unlearning method '{name}'.", f"Pick one of: {', '.join(sorted(METHODS))}.")
    return cls()


__all__ = ["Batch", "Method", "MethodContext", "TokenBatch", "METHODS", "get_method"]
