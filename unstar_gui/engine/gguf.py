"""Read a GGUF file into an mlx-lm model folder (config.json, model.safetensors, tokenizer files).

MLX reads GGUF natively: Q4_0, Q4_1 and Q8_0 tensors come back already packed as MLX affine quantized weights
(uint32 + float16 scales/biases, group size 32), so they stay quantized; F16/F32 tensors come back as is.
llama.cpp stores the q/k projection rows permuted for interleaved RoPE; we undo that, so the folder is a plain
Hugging Face-layout llama that mlx-lm (and its GGUF exporter) treat like any other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ImportFailed, UnsupportedModel

SUPPORTED_ARCHITECTURES = ("llama",)
SUPPORTED_QUANTS = "F32, F16, BF16, Q4_0, Q4_1 and Q8_0"

# GGUF tensor-name pieces -> mlx-lm (Hugging Face) names.
_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}

# Pre-tokenizer regexes llama.cpp names in `tokenizer.ggml.pre`.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SUPPORTED_PRETOKENIZERS = ("default", "gpt-2", "smollm", "llama-bpe", "llama3", "qwen2")


@dataclass
class GGUFContents:
    weights: dict[str, Any]
    metadata: dict[str, Any]


def _meta_value(v: Any) -> Any:
    """GGUF scalars come back as 0-d mx arrays; turn them into Python values."""
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        return v.item()
    if hasattr(v, "tolist"):
        return v.tolist()
    return v


def read_gguf(path: Path) -> GGUFContents:
    import mlx.core as mx

    path = Path(path)
    if not path.exists():
        raise ImportFailed(f"No such file: {path}.", "Check the path and try again.")
    if not path.is_file():
        raise ImportFailed(f"{path} is not a file.", "Pick a .gguf file.")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise ImportFailed(
            f"{path.name} is not a GGUF file (it does not start with the GGUF signature).",
            "Pick a .gguf model file, or import a model folder instead.",
        )
    try:
        # format= because Ollama keeps its GGUF weights in blobs named sha256-<hex>, with no .gguf suffix.
        weights, metadata = mx.load(str(path), format="gguf", return_metadata=True)
    except Exception as exc:  # MLX raises plain exceptions for truncated files and unknown tensor types
        text = str(exc)
        if "type" in text.lower() and ("support" in text.lower() or "unknown" in text.lower()):
            raise UnsupportedModel(
                f"{path.name} uses a quantization type UnStar cannot read ({text}).",
                f"Supported GGUF types: {SUPPORTED_QUANTS}. Use a Q4_0/Q8_0/F16 file, or import the original "
                "Hugging Face folder instead.",
            ) from exc
        raise ImportFailed(
            f"Could not read {path.name}: the file is truncated or corrupt ({text}).",
            "Download the file again and re-import it.",
        ) from exc
    return GGUFContents(weights=dict(weights), metadata={k: _meta_value(v) for k, v in metadata.items()})


def _check_architecture(meta: dict[str, Any], name: str) -> str:
    arch = str(meta.get("general.architecture", "unknown"))
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedModel(
            f"{name} is a '{arch}' model; the GGUF importer supports {', '.join(SUPPORTED_ARCHITECTURES)} "
            "architectures (Llama, SmolLM, Mistral-style).",
            "Import the model's Hugging Face or MLX folder instead (`unstar models import FOLDER`).",
        )
    return arch


def build_config(meta: dict[str, Any], weights: dict[str, Any]) -> dict[str, Any]:
    p = "llama."
    n_head = int(meta[p + "attention.head_count"])
    hidden = int(meta[p + "embedding_length"])
    config: dict[str, Any] = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "num_hidden_layers": int(meta[p + "block_count"]),
        "intermediate_size": int(meta[p + "feed_forward_length"]),
        "num_attention_heads": n_head,
        "num_key_value_heads": int(meta.get(p + "attention.head_count_kv", n_head)),
        "rms_norm_eps": float(meta.get(p + "attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(meta.get(p + "rope.freq_base", 10000.0)),
        "max_position_embeddings": int(meta.get(p + "context_length", 2048)),
        "tie_word_embeddings": "output.weight" not in weights,
        "bos_token_id": _int_or_none(meta.get("tokenizer.ggml.bos_token_id")),
        "eos_token_id": _int_or_none(meta.get("tokenizer.ggml.eos_token_id")),
    }
    vocab = meta.get(p + "vocab_size") or len(meta.get("tokenizer.ggml.tokens", []))
    config["vocab_size"] = int(vocab)
    head_dim = meta.get(p + "rope.dimension_count") or meta.get(p + "attention.key_length")
    if head_dim and int(head_dim) != hidden // n_head:
        config["head_dim"] = int(head_dim)
    return config


def _int_or_none(v: Any) -> int | None:
    return None if v is None else int(v)


def _unpermute_rows(a: Any, n_head: int) -> Any:
    """Inverse of llama.cpp's q/k permutation, applied to rows (works on packed weights, scales and biases)."""
    rows = a.shape[0]
    rest = a.shape[1:]
    # llama.cpp applied reshape(n_head, 2, d/2).swapaxes(1, 2); undo it with the transposed reshape.
    return a.reshape(n_head, rows // n_head // 2, 2, *rest).swapaxes(1, 2).reshape(rows, *rest)


def map_tensors(weights: dict[str, Any], config: dict[str, Any], unpermute: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, arr in weights.items():
        parts = name.split(".")
        suffix = parts[-1]  # weight / scales / biases / bias
        if parts[0] == "blk":
            layer, kind = parts[1], parts[2]
            if kind not in _LAYER_NAMES:
                raise UnsupportedModel(f"Unexpected tensor '{name}' in the GGUF file.", "This file's layout is not "
                                       "a plain llama; import the Hugging Face folder instead.")
            new = f"model.layers.{layer}.{_LAYER_NAMES[kind]}.{suffix}"
            if unpermute and kind == "attn_q":
                arr = _unpermute_rows(arr, config["num_attention_heads"])
            elif unpermute and kind == "attn_k":
                arr = _unpermute_rows(arr, config["num_key_value_heads"])
        elif parts[0] in _TOP_NAMES:
            new = f"{_TOP_NAMES[parts[0]]}.{suffix}"
        elif parts[0] == "rope_freqs":
            continue  # recomputed by mlx-lm from rope_theta
        else:
            raise UnsupportedModel(f"Unexpected tensor '{name}' in the GGUF file.",
                                   "Import the Hugging Face folder instead.")
        out[new] = arr
    return out


def quantization_config(weights: dict[str, Any], config: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """Per-layer bits/group size from the packed shapes; returns (config entry, short label)."""
    in_dims = {"down_proj": config["intermediate_size"]}
    per_layer: dict[str, dict[str, int]] = {}
    for name, w in weights.items():
        if not name.endswith(".scales"):
            continue
        module = name[: -len(".scales")]
        packed = weights[module + ".weight"].shape[1]
        in_features = in_dims.get(module.split(".")[-1], None)
        if in_features is None:
            in_features = config["hidden_size"] if not module.endswith("o_proj") else (
                config.get("head_dim", config["hidden_size"] // config["num_attention_heads"])
                * config["num_attention_heads"])
        bits = packed * 32 // in_features
        group = in_features // w.shape[1]
        per_layer[module] = {"group_size": int(group), "bits": int(bits)}
    if not per_layer:
        return None, "float16"
    common = max({tuple(v.values()) for v in per_layer.values()},
                 key=lambda t: sum(1 for v in per_layer.values() if tuple(v.values()) == t))
    q: dict[str, Any] = {"group_size": common[0], "bits": common[1]}
    for module, v in per_layer.items():
        if (v["group_size"], v["bits"]) != common:
            q[module] = v
    label = f"{common[1]}bit-g{common[0]}" + ("+mixed" if len(q) > 2 else "")
    return q, label


def build_tokenizer_files(meta: dict[str, Any], out_dir: Path, name: str) -> None:
    """tokenizer.json from the GGUF vocabulary and merges (byte-level BPE), plus tokenizer_config.json."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    tok_model = meta.get("tokenizer.ggml.model")
    if tok_model != "gpt2":
        raise UnsupportedModel(
            f"{name} uses a '{tok_model}' tokenizer; the GGUF importer reads byte-level BPE ('gpt2') vocabularies.",
            "Import the model's Hugging Face or MLX folder instead, which carries its own tokenizer.",
        )
    pre = str(meta.get("tokenizer.ggml.pre", "default"))
    if pre not in SUPPORTED_PRETOKENIZERS:
        raise UnsupportedModel(
            f"{name} needs the '{pre}' pre-tokenizer, which the GGUF importer does not know.",
            f"Known: {', '.join(SUPPORTED_PRETOKENIZERS)}. Import the Hugging Face folder instead.",
        )
    tokens: list[str] = list(meta["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    token_types = list(meta.get("tokenizer.ggml.token_type", [1] * len(tokens)))
    vocab = {t: i for i, t in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    if pre == "smollm":
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True),
             pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    elif pre in ("llama-bpe", "llama3", "qwen2"):
        regex = QWEN2_SPLIT if pre == "qwen2" else LLAMA3_SPLIT
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
             pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    # token_type 3 = control, 4 = user-defined: both must never be split by BPE.
    specials = [AddedToken(tokens[i], special=(t == 3), normalized=False)
                for i, t in enumerate(token_types) if t in (3, 4)]
    if specials:
        tokenizer.add_special_tokens(specials)
    tokenizer.save(str(out_dir / "tokenizer.json"))

    def tok(key: str) -> str | None:
        i = meta.get(key)
        return tokens[int(i)] if i is not None and 0 <= int(i) < len(tokens) else None

    tk_config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": tok("tokenizer.ggml.bos_token_id"),
        "eos_token": tok("tokenizer.ggml.eos_token_id"),
        "unk_token": tok("tokenizer.ggml.unknown_token_id"),
        "pad_token": tok("tokenizer.ggml.padding_token_id"),
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(meta.get("llama.context_length", 2048)),
    }
    if meta.get("tokenizer.chat_template"):
        tk_config["chat_template"] = meta["tokenizer.chat_template"]
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tk_config, indent=2, ensure_ascii=False))
    (out_dir / "special_tokens_map.json").write_text(json.dumps(
        {k: v for k, v in tk_config.items() if k.endswith("_token") and v}, indent=2, ensure_ascii=False))


def convert_gguf(path: Path, out_dir: Path) -> dict[str, Any]:
    """Write an mlx-lm folder for the GGUF at `path` into `out_dir` (which must exist and be empty).

    Returns a summary: architecture, quantization label, config.
    """
    import mlx.core as mx

    path = Path(path)
    contents = read_gguf(path)
    meta = contents.metadata
    arch = _check_architecture(meta, path.name)
    try:
        config = build_config(meta, contents.weights)
    except KeyError as exc:
        raise ImportFailed(f"{path.name} lacks the metadata key {exc}.", "The file is incomplete; "
                           "download it again.") from exc
    weights = map_tensors(contents.weights, config)
    quant, label = quantization_config(weights, config)
    if quant:
        config["quantization"] = quant
    build_tokenizer_files(meta, out_dir, path.name)
    mx.save_safetensors(str(out_dir / "model.safetensors"), weights, metadata={"format": "mlx"})
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    return {"architecture": arch, "quantization": label, "config": config,
            "name": meta.get("general.name", path.stem), "license": meta.get("general.license", "")}
