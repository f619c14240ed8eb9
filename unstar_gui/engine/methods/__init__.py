"""Unlearning methods behind one interface (methods.base.Method); `get_method(name)` builds one by name."""

from __future__ import annotations

from ..errors import InvalidInput
from .base import Batch, Method, MethodContext, TokenBatch
from .ga_kl import GradientAscentKL
from .idk import IdkMethod
from .negate import NegateMethod
from .npo import NPOMethod
from .undial import UndialMethod
from .unstar import UnstarMethod

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (UnstarMethod, GradientAscentKL, NPOMethod, IdkMethod,
                                                               NegateMethod, UndialMethod)}


def get_method(name: str) -> Method:
    cls = METHODS.get(name)
    if cls is None:
        raise InvalidInput(f"Unknown unlearning method '{name}'.", f"Pick one of: {', '.join(sorted(METHODS))}.")
    return cls()


__all__ = ["Batch", "Method", "MethodContext", "TokenBatch", "METHODS", "get_method"]
