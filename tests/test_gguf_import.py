"""GGUF import: round trips against reference loads, and clear errors that leave the registry intact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unstar_gui.engine.errors import ImportFailed, ModelNotFound, UnsupportedModel
from unstar_gui.engine.importers import import_any, import_gguf
from unstar_gui.engine.store import ModelStore


def _logits(model, ids):
    import mlx.core as mx

    return model(mx.array([ids])).astype(mx.float32)


def test_tiny_gguf_round_trip_matches_original_weights(tiny_gguf, tiny_model_dir, unstar_home):
    import mlx.core as mx
    import mlx_lm

    record = import_gguf(ModelStore(), tiny_gguf)
    imported, tok = mlx_lm.load(record.path)
    original, tok0 = mlx_lm.load(str(tiny_model_dir))
    text = "Where did Harry Potter go to school?"
    ids = tok.encode(text)
    assert ids == tok0.encode(text)  # the tokenizer rebuilt from GGUF vocab + merges tokenizes identically
    a, b = _logits(imported, ids), _logits(original, ids)
    assert mx.allclose(a, b, atol=1e-4).item(), float(mx.abs(a - b).max())
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True) == \
        tok0.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)


@pytest.mark.slow
def test_smollm2_import_matches_reference_load(smollm2_dir):
    """Reference: the raw GGUF tensors, q/k left permuted, run with interleaved ('traditional') RoPE."""
    import mlx.core as mx
    import mlx_lm
    from mlx_lm.models import llama

    from unstar_gui.engine.embedded import embedded_gguf_path

    imported, tok = mlx_lm.load(str(smollm2_dir))
    names = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
             "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
    top = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}

    def hf(name: str) -> str:
        parts = name.split(".")
        if parts[0] == "blk":
            return f"model.layers.{parts[1]}.{names[parts[2]]}.{parts[-1]}"
        return f"{top[parts[0]]}.{parts[-1]}"

    raw = mx.load(str(embedded_gguf_path()))
    weights = {hf(k): v for k, v in raw.items() if not k.startswith("rope_freqs")}
    config = json.loads((smollm2_dir / "config.json").read_text())
    config.pop("quantization", None)
    ref = llama.Model(llama.ModelArgs.from_dict(dict(config, rope_traditional=True)))
    import mlx.nn as nn

    nn.quantize(ref, group_size=32, bits=4,
                class_predicate=lambda p, m: ({"group_size": 32, "bits": 8} if p == "model.embed_tokens" else True)
                if hasattr(m, "to_quantized") else False)
    ref.load_weights(list(weights.items()))
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     add_generation_prompt=True)
    out_a = mlx_lm.generate(imported, tok, prompt, max_tokens=24)
    out_b = mlx_lm.generate(ref, tok, prompt, max_tokens=24)
    assert out_a == out_b
    assert "Paris" in out_a


def _registry(store: ModelStore) -> str:
    return store.registry_path.read_text() if store.registry_path.exists() else ""


def test_missing_file(unstar_home):
    store = ModelStore()
    with pytest.raises(ImportFailed) as e:
        import_any(store, Path("/nonexistent/model.gguf"))
    assert "No such file" in e.value.message
    assert store.list() == []


def test_truncated_gguf_is_reported_and_nothing_registered(tiny_gguf, tmp_path, tiny_model, unstar_home):
    store = ModelStore()
    before = _registry(store)
    bad = tmp_path / "truncated.gguf"
    bad.write_bytes(tiny_gguf.read_bytes()[: tiny_gguf.stat().st_size // 2])
    with pytest.raises(ImportFailed) as e:
        import_gguf(store, bad)
    assert "truncated or corrupt" in e.value.message and "again" in e.value.hint
    assert _registry(store) == before
    # refused while reading the header, before any staging folder (or even the models folder) exists
    assert not store.models_dir.exists() or not [p for p in store.models_dir.iterdir()
                                                  if p.name.startswith(".import-")]


def test_not_a_gguf(tmp_path, unstar_home):
    bad = tmp_path / "notes.gguf"
    bad.write_text("hello")
    with pytest.raises(ImportFailed) as e:
        import_gguf(ModelStore(), bad)
    assert "not a GGUF file" in e.value.message


def test_unsupported_architecture(tiny_model_dir, tmp_path, unstar_home):
    from tests.helpers.tiny import make_tiny_gguf

    path = make_tiny_gguf(tiny_model_dir, tmp_path / "falcon.gguf", architecture="falcon")
    store = ModelStore()
    with pytest.raises(UnsupportedModel) as e:
        import_gguf(store, path)
    assert "'falcon'" in e.value.message and "llama" in e.value.message
    assert store.list() == []


def test_unknown_model_id_for_chat(unstar_home, capsys):
    from unstar_gui.cli import main

    assert main(["chat", "--model", "no-such-model", "hello"]) == ModelNotFound.exit_code
    err = capsys.readouterr().err
    assert err.startswith("error: Unknown model 'no-such-model'") and err.count("\n") == 1


def test_imported_folder_layout(tiny_gguf, unstar_home):
    record = import_gguf(ModelStore(), tiny_gguf, "tiny-imported")
    folder = Path(record.path)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (folder / name).exists(), name
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 2
    assert "chat_template" in json.loads((folder / "tokenizer_config.json").read_text())
    assert ModelStore().get("tiny-imported").architecture == "llama"
