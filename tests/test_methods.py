"""The unlearning methods on the tiny model: each loss moves the right way (the true answer's log-prob goes down, a
method's own target goes up, retained answers stay put), NPO's formula against a hand computation, the GA clamp,
and task-vector negation's saved adapter reproduced by plain mlx_lm.load."""

from __future__ import annotations

import json
import math
import shutil

import mlx.core as mx
import numpy as np
import pytest

from unstar_gui.engine.llm import LLM, LoraSettings
from unstar_gui.engine.methods import METHODS, MethodContext, get_method
from unstar_gui.engine.methods.idk import pick_refusal, refusals
from unstar_gui.engine.methods.npo import npo_loss, sequence_logprobs
from unstar_gui.engine.trainer import Trainer, TrainSettings, encode_pairs

ANSWER = "Hogwarts."
FORGET_Q = ["Where did Harry Potter go to school?", "Which school did Harry Potter attend?",
            "Harry Potter studied at which school?", "Name the school Harry Potter went to."]
RETAIN = [("What is the capital of France?", "Paris."), ("Who wrote Romeo and Juliet?", "Shakespeare."),
          ("Where is the Eiffel Tower?", "Paris.")]
WRONG = ["Durmstrang.", "Beauxbatons.", "Ilvermorny.", "Durmstrang."]
# antisamples.jsonl rows as the pipeline writes them (AntiSample fields + round, id)
ANTI = [{"question": q, "wrong_answer": w, "rationale": "", "style": "direct", "provenance": {}, "round": 0, "id": i}
        for i, (q, w) in enumerate(zip(FORGET_Q, WRONG))]
LORA = LoraSettings(rank=4, scale=10.0, num_layers=2)
STEPS = 12

# Tolerances. The taught model gives every answer a mean token log-prob near 0 (p ~ 0.96). Forgetting must lower the
# true answer's by more than 1.5 nats/token (its probability falls more than 4x). Retained answers may lose at most
# ln 2 (their probability stays above half of what it was) and must move at least 3x less than the forgotten one.
# Why not tighter: this model has 2 layers of width 64 and its forget and retain questions share most of their
# tokens, so any edit leaks into the neighbours. Measured at these settings: retain drops of 0.3-0.5 nats for every
# method against 2-9 nats on the forget side; without their retain terms the same runs cost the retain answers 4-8
# nats (negate has no retain term by default: 0.5).
RETAIN_TOL = math.log(2)
FORGET_MIN_DROP = 1.5


@pytest.fixture(scope="module")
def taught_dir(tiny_model_dir, tmp_path_factory):
    """The tiny random model fully fine-tuned for a few seconds so it knows the fact and the retain facts (a model
    that knows nothing has nothing to forget or keep)."""
    from mlx.utils import tree_flatten

    from unstar_gui.engine.evaluate import lora_finetune

    out = tmp_path_factory.mktemp("methods") / "tiny-taught"
    shutil.copytree(tiny_model_dir, out)
    llm = LLM(out)
    pairs = [(q, ANSWER) for q in FORGET_Q] + list(RETAIN)
    for _ in lora_finetune(llm, pairs, steps=120, learning_rate=1e-2, batch_size=7, max_seq_len=64, seed=0):
        pass
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(llm.model.parameters())),
                        metadata={"format": "mlx"})
    return out


def mean_lp(llm, pairs) -> float:
    return float(np.mean(llm.answer_logprobs(pairs)))


def train(llm, name, steps=STEPS, lr=2e-3, ctx=None, retain=RETAIN):
    """Attach a fresh adapter and run `steps` trainer steps of `name` on the forget rows + retain pairs."""
    method = get_method(name)
    method.prepare(MethodContext(FORGET_Q[0], ANSWER, **(ctx or {})))
    trainer = Trainer(llm, method, TrainSettings(learning_rate=lr, batch_size=4, retain_batch_size=3), seed=0)
    trainer.attach(LORA)
    forget = encode_pairs(llm, method.forget_pairs(ANTI), 64)
    losses = [ev.loss for ev in trainer.train_round(forget, encode_pairs(llm, retain, 64), 0, steps)]
    method.finalize(llm)
    return method, losses


def measure(llm):
    return mean_lp(llm, [(q, ANSWER) for q in FORGET_Q]), mean_lp(llm, RETAIN)


def test_every_method_is_registered():
    assert set(METHODS) == {"unstar", "ga_kl", "npo", "idk", "negate", "undial"}
    for name, cls in METHODS.items():
        assert cls.name == name and cls.description


def test_fact_methods_target_the_true_answer_once_per_question():
    for name in ("ga_kl", "npo", "negate"):
        m = get_method(name)
        m.prepare(MethodContext(FORGET_Q[0], ANSWER))
        rows = ANTI + [dict(ANTI[1], wrong_answer="Other.")]  # several wrong answers per paraphrase: one pair
        pairs = m.forget_pairs(rows)
        assert pairs == [(q, ANSWER) for q in FORGET_Q]


def test_idk_targets_are_bundled_refusals_chosen_per_question_and_seed():
    assert len(refusals()) >= 20 and len(set(refusals())) == len(refusals())
    assert not any(r.startswith("#") for r in refusals())  # the file's comment line is not a target
    m = get_method("idk")
    m.prepare(MethodContext(FORGET_Q[0], ANSWER, seed=3))
    pairs = m.forget_pairs(ANTI)
    assert [q for q, _ in pairs] == FORGET_Q
    assert all(t in refusals() and "Hogwarts" not in t for _, t in pairs)
    assert pairs == m.forget_pairs(ANTI)  # deterministic
    assert len({t for _, t in pairs}) > 1  # not one sentence for everything
    seeds = {tuple(pick_refusal(q, seed) for q in FORGET_Q) for seed in range(6)}
    assert len(seeds) > 1


