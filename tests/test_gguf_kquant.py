"""GGUF import beyond what MLX reads natively: K-quants and friends, five architectures, precision choices,
clear refusals, and (slow) a real Gemma 3 270M Q4_K_M file checked against transformers' Gemma 3.

The synthetic files are written with llama.cpp's own `gguf.GGUFWriter`, laid out the way convert_hf_to_gguf.py
lays them out (tensor names from gguf's TensorNameMap, llama q/k rows permuted, Gemma norms stored as 1 + w),
so the importer's tables are checked against llama.cpp's, not against themselves.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from unstar_gui.engine.errors import UnsupportedModel
from unstar_gui.engine.importers import import_gguf
from unstar_gui.engine.store import ModelStore

gguf = pytest.importorskip("gguf", reason="the gguf package (llama.cpp's Python reader) is not installed")
from gguf import GGMLQuantizationType as Q  # noqa: E402
from gguf.quants import dequantize, quantize  # noqa: E402

# Offsets of the float16 super-block scales in each K-quant block (ggml-common.h block_q*_K): random bytes
# elsewhere are valid codes, but these must be small finite numbers for the weights to be sane.
_K_SCALE_OFFSETS = {Q.Q4_K: (0, 2), Q.Q5_K: (0, 2), Q.Q6_K: (208,), Q.Q2_K: (80, 82), Q.Q3_K: (108,)}


def random_kquant(rows: int, cols: int, qtype: Q, rng: np.random.Generator) -> np.ndarray:
    """Random but well-formed K-quant blocks (the gguf package can dequantize K-quants but not produce them)."""
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    data = rng.integers(0, 256, size=(rows, cols // block, type_size), dtype=np.uint8)
    for off in _K_SCALE_OFFSETS[qtype]:
        scale = rng.uniform(2e-4, 6e-4, size=(rows, cols // block)).astype(np.float16)
        data[:, :, off:off + 2] = scale.view(np.uint8).reshape(rows, cols // block, 2)
    return data.reshape(rows, cols // block * type_size)


def _permute_rows(a: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute."""
    return a.reshape(n_head, 2, a.shape[0] // n_head // 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)


def _vocab(tmp: Path) -> tuple[list[str], list[str], list[int]]:
    from tests.helpers.tiny import SPECIALS, build_tokenizer

    tmp.mkdir(parents=True, exist_ok=True)
    build_tokenizer(tmp)
    tok = json.loads((tmp / "tokenizer.json").read_text())
    tokens = [t for t, _ in sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    return tokens, merges, [3 if t in SPECIALS else 1 for t in tokens]


def write_gguf(path: Path, arch: str, config: dict, tensors: dict, vocab: tuple, tokenizer_model: str = "gpt2",
               extra: dict | None = None) -> Path:
    """tensors: gguf name -> float32 array (stored F32) or (raw uint8 blocks, qtype)."""
    tokens, merges, types = vocab
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(config["num_hidden_layers"])
    w.add_context_length(config.get("max_position_embeddings", 512))
    w.add_embedding_length(config["hidden_size"])
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_head_count(config["num_attention_heads"])
    w.add_head_count_kv(config["num_key_value_heads"])
    w.add_layer_norm_rms_eps(config["rms_norm_eps"])
    w.add_rope_freq_base(config["rope_theta"])
    if "head_dim" in config:
        w.add_key_length(config["head_dim"])
        w.add_value_length(config["head_dim"])
    for key, value in (extra or {}).items():
        w.add_uint32(key, value) if isinstance(value, int) else w.add_float32(key, value)
    w.add_tokenizer_model(tokenizer_model)
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_merges(merges)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}")
    for name, value in tensors.items():
        if isinstance(value, tuple):
            raw, qtype = value
            w.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=qtype)
        else:
            w.add_tensor(name, np.ascontiguousarray(value, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _registry(store: ModelStore) -> bytes:
    return store.registry_path.read_bytes() if store.registry_path.exists() else b""


def _leftover_staging(store: ModelStore) -> list[Path]:
    return [p for p in store.models_dir.iterdir() if p.name.startswith(".import-")] if store.models_dir.exists() \
        else []


# ------------------------------------------------------------------ a K-quant llama, checked tensor by tensor

KQ_CONFIG = {
    "model_type": "llama", "hidden_size": 256, "num_hidden_layers": 2, "intermediate_size": 512,
    "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "max_position_embeddings": 512, "tie_word_embeddings": True,
}
# Every GGUF block type a Q4_K_M / Q5_K_M / Q2_K file mixes, one per projection.
KQ_TYPES = {"attn_q": Q.Q4_K, "attn_k": Q.Q6_K, "attn_v": Q.Q5_0, "attn_output": Q.Q5_K, "ffn_gate": Q.Q2_K,
            "ffn_up": Q.Q3_K, "ffn_down": Q.Q8_0}


@pytest.fixture(scope="module")
def kquant_gguf(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(file, {gguf name: values the file decodes to}, {gguf name: float weights before quantization})."""
    tmp = tmp_path_factory.mktemp("kquant")
    vocab = _vocab(tmp / "tok")
    rng = np.random.default_rng(0)
    c = KQ_CONFIG
    h, f, hd = c["hidden_size"], c["intermediate_size"], c["hidden_size"] // c["num_attention_heads"]
    shapes = {"attn_q": (h, h), "attn_k": (c["num_key_value_heads"] * hd, h),
              "attn_v": (c["num_key_value_heads"] * hd, h), "attn_output": (h, h), "ffn_gate": (f, h),
              "ffn_up": (f, h), "ffn_down": (h, f)}
    tensors: dict = {}
    originals: dict[str, np.ndarray] = {}
    embed = rng.normal(0, 0.05, size=(len(vocab[0]), h)).astype(np.float32)
    tensors["token_embd.weight"] = (quantize(embed, Q.Q8_0), Q.Q8_0)
    originals["token_embd.weight"] = embed
    tensors["output_norm.weight"] = rng.uniform(0.5, 1.5, size=h).astype(np.float32)
    for layer in range(c["num_hidden_layers"]):
        for kind, shape in shapes.items():
            name, qtype = f"blk.{layer}.{kind}.weight", KQ_TYPES[kind]
            if qtype in _K_SCALE_OFFSETS:
                tensors[name] = (random_kquant(*shape, qtype, rng), qtype)
            else:
                originals[name] = rng.normal(0, 0.05, size=shape).astype(np.float32)
                tensors[name] = (quantize(originals[name], qtype), qtype)
        for norm in ("attn_norm", "ffn_norm"):
            tensors[f"blk.{layer}.{norm}.weight"] = rng.uniform(0.5, 1.5, size=h).astype(np.float32)
    path = write_gguf(tmp / "kquant.gguf", "llama", c, tensors, vocab)
    decoded = {k: (dequantize(v[0], v[1]) if isinstance(v, tuple) else v) for k, v in tensors.items()}
    return path, decoded, originals


_HF = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
       "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
       "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}


def _hf(name: str) -> str:
    if name.startswith("blk."):
        _, layer, kind, suffix = name.split(".")
        return f"model.layers.{layer}.{_HF[kind]}.{suffix}"
    return {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight"}[name]


def _unpermuted(name: str, a: np.ndarray) -> np.ndarray:
    """Test-side inverse of the permutation: un-permute by permuting back with the transposed reshape."""
    heads = {"attn_q": KQ_CONFIG["num_attention_heads"], "attn_k": KQ_CONFIG["num_key_value_heads"]}
    kind = name.split(".")[2] if name.startswith("blk.") else ""
    if kind not in heads:
        return a
    n = heads[kind]
    return a.reshape(n, a.shape[0] // n // 2, 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)


def _imported_weights(folder: Path) -> dict[str, np.ndarray]:
    """The imported folder's weights as float32 numpy, dequantizing MLX-packed ones."""
    import mlx.core as mx

    raw = mx.load(str(folder / "model.safetensors"))
    q = json.loads((folder / "config.json").read_text()).get("quantization")
    out = {}
    for k, v in raw.items():
        if k.endswith((".scales", ".biases")):
            continue
        base = k[: -len(".weight")]
        if base + ".scales" in raw:
            spec = q.get(base, q)
            v = mx.dequantize(v, raw[base + ".scales"], raw[base + ".biases"], group_size=spec["group_size"],
                              bits=spec["bits"])
        out[k] = np.array(v.astype(mx.float32))
    return out


def test_kquant_llama_float16_matches_gguf_dequantize(kquant_gguf, unstar_home):
    import mlx.core as mx
    import mlx_lm
    from mlx_lm.models import llama

    path, decoded, originals = kquant_gguf
    record = import_gguf(ModelStore(), path, "kq16", precision="float16")
    assert record.quantization == "float16"
    got = _imported_weights(Path(record.path))
    assert set(got) == {_hf(k) for k in decoded}
    for name, ref in decoded.items():
        # float16 storage is the only loss: within half an ulp of float16 of llama.cpp's own decoding
        np.testing.assert_allclose(got[_hf(name)], _unpermuted(name, ref), rtol=1e-3, atol=1e-6, err_msg=name)
    for name, orig in originals.items():  # Q8_0/Q5_0 made from known floats: within quantization error
        err = np.abs(got[_hf(name)] - _unpermuted(name, orig)).max()
        assert err <= np.abs(orig).max() / (100 if "token_embd" in name or "ffn_down" in name else 12), name

    # Whole model: the import, run by mlx-lm, against the decoded tensors with q/k left permuted and RoPE in
    # llama.cpp's interleaved layout -- a reference that never un-permutes anything.
    imported, tok = mlx_lm.load(record.path)
    imported.set_dtype(mx.float32)
    ref = llama.Model(llama.ModelArgs.from_dict(dict(KQ_CONFIG, vocab_size=len(decoded["token_embd.weight"]),
                                                     rope_traditional=True)))
    # The same float16 rounding the import applies, so only a mapping/RoPE/config mistake can tell them apart.
    ref.load_weights([(_hf(k), mx.array(v.astype(np.float16).astype(np.float32))) for k, v in decoded.items()])
    ids = mx.array([tok.encode("Where did Harry Potter go to school?")])
    a, b = imported(ids), ref(ids)
    assert mx.allclose(a, b, atol=1e-4, rtol=1e-4).item(), float(mx.abs(a - b).max())
    assert (mx.argmax(a, -1) == mx.argmax(b, -1)).all().item()


@pytest.mark.parametrize("precision,bits", [("4", 4), ("8", 8)])
def test_kquant_requantized_within_affine_error(kquant_gguf, unstar_home, precision, bits):
    path, decoded, _ = kquant_gguf
    record = import_gguf(ModelStore(), path, f"kq{bits}", precision=precision)
    config = json.loads(Path(record.path, "config.json").read_text())
    assert config["quantization"]["bits"] == bits and config["quantization"]["group_size"] == 32
    assert record.quantization.startswith(f"{bits}bit-g32")
    got = _imported_weights(Path(record.path))
    for name, ref in decoded.items():
        ref = _unpermuted(name, ref)
        if ref.ndim == 1:
            continue
        groups = ref.reshape(ref.shape[0], -1, 32)
        step = (groups.max(-1) - groups.min(-1)) / (2 ** bits - 1)  # one affine step per group
        err = np.abs(got[_hf(name)].reshape(groups.shape) - groups)
        # One step: MLX snaps the bias so that 0 is exact, which can cost up to a whole step at the range's
        # ends; plus float16 rounding of the scale/bias across the group's range.
        assert (err.max(-1) <= step + np.abs(groups).max(-1) * 5e-3 + 1e-6).all(), name
        assert err.mean() < step.mean() * 0.4, name  # rounding to the nearest step: a quarter step on average


def test_auto_precision_small_kquant_model_is_float16(kquant_gguf, unstar_home):
    record = import_gguf(ModelStore(), kquant_gguf[0], "kqauto")
    assert record.quantization == "float16"
    assert "quantization" not in json.loads(Path(record.path, "config.json").read_text())


def test_native_file_auto_keeps_as_stored_and_4bit_requantizes(tiny_gguf, unstar_home):
    store = ModelStore()
    kept = import_gguf(store, tiny_gguf, "tiny-auto")
    four = import_gguf(store, tiny_gguf, "tiny-4", precision="4")
    assert "quantization" not in json.loads(Path(kept.path, "config.json").read_text())
    assert json.loads(Path(four.path, "config.json").read_text())["quantization"]["bits"] == 4
    assert Path(four.path, "model.safetensors").stat().st_size < Path(kept.path, "model.safetensors").stat().st_size


def test_header_reader_agrees_with_gguf_reader(kquant_gguf):
    from unstar_gui.engine.gguf_file import read_header

    path = kquant_gguf[0]
    ours = read_header(path)
    ref = gguf.GGUFReader(str(path))
    for key, field in ref.fields.items():
        if not key.startswith("GGUF."):
            assert ours.metadata[key] == pytest.approx(field.contents()) if isinstance(ours.metadata[key], float) \
                else ours.metadata[key] == field.contents(), key
    assert [(t.name, t.ggml_type, t.offset) for t in ours.tensors] == \
        [(t.name, int(t.tensor_type), int(t.data_offset)) for t in ref.tensors]


def test_cli_import_with_gguf_precision(kquant_gguf, unstar_home, capsys):
    from unstar_gui.cli import main

    assert main(["models", "import", str(kquant_gguf[0]), "--id", "kq-cli", "--gguf-precision", "8"]) == 0
    assert "8bit-g32" in capsys.readouterr().out
    assert ModelStore().get("kq-cli").quantization.startswith("8bit-g32")


# ------------------------------------------------------------------ architectures: round trip per family


def _arch_case(arch: str) -> tuple[dict, object]:
    """(config, mlx-lm model class module) for a tiny model of this GGUF architecture."""
    from mlx_lm.models import gemma3_text, llama, phi3, qwen2, qwen3

    base = {"hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128, "num_attention_heads": 4,
            "num_key_value_heads": 2, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 512,
            "tie_word_embeddings": True}
    if arch == "llama":
        return dict(base, model_type="llama"), llama
    if arch == "qwen2":
        return dict(base, model_type="qwen2"), qwen2
    if arch == "qwen3":
        return dict(base, model_type="qwen3", head_dim=32), qwen3  # head_dim != hidden/heads, as in real Qwen3
    if arch == "gemma3":
        # six layers: mlx-lm's Gemma 3 needs at least one full sliding-window period (5 local + 1 global)
        return dict(base, model_type="gemma3_text", num_hidden_layers=6, head_dim=32, query_pre_attn_scalar=32, sliding_window=512,
                    sliding_window_pattern=6, rope_local_base_freq=10000.0, num_key_value_heads=1), gemma3_text
    if arch == "phi3":
        return dict(base, model_type="phi3", num_key_value_heads=4, tie_word_embeddings=False), phi3
    raise AssertionError(arch)


def _to_gguf_layout(arch: str, config: dict, weights: dict) -> dict[str, np.ndarray]:
    """What convert_hf_to_gguf.py writes for these HF weights: gguf's own name map plus the per-arch edits."""
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], config["num_hidden_layers"])
    out = {}
    for hf_name, value in weights.items():
        stem, suffix = hf_name.rsplit(".", 1)
        name = name_map.get_name(stem)
        assert name is not None, hf_name
        a = np.array(value, dtype=np.float32)
        if arch == "llama" and name.endswith("attn_q"):
            a = _permute_rows(a, config["num_attention_heads"])
        elif arch == "llama" and name.endswith("attn_k"):
            a = _permute_rows(a, config["num_key_value_heads"])
        elif arch == "gemma3" and name.endswith("norm"):
            a = a + 1.0  # Gemma3Model.modify_tensors: norm_shift
        out[f"{name}.{suffix}"] = a
    return out


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "gemma3", "phi3"])
def test_architecture_round_trip(arch, tmp_path, unstar_home):
    import mlx.core as mx
    import mlx_lm
    from mlx.utils import tree_flatten

    vocab = _vocab(tmp_path / "tok")
    config, module = _arch_case(arch)
    config["vocab_size"] = len(vocab[0])
    mx.random.seed(1)
    original = module.Model(module.ModelArgs.from_dict(config))
    # Random norms (they init to ones -- or zeros for Gemma -- which would hide a missed shift) and biases.
    params = {k: (mx.random.uniform(-0.5, 0.5, v.shape) if "norm" in k or k.endswith(".bias") else v)
              for k, v in tree_flatten(original.parameters())}
    if config["tie_word_embeddings"] and "lm_head.weight" in params:  # Gemma's class always has an lm_head:
        params["lm_head.weight"] = params["model.embed_tokens.weight"]  # make it the tied one...
    original.load_weights(list(params.items()))
    if config["tie_word_embeddings"]:
        params.pop("lm_head.weight", None)  # ...which llama.cpp does not write
    extra = {"gemma3.attention.sliding_window": 512} if arch == "gemma3" else {}
    path = write_gguf(tmp_path / f"{arch}.gguf", arch, config, _to_gguf_layout(arch, config, params), vocab,
                      extra=extra)
    record = import_gguf(ModelStore(), path, f"tiny-{arch}")
    imported, _ = mlx_lm.load(record.path)
    ids = mx.array([[5, 17, 42, 99, 3, 250, 7]])
    a, b = imported(ids), original(ids)
    assert mx.allclose(a, b, atol=1e-4, rtol=1e-4).item(), (arch, float(mx.abs(a - b).max()))
    written = json.loads(Path(record.path, "config.json").read_text())
    assert written["model_type"] == config["model_type"]
    assert written["tie_word_embeddings"] == config["tie_word_embeddings"]


