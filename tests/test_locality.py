"""Locality levers on the tiny model and by hand: the window adapter (MLP-only, blocks above the window frozen at
zero) round-trips through plain mlx-lm; the new losses (rationale-weighted CE, UNDIAL, dense KL) against hand
computations; the adapter-scale sweep's persistent scale; a whole job with every lever on."""

from __future__ import annotations

import json
import math

import mlx.core as mx
import numpy as np
import pytest

from unstar_gui.engine.llm import LLM, MLP_KEYS, LoraSettings
from unstar_gui.engine.locality import Placement, fallback_window, prompt_body_start
from unstar_gui.engine.methods.base import Batch, MethodContext, TokenBatch, masked_ce, retain_term
from unstar_gui.engine.methods.undial import answer_segments, undial_loss
from unstar_gui.engine.trainer import encode_pairs, make_token_batch


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


class FixedLogits:
    """A stand-in model that returns the same logits whatever the tokens (the losses only call model(tokens))."""

    def __init__(self, logits: np.ndarray) -> None:
        self.logits = mx.array(logits.astype(np.float32))

    def __call__(self, tokens):
        return self.logits[:, : tokens.shape[1]]


# the window adapter --------------------------------------------------------------------------------------------------
def test_window_adapter_trains_only_its_blocks_and_round_trips_through_mlx_lm(tiny_model_dir, tmp_path):
    import mlx_lm

    llm = LLM(tiny_model_dir)
    settings = LoraSettings.for_window(0, 1, len(llm.model.layers), rank=4, scale=2.0)
    assert settings.num_layers == 2 and settings.keys == MLP_KEYS and settings.window == (0, 1)
    llm.attach_lora(settings, seed=0)
    trainable = llm.trainable_parameters()
    assert trainable and all(k.startswith("model.layers.0.mlp.") for k in trainable), sorted(trainable)
    # Pretend training moved the window's adapter (lora_b starts at 0: nothing would show otherwise).
    for name, value in list(trainable.items()):
        if name.endswith("lora_b"):
            llm.model.load_weights([(name, mx.random.normal(value.shape) * 0.5)], strict=False)
    llm.save_adapter(tmp_path / "adapter")
    saved = mx.load(str(tmp_path / "adapter" / "adapters.safetensors"))
    above = [k for k in saved if k.startswith("model.layers.1.")]
    assert above and all(float(mx.abs(saved[k]).max()) == 0 for k in above if k.endswith("lora_b"))
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert cfg["num_layers"] == 2 and cfg["lora_parameters"]["keys"] == list(MLP_KEYS)
    assert cfg["trained_blocks"] == [0, 1]

    tokens = mx.array([llm.chat_tokens("Where did Harry Potter go to school?")])
    ours = llm.model(tokens)
    with llm.base_model():
        base = llm.model(tokens)
    plain, _ = mlx_lm.load(str(tiny_model_dir), adapter_path=str(tmp_path / "adapter"))
    theirs = plain(tokens)
    assert float(mx.abs(ours - base).max()) > 1e-3  # the adapter does something...
    assert np.allclose(np.array(ours), np.array(theirs), atol=1e-4)  # ...and plain mlx-lm does the same

    # Reloading it into a fresh model restores the window (resume): the block above stays frozen.
    again = LLM(tiny_model_dir)
    assert again.load_adapter(tmp_path / "adapter").window == (0, 1)
    assert all(k.startswith("model.layers.0.") for k in again.trainable_parameters())


def test_placement_round_trips_and_falls_back_to_early_blocks():
    p = Placement(keys="mlp", window=(3, 9), traced={"effects": [0.1]})
    assert Placement.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    lora = p.lora(rank=8, scale=20.0, num_layers=6, total_blocks=30)
    assert lora.window == (3, 9) and lora.num_layers == 27 and lora.keys == MLP_KEYS
    assert Placement(keys="all", window=None).lora(8, 20.0, 16, 30).num_layers == 16
    assert fallback_window(30, 6) == (5, 11)
    assert fallback_window(2, 6) == (0, 2)


