"""The model wrapper: batched generation, log-probs, adapters on/off, thread ownership; the embedded default."""

from __future__ import annotations

import threading

import pytest

from unstar_gui.engine.errors import InvalidInput
from unstar_gui.engine.llm import LLM, LoraSettings, pad_batch


@pytest.fixture
def tiny_llm(tiny_model_dir):
    return LLM(tiny_model_dir)


def test_batched_generation_equals_one_at_a_time(tiny_llm):
    qs = ["Where did Harry Potter go to school?", "What is the capital of France?", "Who wrote Hamlet?"]
    batched = tiny_llm.answer(qs, max_tokens=6)
    single = [tiny_llm.answer([q], max_tokens=6)[0] for q in qs]
    assert batched == single and len(batched) == 3


def test_empty_question_rejected(tiny_llm):
    with pytest.raises(InvalidInput):
        tiny_llm.answer(["  "])


def test_pad_batch_masks_prompt_and_padding():
    tokens, mask = pad_batch([[5, 6, 7, 8], [5, 6]], starts=[2, 1])
    assert tokens.tolist() == [[5, 6, 7, 8], [5, 6, 0, 0]]
    assert mask.tolist() == [[0, 0, 1, 1], [0, 1, 0, 0]]


def test_logprob_prefers_trained_answer_and_lora_toggles(tiny_llm):
    import mlx.core as mx

    pairs = [("Where did Harry Potter go to school?", "Hogwarts")]
    base = tiny_llm.answer_logprobs(pairs)[0]
    tiny_llm.attach_lora(LoraSettings(rank=4, num_layers=2), seed=1)
    # Fresh LoRA (lora_b = 0) changes nothing.
    assert tiny_llm.answer_logprobs(pairs)[0] == pytest.approx(base, abs=1e-5)
    for layer in tiny_llm.lora_layers():
        layer.lora_b = mx.random.normal(layer.lora_b.shape) * 0.5
    changed = tiny_llm.answer_logprobs(pairs)[0]
    assert abs(changed - base) > 1e-3
    with tiny_llm.base_model():
        assert tiny_llm.answer_logprobs(pairs)[0] == pytest.approx(base, abs=1e-5)
    assert tiny_llm.answer_logprobs(pairs)[0] == pytest.approx(changed, abs=1e-5)


def test_adapter_save_load_round_trip_with_mlx_lm(tiny_llm, tiny_model_dir, tmp_path):
    import mlx.core as mx
    import mlx_lm

    tiny_llm.attach_lora(LoraSettings(rank=4, num_layers=2), seed=3)
    for layer in tiny_llm.lora_layers():
        layer.lora_b = mx.random.normal(layer.lora_b.shape) * 0.5
    tiny_llm.save_adapter(tmp_path / "adapters")
    q = "Where did Harry Potter go to school?"
    ours = tiny_llm.answer_logprobs([(q, "Paris")])[0]
    model, tok = mlx_lm.load(str(tiny_model_dir), adapter_path=str(tmp_path / "adapters"))
    other = LLM(tiny_model_dir)
    other.load_adapter(tmp_path / "adapters")
    assert other.answer_logprobs([(q, "Paris")])[0] == pytest.approx(ours, abs=1e-4)
    ids = other.chat_tokens(q) + other.encode("Paris")
    a = model(mx.array([ids])).astype(mx.float32)
    b = other.model(mx.array([ids])).astype(mx.float32)
    assert mx.allclose(a, b, atol=1e-3).item()


def test_detach_restores_base(tiny_llm):
    import mlx.core as mx

    pairs = [("Who wrote Hamlet?", "Shakespeare")]
    base = tiny_llm.answer_logprobs(pairs)[0]
    tiny_llm.attach_lora(LoraSettings(rank=4, num_layers=2))
    for layer in tiny_llm.lora_layers():
        layer.lora_b = mx.ones(layer.lora_b.shape)
    tiny_llm.detach_lora()
    assert tiny_llm.lora_layers() == [] and tiny_llm.lora is None
    assert tiny_llm.answer_logprobs(pairs)[0] == pytest.approx(base, abs=1e-5)


def test_other_thread_is_refused(tiny_llm):
    errors = []

    def worker():
        try:
            tiny_llm.answer(["hi"], max_tokens=2)
        except RuntimeError as exc:
            errors.append(str(exc))

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert errors and "another thread" in errors[0]


def test_cpu_backend_computes_in_float32(tiny_model_dir):
    import mlx.core as mx

    from tests.helpers.tiny import make_tiny_model
    from unstar_gui.engine.backend import detect

    folder = make_tiny_model(tiny_model_dir.parent / "tiny-q4", quantize_bits=4)
    llm = LLM(folder)
    q_proj = llm.model.model.layers[0].self_attn.q_proj
    if detect().device == "cpu":  # dequantized float32: BLAS matmuls instead of single-threaded 4-bit kernels
        assert q_proj.weight.dtype == mx.float32 and not hasattr(q_proj, "scales")
    else:  # Metal keeps the 4-bit weights (QLoRA)
        assert hasattr(q_proj, "scales")
    assert llm.base_quantization == {"group_size": 32, "bits": 4}


@pytest.mark.slow
def test_embedded_model_answers_paris(smollm2):
    from unstar_gui.engine.embedded import resolve_model
    from unstar_gui.engine.store import ModelStore

    record = resolve_model(ModelStore())
    llm = LLM(record.path)
    assert "Paris" in llm.answer(["What is the capital of France?"], max_tokens=24)[0]
    lp = llm.answer_logprobs([("What is the capital of France?", "The capital of France is Paris."),
                              ("What is the capital of France?", "The capital of France is Berlin.")])
    assert lp[0] > lp[1]
