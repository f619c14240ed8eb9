"""tokenizer.json + tokenizer_config.json from a GGUF file's vocabulary metadata.

Two vocabulary kinds are read:
  - 'gpt2' (byte-level BPE: SmolLM, Llama 3, Qwen): rebuilt here from tokens + merges + the named pre-tokenizer;
  - 'llama' (SentencePiece: Gemma, Llama 2, Mistral v0.1, Phi-3): rebuilt by transformers' own GGUF tokenizer
    converter, which knows each architecture's quirks (Gemma's whitespace tokens and merge order, Phi-3's prefix
    space), so the ids match the reference tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import UnsupportedModel

# Pre-tokenizer regexes llama.cpp names in `tokenizer.ggml.pre`.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SUPPORTED_PRETOKENIZERS = ("default", "gpt-2", "smollm", "llama-bpe", "llama3", "qwen2")
SUPPORTED_VOCABS = ("gpt2", "llama")
_VOCAB_NAMES = "'gpt2' (byte-level BPE) and 'llama' (SentencePiece)"


def check_vocab(meta: dict[str, Any], name: str) -> str:
    """The vocabulary kind, or UnsupportedModel before anything is written."""
    tok_model = meta.get("tokenizer.ggml.model")
    if tok_model not in SUPPORTED_VOCABS:
        raise UnsupportedModel(
            f"{name} uses a '{tok_model}' tokenizer; the GGUF importer reads {_VOCAB_NAMES} vocabularies.",
            "Import the model's Hugging Face or MLX folder instead, which carries its own tokenizer.",
        )
    if tok_model == "gpt2":
        _split_regex(meta, name)  # an unknown pre-tokenizer fails here, not half-way through the import
    return str(tok_model)


def _transformers_splits() -> dict[str, str]:
    """transformers' table of llama.cpp pre-tokenizer names -> split regexes, where this version has one."""
    try:
        from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS
    except ImportError:
        return {}
    return dict(GGUF_PRE_TOKENIZER_SPLITS)


def _split_regex(meta: dict[str, Any], name: str) -> str | None:
    """The split regex for a byte-level BPE (None: GPT-2's own, built into ByteLevel)."""
    pre = str(meta.get("tokenizer.ggml.pre", "default"))
    if pre in ("default", "gpt-2", "smollm"):
        return None
    if pre in ("llama-bpe", "llama3"):
        return LLAMA3_SPLIT
    if pre == "qwen2":
        return QWEN2_SPLIT
    known = _transformers_splits()
    if pre in known:
        return known[pre]
    raise UnsupportedModel(
        f"{name} needs the '{pre}' pre-tokenizer, which the GGUF importer does not know.",
        f"Known: {', '.join(sorted(set(SUPPORTED_PRETOKENIZERS) | set(known)))}. "
        "Import the Hugging Face folder instead.",
    )


def _byte_level_bpe(meta: dict[str, Any], name: str) -> Any:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    tokens: list[str] = list(meta["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    token_types = list(meta.get("tokenizer.ggml.token_type", [1] * len(tokens)))
    tokenizer = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False))
    regex = _split_regex(meta, name)
    if str(meta.get("tokenizer.ggml.pre")) == "smollm":
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True),
             pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    elif regex is not None:
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
    return tokenizer


def _tokenizer_dict(meta: dict[str, Any]) -> dict[str, Any]:
    """GGUF tokenizer metadata under the names transformers' GGUF converters expect."""
    renames = {
        "tokenizer.ggml.model": "tokenizer_type", "tokenizer.ggml.pre": "pre_tokenizer_type",
        "tokenizer.ggml.tokens": "tokens", "tokenizer.ggml.scores": "scores",
        "tokenizer.ggml.token_type": "token_type", "tokenizer.ggml.merges": "merges",
        "tokenizer.ggml.precompiled_charsmap": "precompiled_charsmap",
        "tokenizer.ggml.bos_token_id": "bos_token_id", "tokenizer.ggml.eos_token_id": "eos_token_id",
        "tokenizer.ggml.unknown_token_id": "unk_token_id", "tokenizer.ggml.padding_token_id": "pad_token_id",
        "tokenizer.ggml.add_space_prefix": "add_prefix_space",
    }
    return {new: meta[old] for old, new in renames.items() if old in meta}


def _sentencepiece(meta: dict[str, Any], name: str) -> Any:
    """transformers' converter (the one `from_pretrained(gguf_file=...)` uses), plus BOS when the file asks for it."""
    from tokenizers import processors

    arch = str(meta.get("general.architecture"))
    try:  # transformers >= 5
        from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer
    except ImportError:  # transformers 4.x
        from transformers.integrations.ggml import convert_gguf_tokenizer
    try:
        tokenizer, _ = convert_gguf_tokenizer(arch, _tokenizer_dict(meta))
    except (ValueError, KeyError) as exc:
        raise UnsupportedModel(f"transformers cannot rebuild the SentencePiece tokenizer of {name} ({exc}).",
                               "Import the model's Hugging Face or MLX folder instead.") from exc
    # llama.cpp adds BOS to a SentencePiece vocabulary unless the file says otherwise; the converted tokenizer
    # leaves that to the Python class, which a plain tokenizer.json does not have, so spell it out.
    bos = meta.get("tokenizer.ggml.bos_token_id")
    if bool(meta.get("tokenizer.ggml.add_bos_token", True)) and bos is not None:
        bos_tok = meta["tokenizer.ggml.tokens"][int(bos)]
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos_tok}:0 $A:0", pair=f"{bos_tok}:0 $A:0 $B:1", special_tokens=[(bos_tok, int(bos))])
    return tokenizer


def build_tokenizer_files(meta: dict[str, Any], out_dir: Path, name: str) -> None:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json into out_dir."""
    kind = check_vocab(meta, name)
    tokenizer = _byte_level_bpe(meta, name) if kind == "gpt2" else _sentencepiece(meta, name)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    tokens = meta["tokenizer.ggml.tokens"]

    def tok(key: str) -> str | None:
        i = meta.get(key)
        return tokens[int(i)] if i is not None and 0 <= int(i) < len(tokens) else None

    arch = str(meta.get("general.architecture"))
    tk_config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": tok("tokenizer.ggml.bos_token_id"),
        "eos_token": tok("tokenizer.ggml.eos_token_id"),
        "unk_token": tok("tokenizer.ggml.unknown_token_id"),
        "pad_token": tok("tokenizer.ggml.padding_token_id"),
        # The SentencePiece tokenizer.json adds BOS itself (above); saying so here too would add it twice.
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)) if kind == "gpt2" else False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(meta.get(f"{arch}.context_length", 2048)),
    }
    if meta.get("tokenizer.chat_template"):
        tk_config["chat_template"] = meta["tokenizer.chat_template"]
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tk_config, indent=2, ensure_ascii=False))
    (out_dir / "special_tokens_map.json").write_text(json.dumps(
        {k: v for k, v in tk_config.items() if k.endswith("_token") and v}, indent=2, ensure_ascii=False))
