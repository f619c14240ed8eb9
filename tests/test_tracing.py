"""Causal tracing: a crafted model whose answer comes from one planted block, windows, subject spans, locate_fact."""

from __future__ import annotations

import json

import pytest

from unstar_gui.engine.tracing import (FactLocation, TraceResult, answer_prefix, choose_window, locate_fact,
                                      pick_window, subject_span, subject_spans, trace_layers)

PLANTED = 3
N_LAYERS, HIDDEN, INTER, VOCAB = 6, 32, 64, 40
SUBJECT_TOKEN, TARGET = 8, 20
PROMPT = [5, 6, 7, SUBJECT_TOKEN]  # the subject is tokens 7, 8: its last token is the prompt's last token
SUBJECT = (2, 4)


def planted_model(k: int = PLANTED, seed: int = 0):
    """A llama where attention writes nothing and only block k's MLP writes to the residual stream: at the subject
    token it adds a direction d that the lm_head reads as the target token. Noise on the subject's embedding turns
    the MLP's (quadratic) gate down, so only restoring block k's MLP output brings the answer back."""
    import mlx.core as mx
    import numpy as np
    from mlx_lm.models import llama

    args = llama.ModelArgs.from_dict({
        "model_type": "llama", "hidden_size": HIDDEN, "num_hidden_layers": N_LAYERS, "intermediate_size": INTER,
        "num_attention_heads": 4, "num_key_value_heads": 4, "rms_norm_eps": 1e-5, "vocab_size": VOCAB,
        "rope_theta": 10000.0, "tie_word_embeddings": False})
    model = llama.Model(args)
    rng = np.random.RandomState(seed)
    emb = rng.normal(size=(VOCAB, HIDDEN)).astype(np.float32)
    model.model.embed_tokens.weight = mx.array(emb)
    for layer in model.layers:
        layer.self_attn.o_proj.weight = mx.zeros((HIDDEN, HIDDEN))
        layer.mlp.down_proj.weight = mx.zeros((HIDDEN, INTER))

    x = emb[SUBJECT_TOKEN]
    xn = x / np.sqrt(np.mean(x ** 2))  # what the block's RMSNorm (weight 1) gives the MLP
    gate = np.zeros((INTER, HIDDEN), np.float32)
    gate[0] = 4.0 * xn / np.dot(xn, xn)  # gate = up = 4 at the clean subject token, less once it is noised
    d = rng.normal(size=HIDDEN).astype(np.float32)
    d /= np.linalg.norm(d)
    down = np.zeros((HIDDEN, INTER), np.float32)
    down[:, 0] = 3.0 * d
    mlp = model.layers[k].mlp
    mlp.gate_proj.weight = mx.array(gate)
    mlp.up_proj.weight = mx.array(gate)
    mlp.down_proj.weight = mx.array(down)
    head = np.zeros((VOCAB, HIDDEN), np.float32)
    head[TARGET] = 8.0 * d / np.sqrt(HIDDEN)  # logit 8 when the final state points along d
    model.lm_head.weight = mx.array(head)
    mx.eval(model.parameters())
    model.eval()
    return model


def test_trace_finds_the_planted_block_and_puts_the_model_back():
    import mlx.core as mx

    model = planted_model()
    before = (model.model.embed_tokens, model.model.norm, list(model.layers), [b.mlp for b in model.layers])
    logits_before = model(mx.array([PROMPT]))

    res = trace_layers(model, PROMPT, SUBJECT, [TARGET], samples=8, seed=0)

    assert isinstance(res, TraceResult) and len(res.effects) == N_LAYERS
    assert res.p_clean > 0.9 and res.p_corrupt < res.p_clean - 0.3, res
    others = [e for i, e in enumerate(res.effects) if i != PLANTED]
    assert res.effects[PLANTED] > max(others) + 0.3, res.effects
    assert res.indirect_effect()[PLANTED] > 0.5
    assert choose_window(res.effects, 1) == (PLANTED, PLANTED + 1)
    lo, hi = choose_window(res.effects, 3)
    assert hi - lo == 3 and lo <= PLANTED < hi

    # every wrapper is gone and the model answers exactly as before
    after = (model.model.embed_tokens, model.model.norm, list(model.layers), [b.mlp for b in model.layers])
    assert all(a is b for a, b in zip(before[:2], after[:2]))
    assert all(a is b for a, b in zip(before[2] + before[3], after[2] + after[3]))
    assert mx.array_equal(model(mx.array([PROMPT])), logits_before).item()


