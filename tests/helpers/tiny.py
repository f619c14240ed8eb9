"""A tiny random llama model (and the same weights as a GGUF file) for fast tests.

The tokenizer is a small byte-level BPE trained on the bundled TOFU questions, with a ChatML template, so the tiny
model goes through exactly the same code paths (chat template, batched generation, LoRA) as a real one.
"""

from __future__ import annotations

import json
from pathlib import Path

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
    "'\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

TINY_CONFIG = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "max_position_embeddings": 512,
    "tie_word_embeddings": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
}


def _corpus() -> list[str]:
    root = Path(__file__).resolve().parents[2] / "resources" / "data"
    lines = []
    for f in sorted(root.glob("tofu/*.jsonl")):  # the TOFU files only: the tiny model must not change when data is added
        for line in f.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            lines.append(row.get("question", "") + " " + str(row.get("answer", "")))
    lines += ["Where did Harry Potter go to school? Hogwarts.", "What is the capital of France? Paris."] * 5
    return lines


def build_tokenizer(out_dir: Path, vocab_size: int = 512):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(), trainer)
    tok.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
        "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "add_bos_token": False,
        "clean_up_tokenization_spaces": False, "chat_template": CHATML, "model_max_length": 512}))
    return tok


def make_tiny_model(out_dir: Path, seed: int = 0, quantize_bits: int | None = None) -> Path:
    """Write a random tiny llama as an mlx-lm folder; returns the folder."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out_dir)
    config = dict(TINY_CONFIG, vocab_size=tok.get_vocab_size())
    mx.random.seed(seed)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    if quantize_bits:
        import mlx.nn as nn

        nn.quantize(model, group_size=32, bits=quantize_bits)
        config["quantization"] = {"group_size": 32, "bits": quantize_bits}
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(out_dir / "model.safetensors"), weights, metadata={"format": "mlx"})
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    return out_dir


def _permute_rows(a, n_head: int):
    """llama.cpp's q/k row permutation (the inverse of what the importer undoes)."""
    rows = a.shape[0]
    rest = a.shape[1:]
    return a.reshape(n_head, 2, rows // n_head // 2, *rest).swapaxes(1, 2).reshape(rows, *rest)


def make_tiny_gguf(model_dir: Path, out_file: Path, architecture: str = "llama") -> Path:
    """Write the tiny model's weights as a GGUF file laid out the way llama.cpp's converter does."""
    import mlx.core as mx

    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    weights = mx.load(str(model_dir / "model.safetensors"))
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
             "post_attention_layernorm": "ffn_norm"}
    out = {}
    for k, v in weights.items():
        if k.startswith("model.layers."):
            parts = k.split(".")
            layer, module, suffix = parts[2], ".".join(parts[3:-1]), parts[-1]
            kind = names[module]
            if kind == "attn_q":
                v = _permute_rows(v, config["num_attention_heads"])
            elif kind == "attn_k":
                v = _permute_rows(v, config["num_key_value_heads"])
            out[f"blk.{layer}.{kind}.{suffix}"] = v
        elif k.startswith("model.embed_tokens"):
            out["token_embd." + k.split(".")[-1]] = v
        elif k.startswith("model.norm"):
            out["output_norm." + k.split(".")[-1]] = v
        elif k.startswith("lm_head"):
            out["output." + k.split(".")[-1]] = v
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    token_type = [3 if t in SPECIALS else 1 for t in tokens]
    p = architecture + "."
    meta = {
        "general.architecture": architecture,
        "general.name": "tiny-test",
        p + "block_count": mx.array(config["num_hidden_layers"], dtype=mx.uint32),
        p + "embedding_length": mx.array(config["hidden_size"], dtype=mx.uint32),
        p + "feed_forward_length": mx.array(config["intermediate_size"], dtype=mx.uint32),
        p + "attention.head_count": mx.array(config["num_attention_heads"], dtype=mx.uint32),
        p + "attention.head_count_kv": mx.array(config["num_key_value_heads"], dtype=mx.uint32),
        p + "attention.layer_norm_rms_epsilon": mx.array(config["rms_norm_eps"], dtype=mx.float32),
        p + "rope.freq_base": mx.array(config["rope_theta"], dtype=mx.float32),
        p + "context_length": mx.array(config["max_position_embeddings"], dtype=mx.uint32),
        p + "vocab_size": mx.array(len(tokens), dtype=mx.uint32),
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.token_type": mx.array(token_type, dtype=mx.int32),
        "tokenizer.ggml.bos_token_id": mx.array(1, dtype=mx.uint32),
        "tokenizer.ggml.eos_token_id": mx.array(2, dtype=mx.uint32),
        "tokenizer.ggml.padding_token_id": mx.array(0, dtype=mx.uint32),
        "tokenizer.chat_template": CHATML,
    }
    mx.save_gguf(str(out_file), out, meta)
    return Path(out_file)
