"""Memory estimates before a job starts (engine/memory.py) and the trainer's gradient checkpointing option."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from unstar_gui.engine.memory import (GIB, REFERENCE_CONFIGS, MemorySettings, ModelShape, choose_batch_and_seq,
                                      estimate_memory, mac_working_set)

# A 1B-class llama config, crafted so the numbers are easy to reason about.
CONFIG = {"hidden_size": 2048, "num_hidden_layers": 16, "intermediate_size": 8192, "num_attention_heads": 32,
          "num_key_value_heads": 8, "vocab_size": 32000, "tie_word_embeddings": True}
BIG = 1 << 50  # "unlimited" available memory


def est(**settings):
    return estimate_memory(CONFIG, settings, device="cpu", available_bytes=BIG, include_evaluation=False)


def test_parameter_count_matches_the_published_sizes():
    smol = ModelShape.from_config(REFERENCE_CONFIGS["smollm2-135m-instruct"])
    assert abs(smol.n_params - 134.5e6) / 134.5e6 < 0.01  # SmolLM2-135M: 134,515,008 parameters
    mistral = ModelShape.from_config(REFERENCE_CONFIGS["mistral-7b-instruct-v0.3-4bit"])
    assert abs(mistral.n_params - 7.248e9) / 7.248e9 < 0.01
    # 4-bit, group 64 on Metal: the mlx-community download is 4.08 GB
    assert abs(mistral.weight_bytes("gpu") - 4.08e9) / 4.08e9 < 0.03
    assert mistral.weight_bytes("cpu") == mistral.n_params * 4  # dequantized to float32 on CPU


def test_estimate_grows_with_batch_sequence_and_rank():
    base = est()
    assert est(batch_size=8).activations_bytes > base.activations_bytes
    assert est(retain_batch_size=8).activations_bytes > base.activations_bytes
    assert est(max_seq_len=320).activations_bytes > base.activations_bytes
    assert est(rank=32).lora_bytes > base.lora_bytes
    assert est(rank=32).optimizer_bytes == 3 * est(rank=32).lora_bytes  # gradients + two Adam moments
    assert est(num_layers=4).activations_bytes < base.activations_bytes
    assert est(batch_size=8).total_bytes > base.total_bytes
    # activations are linear in the rows: doubling both sides doubles them (logits included)
    doubled = est(batch_size=8, retain_batch_size=8)
    assert doubled.activations_bytes == pytest.approx(2 * base.activations_bytes, rel=1e-6)


def test_gradient_checkpointing_cuts_activations():
    plain, checkpointed = est(), est(grad_checkpoint=True)
    assert checkpointed.activations_bytes < plain.activations_bytes / 2
    assert checkpointed.weights_bytes == plain.weights_bytes


def test_fits_depends_on_available_memory():
    e = est()
    assert estimate_memory(CONFIG, None, "cpu", e.total_bytes + 1, include_evaluation=False).fits
    short = estimate_memory(CONFIG, None, "cpu", e.total_bytes - 1, include_evaluation=False)
    assert not short.fits and "checkpointing" in short.advice
    tiny = estimate_memory(CONFIG, None, "cpu", 1 * GIB, include_evaluation=False)
    assert not tiny.fits and "model alone" in tiny.advice  # 1.1B float32 weights don't fit 1 GB


def test_settings_come_from_the_job_settings():
    from unstar_gui.engine.pipeline import ForgetSettings

    fs = ForgetSettings(batch_size=2, retain_batch_size=1, max_seq_len=96, rank=4, num_layers=8,
                        grad_checkpoint=True)
    ms = MemorySettings.from_settings(fs)
    assert (ms.batch_size, ms.retain_batch_size, ms.max_seq_len, ms.rank, ms.num_layers, ms.grad_checkpoint) == \
        (2, 1, 96, 4, 8, True)
    assert estimate_memory(CONFIG, fs, "cpu", BIG).settings["batch_size"] == 2


def test_choice_keeps_the_settings_when_they_fit():
    choice = choose_batch_and_seq(BIG, CONFIG, None, device="cpu")
    assert choice.fits and not choice.changed
    assert (choice.batch_size, choice.retain_batch_size, choice.max_seq_len, choice.grad_checkpoint) == (4, 4, 160,
                                                                                                           False)


@pytest.mark.parametrize("share", [0.9, 0.75, 0.6])
def test_chosen_batch_fits_and_is_the_largest_that_does(share):
    full = est()
    floor = estimate_memory(CONFIG, {"batch_size": 1, "retain_batch_size": 1, "max_seq_len": 64,
                                     "grad_checkpoint": True}, "cpu", BIG, include_evaluation=False)
    available = int(floor.total_bytes + share * (full.total_bytes - floor.total_bytes))
    choice = choose_batch_and_seq(available, CONFIG, None, device="cpu", include_evaluation=False)
    assert choice.fits and choice.changed
    again = estimate_memory(CONFIG, {"batch_size": choice.batch_size, "retain_batch_size": choice.retain_batch_size,
                                     "max_seq_len": choice.max_seq_len, "grad_checkpoint": choice.grad_checkpoint},
                            "cpu", available, include_evaluation=False)
    assert again.fits and again.total_bytes <= available
    assert choice.grad_checkpoint  # checkpointing is tried before anything that changes the optimisation
    if choice.batch_size < 4:  # the next larger batch would not have fitted
        bigger = estimate_memory(CONFIG, {"batch_size": choice.batch_size * 2,
                                          "retain_batch_size": choice.retain_batch_size * 2,
                                          "max_seq_len": choice.max_seq_len, "grad_checkpoint": True},
                                 "cpu", available, include_evaluation=False)
        assert not bigger.fits


def test_nothing_fits_when_the_weights_alone_are_too_big():
    choice = choose_batch_and_seq(2 * GIB, CONFIG, None, device="cpu")
    assert not choice.fits and choice.batch_size == 1 and choice.max_seq_len == 64


def test_choice_applies_to_forget_settings():
    from unstar_gui.engine.pipeline import ForgetSettings

    full = est()
    choice = choose_batch_and_seq(full.total_bytes - 1, CONFIG, ForgetSettings(), device="cpu",
                                  include_evaluation=False)
    applied = choice.apply(ForgetSettings())
    assert applied.grad_checkpoint and applied.batch_size == choice.batch_size and applied.n_paraphrases == 12


def test_catalog_model_on_macs():
    from unstar_gui.engine.catalog import get_entry

    entry = get_entry("mistral-7b-instruct-v0.3-4bit")
    on16 = estimate_memory(entry, None, device="gpu", available_bytes=mac_working_set(16 * GIB),
                           include_evaluation=False)
    on8 = estimate_memory(entry, None, device="gpu", available_bytes=mac_working_set(8 * GIB),
                          include_evaluation=False)
    assert on16.fits and not on8.fits  # the catalog says: "Needs a Mac with 16 GB of memory to train comfortably"
    assert on16.weights_bytes < on16.total_bytes < 16 * GIB
    # the re-quantization attack's dense float16 copy of a 7B model (14.5 GB) is what doesn't fit
    with_attack = estimate_memory(entry, None, device="gpu", available_bytes=mac_working_set(16 * GIB))
    assert with_attack.peak_phase == "evaluation" and not with_attack.fits


def test_installed_model_record_is_sized_from_its_config(tiny_model):
    e = estimate_memory(tiny_model, None, device="cpu", available_bytes=BIG)
    assert e.weights_bytes > 0 and e.fits and e.device == "cpu"


def _train_step_peak(llm, checkpoint: bool, rows=4, seq=128):
    from unstar_gui.engine.llm import LoraSettings
    from unstar_gui.engine.methods import MethodContext, get_method
    from unstar_gui.engine.trainer import Trainer, TrainSettings, encode_pairs

    long = "Hogwarts is a school in Scotland where young wizards learn magic. " * 30
    data = encode_pairs(llm, [(f"Question {i}?", long) for i in range(rows)], seq)
    method = get_method("unstar")
    method.prepare(MethodContext("q", "a"))
    settings = TrainSettings(batch_size=rows, retain_batch_size=rows, max_seq_len=seq, grad_checkpoint=checkpoint,
                             learning_rate=1e-3)
    trainer = Trainer(llm, method, settings)
    trainer.attach(LoraSettings(rank=8, num_layers=2))
    mx.clear_cache()
    mx.reset_peak_memory()
    events = list(trainer.train_round(data, data, 0, 2))
    peak = int(mx.get_peak_memory())
    weights = {k: np.array(v) for k, v in llm.trainable_parameters().items()}
    llm.detach_lora()
    return peak, [e.loss for e in events], weights, settings


def test_estimate_is_within_a_factor_of_measured_peak(tiny_model_dir):
    from unstar_gui.engine.llm import LLM

    llm = LLM(tiny_model_dir)
    peak, _, _, settings = _train_step_peak(llm, checkpoint=False)
    e = estimate_memory(tiny_model_dir, {**settings.__dict__, "rank": 8, "num_layers": 2}, device="cpu",
                        available_bytes=BIG, include_evaluation=False)
    training = e.weights_bytes + e.lora_bytes + e.optimizer_bytes + e.activations_bytes
    assert 0.5 <= training / peak <= 2.0, (training, peak)


def test_gradient_checkpointing_trains_the_same_and_unpatches(tiny_model_dir):
    from unstar_gui.engine.llm import LLM

    llm = LLM(tiny_model_dir)
    block_call = type(llm.model.layers[0]).__call__
    _, losses, weights, _ = _train_step_peak(llm, checkpoint=False)
    _, losses_ck, weights_ck, _ = _train_step_peak(llm, checkpoint=True)
    assert np.allclose(losses, losses_ck, rtol=1e-4, atol=1e-5)
    for k in weights:
        assert np.allclose(weights[k], weights_ck[k], rtol=1e-3, atol=1e-5), k
    # the patch lives only during a step: generation afterwards runs the plain block
    assert type(llm.model.layers[0]).__call__ is block_call