def test_trace_is_deterministic_and_noise_scale_matters():
    model = planted_model()
    a = trace_layers(model, PROMPT, SUBJECT, [TARGET], samples=4, seed=1)
    b = trace_layers(model, PROMPT, SUBJECT, [TARGET], samples=4, seed=1)
    assert a == b
    quiet = trace_layers(model, PROMPT, SUBJECT, [TARGET], noise_scale=1e-6, samples=4)
    assert abs(quiet.p_clean - quiet.p_corrupt) < 1e-3 and max(abs(e) for e in quiet.effects) < 1e-3


def test_restore_window_spreads_the_planted_block_to_its_neighbours():
    res = trace_layers(planted_model(), PROMPT, SUBJECT, [TARGET], samples=4, restore_window=3)
    on = [i for i, e in enumerate(res.effects) if e > 0.3]
    assert on == [PLANTED - 1, PLANTED, PLANTED + 1], res.effects  # each window [l-1, l+2) that holds block k


ARCHS = {
    "qwen2": {"num_key_value_heads": 2, "tie_word_embeddings": True},
    "qwen3": {"num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 512, "rope_theta": 10000.0,
              "tie_word_embeddings": True},
    "gemma3_text": {"num_key_value_heads": 1, "head_dim": 8, "query_pre_attn_scalar": 8, "sliding_window": 64,
                    "sliding_window_pattern": 2},
    # a sliding window shorter than the prompt: its cache cannot be rolled back, so every run does the whole prompt
    "gemma3_text-short-window": {"num_key_value_heads": 1, "head_dim": 8, "query_pre_attn_scalar": 8,
                                 "sliding_window": 4, "sliding_window_pattern": 2},
}


def trace_with_and_without_prefix_cache(monkeypatch, model, tokens, subject, target, **kw):
    """The same trace twice: with the reused-prefix shortcut (recording whether a cache was built) and without it."""
    import unstar_gui.engine.tracing as tracing

    used = []
    real = tracing._prefix_cache

    def spy(*a, **k):
        cache = real(*a, **k)
        used.append(cache is not None)
        return cache

    monkeypatch.setattr(tracing, "_prefix_cache", spy)
    cached = trace_layers(model, tokens, subject, target, **kw)
    monkeypatch.setattr(tracing, "_prefix_cache", lambda *a, **k: None)
    whole = trace_layers(model, tokens, subject, target, **kw)
    return cached, whole, used


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_other_architectures_trace_and_are_put_back(arch, monkeypatch):
    import importlib

    import mlx.core as mx

    name = arch.split("-")[0]
    module = importlib.import_module(f"mlx_lm.models.{name}")
    mx.random.seed(1)
    model = module.Model(module.ModelArgs.from_dict({
        "model_type": name, "hidden_size": 32, "num_hidden_layers": 4, "intermediate_size": 64,
        "num_attention_heads": 4, "rms_norm_eps": 1e-5, "vocab_size": VOCAB, **ARCHS[arch]}))
    mx.eval(model.parameters())
    tokens = [3, 9, 4, 12, 7, 8, 21, 5, 6, 30, 2, 11]
    logits = model(mx.array([tokens]))
    cached, whole, used = trace_with_and_without_prefix_cache(monkeypatch, model, tokens, (4, 6), [TARGET],
                                                              samples=3, noise_spans=[(1, 2), (4, 6)])
    assert used == [not arch.endswith("short-window")]
    assert len(cached.effects) == 4
    assert cached.p_corrupt == pytest.approx(whole.p_corrupt, abs=1e-6)
    assert cached.effects == pytest.approx(whole.effects, abs=1e-6)
    assert mx.array_equal(model(mx.array([tokens])), logits).item()


