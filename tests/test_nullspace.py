"""Null-space constrained LoRA: the projector's bound, the adapter's effect on corpus inputs, the covariance cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from unstar_gui.engine import nullspace as ns
from unstar_gui.engine.llm import LLM, LoraSettings, pad_batch

KEYS = ("mlp.down_proj", "mlp.up_proj", "mlp.gate_proj")
DATA = Path(__file__).resolve().parents[1] / "resources" / "data"


def _questions(n: int) -> list[str]:
    rows = [json.loads(line) for line in (DATA / "tofu" / "real_authors_perturbed.jsonl").read_text().splitlines()
            if line.strip()]
    return [r["question"] for r in rows[:n]]


def _spectrum_data(rng, n=400, d=32, zeros=4):
    """Rows with a geometric spectrum along random directions, plus `zeros` directions never used."""
    scales = np.concatenate([0.7 ** np.arange(d - zeros), np.zeros(zeros)])
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return (rng.standard_normal((n, d)) * scales) @ q.T


# the projector ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("eps", [0.001, 0.01, 0.05, 0.2])
def test_projector_bound_on_synthetic_spectrum(eps):
    rng = np.random.default_rng(0)
    x = _spectrum_data(rng)
    cov = x.T @ x / len(x)
    p32 = ns.null_projector(cov, eps)
    assert p32.dtype == np.float32 and p32.shape == (32, 32)
    p = p32.astype(np.float64)
    assert np.allclose(p, p.T, atol=1e-6)
    assert np.allclose(p @ p, p, atol=1e-5)
    kept = int(round(np.trace(p)))
    assert kept >= 4  # at least the never-used directions
    assert np.linalg.norm(x @ p) ** 2 <= eps * np.linalg.norm(x) ** 2 * (1 + 1e-4) + 1e-9
    # maximal: adding the next-smallest direction would break the budget
    vals = np.clip(np.linalg.eigvalsh(cov), 0, None)
    assert vals[: kept + 1].sum() > eps * vals.sum() or kept == 32


def test_projector_grows_with_eps_and_edge_cases():
    rng = np.random.default_rng(1)
    x = _spectrum_data(rng)
    cov = x.T @ x / len(x)
    dims = [int(round(np.trace(ns.null_projector(cov, e)))) for e in (0.0, 0.01, 0.1, 0.5)]
    assert dims == sorted(dims)
    assert np.array_equal(ns.null_projector(cov, 1.0), np.eye(32, dtype=np.float32))
    # eps = 0: only directions with eigenvalue exactly 0 (a diagonal covariance has exact eigenvalues)
    diag = np.diag([3.0, 0.0, 1.0, 0.0, 1e-6])
    p0 = ns.null_projector(diag, 0.0)
    assert np.allclose(p0, np.diag([0, 1, 0, 1, 0]).astype(np.float32))
    assert np.trace(ns.null_projector(cov, 0.0)) <= 4 + 1e-6
    with pytest.raises(ValueError):
        ns.null_projector(np.zeros((3, 4)), 0.1)


# on the tiny model -----------------------------------------------------------------------------------------------
@pytest.fixture
def lora_llm(tiny_model_dir):
    import mlx.core as mx

    llm = LLM(tiny_model_dir)
    llm.attach_lora(LoraSettings(rank=4, scale=1.0, num_layers=2, keys=KEYS))
    mx.random.seed(3)
    for layer in llm.lora_layers():
        layer.lora_b = 0.5 * mx.random.normal(layer.lora_b.shape)
    mx.eval(llm.model.parameters())
    return llm


def _record_inputs(llm, batches, targets):
    """The test's own recorder: every real-token input row of each target, as numpy (n, in_dims)."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_unflatten

    named = dict(llm.model.named_modules())
    rows = {t: [] for t in targets}
    state = {}

    class Rec(nn.Module):
        def __init__(self, inner, name):
            super().__init__()
            self.inner = inner
            self.tag = name

        def __call__(self, x):
            keep = np.array(state["mask"]).reshape(-1) > 0
            rows[self.tag].append(np.array(x.astype(mx.float32)).reshape(-1, x.shape[-1])[keep])
            return self.inner(x)

    originals = [(t, named[t]) for t in targets]
    llm.model.update_modules(tree_unflatten([(t, Rec(m, t)) for t, m in originals]))
    try:
        with llm.base_model():
            for tokens, mask in batches:
                state["mask"] = mask
                mx.eval(llm.model(tokens))
    finally:
        llm.model.update_modules(tree_unflatten(originals))
    return {t: np.concatenate(r).astype(np.float64) for t, r in rows.items()}