@pytest.mark.parametrize("name", ["ga_kl", "npo"])
def test_fact_losses_push_the_true_answer_down_and_keep_the_retain_set(taught_dir, name):
    llm = LLM(taught_dir)
    forget0, retain0 = measure(llm)
    assert forget0 > -0.5 and retain0 > -0.5  # the taught model knows both
    train(llm, name)
    forget1, retain1 = measure(llm)
    assert forget1 < forget0 - FORGET_MIN_DROP, (forget0, forget1)
    assert abs(retain1 - retain0) < min(RETAIN_TOL, (forget0 - forget1) / 3), (retain0, retain1)


@pytest.mark.parametrize("name", ["idk", "unstar"])
def test_target_methods_raise_their_target_and_lower_the_true_answer(taught_dir, name):
    llm = LLM(taught_dir)
    method = get_method(name)
    method.prepare(MethodContext(FORGET_Q[0], ANSWER))
    targets = method.forget_pairs(ANTI)
    target0 = mean_lp(llm, targets)
    forget0, retain0 = measure(llm)
    train(llm, name)
    forget1, retain1 = measure(llm)
    target1 = mean_lp(llm, targets)
    assert target1 > target0 + 1.0, (target0, target1)
    assert forget1 < forget0 - FORGET_MIN_DROP, (forget0, forget1)
    assert abs(retain1 - retain0) < min(RETAIN_TOL, (forget0 - forget1) / 3), (retain0, retain1)


def test_npo_matches_a_hand_computation():
    # per-token log-probs of two rows, the first two positions are prompt (masked)
    tok = mx.array([[-9.0, -0.5, -1.0, -0.5], [-9.0, -2.0, -3.0, 0.0]])
    mask = mx.array([[0, 0, 1, 1, 1], [0, 0, 1, 1, 0]], dtype=mx.float32)  # mask[:, 1:] aligns with tok
    logp = sequence_logprobs(tok, mask)
    assert np.allclose(np.array(logp), [-2.0, -5.0])
    ref = mx.array([-3.0, -3.0])
    beta = 0.5
    # -(2/beta) mean log sigmoid(-beta (logp - ref)); z = [-0.5, 1.0]
    expected = -(2 / beta) * ((math.log(1 / (1 + math.exp(0.5)))) + math.log(1 / (1 + math.exp(-1.0)))) / 2
    assert float(npo_loss(logp, ref, beta)) == pytest.approx(expected, rel=1e-6)
    # equal to the reference: (2/beta) ln 2, and minimising it lowers the model's log-prob
    assert float(npo_loss(mx.array([-1.0]), mx.array([-1.0]), 0.1)) == pytest.approx(20 * math.log(2), rel=1e-6)
    grad = mx.grad(lambda x: npo_loss(x, ref, beta))(logp)
    assert (np.array(grad) > 0).all()
    # bounded: far below the reference the loss (and its gradient) goes to 0, unlike gradient ascent
    assert float(npo_loss(mx.array([-200.0]), mx.array([-1.0]), 0.1)) < 1e-6


def test_ga_kl_clamp_stops_the_ascent(taught_dir):
    llm = LLM(taught_dir)
    forget0, _ = measure(llm)
    # Every row is already past the bound, so the forget term has no gradient; no retain set, because at the base
    # model KL's gradient is ~1e-9, not 0, and Adam would blow that up to a full-size step.
    train(llm, "ga_kl", steps=4, ctx={"ce_bound": 0.0}, retain=[])
    assert all(float(np.abs(np.array(v)).max()) == 0.0
               for k, v in llm.trainable_parameters().items() if k.endswith("lora_b"))
    assert measure(llm)[0] == pytest.approx(forget0, abs=1e-5)


def test_negate_lowers_the_fact_and_the_saved_adapter_reproduces_it(taught_dir, tmp_path):
    import mlx_lm

    llm = LLM(taught_dir)
    forget0, retain0 = measure(llm)
    _, losses = train(llm, "negate", steps=20)
    assert losses[-1] < losses[0]  # the fit view learns the fact (CE on the true answer goes down)
    forget1, retain1 = measure(llm)
    assert forget1 < forget0 - FORGET_MIN_DROP, (forget0, forget1)
    assert abs(retain1 - retain0) < min(RETAIN_TOL, (forget0 - forget1) / 3), (retain0, retain1)
    assert llm.lora.scale == -LORA.scale and all(layer.scale == -LORA.scale for layer in llm.lora_layers())

    llm.save_adapter(tmp_path / "adapters")
    config = json.loads((tmp_path / "adapters" / "adapter_config.json").read_text())
    assert config["lora_parameters"]["scale"] == -LORA.scale
    plain, tok = mlx_lm.load(str(taught_dir), adapter_path=str(tmp_path / "adapters"))
    tokens = mx.array([llm.chat_tokens(FORGET_Q[1]) + llm.encode(ANSWER)])
    ours = np.array(llm.model(tokens).astype(mx.float32))
    theirs = np.array(plain(tokens).astype(mx.float32))
    assert np.allclose(ours, theirs, atol=1e-4)
    # and that model is the negation: the plain base model gives the fact a much higher log-prob
    with llm.base_model():
        base = np.array(llm.model(tokens).astype(mx.float32))
    assert not np.allclose(base, theirs, atol=1e-2)


def test_negate_with_a_retain_direction_splits_the_rank(taught_dir):
    llm = LLM(taught_dir)
    forget0, retain0 = measure(llm)
    train(llm, "negate", steps=20, ctx={"negate_beta": 1.0})
    forget1, retain1 = measure(llm)
    assert forget1 < forget0 - FORGET_MIN_DROP
    assert retain1 > retain0 - RETAIN_TOL