def test_trace_rejects_a_span_outside_the_prompt():
    model = planted_model()
    with pytest.raises(ValueError):
        trace_layers(model, PROMPT, (3, 9), [TARGET])


@pytest.mark.parametrize("effects, size, expected", [
    ([0, 1, 5, 1, 0], 1, (2, 3)),
    ([0, 1, 5, 1, 0], 3, (1, 4)),  # 7 beats 6
    ([1, 1, 1, 1], 2, (0, 2)),  # ties: the earlier window
    ([0, 2, 0, 2], 1, (1, 2)),
    ([1.0, 2.0], 5, (0, 2)),  # larger than the list: all of it
    ([-3.0, -1.0, -2.0], 1, (1, 2)),
    ([0.1, 0.2, 0.3], 0, (2, 3)),  # size clamped to 1
    ([], 4, (0, 0)),
])
def test_choose_window(effects, size, expected):
    assert choose_window(effects, size) == expected


@pytest.mark.parametrize("effects, size, first, expected", [
    ([0.9, 0.0, 0.2, 0.3, 0.0], 2, 0, (0, 2)),
    ([0.9, 0.0, 0.2, 0.3, 0.0], 2, 1, (2, 4)),  # block indices stay absolute
    ([0.9, -0.1, 0.0], 1, 1, None),  # nothing positive after the first block
    ([], 3, 0, None),
])
def test_pick_window(effects, size, first, expected):
    assert pick_window(effects, size, first) == expected


@pytest.mark.parametrize("reply, answer, expected", [
    ("The capital of France is Paris.", "Paris", "The capital of France is"),
    ("Harry Potter went to Hogwarts School of Witchcraft and Wizardry.", "hogwarts", "Harry Potter went to"),
    ("Paris is the capital.", "Paris", ""),  # starts with the answer: the plain prompt already targets it
    ("I do not know.", "Paris", ""),
    ("The capital of France is Paris.", " ", ""),
])
def test_answer_prefix(reply, answer, expected):
    assert answer_prefix(reply, answer) == expected


@pytest.fixture(scope="module")
def tiny_llm(tiny_model_dir):
    from unstar_gui.engine.llm import LLM

    return LLM(tiny_model_dir)


def test_subject_span_on_the_chat_prompt(tiny_llm):
    tok = tiny_llm.tokenizer
    prompt = tiny_llm.chat_tokens("Where did Harry Potter go to school?")
    span = subject_span(tiny_llm.encode, prompt, "Harry Potter")
    assert span is not None
    lo, hi = span
    assert 0 <= lo < hi <= len(prompt)
    assert "Harry Potter" in tok.decode(prompt[lo:hi])
    assert subject_span(tiny_llm.encode, prompt, "Hermione Granger", decode=tok.decode) is None
    assert subject_span(tiny_llm.encode, prompt, "  ") is None

    # a subject that does not fall on token boundaries: found through the decoded characters
    assert subject_span(tiny_llm.encode, prompt, "arry Pott") is None
    lo2, hi2 = subject_span(tiny_llm.encode, prompt, "arry Pott", decode=tok.decode)
    assert "arry Pott" in tok.decode(prompt[lo2:hi2])
    assert lo <= lo2 < hi2 <= hi


def test_subject_spans_finds_every_mention(tiny_llm):
    prompt = tiny_llm.chat_tokens("Where did Harry Potter go to school?", answer_prefix="Harry Potter went to")
    spans = subject_spans(tiny_llm.encode, prompt, "Harry Potter", decode=tiny_llm.tokenizer.decode)
    assert len(spans) == 2 and spans[0][1] <= spans[1][0]
    assert all("Harry Potter" in tiny_llm.tokenizer.decode(prompt[a:b]) for a, b in spans)
    assert subject_span(tiny_llm.encode, prompt, "Harry Potter", decode=tiny_llm.tokenizer.decode) == spans[-1]