# ------------------------------------------------------------------ refusals leave the registry untouched


@pytest.mark.parametrize("case", ["architecture", "vocabulary"])
def test_unsupported_file_leaves_registry_byte_for_byte(case, tiny_gguf, tmp_path, unstar_home):
    store = ModelStore()
    import_gguf(store, tiny_gguf, "already-here")  # a non-empty registry, so "unchanged" means something
    before = _registry(store)
    assert before
    vocab = _vocab(tmp_path / "tok")
    config, _ = _arch_case("llama")
    tensors = {"token_embd.weight": np.zeros((len(vocab[0]), 64), np.float32)}
    if case == "architecture":
        path = write_gguf(tmp_path / "m.gguf", "mamba", config, tensors, vocab)
    else:
        path = write_gguf(tmp_path / "m.gguf", "llama", config, tensors, vocab, tokenizer_model="rwkv")
    with pytest.raises(UnsupportedModel) as e:
        import_gguf(store, path, "should-not-exist")
    if case == "architecture":
        assert "'mamba'" in e.value.message
        for arch in ("llama", "qwen2", "qwen3", "gemma3", "phi3"):
            assert arch in e.value.message
    else:
        assert "'rwkv'" in e.value.message and "'gpt2'" in e.value.message and "'llama'" in e.value.message
    assert e.value.hint
    assert _registry(store) == before
    assert not _leftover_staging(store)
    assert not store.has("should-not-exist")