def _batches(llm, questions, size=8):
    """The corpus positions build_null_space counts: each prompt from where its own words start (the chat prefix
    every prompt shares is left out of the covariance, see nullspace._sequences)."""
    from unstar_gui.engine.locality import prompt_body_start

    start = prompt_body_start(llm)
    seqs = [llm.chat_tokens(q) for q in questions]
    return [pad_batch(seqs[i:i + size], [start] * len(seqs[i:i + size])) for i in range(0, len(seqs), size)]


def _masked_logits(llm, batches):
    import mlx.core as mx

    out = []
    for tokens, mask in batches:
        logits = np.array(llm.model(tokens).astype(mx.float32))
        out.append(logits[np.array(mask) > 0])
    return np.concatenate(out)


def test_target_paths_match_named_modules(lora_llm):
    from mlx_lm.tuner.lora import LoRALinear

    paths = ns.target_paths(lora_llm.model, [0, 1], KEYS)
    assert paths[0] == "model.layers.0.mlp.down_proj" and len(paths) == 6
    named = dict(lora_llm.model.named_modules())
    assert all(isinstance(named[p], LoRALinear) for p in paths)
    assert ns.target_paths(lora_llm.model, [-1], ["mlp.up_proj"]) == ["model.layers.1.mlp.up_proj"]
    with pytest.raises(KeyError):
        ns.target_paths(lora_llm.model, [0], ["mlp.nope"])


def test_collect_restores_modules_even_on_error(lora_llm):
    model = lora_llm.model
    before = [(n, type(m)) for n, m in model.named_modules()]
    targets = ns.target_paths(model, [0, 1], KEYS)

    def bad_batches():
        yield _batches(lora_llm, _questions(2))[0]
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        ns.collect_covariances(model, bad_batches(), targets)
    assert [(n, type(m)) for n, m in model.named_modules()] == before
    covs = ns.collect_covariances(model, _batches(lora_llm, _questions(3)), targets)
    assert [(n, type(m)) for n, m in model.named_modules()] == before
    c = covs[targets[0]]
    assert c.shape == (128, 128) and np.allclose(c, c.T)  # down_proj's input is the MLP's hidden (128)
    assert covs[targets[1]].shape == (64, 64)


def test_projected_adapter_leaves_corpus_outputs_nearly_unchanged(lora_llm):
    import mlx.core as mx

    eps = 0.02
    llm, model = lora_llm, lora_llm.model
    questions = _questions(20)
    targets = ns.target_paths(model, [0, 1], KEYS)
    batches = _batches(llm, questions)

    with llm.base_model():
        base_logits = _masked_logits(llm, batches)
    raw_logits = _masked_logits(llm, batches)

    layers = {n: m for n, m in model.named_modules() if n in targets}
    a_raw = {n: np.array(m.lora_a) for n, m in layers.items()}
    space = ns.build_null_space(llm, questions, [], targets, eps, cache_dir=None)
    assert set(space.projectors) == set(targets) and space.n_tokens > 100
    assert space.apply(model) == len(targets)
    mx.eval(model.parameters())
    proj_logits = _masked_logits(llm, batches)

    xs = _record_inputs(llm, batches, targets)
    for name, m in layers.items():
        x, p = xs[name], np.array(space.projectors[name], dtype=np.float64)
        assert 0 < space.kept_dims[name] < p.shape[0]
        assert np.linalg.norm(x @ p) ** 2 <= eps * np.linalg.norm(x) ** 2 * (1 + 1e-3)
        a0, a1, b = a_raw[name], np.array(m.lora_a, dtype=np.float64), np.array(m.lora_b, dtype=np.float64)
        assert np.allclose(a1, p @ a0, atol=1e-5)
        raw_part = np.linalg.norm(x @ a0 @ b) ** 2
        proj_part = np.linalg.norm(x @ a1 @ b) ** 2
        assert proj_part <= raw_part / 10, (name, proj_part, raw_part)
        # an input from the null space gets exactly the unprojected LoRA contribution
        u = p @ np.random.default_rng(0).standard_normal(p.shape[0])
        assert np.allclose(u @ a1 @ b, u @ a0 @ b, rtol=1e-4, atol=1e-5)

    raw_change = np.mean((raw_logits - base_logits) ** 2)
    proj_change = np.mean((proj_logits - base_logits) ** 2)
    assert raw_change > 1e-4
    assert proj_change < raw_change / 5, (proj_change, raw_change)

    # applying again is idempotent (P is a projector)
    a1 = {n: np.array(m.lora_a) for n, m in layers.items()}
    space.apply(model)
    assert all(np.allclose(np.array(m.lora_a), a1[n], atol=1e-5) for n, m in layers.items())


# cache -----------------------------------------------------------------------------------------------------------
def test_default_cache_dir_under_data_folder(unstar_home):
    assert ns.default_cache_dir() == unstar_home / "cache" / "nullspace"