def test_the_prefix_cache_gives_the_same_trace(tiny_llm, monkeypatch):
    prompt = tiny_llm.chat_tokens("Where did Harry Potter go to school?", answer_prefix="Harry Potter went to")
    spans = subject_spans(tiny_llm.encode, prompt, "Harry Potter", decode=tiny_llm.tokenizer.decode)
    target = tiny_llm.encode(" Hogwarts")[:1]
    cached, whole, used = trace_with_and_without_prefix_cache(monkeypatch, tiny_llm.model, prompt, spans[-1], target,
                                                              samples=3, noise_spans=spans, restore_window=2)
    assert used == [True]
    assert cached.p_clean == pytest.approx(whole.p_clean, abs=1e-7)
    assert cached.p_corrupt == pytest.approx(whole.p_corrupt, abs=1e-6)
    assert cached.effects == pytest.approx(whole.effects, abs=1e-6)


def test_locate_fact_traces_after_the_models_own_words(tiny_llm, monkeypatch):
    monkeypatch.setattr(tiny_llm, "generate_tokens", lambda prompts, **k: ["Harry Potter went to Hogwarts."])
    loc = locate_fact(tiny_llm, "Where did Harry Potter go to school?", "Hogwarts", "Harry Potter", window=1,
                      samples=2, min_drop=-1.0)
    assert loc.prefix == "Harry Potter went to"
    prompt = tiny_llm.chat_tokens("Where did Harry Potter go to school?", answer_prefix=loc.prefix)
    assert loc.span == subject_span(tiny_llm.encode, prompt, "Harry Potter")
    assert loc.span[0] > len(tiny_llm.chat_tokens("Where did Harry Potter go to school?")) - 1  # the reply's mention
    assert loc.target_id in (tiny_llm.encode("Hogwarts")[0], tiny_llm.encode(" Hogwarts")[0])


def test_locate_fact_on_the_tiny_model(tiny_llm):
    n_blocks = len(tiny_llm.model.layers)
    loc = locate_fact(tiny_llm, "Where did Harry Potter go to school?", "Hogwarts", "Harry Potter", window=1,
                      samples=2)
    assert isinstance(loc, FactLocation)
    assert len(loc.effects) == n_blocks
    assert 0.0 <= loc.p_clean <= 1.0 and 0.0 <= loc.p_corrupt <= 1.0
    assert loc.window is None or (loc.window[1] - loc.window[0] == 1 and 0 <= loc.window[0] < n_blocks)
    assert loc.window is not None or loc.reason  # a random model: usually a flat trace, and it says so
    d = json.loads(json.dumps(loc.to_dict()))
    assert d["subject"] == "Harry Potter" and len(d["effects"]) == n_blocks

    missing = locate_fact(tiny_llm, "Where did Harry Potter go to school?", "Hogwarts", "Hermione", window=1)
    assert missing.window is None and "not found" in missing.reason
    json.dumps(missing.to_dict())


def test_locate_fact_traces_the_base_model_under_lora(tiny_llm):
    from unstar_gui.engine.llm import LoraSettings

    plain = locate_fact(tiny_llm, "Where did Harry Potter go to school?", "Hogwarts", "Harry Potter", window=1,
                        samples=2)
    tiny_llm.attach_lora(LoraSettings(rank=2, num_layers=-1))
    try:
        for layer in tiny_llm.lora_layers():  # a non-zero adapter, so that tracing it would change the numbers
            layer.lora_b = layer.lora_b + 0.5
        scales = [layer.scale for layer in tiny_llm.lora_layers()]
        under = locate_fact(tiny_llm, "Where did Harry Potter go to school?", "Hogwarts", "Harry Potter", window=1,
                            samples=2)
        assert [layer.scale for layer in tiny_llm.lora_layers()] == scales
    finally:
        tiny_llm.detach_lora()
    assert under.p_clean == pytest.approx(plain.p_clean, abs=1e-6)
    assert under.effects == pytest.approx(plain.effects, abs=1e-6)