# ------------------------------------------------------------------ a real file: Gemma 3 270M Q4_K_M

GEMMA_PROMPTS = ["The capital of France is", "def fibonacci(n):\n    ", "Photosynthesis is the process by which",
                 "<start_of_turn>user\nName three colours.<end_of_turn>\n<start_of_turn>model\n"]
# Logits of the import (float16 weights, computed in float32) vs transformers' Gemma 3 in float32 on the exact
# dequantized weights: float16 rounding of the weights is the difference. Measured: at most 0.33% of the largest
# logit over these prompts (0.32 on logits up to 97); allowed: 1%.
GEMMA_LOGIT_RTOL = 0.01


def _transformers_gemma3(path: Path):
    """The reference: transformers' Gemma3ForCausalLM, config from transformers' GGUF metadata mapping, weights
    decoded by gguf.GGUFReader + gguf.quants.dequantize and named by gguf's own TensorNameMap -- none of the
    importer's code -- with the norm shift undone as transformers' Gemma2TensorProcessor does."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    cfg = load_gguf_checkpoint(str(path), return_tensors=False)["config"]
    cfg.pop("_model_name_or_path", None)
    model = Gemma3ForCausalLM(Gemma3TextConfig(**cfg)).eval()
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, cfg["num_hidden_layers"])
    reader = gguf.GGUFReader(str(path))
    tensors = {t.name: t for t in reader.tensors}
    state = {}
    for hf_name in model.state_dict():
        stem, suffix = hf_name.rsplit(".", 1)
        gguf_name = name_map.get_name(stem)
        if hf_name == "lm_head.weight" and f"{gguf_name}.{suffix}" not in tensors:
            continue  # tied to the embedding: llama.cpp writes no output.weight
        t = tensors[f"{gguf_name}.{suffix}"]
        value = torch.from_numpy(np.array(dequantize(t.data, t.tensor_type), dtype=np.float32))
        state[hf_name] = value - 1.0 if hf_name.endswith("norm.weight") else value
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert set(missing) <= {"lm_head.weight"} and not unexpected
    model.tie_weights()
    return model


@pytest.mark.slow
def test_gemma3_q4_k_m_matches_transformers_reference(gemma3_gguf, unstar_home):
    import mlx.core as mx
    import mlx_lm
    import torch
    from transformers import AutoTokenizer

    store = ModelStore()
    record = import_gguf(store, gemma3_gguf, "gemma3-270m")
    assert record.architecture == "gemma3_text" and record.quantization == "float16"  # auto: < 1B parameters
    imported, tok = mlx_lm.load(record.path)
    ref_tok = AutoTokenizer.from_pretrained(str(gemma3_gguf.parent), gguf_file=gemma3_gguf.name)
    ref = _transformers_gemma3(gemma3_gguf)
    for prompt in GEMMA_PROMPTS:
        ids = tok.encode(prompt)
        assert ids == ref_tok(prompt).input_ids, prompt  # BOS once, same pieces
        assert ids[0] == 2 and tok.decode(ids[1:]) == prompt
        with torch.no_grad():
            want = ref(torch.tensor([ids])).logits[0].numpy()
        imported.set_dtype(mx.float32)
        got = np.array(imported(mx.array([ids]))[0])
        imported.set_dtype(mx.float16)
        diff = np.abs(got - want).max()
        assert diff < GEMMA_LOGIT_RTOL * np.abs(want).max(), (prompt, diff)
        assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.95, prompt  # greedy next tokens, every position
    # and it generates, in float16 as the app runs it: the same greedy continuation as the reference
    prompt = GEMMA_PROMPTS[0]
    ids = tok.encode(prompt)
    with torch.no_grad():
        want_ids = ref.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)[0, len(ids):].tolist()
    out = mlx_lm.generate(imported, tok, prompt, max_tokens=8)
    assert tok.encode(out, add_special_tokens=False) == want_ids, (out, tok.decode(want_ids))
