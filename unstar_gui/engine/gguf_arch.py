"""Per-architecture knowledge for the GGUF importer: tensor names, config.json fields, and llama.cpp's weight edits.

llama.cpp's converter (convert_hf_to_gguf.py) renames every tensor and, for some architectures, changes the
weights themselves; each ArchSpec says how to go back to the Hugging Face layout that mlx-lm's model classes read:
  - llama (and Mistral, which llama.cpp files as 'llama'): q/k projection rows permuted for interleaved RoPE;
  - gemma3: every RMSNorm weight stored as 1 + w (mlx-lm's Gemma RMSNorm adds the 1 itself);
  - qwen2, qwen3, phi3: stored as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import UnsupportedModel

# GGUF block-tensor pieces shared by the llama family -> mlx-lm (Hugging Face) module names.
_LLAMA_LAYER = {
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
_QK_NORM = {"attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"}
_GEMMA3_LAYER = dict(
    _LLAMA_LAYER,
    **_QK_NORM,
    # Gemma has four norms per block; llama.cpp's names for them differ from the llama ones.
    attn_norm="input_layernorm",
    post_attention_norm="post_attention_layernorm",
    ffn_norm="pre_feedforward_layernorm",
    post_ffw_norm="post_feedforward_layernorm",
)
_PHI3_LAYER = {
    # Phi-3 keeps q/k/v and gate/up fused, in GGUF and in mlx-lm alike.
    "attn_qkv": "self_attn.qkv_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_up": "mlp.gate_up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}

Meta = dict[str, Any]


@dataclass(frozen=True)
class ArchSpec:
    gguf_name: str  # general.architecture
    model_type: str  # config.json model_type (selects the mlx-lm model class)
    hf_class: str  # config.json architectures[0]
    layer_names: dict[str, str]
    permute_qk: bool = False  # llama.cpp permuted q/k rows for interleaved RoPE
    norm_shift: float = 0.0  # llama.cpp added this to every *norm.weight
    extra_config: Callable[[Meta, dict[str, Any]], dict[str, Any]] = field(default=lambda meta, cfg: {})
    # rope.scaling.* metadata -> config rope_scaling (_rope_scaling); phi3's LongRoPE is not mapped.
    rope_scaling: bool = True
    # Tensors llama.cpp writes that mlx-lm recomputes or does not use.
    skip_tensors: tuple[str, ...] = ("rope_freqs",)


def _get(meta: Meta, arch: str, key: str, default: Any = None) -> Any:
    return meta.get(f"{arch}.{key}", default)


def _rope_scaling(meta: Meta, arch: str) -> dict[str, Any] | None:
    """rope.scaling.* metadata -> config rope_scaling; kinds mlx-lm can't run are refused."""
    kind = str(_get(meta, arch, "rope.scaling.type", "none") or "none")
    factor = _get(meta, arch, "rope.scaling.factor")
    if kind == "none" or not factor or float(factor) == 1.0:
        return None
    if kind == "linear":
        return {"type": "linear", "factor": float(factor)}
    if kind == "yarn":
        orig = _get(meta, arch, "rope.scaling.original_context_length")
        out: dict[str, Any] = {"type": "yarn", "factor": float(factor)}
        if orig:
            out["original_max_position_embeddings"] = int(orig)
        return out
    raise UnsupportedModel(f"This GGUF uses '{kind}' RoPE scaling, which the importer does not map.",
                           "Import the model's Hugging Face or MLX folder instead.")