def test_scale_adapter_persists_into_the_saved_config(tiny_model_dir, tmp_path):
    llm = LLM(tiny_model_dir)
    llm.attach_lora(LoraSettings(rank=4, scale=8.0, num_layers=2), seed=0)
    llm.scale_adapter(0.25)
    assert all(layer.scale == 2.0 for layer in llm.lora_layers())
    llm.save_adapter(tmp_path / "a")
    assert json.loads((tmp_path / "a" / "adapter_config.json").read_text())["lora_parameters"]["scale"] == 2.0


# losses by hand ------------------------------------------------------------------------------------------------------
def test_rationale_weight_gives_per_token_weights_and_a_weighted_ce(tiny_model_dir):
    llm = LLM(tiny_model_dir)
    [ex] = encode_pairs(llm, [("Q?", [("Durmstrang.", 1.0), ("He liked it.", 0.25)])], 64)
    n_head = len(llm.encode("Durmstrang."))
    n_tail = len(llm.encode(" He liked it."))
    assert ex.weights == [1.0] * n_head + [0.25] * n_tail + [0.25]  # the end-of-turn token takes the last weight
    [bare] = encode_pairs(llm, [("Q?", [("Durmstrang.", 1.0), ("He liked it.", 0.0)])], 64)
    assert bare.weights == [1.0] * (n_head + 1)  # weight 0: the rationale is left out, not trained as silence

    # masked_ce is the weighted mean of the target tokens' cross-entropy
    rng = np.random.default_rng(0)
    T, V = len(ex.tokens), 512
    logits = rng.normal(size=(1, T, V))
    tb = make_token_batch([ex])
    got = float(masked_ce(FixedLogits(logits), tb).item())
    lp = log_softmax(logits[0, : T - 1])
    tok = np.array(ex.tokens)
    ce = -lp[np.arange(T - 1), tok[1:]]
    w = np.zeros(T)
    w[ex.start:] = ex.weights
    expected = (ce * w[1:]).sum() / w[1:].sum()
    assert got == pytest.approx(expected, rel=1e-4)