def test_cache_reused_and_corrupt_cache_rebuilt(lora_llm, monkeypatch, tmp_path):
    llm = lora_llm
    questions, texts = _questions(6), ["Alice was beginning to get very tired of sitting by her sister."]
    targets = ns.target_paths(llm.model, [1], KEYS)
    cache = tmp_path / "cache"
    first = ns.build_null_space(llm, questions, texts, targets, 0.05, cache)
    files = list(cache.glob("*.npz"))
    assert len(files) == 1 and len(files[0].stem) == 64
    assert not [f for f in cache.iterdir() if f.suffix != ".npz"]  # no temp files left

    real_collect = ns.collect_covariances

    def fail(*a, **k):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(ns, "collect_covariances", fail)
    again = ns.build_null_space(llm, questions, texts, targets, 0.05, cache)
    assert again.n_tokens == first.n_tokens and again.kept_dims == first.kept_dims
    for t in targets:
        assert np.array_equal(np.array(again.projectors[t]), np.array(first.projectors[t]))
    looser = ns.build_null_space(llm, questions, texts, targets, 0.2, cache)  # another eps: same cache
    assert all(looser.kept_dims[t] >= first.kept_dims[t] for t in targets)

    # another corpus is another cache entry
    monkeypatch.setattr(ns, "collect_covariances", real_collect)
    ns.build_null_space(llm, questions[:3], texts, targets, 0.05, cache)
    assert len(list(cache.glob("*.npz"))) == 2

    for garbage in (b"not a zip file", files[0].read_bytes()[:100]):
        files[0].write_bytes(garbage)
        rebuilt = ns.build_null_space(llm, questions, texts, targets, 0.05, cache)
        assert rebuilt.kept_dims == first.kept_dims
        for t in targets:
            assert np.allclose(np.array(rebuilt.projectors[t]), np.array(first.projectors[t]), atol=1e-5)
        with np.load(files[0]) as z:  # rewritten, readable
            assert set(targets) <= set(z.files)


def test_extra_prompts_add_to_the_cached_corpus(lora_llm, tmp_path):
    """A job's own questions are measured fresh and added to the cached generic corpus, token-weighted: the same
    covariance (so the same projectors) as measuring everything at once."""
    llm = lora_llm
    targets = ns.target_paths(llm.model, [0, 1], KEYS)
    generic, own = _questions(16), _questions(20)[16:]
    together = ns.build_null_space(llm, generic + own, [], targets, 0.05, cache_dir=None)
    split = ns.build_null_space(llm, generic, [], targets, 0.05, cache_dir=tmp_path, extra_prompts=own)
    assert split.n_tokens == together.n_tokens
    for t in targets:
        assert np.allclose(np.array(split.projectors[t]), np.array(together.projectors[t]), atol=1e-4)
    assert len(list(tmp_path.glob("*.npz"))) == 1  # only the generic corpus is cached


def test_without_directions_takes_a_span_out_of_the_projector():
    s = np.array([1.0, 1.0, 0.0])
    p = ns.without_directions(np.eye(3), np.outer(s, s))
    assert np.allclose(p, np.eye(3) - np.outer(s, s) / 2, atol=1e-6)
    assert np.allclose(p @ p, p, atol=1e-6) and np.allclose(p @ s, 0.0, atol=1e-6)
    # Directions outside the projector's range are left as they are; an empty covariance changes nothing.
    q = np.diag([1.0, 0.0, 1.0])
    assert np.allclose(ns.without_directions(q, np.diag([0.0, 4.0, 0.0])), q)
    assert np.allclose(ns.without_directions(q, np.zeros((3, 3))), q)


def test_null_space_gives_the_shared_chat_prefix_nothing(lora_llm):
    """The corpus skips the chat prefix every prompt shares (an attention sink that would swamp the covariance),
    so the projector must take those inputs out explicitly: an update would otherwise reach every question."""
    from unstar_gui.engine.locality import prompt_body_start

    target = ns.target_paths(lora_llm.model, [0], ["mlp.down_proj"])[0]
    space = ns.build_null_space(lora_llm, _questions(24), [], [target], 0.5, None)
    prefix = list(lora_llm.chat_tokens("Who are you?"))[:prompt_body_start(lora_llm)]
    with lora_llm.base_model():
        sink = ns.collect_covariances(lora_llm.model, [pad_batch([prefix], [0])], [target])[target]
    p = np.asarray(space.projectors[target], dtype=np.float64)
    assert np.trace(sink) > 0 and np.trace(p @ sink @ p) < 1e-6 * np.trace(sink)
    covs, _, sinks = ns.input_covariances(lora_llm, _questions(24), [], [target], None)
    plain = ns.null_projector(covs[target], 0.5)
    assert np.trace(plain @ sink @ plain) > 1e-3 * np.trace(sink)  # without the fix the prefix got through