def _qwen3_extra(meta: Meta, cfg: dict[str, Any]) -> dict[str, Any]:
    # mlx-lm's qwen3 reads head_dim unconditionally.
    return {"head_dim": cfg.get("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])}


def _gemma3_extra(meta: Meta, cfg: dict[str, Any]) -> dict[str, Any]:
    head_dim = cfg.get("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
    # llama.cpp (src/llama-model.cpp, LLM_ARCH_GEMMA3): the 27B model (62 layers) scales queries by
    # hidden/n_head, every other size by head_dim; the sliding-window pattern (5 local : 1 global) and the
    # local RoPE base 10000 are fixed there too rather than stored in the file.
    scalar = cfg["hidden_size"] // cfg["num_attention_heads"] if cfg["num_hidden_layers"] == 62 else head_dim
    out: dict[str, Any] = {
        "head_dim": head_dim,
        "query_pre_attn_scalar": scalar,
        "sliding_window": int(_get(meta, "gemma3", "attention.sliding_window", 512)),
        "sliding_window_pattern": _sliding_period(_get(meta, "gemma3", "attention.sliding_window_pattern", 6)),
        # Newer llama.cpp files state the local RoPE base; older ones rely on the same fixed 10000.
        "rope_local_base_freq": float(_get(meta, "gemma3", "rope.freq_base_swa", 10000.0)),
    }
    return out


def _sliding_period(pattern: Any) -> int:
    """llama.cpp stores the pattern as a period or as one flag per layer (True = sliding); mlx-lm takes a period."""
    if not isinstance(pattern, list):
        return int(pattern)
    period = next((i + 1 for i, sliding in enumerate(pattern) if not sliding), len(pattern) + 1)
    if any(bool(s) != ((i + 1) % period != 0) for i, s in enumerate(pattern)):
        raise UnsupportedModel("This Gemma 3 GGUF has an irregular sliding-window layer pattern.",
                               "Import the model's Hugging Face or MLX folder instead.")
    return period


def _phi3_extra(meta: Meta, cfg: dict[str, Any]) -> dict[str, Any]:
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    rot = _get(meta, "phi3", "rope.dimension_count")
    out: dict[str, Any] = {}
    if rot and int(rot) != head_dim:
        out["partial_rotary_factor"] = int(rot) / head_dim
    orig = _get(meta, "phi3", "rope.scaling.original_context_length")
    if orig:
        out["original_max_position_embeddings"] = int(orig)
    return out


ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": ArchSpec("llama", "llama", "LlamaForCausalLM", _LLAMA_LAYER, permute_qk=True),
    "qwen2": ArchSpec("qwen2", "qwen2", "Qwen2ForCausalLM", _LLAMA_LAYER),
    "qwen3": ArchSpec("qwen3", "qwen3", "Qwen3ForCausalLM", dict(_LLAMA_LAYER, **_QK_NORM),
                      extra_config=_qwen3_extra),
    "gemma3": ArchSpec("gemma3", "gemma3_text", "Gemma3ForCausalLM", _GEMMA3_LAYER, norm_shift=1.0,
                       extra_config=_gemma3_extra),
    "phi3": ArchSpec("phi3", "phi3", "Phi3ForCausalLM", _PHI3_LAYER, extra_config=_phi3_extra, rope_scaling=False),
}
SUPPORTED_ARCHITECTURES = tuple(ARCHITECTURES)
# Shown in messages: what a person would recognise.
SUPPORTED_FAMILIES = "Llama, Mistral, SmolLM, Qwen2/2.5, Qwen3, Gemma 3 and Phi-3"


def arch_spec(meta: Meta, name: str) -> ArchSpec:
    arch = str(meta.get("general.architecture", "unknown"))
    spec = ARCHITECTURES.get(arch)
    if spec is None:
        raise UnsupportedModel(
            f"{name} is a '{arch}' model; the GGUF importer supports the {', '.join(SUPPORTED_ARCHITECTURES)} "
            f"architectures ({SUPPORTED_FAMILIES}).",
            "Import the model's Hugging Face or MLX folder instead (`unstar models import FOLDER`).",
        )
    return spec


def _int_or_none(v: Any) -> int | None:
    return None if v is None else int(v)


def build_config(meta: Meta, spec: ArchSpec, tensor_names: set[str]) -> dict[str, Any]:
    """config.json for mlx-lm from the GGUF metadata (KeyError when a required key is missing)."""
    p = spec.gguf_name
    n_head = int(meta[f"{p}.attention.head_count"])
    hidden = int(meta[f"{p}.embedding_length"])
    ffn = meta[f"{p}.feed_forward_length"]
    if isinstance(ffn, list):  # per-layer sizes (e.g. OpenELM, Gemma 3n): no mlx-lm class here takes them
        raise UnsupportedModel("This GGUF has a different feed-forward size per layer.",
                               "Import the model's Hugging Face or MLX folder instead.")
    config: dict[str, Any] = {
        "model_type": spec.model_type,
        "architectures": [spec.hf_class],
        "hidden_size": hidden,
        "num_hidden_layers": int(meta[f"{p}.block_count"]),
        "intermediate_size": int(ffn),
        "num_attention_heads": n_head,
        "num_key_value_heads": int(meta.get(f"{p}.attention.head_count_kv", n_head)),
        "rms_norm_eps": float(meta.get(f"{p}.attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(meta.get(f"{p}.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(meta.get(f"{p}.context_length", 2048)),
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "bos_token_id": _int_or_none(meta.get("tokenizer.ggml.bos_token_id")),
        "eos_token_id": _int_or_none(meta.get("tokenizer.ggml.eos_token_id")),
    }
    vocab = meta.get(f"{p}.vocab_size") or len(meta.get("tokenizer.ggml.tokens", []))
    config["vocab_size"] = int(vocab)
    head_dim = meta.get(f"{p}.attention.key_length") or (
        meta.get(f"{p}.rope.dimension_count") if spec.gguf_name == "llama" else None)
    if head_dim and int(head_dim) != hidden // n_head:
        config["head_dim"] = int(head_dim)
    if spec.gguf_name == "llama":
        config["attention_bias"] = "blk.0.attn_q.bias" in tensor_names
        config["mlp_bias"] = "blk.0.ffn_up.bias" in tensor_names
    config.update(spec.extra_config(meta, config))
    scaling = _rope_scaling(meta, spec.gguf_name) if spec.rope_scaling else None
    if scaling:
        config["rope_scaling"] = scaling
    return config


def llama3_rope_scaling(factors: Any, config: dict[str, Any]) -> dict[str, Any]:
    """Llama 3.1+ files carry the RoPE frequency factors as a `rope_freqs` tensor instead of the scaling settings.

    Recompute the factors convert_hf_to_gguf.py writes for the usual settings and return the ones that match,
    so mlx-lm applies the same frequencies; anything else is refused rather than silently run with plain RoPE.
    """
    import numpy as np

    got = np.asarray(factors, dtype=np.float64).reshape(-1)
    head_dim = config.get("head_dim", config["hidden_size"] // config["num_attention_heads"])
    base = config["rope_theta"]
    freqs = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    for factor in (8.0, 16.0, 32.0, 4.0, 2.0):
        for orig in (8192, 4096, 131072):
            low, high = 1.0, 4.0
            low_wav, high_wav = orig / low, orig / high
            out = []
            for f in freqs:
                wav = 2 * math.pi / f
                if wav < high_wav:
                    out.append(1.0)
                elif wav > low_wav:
                    out.append(factor)
                else:
                    smooth = (orig / wav - low) / (high - low)
                    out.append(1.0 / ((1 - smooth) / factor + smooth))
            if len(out) == got.size and np.allclose(out, got, rtol=1e-3):
                return {"rope_type": "llama3", "factor": factor, "low_freq_factor": low, "high_freq_factor": high,
                        "original_max_position_embeddings": orig}
    raise UnsupportedModel("This GGUF carries RoPE frequency factors (rope_freqs) the importer does not recognise.",
                           "Import the model's Hugging Face or MLX folder instead.")


def mlx_name(gguf_name: str, spec: ArchSpec) -> str | None:
    """The mlx-lm parameter name for a GGUF tensor name, None for tensors to drop; UnsupportedModel if unknown."""
    parts = gguf_name.split(".")
    suffix = parts[-1]  # weight / bias (and, for MLX-packed tensors, scales / biases)
    if parts[0] == "blk" and len(parts) >= 4:
        layer, kind = parts[1], ".".join(parts[2:-1])
        if kind in spec.layer_names:
            return f"model.layers.{layer}.{spec.layer_names[kind]}.{suffix}"
    elif parts[0] in spec.skip_tensors:
        return None
    elif len(parts) == 2 and parts[0] in TOP_NAMES:
        return f"{TOP_NAMES[parts[0]]}.{suffix}"
    raise UnsupportedModel(
        f"Unexpected tensor '{gguf_name}' in this '{spec.gguf_name}' GGUF file.",
        "This file's layout is not one the importer knows (a fine-tune with extra modules, or a multimodal "
        "model?); import the Hugging Face folder instead.")