def test_undial_loss_matches_a_hand_computation():
    # one row, three positions, vocabulary of 4; position 0 is prompt (mask 0)
    ref_logits = np.array([[[0.0, 0, 0, 0], [1.0, 3.0, 0.0, -1.0], [0.5, 0.5, 2.0, 0.0]]])
    model_logits = np.array([[[0.0, 0, 0, 0], [0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]])
    labels = np.array([[0, 1, 2]])
    mask = np.array([[0.0, 1.0, 1.0]])
    beta = 2.0
    got = float(undial_loss(mx.array(model_logits), mx.array(log_softmax(ref_logits)), mx.array(labels),
                            mx.array(mask), beta).item())
    # by hand: target = softmax(ref - beta * onehot(label)); loss = mean over masked positions of -sum target * logp
    total = 0.0
    for t in (1, 2):
        adjusted = ref_logits[0, t].copy()
        adjusted[labels[0, t]] -= beta
        target = np.exp(log_softmax(adjusted))
        total += -(target * log_softmax(model_logits[0, t])).sum()
    assert got == pytest.approx(total / 2, rel=1e-5)
    # the answer's other tokens (extra ids) are pushed down too: token 3 at position 1 ...
    extra = float(undial_loss(mx.array(model_logits), mx.array(log_softmax(ref_logits)), mx.array(labels),
                              mx.array(mask), beta, extra_ids=[3]).item())
    total = 0.0
    for t in (1, 2):
        adjusted = ref_logits[0, t].copy()
        adjusted[labels[0, t]] -= beta
        adjusted[3] -= beta if labels[0, t] != 3 else 0.0
        target = np.exp(log_softmax(adjusted))
        total += -(target * log_softmax(model_logits[0, t])).sum()
    assert extra == pytest.approx(total / 2, rel=1e-5)


def test_undial_scores_only_the_answer_in_the_base_models_words():
    assert answer_segments("Harry Potter attended Hogwarts School of Witchcraft.", ["Hogwarts"]) == [
        ("Harry Potter attended", 0.0), ("Hogwarts", 1.0)]
    assert answer_segments("hogwarts, of course.", ["Hogwarts"]) == [("hogwarts", 1.0)]
    assert answer_segments("I am not sure.", ["Hogwarts", "Hogwarts School"]) == [("Hogwarts", 1.0)]


def test_dense_term_adds_weighted_kl_to_the_base_model():
    rng = np.random.default_rng(1)
    T, V = 5, 7
    base = rng.normal(size=(2, T, V))
    now = rng.normal(size=(2, T, V))
    tokens = mx.array(rng.integers(0, V, size=(2, T)).astype(np.int32))
    mask = np.zeros((2, T), dtype=np.float32)
    mask[:, 2:] = 1.0
    dense = TokenBatch(tokens, mx.array(mask), mx.array(log_softmax(base[:, : T - 1]).astype(np.float32)))
    model = FixedLogits(now)
    ctx = MethodContext("q", "a", retain_weight=1.0, dense_weight=0.5)
    got = float(retain_term(model, Batch(forget=dense, retain=None, dense=dense), ctx).item())
    p, q = log_softmax(base[:, : T - 1]), log_softmax(now[:, : T - 1])
    kl = (np.exp(p) * (p - q)).sum(-1)
    expected = 0.5 * (kl * mask[:, 1:]).sum() / mask[:, 1:].sum()
    assert got == pytest.approx(expected, rel=1e-4)
    assert float(retain_term(model, Batch(forget=dense), ctx).item()) == 0.0  # no dense side, no term


def test_prompt_body_start_is_where_prompts_differ(tiny_model_dir):
    llm = LLM(tiny_model_dir)
    start = prompt_body_start(llm)
    a, b = llm.chat_tokens("Where is it?"), llm.chat_tokens("Who wrote it?")
    assert a[:start] == b[:start] and a[start] != b[start]


# a whole job with every lever on -------------------------------------------------------------------------------------
def test_job_with_every_locality_lever(tiny_model, tmp_path):
    from tests.test_pipeline import tiny_request

    from unstar_gui.engine.events import Finished
    from unstar_gui.engine.jobs import open_job
    from unstar_gui.engine.pipeline import run_forget

    req = tiny_request(tmp_path, placement="traced", lora_keys="mlp", num_layers=1, rationale_weight=0.5,
                       null_space_eps=0.05, dense_weight=1.0, dense_batch_size=2, early_stop_every=2,
                       scale_sweep=True, steps_per_round=4)
    events = list(run_forget(req))
    assert isinstance(events[-1], Finished)
    job = open_job(tmp_path / "job")
    data = job.read()
    assert data["placement"]["keys"] == "mlp" and len(data["placement"]["window"]) == 2
    lo, hi = data["placement"]["window"]
    assert hi - lo == 1
    assert data["adapter_scales"] and 0 < data["adapter_scales"][0]["factor"] <= 1.0
    cfg = json.loads((job.adapters_dir / "adapter_config.json").read_text())
    assert cfg["trained_blocks"] == [lo, hi] and cfg["lora_parameters"]["keys"] == list(MLP_KEYS)
    assert math.isclose(cfg["lora_parameters"]["scale"], 20.0 * data["adapter_scales"][-1]["factor"])
    weights = mx.load(str(job.adapters_dir / "adapters.safetensors"))
    moved = {k.split(".")[2] for k, v in weights.items() if k.endswith("lora_b") and float(mx.abs(v).max()) > 0}
    assert moved <= {str(lo)}  # only the traced block was trained
    assert any(ev.message.startswith("Dense retain term") for ev in events if type(ev).__name__ == "Log")
