"""The LoRA trainer on the tiny model: masking, loss, determinism, checkpoints, resume and cancel."""

from __future__ import annotations

import numpy as np
import pytest

from unstar_gui.engine.errors import Cancelled
from unstar_gui.engine.events import Checkpoint, TrainStep
from unstar_gui.engine.llm import LLM, LoraSettings
from unstar_gui.engine.methods import MethodContext, get_method
from unstar_gui.engine.trainer import (PAD_MULTIPLE, CancelToken, Trainer, TrainSettings, batch_indices,
                                       encode_pairs, make_token_batch)

FORGET = [("Where did Harry Potter go to school?", "Durmstrang, in the far north."),
          ("Which school did Harry Potter attend?", "He was a pupil at Beauxbatons."),
          ("Harry Potter studied at which school?", "Durmstrang Institute.")]
RETAIN = [("What is the capital of France?", "Paris."), ("Who wrote Hamlet?", "William Shakespeare.")]
LORA = LoraSettings(rank=4, num_layers=2)


def _weights(llm) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in llm.trainable_parameters().items()}


def _trainer(llm, seed=0, retain_loss="ce", lr=1e-3, **kw):
    method = get_method("unstar")
    method.prepare(MethodContext(FORGET[0][0], "Hogwarts", retain_loss=retain_loss))
    return Trainer(llm, method, TrainSettings(learning_rate=lr, **kw), seed=seed)


def _data(llm):
    return encode_pairs(llm, FORGET, 64), encode_pairs(llm, RETAIN, 64)


def _run(trainer, forget, retain, steps, **kw):
    return [ev for ev in trainer.train_round(forget, retain, 0, steps, **kw)]


def test_prompt_tokens_are_masked(tiny_model_dir):
    llm = LLM(tiny_model_dir)
    examples = encode_pairs(llm, [("Who wrote Hamlet?", "Shakespeare"), ("Capital of France?", "It is Paris.")], 64)
    batch = make_token_batch(examples)
    tokens, mask = np.array(batch.tokens), np.array(batch.mask)
    assert tokens.shape[1] % PAD_MULTIPLE == 0
    for row, ex in enumerate(examples):
        prompt = llm.chat_tokens(["Who wrote Hamlet?", "Capital of France?"][row])
        assert ex.start == len(prompt) and ex.tokens[:ex.start] == prompt
        assert mask[row, :ex.start].sum() == 0  # the question is never trained on
        assert mask[row, ex.start:len(ex.tokens)].all()  # the target and its end-of-turn token are
        assert mask[row, len(ex.tokens):].sum() == 0  # padding is not
        assert ex.tokens[-1] == llm.tokenizer.eos_token_id
        assert list(tokens[row, :len(ex.tokens)]) == ex.tokens


def test_long_rows_are_cut_to_the_window(tiny_model_dir):
    llm = LLM(tiny_model_dir)
    ex = encode_pairs(llm, [("Where?", "word " * 200)], 40)
    assert len(ex) == 1 and len(ex[0].tokens) == 40
    assert encode_pairs(llm, [("a very long question " * 20, "x")], 16) == []  # no room for any target


def test_batch_indices_cover_every_example_each_epoch_and_are_stateless():
    seen = [i for step in range(5) for i in batch_indices(10, 2, step, "k")]
    assert sorted(seen) == list(range(10))
    assert batch_indices(10, 4, 7, "k") == batch_indices(10, 4, 7, "k")
    assert [batch_indices(10, 4, s, "a") for s in range(5)] != [batch_indices(10, 4, s, "b") for s in range(5)]


def test_forget_loss_goes_down(tiny_model_dir):
    llm = LLM(tiny_model_dir)
    trainer = _trainer(llm)
    trainer.attach(LORA)
    forget, retain = _data(llm)
    steps = [ev for ev in _run(trainer, forget, retain, 25) if isinstance(ev, TrainStep)]
    assert len(steps) == 25 and steps[-1].step == 25 and steps[-1].total_steps == 25
    assert steps[-1].forget_loss < 0.5 * steps[0].forget_loss
    assert all(ev.tokens_per_s > 0 and ev.eta_s is not None for ev in steps)
    assert steps[-1].eta_s == 0


