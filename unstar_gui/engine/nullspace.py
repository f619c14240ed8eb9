"""Null-space constrained LoRA: keep the adapter away from the input directions that generic text uses.

A LoRA layer adds `scale * (x @ lora_a) @ lora_b` to its base linear layer's output. If every column of `lora_a`
lies in the span of directions that generic inputs barely use, then `x @ lora_a` is tiny for generic inputs and the
adapter leaves their outputs almost unchanged, whatever `lora_b` learns (AlphaEdit, arXiv 2410.02355, `get_project`;
LoRA-Null, arXiv 2503.02659).

Steps:
  1. `collect_covariances` runs the base model on a corpus (chat-formatted questions and plain text) and records,
     at the input of each target linear layer, the uncentered covariance K = (1/n) sum_t x_t x_t^T over the real
     (non-padding) tokens.
  2. `null_projector(K, eps)` keeps the eigen-directions of K with the smallest eigenvalues whose sum is at most
     eps * trace(K): the projector P onto them moves at most a fraction eps of the corpus inputs' energy.
  3. `NullSpace.apply(model)` sets lora_a = P @ lora_a for each LoRA layer, at init and after every optimizer step.

The covariances are cached under <data folder>/cache/nullspace (keyed by the model, the targets and the corpus), so
a different eps costs only the eigendecompositions.

Caveat: K is measured on the base model. Once adapters in earlier layers move, a later layer's inputs shift a little
too, so the bound holds exactly per layer on base-model inputs, and approximately for the whole adapted model.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

log = logging.getLogger(__name__)

CACHE_VERSION = 3  # 3: the shared-prefix (sink) covariances are stored too
_COUNT_KEY = "__n_tokens__"
_SINK = "sink:"  # cache entries of sink_covariances, by target


def default_cache_dir() -> Path:
    """<data folder>/cache/nullspace (the data folder is $UNSTAR_HOME or the platform's user data dir)."""
    from .store import data_dir

    return data_dir() / "cache" / "nullspace"


# module paths ----------------------------------------------------------------------------------------------------
def _blocks(model: Any) -> list[Any]:
    layers = getattr(model, "layers", None)
    if layers is None and hasattr(model, "language_model"):
        layers = getattr(model.language_model, "layers", None)
    if layers is None:
        raise ValueError("This model has no `layers` list of transformer blocks.")
    return list(layers)


def target_paths(model: Any, layers: Sequence[int], keys: Sequence[str]) -> list[str]:
    """Dotted module paths (as `model.named_modules()` names them) of `keys` inside the given transformer blocks,
    e.g. layers (4,), keys ("mlp.down_proj",) -> ["model.layers.4.mlp.down_proj"]. Negative layer indices count
    from the end. Raises KeyError for a key a block does not have.
    """
    named = dict(model.named_modules())
    by_id = {id(m): name for name, m in named.items()}
    blocks = _blocks(model)
    out: list[str] = []
    for layer in layers:
        block_name = by_id.get(id(blocks[layer]))
        if block_name is None:
            raise KeyError(f"Transformer block {layer} is not a named module of this model.")
        for key in keys:
            path = f"{block_name}.{key}"
            if path not in named:
                raise KeyError(f"The model has no module {path!r}.")
            out.append(path)
    return out


# recording -------------------------------------------------------------------------------------------------------
class _Sink:
    """Shared state of the recorders: the current batch's token mask and each target's per-batch sum of x x^T."""

    def __init__(self) -> None:
        self.mask: Any = None
        self.pending: dict[str, Any] = {}


def _make_recorder(inner: Any, name: str, sink: _Sink) -> Any:
    import mlx.core as mx
    import mlx.nn as nn

    class _Recorder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner
            self._sink = sink  # a plain object: not a parameter nor a child module
            self._name = name

        def __call__(self, x, *args, **kwargs):
            d = x.shape[-1]
            w = self._sink.mask.reshape(-1, 1).astype(mx.float32)
            xf = x.reshape(-1, d).astype(mx.float32) * w  # mask is 0/1, so (w x)^T (w x) = sum over real tokens
            kb = xf.T @ xf
            prev = self._sink.pending.get(self._name)
            self._sink.pending[self._name] = kb if prev is None else prev + kb
            return self.inner(x, *args, **kwargs)

    return _Recorder()


def collect_covariances(model: Any, batches: Iterable[tuple[Any, Any]], targets: Sequence[str]) -> dict[str, np.ndarray]:
    """Uncentered input covariance K = (1/n) sum_t x_t x_t^T of each target module over the masked tokens.

    `batches` yields (tokens (B, T) int, mask (B, T) with 1 on real tokens); `targets` are dotted module paths
    (see `target_paths`). A LoRA-wrapped target is recorded at the wrapper's input. The model's modules are always
    restored. Only the sub-graph that feeds the targets is evaluated (MLX is lazy), so the output head is skipped.
    """
    import mlx.core as mx
    from mlx.utils import tree_unflatten

    targets = list(dict.fromkeys(targets))
    if not targets:
        return {}
    named = dict(model.named_modules())
    missing = [t for t in targets if t not in named]
    if missing:
        raise KeyError(f"The model has no module(s) {missing}.")
    originals = [(t, named[t]) for t in targets]
    sink = _Sink()
    sums: dict[str, np.ndarray] = {}
    count = 0.0
    model.update_modules(tree_unflatten([(t, _make_recorder(m, t, sink)) for t, m in originals]))
    try:
        for tokens, mask in batches:
            mask = mx.array(mask)
            n = float(mask.astype(mx.float32).sum().item())
            if n <= 0:
                continue
            sink.mask = mask
            sink.pending = {}
            model(mx.array(tokens))  # outputs stay unevaluated; only the recorded sums are computed
            mx.eval(list(sink.pending.values()))
            for t in targets:
                kb = sink.pending.get(t)
                if kb is None:
                    raise RuntimeError(f"Module {t} was not called by the model's forward pass.")
                arr = np.array(kb, dtype=np.float64)
                sums[t] = arr if t not in sums else sums[t] + arr
            count += n
            sink.pending = {}
    finally:
        sink.mask = None
        sink.pending = {}
        model.update_modules(tree_unflatten(originals))
    if count <= 0:
        raise ValueError("No tokens to measure the input covariance on (empty corpus).")
    return {t: sums[t] / count for t in targets}


# projector -------------------------------------------------------------------------------------------------------
def null_projector(cov: np.ndarray, eps: float) -> np.ndarray:
    """Projector P = U U^T (float32) onto the eigen-directions of `cov` with the smallest eigenvalues whose sum is
    at most eps * trace(cov).

    With cov = X^T X / n for the corpus inputs X (one row per token), ||X P||_F^2 = n * tr(P cov P) = n * (sum of the
    kept eigenvalues) <= eps * n * tr(cov) = eps * ||X||_F^2: projected through P, the corpus inputs keep at most a
    fraction eps of their energy. So for lora_a' = P @ lora_a, ||X lora_a' lora_b||_F^2 <= eps ||X||_F^2
    ||lora_a lora_b||_2^2. eps = 0 keeps at most the directions with eigenvalue exactly 0; eps >= 1 gives the
    identity (no constraint).
    """
    cov = np.asarray(cov, dtype=np.float64)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
        raise ValueError(f"A covariance must be a square matrix, got shape {cov.shape}.")
    d = cov.shape[0]
    if eps >= 1.0:
        return np.eye(d, dtype=np.float32)
    if eps < 0:
        raise ValueError("eps must be >= 0.")
    sym = (cov + cov.T) / 2
    vals, vecs = np.linalg.eigh(sym)  # ascending
    vals = np.clip(vals, 0.0, None)  # tiny negative round-off: clipping only over-counts kept energy
    budget = eps * float(vals.sum())
    k = int(np.searchsorted(np.cumsum(vals), budget, side="right"))
    u = vecs[:, :k]
    return (u @ u.T).astype(np.float32)


def without_directions(proj: np.ndarray, cov: np.ndarray, tol: float = 1e-6) -> np.ndarray:
    """The projector `proj` with the span of `cov` (e.g. the attention-sink inputs) taken out of its range: the
    inputs behind `cov` then get exactly nothing through it. Eigen-directions of P cov P above tol x the largest
    eigenvalue are removed (they lie in P's range, so the result is still a projector)."""
    p = np.asarray(proj, dtype=np.float64)
    m = p @ np.asarray(cov, dtype=np.float64) @ p
    vals, vecs = np.linalg.eigh((m + m.T) / 2)
    if vals.size == 0 or vals[-1] <= 0:
        return np.asarray(proj, dtype=np.float32)
    q = vecs[:, vals > tol * vals[-1]]
    return (p - q @ q.T).astype(np.float32)


def _kept_dims(proj: np.ndarray) -> int:
    return int(round(float(np.trace(proj))))


@dataclass
class NullSpace:
    projectors: dict[str, Any]  # module path -> mx.array (in_dims, in_dims)
    eps: float
    n_tokens: int
    kept_dims: dict[str, int] = field(default_factory=dict)

    def apply(self, model: Any) -> int:
        """lora_a <- P @ lora_a for every LoRA layer with a projector; returns how many were projected.

        Cheap (lazy, no eval): meant for init and after every optimizer step; the caller evaluates.
        """
        from mlx_lm.tuner.lora import LoRALinear

        done = 0
        for name, module in model.named_modules():
            proj = self.projectors.get(name)
            if proj is None or not isinstance(module, LoRALinear):
                continue
            a = module.lora_a
            module.lora_a = (proj @ a).astype(a.dtype)
            done += 1
        return done

    @classmethod
    def from_covariances(cls, covs: dict[str, np.ndarray], eps: float, n_tokens: int,
                         sinks: dict[str, np.ndarray] | None = None) -> "NullSpace":
        """Projectors from the corpus covariances; `sinks` (covariances of inputs every prompt shares: the chat
        prefix, a text's first token) are taken out of the range exactly (see `without_directions`)."""
        import mlx.core as mx

        projectors, kept = {}, {}
        for name, cov in covs.items():
            p = null_projector(cov, eps)
            if sinks and name in sinks and eps < 1.0:
                p = without_directions(p, sinks[name])
            projectors[name] = mx.array(p)
            kept[name] = _kept_dims(p)
        return cls(projectors=projectors, eps=eps, n_tokens=int(n_tokens), kept_dims=kept)


# corpus + cache --------------------------------------------------------------------------------------------------
def _weights_fingerprint(model_dir: Path, h: Any) -> None:
    """Feed `h` a cheap fingerprint of the weight files (size, header, a few sampled blocks) so two fine-tunes
    sharing a config.json do not share a cache entry."""
    for f in sorted(model_dir.glob("*.safetensors")):
        try:
            size = f.stat().st_size
            h.update(f"{f.name}:{size}".encode())
            with open(f, "rb") as fh:
                head = fh.read(8)
                if len(head) == 8:
                    n = int.from_bytes(head, "little")
                    h.update(fh.read(min(n, 1 << 22)))
                for pos in (size // 3, size // 2, max(size - 65536, 0)):
                    fh.seek(pos)
                    h.update(fh.read(65536))
        except OSError:
            continue


def _cache_key(llm: Any, targets: Sequence[str], prompts: Sequence[str], texts: Sequence[str], max_len: int) -> str:
    h = hashlib.sha256()
    h.update(f"unstar-nullspace-v{CACHE_VERSION}\0max_len={max_len}\0".encode())
    cfg = Path(llm.path) / "config.json"
    try:
        h.update(cfg.read_bytes())
    except OSError:
        h.update(str(llm.path).encode())
    _weights_fingerprint(Path(llm.path), h)
    h.update(json.dumps({"targets": sorted(targets), "prompts": list(prompts), "texts": list(texts)},
                        ensure_ascii=False).encode("utf-8"))
    return h.hexdigest()


def _read_cache(path: Path, targets: Sequence[str]
                ) -> tuple[dict[str, np.ndarray], int, dict[str, np.ndarray]] | None:
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            n = int(z[_COUNT_KEY])
            covs = {t: np.array(z[t], dtype=np.float64) for t in targets}
            sinks = {t: np.array(z[_SINK + t], dtype=np.float64) for t in targets}
        for c in [*covs.values(), *sinks.values()]:
            if c.ndim != 2 or c.shape[0] != c.shape[1] or not np.all(np.isfinite(c)):
                raise ValueError("bad covariance")
        if n <= 0:
            raise ValueError("bad token count")
        return covs, n, sinks
    except Exception as exc:  # corrupt, truncated or foreign file: rebuild
        log.warning("Ignoring unreadable null-space cache %s (%s); rebuilding.", path, exc)
        return None


def _write_cache(path: Path, covs: dict[str, np.ndarray], n_tokens: int, sinks: dict[str, np.ndarray]) -> None:
    from .errors import StorageError
    from .fsutil import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, **{_COUNT_KEY: np.array(n_tokens, dtype=np.int64)},
             **{k: v.astype(np.float32) for k, v in covs.items()},  # float32: half the disk, plenty for eigh
             **{_SINK + k: v.astype(np.float32) for k, v in sinks.items()})
    try:
        atomic_write_bytes(path, buf.getvalue())
    except (StorageError, OSError) as exc:  # the cache is an optimisation only
        log.warning("Could not write the null-space cache %s (%s).", path, exc)


def _sequences(llm: Any, prompts: Sequence[str], texts: Sequence[str], max_len: int
               ) -> list[tuple[list[int], int]]:
    """(tokens, first counted position): chat-formatted prompts (truncated to max_len tokens), counted from where
    their own words start, and plain texts (cut into max_len-token windows), counted from their second token.

    The first position of a sequence and the chat prefix every prompt shares (system prompt, role tags) carry huge,
    identical activations (an attention sink: one direction held 99.98% of a late down_proj's input energy on
    SmolLM2); counted, they swamp the covariance and the eps budget leaves almost every direction "free"."""
    from .locality import prompt_body_start

    body = prompt_body_start(llm)
    seqs: list[tuple[list[int], int]] = []
    for q in prompts:
        ids = list(llm.chat_tokens(q))[:max_len]
        if len(ids) > body:
            seqs.append((ids, body))
    for t in texts:
        ids = list(llm.encode(t))
        for i in range(0, len(ids), max_len):
            chunk = ids[i:i + max_len]
            if len(chunk) >= 2:
                seqs.append((chunk, 1))
    return seqs


def build_null_space(llm: Any, prompts: Sequence[str], texts: Sequence[str], targets: Sequence[str], eps: float,
                     cache_dir: Path | None, batch_size: int = 8, max_len: int = 128,
                     extra_prompts: Sequence[str] = ()) -> NullSpace:
    """Measure the base model's input covariances at `targets` on the corpus (or read them from the cache) and
    build the eps null-space projectors.

    `prompts` are questions (chat template, generation prompt, no answer), `texts` plain generic text (long texts
    are cut into `max_len`-token windows). With `cache_dir` None nothing is cached. `extra_prompts` (a job's own
    neighbour and keep questions) are measured fresh every time and added to the cached corpus: covariances are
    token-weighted sums, so only the small per-job part costs anything after the first job on a model.
    """
    covs, n_tokens, sinks = input_covariances(llm, prompts, texts, targets, cache_dir, batch_size, max_len,
                                              extra_prompts)
    return NullSpace.from_covariances(covs, eps, n_tokens, sinks=sinks)


def input_covariances(llm: Any, prompts: Sequence[str], texts: Sequence[str], targets: Sequence[str],
                      cache_dir: Path | None, batch_size: int = 8, max_len: int = 128,
                      extra_prompts: Sequence[str] = ()
                      ) -> tuple[dict[str, np.ndarray], int, dict[str, np.ndarray]]:
    """The corpus covariances behind `build_null_space` (cached), the number of tokens counted, and the covariances
    of the shared chat prefix the corpus leaves out (`sink_covariances`, cached with them)."""
    targets = list(dict.fromkeys(targets))
    cache_path = None
    cached = None
    if cache_dir is not None:
        cache_path = Path(cache_dir) / f"{_cache_key(llm, targets, prompts, texts, max_len)}.npz"
        cached = _read_cache(cache_path, targets)
    if cached is not None:
        covs, n_tokens, sinks = cached
    else:
        covs, n_tokens = _measure(llm, prompts, texts, targets, batch_size, max_len)
        # rounded through float32 like the covariances (the cache stores float32): cached and fresh builds agree
        sinks = {k: np.asarray(v, dtype=np.float32).astype(np.float64)
                 for k, v in sink_covariances(llm, targets).items()}
        if cache_path is not None:
            _write_cache(cache_path, covs, n_tokens, sinks)
    if extra_prompts:
        more, n_more = _measure(llm, extra_prompts, (), targets, batch_size, max_len)
        if n_more:
            covs = {k: (covs[k] * n_tokens + more[k] * n_more) / (n_tokens + n_more) for k in covs}
            n_tokens += n_more
    return covs, n_tokens, sinks


def sink_covariances(llm: Any, targets: Sequence[str]) -> dict[str, np.ndarray]:
    """Input covariances of the positions the corpus leaves out (`_sequences`): the chat prefix every prompt shares
    and a plain text's first token. Left unconstrained, an update reaches every question through them (on SmolLM2 a
    subject edit put 34-78% of its change on every prompt's prefix with eps 0.01-0.002); one short forward pass."""
    from .llm import pad_batch
    from .locality import prompt_body_start

    body = prompt_body_start(llm)
    rows = [list(llm.chat_tokens("What is one?"))[:body]]
    first = list(llm.encode("The"))[:1]
    if first:
        rows.append(first)
    batches = [pad_batch([r], [0]) for r in rows if r]
    if not batches:
        return {}
    if getattr(llm, "lora", None) is not None:
        with llm.base_model():
            return collect_covariances(llm.model, batches, targets)
    return collect_covariances(llm.model, batches, targets)


def _measure(llm: Any, prompts: Sequence[str], texts: Sequence[str], targets: Sequence[str], batch_size: int,
             max_len: int) -> tuple[dict[str, np.ndarray], int]:
    """Covariances (rounded through float32, as the cache stores them) and the number of tokens counted."""
    from .llm import pad_batch

    seqs = sorted(_sequences(llm, prompts, texts, max_len), key=lambda x: len(x[0]))  # less padding
    if not seqs:
        raise ValueError("The null-space corpus is empty.")
    batches = []
    n_tokens = 0
    for i in range(0, len(seqs), batch_size):
        chunk = seqs[i:i + batch_size]
        batches.append(pad_batch([ids for ids, _ in chunk], [start for _, start in chunk]))
        n_tokens += sum(len(ids) - start for ids, start in chunk)
    if getattr(llm, "lora", None) is not None:
        with llm.base_model():
            covs = collect_covariances(llm.model, batches, targets)
    else:
        covs = collect_covariances(llm.model, batches, targets)
    # The cache stores float32: build from the same rounding, so a cached and a fresh build give identical projectors.
    return {k: np.asarray(v, dtype=np.float32).astype(np.float64) for k, v in covs.items()}, n_tokens
