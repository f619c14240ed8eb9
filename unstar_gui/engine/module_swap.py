"""Wrapping a model's modules for a while, to read or change what flows through them: causal tracing
(engine/tracing.py), the subject edit (engine/subject_edit.py) and the edit-leak benchmark look at or add to one
block's MLP this way. mlx-lm's modules are never changed; every original is put back, also after an error.
"""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

if TYPE_CHECKING:
    import mlx.nn as nn


@functools.lru_cache(maxsize=None)
def _wrap_class() -> type:
    import mlx.nn as nn

    class _Wrap(nn.Module):
        """Stands in for a module while it is swapped: calls `fn(inner, *args, **kwargs)`; other attributes go to
        `inner` (e.g. `embed_tokens.as_linear` for tied heads)."""

        def __init__(self, inner: nn.Module, fn: Callable[..., Any]) -> None:
            super().__init__()
            self.inner = inner
            object.__setattr__(self, "_fn", fn)  # a plain attribute, not part of the module tree

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return self._fn(self.inner, *args, **kwargs)

        def __getattr__(self, name: str) -> Any:
            try:
                return super().__getattr__(name)
            except AttributeError:
                return getattr(super().__getattr__("inner"), name)

    return _Wrap


def inner_model(model: nn.Module) -> nn.Module:
    """The module holding `embed_tokens` and `layers` (llama's `model.model`; multimodal wrappers one level deeper)."""
    import mlx.nn as nn

    candidates = [model]
    for name in ("model", "language_model"):
        sub = model[name] if name in model else None
        if isinstance(sub, nn.Module):
            candidates.append(sub)
            if "model" in sub and isinstance(sub["model"], nn.Module):
                candidates.append(sub["model"])
    for c in reversed(candidates):
        if "embed_tokens" in c and "layers" in c:
            return c
    raise ValueError("This needs an mlx-lm model with `embed_tokens` and `layers` (llama-style).")


def blocks(inner: nn.Module) -> list[Any]:
    import mlx.nn as nn

    layers = inner["layers"]
    if not layers or not all(isinstance(b, nn.Module) and "mlp" in b for b in layers):
        raise ValueError("This needs transformer blocks with an `.mlp` module.")
    return layers


def _set(parent: Any, key: Any, value: Any) -> None:
    if isinstance(parent, list):
        parent[key] = value
    else:
        setattr(parent, key, value)


@contextlib.contextmanager
def swap(parent: Any, key: Any, fn: Callable[..., Any]) -> Iterator[None]:
    orig = parent[key]
    _set(parent, key, _wrap_class()(orig, fn))
    try:
        yield
    finally:
        _set(parent, key, orig)


@contextlib.contextmanager
def swapped(swaps: Sequence[tuple[Any, Any, Callable[..., Any]]]) -> Iterator[None]:
    """Wrap modules for the duration: each swap is (parent, key, fn), parent a Module (attribute) or a list of
    blocks; every original is put back on the way out, also after an error half-way."""
    with contextlib.ExitStack() as stack:
        for parent, key, fn in swaps:
            stack.enter_context(swap(parent, key, fn))
        yield