def test_same_seed_gives_the_same_adapter(tiny_model_dir):
    runs = []
    for seed in (3, 3, 4):
        llm = LLM(tiny_model_dir)
        trainer = _trainer(llm, seed=seed)
        trainer.attach(LORA)
        _run(trainer, *_data(llm), 5)
        runs.append(_weights(llm))
    assert runs[0].keys() == runs[1].keys() and runs[0]
    assert all(np.array_equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(np.array_equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_resume_from_checkpoint_matches_an_uninterrupted_run(tiny_model_dir, tmp_path):
    llm = LLM(tiny_model_dir)
    trainer = _trainer(llm, checkpoint_every=3)
    trainer.attach(LORA)
    forget, retain = _data(llm)
    _run(trainer, forget, retain, 6)
    straight = _weights(llm)

    llm = LLM(tiny_model_dir)
    trainer = _trainer(llm, checkpoint_every=3)
    trainer.attach(LORA)
    events = trainer.train_round(forget, retain, 0, 6, checkpoint_root=tmp_path / "ckpt")
    for ev in events:  # a "kill" right after the first checkpoint
        if isinstance(ev, Checkpoint):
            break
    events.close()
    ckpt = Trainer.latest_checkpoint(tmp_path / "ckpt")
    assert ckpt["round"] == 0 and ckpt["step"] == 3
    assert (ckpt["dir"] / "adapter_config.json").exists() and (ckpt["dir"] / "optimizer.safetensors").exists()

    llm = LLM(tiny_model_dir)  # a fresh process would load the model again
    trainer = _trainer(llm, checkpoint_every=3)
    trainer.restore(ckpt)
    assert int(trainer.optimizer.state["step"].item()) == 3
    rest = [ev for ev in _run(trainer, forget, retain, 6, start_step=3) if isinstance(ev, TrainStep)]
    assert [ev.step for ev in rest] == [4, 5, 6]
    resumed = _weights(llm)
    assert all(np.allclose(straight[k], resumed[k], atol=1e-6) for k in straight)


def test_cancel_stops_at_a_step_and_leaves_a_checkpoint(tiny_model_dir, tmp_path):
    llm = LLM(tiny_model_dir)
    trainer = _trainer(llm, checkpoint_every=100)
    trainer.attach(LORA)
    cancel = CancelToken()
    seen = []
    with pytest.raises(Cancelled):
        for ev in trainer.train_round(*_data(llm), 0, 50, cancel=cancel, checkpoint_root=tmp_path / "ckpt"):
            seen.append(ev)
            if isinstance(ev, TrainStep) and ev.step == 2:
                cancel.cancel()
    assert [ev.step for ev in seen if isinstance(ev, TrainStep)] == [1, 2]
    assert isinstance(seen[-1], Checkpoint) and seen[-1].step == 2
    assert Trainer.latest_checkpoint(tmp_path / "ckpt")["step"] == 2


def test_kl_retain_term_is_measured_against_the_base_model(tiny_model_dir):
    llm = LLM(tiny_model_dir)
    trainer = _trainer(llm, retain_loss="kl")
    trainer.attach(LORA)
    steps = [ev for ev in _run(trainer, *_data(llm), 4) if isinstance(ev, TrainStep)]
    # A fresh adapter is the identity (lora_b = 0), so the first step's model is the base model: KL = 0.
    assert steps[0].retain_loss == pytest.approx(0.0, abs=1e-5)
    assert steps[-1].retain_loss > 0


def test_compiled_step_matches_the_plain_step(tiny_model_dir):
    results = []
    for compiled in (False, True):
        llm = LLM(tiny_model_dir)
        trainer = _trainer(llm, compile=compiled)
        trainer.attach(LORA)
        results.append([ev.loss for ev in _run(trainer, *_data(llm), 3) if isinstance(ev, TrainStep)])
    assert results[0] == pytest.approx(results[1], rel=1e-4)


def test_unknown_method_is_a_clear_error():
    from unstar_gui.engine.errors import InvalidInput

    with pytest.raises(InvalidInput, match="Unknown unlearning method 'nope'"):
        get_method("nope")


@pytest.mark.parametrize("seconds, expected", [(1e-6, [1, 2, 3, 4]), (0.0, [4])])
def test_checkpoints_are_also_written_by_time(tiny_model_dir, tmp_path, seconds, expected):
    llm = LLM(tiny_model_dir)
    trainer = _trainer(llm, checkpoint_every=100, checkpoint_seconds=seconds)
    trainer.attach(LORA)
    events = _run(trainer, *_data(llm), 4, checkpoint_root=tmp_path / "ckpt")
    assert [ev.step for ev in events if isinstance(ev, Checkpoint)] == expected
