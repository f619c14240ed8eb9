"""Export a finished forget job: the mlx-lm adapter, a fused model, or an fp16 GGUF, each with a model card.

Each export is a generator of events (like every long job in the engine): the CLI prints them, the GUI shows them,
and `Finished.summary` holds {"kind", "path", "card", "warnings", "bytes"}. A `cancel` object with a `.cancelled`
flag is checked between stages.

What keeps an export trustworthy:
- it loads the base exactly as mlx-lm does (`mlx_lm.load(base, adapter_path=...)`, stored dtype, no dequantizing),
  so the fused weights are what plain mlx-lm computes with the adapter on;
- a fused model that is re-quantized (or keeps a quantized base, which re-quantizes the fused layers) is checked
  against the job's re-quantization attack results, and a warning with the numbers is raised when the evaluation saw
  the fact come back at that bit width;
- output is built in a hidden sibling folder and renamed into place at the end, so a failure or a cancel leaves
  nothing half-written, and an existing target is only replaced when asked to (overwrite=True / --force) and only
  when it is an earlier export of ours: every export carries a marker (`.unstar-export.json` inside a folder export,
  `.<file>.unstar-export.json` beside a GGUF file) and --force replaces nothing the marker does not vouch for.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import os
import re
import shlex
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .errors import Cancelled, InvalidInput, JobError, StorageError, UnsupportedModel
from .events import Event, Finished, Log, Progress, StageStarted
from .fsutil import dir_size, ensure_free_space
from .jobs import Job, open_job
from .model_card import findings_at, quantization_findings, render_card

GGUF_MODEL_TYPES = ("llama", "mistral")
QUANT_BITS = (2, 3, 4, 5, 6, 8)
QUANT_GROUP_SIZES = (32, 64, 128)
CARD_NAME = "README.md"
MARKER_NAME = ".unstar-export.json"
EXPORT_KINDS = ("adapters", "fused", "gguf")
# LM Studio lists every <publisher>/<model>/<file>.gguf under its models folder; ours go under this publisher.
LMSTUDIO_PUBLISHER = "unstar"
# Room for the card and config on top of the weights and tokenizer files.
_CARD_BYTES = 1_000_000


# Inputs ----------------------------------------------------------------------------------------------------------
def _open_finished_job(job_dir: Path) -> tuple[Job, dict[str, Any], dict[str, Any] | None]:
    job = open_job(job_dir)
    data = job.read()
    if not job.has_adapters:
        raise JobError(f"The job in {job.dir} has no adapter to export (adapters/adapters.safetensors and "
                       "adapter_config.json are missing).",
                       "Run the forget job to the end (or resume it) first; export works on its adapters/ folder.")
    return job, data, job.read_report()


def _base_dir(data: dict[str, Any]) -> Path:
    """The base model's folder, vouched for by the registry (jobs.base_model_dir: job.json is untrusted input)."""
    from .jobs import base_model_dir

    return base_model_dir(data)


def _status_notes(data: dict[str, Any]) -> Iterator[Event]:
    status = data.get("status", "created")
    if status != "done":
        yield Log(f"The job's status is '{status}', not 'done': its adapter is from an unfinished run and the "
                  "evaluation in the card may be incomplete.", level="warning")


def _check_cancel(cancel: Any) -> None:
    if cancel is not None and getattr(cancel, "cancelled", False):
        raise Cancelled("Export cancelled; nothing was written.")


# Output folders --------------------------------------------------------------------------------------------------
def sidecar_marker(gguf_file: Path) -> Path:
    """The marker beside a single-file (GGUF) export: hidden, named after the file, listing every file written."""
    return gguf_file.with_name(f".{gguf_file.name}.unstar-export.json")


def _marker_files(marker: Path) -> list[str] | None:
    """The file names an export marker vouches for, or None when `marker` is not one of ours (missing, unreadable,
    or some other JSON)."""
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("app") != "UnStar Studio" or data.get("kind") not in EXPORT_KINDS:
        return None
    files = data.get("files")
    return [str(f) for f in files] if isinstance(files, list) else []


def _write_marker(path: Path, job: Job, kind: str, files: list[str]) -> None:
    path.write_text(json.dumps({"app": "UnStar Studio", "kind": kind, "job": str(job.dir),
                                "time": _dt.datetime.now().isoformat(timespec="seconds"), "files": files},
                               indent=2), encoding="utf-8")


def _foreign_files(path: Path, sidecar: Path | None = None) -> list[str]:
    """What in `path` no export marker of ours vouches for; --force replaces `path` only when this is empty.

    A folder is ours only through its marker (file names like config.json prove nothing: a user's project may have
    one), and only as far as the marker lists its files, so notes someone added to an export folder are not wiped.
    A single file is ours when the sidecar marker of the export it belongs to lists it.
    """
    if path.is_dir():
        names = sorted(p.name for p in path.iterdir())
        vouched = set(_marker_files(path / MARKER_NAME) or []) | {MARKER_NAME}
        return [name for name in names if name not in vouched]
    return [] if sidecar is not None and path.name in (_marker_files(sidecar) or []) else [path.name]


def _check_targets(targets: list[Path], overwrite: bool, protected: list[Path], sidecar: Path | None = None) -> None:
    for target in targets:
        resolved = target.resolve()
        for p in protected:
            p = p.resolve()
            if resolved == p or resolved in p.parents:
                raise InvalidInput(f"{target} is (or holds) the job's own files or the base model.",
                                   "Export to a new folder outside the job and the model library.")
        if not target.exists():
            continue
        if not overwrite:
            raise InvalidInput(f"{target} already exists; nothing was written.",
                               "Choose another path, or pass --force (overwrite=True) to replace it.")
        foreign = _foreign_files(target, sidecar)
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            what = f"holds files UnStar did not export ({shown})" if target.is_dir() else \
                "is a file UnStar did not export (no UnStar export marker vouches for it)"
            raise InvalidInput(f"{target} {what}, so --force does not replace it; nothing was written.",
                               "Choose a new or empty folder, or move those files away yourself first.")
    with _staging(targets[0]):
        pass  # a read-only folder fails here, before minutes of fusing, not at the end


def _replace(src: Path, dst: Path) -> None:
    """Move `src` onto `dst`; an existing `dst` is set aside first and restored if the move fails."""
    if not dst.exists():
        os.replace(src, dst)
        return
    aside = dst.with_name(f".{dst.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(dst, aside)
    try:
        os.replace(src, dst)
    except BaseException:
        os.replace(aside, dst)
        raise
    if aside.is_dir():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink(missing_ok=True)


@contextlib.contextmanager
def _staging(anchor: Path) -> Iterator[Path]:
    """A hidden folder beside `anchor` (same file system, so the final rename is atomic); removed on any failure,
    cancel, or when the consumer stops iterating."""
    try:
        anchor.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{anchor.name}.partial-", dir=anchor.parent))
    except OSError as exc:  # a read-only folder or disk: say where, not a traceback
        raise StorageError(f"Cannot write the export in {anchor.parent}: {exc.strerror or exc}.",
                           "Choose a folder you can write to (one in your home folder, say), or make this one "
                           "writable.") from exc
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private (0700); an export is meant to be shared like any folder
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _versions() -> dict[str, str]:
    import mlx.core as mx
    import mlx_lm

    from .. import __version__

    return {"UnStar Studio": __version__, "mlx": mx.__version__, "mlx-lm": mlx_lm.__version__}


def _write_card(path: Path, data: dict[str, Any], report: dict[str, Any] | None, kind: str, final: Path,
                details: dict[str, Any], warnings: list[str]) -> None:
    # Plain write: the staging folder already makes the whole export appear at once.
    path.write_text(render_card(data, report, kind, str(final.resolve()), details=details, warnings=warnings,
                                versions=_versions()), encoding="utf-8")


def _finished(job: Job, kind: str, out: Path, card: Path, warnings: list[str], **extra: Any) -> Finished:
    return Finished(job_dir=str(job.dir), summary={"kind": kind, "path": str(out), "card": str(card),
                                                   "warnings": warnings, "bytes": dir_size(out), **extra})


# Adapters --------------------------------------------------------------------------------------------------------
def export_adapters(job_dir: Path, out: Path, overwrite: bool = False, cancel: Any = None) -> Iterator[Event]:
    """Copy the job's mlx-lm adapter (adapters.safetensors + adapter_config.json) to `out`, with a model card."""
    out = Path(out).expanduser()
    job, data, report = _open_finished_job(Path(job_dir))
    base = _base_dir(data)
    _check_targets([out], overwrite, [job.dir, job.adapters_dir, base])
    ensure_free_space(out.parent, dir_size(job.adapters_dir) + _CARD_BYTES, "the adapter export")
    yield StageStarted("export", f"adapter -> {out}")
    yield from _status_notes(data)
    _check_cancel(cancel)
    with _staging(out) as tmp:
        for name in ("adapters.safetensors", "adapter_config.json"):
            shutil.copy2(job.adapters_dir / name, tmp / name)
        config = json.loads((job.adapters_dir / "adapter_config.json").read_text())
        details = {"Files": "adapters.safetensors, adapter_config.json (mlx-lm LoRA format)",
                   "LoRA": f"rank {config.get('lora_parameters', {}).get('rank')}, scale "
                           f"{config.get('lora_parameters', {}).get('scale')}, last {config.get('num_layers')} "
                           "layers"}
        _write_card(tmp / CARD_NAME, data, report, "adapters", out, details, [])
        _write_marker(tmp / MARKER_NAME, job, "adapters", sorted(p.name for p in tmp.iterdir()))
        _check_cancel(cancel)
        _replace(tmp, out)
    yield _finished(job, "adapters", out, out / CARD_NAME, [])


# Fused model -----------------------------------------------------------------------------------------------------
def _quantization_of(config: dict[str, Any]) -> tuple[int, int] | None:
    q = config.get("quantization") or config.get("quantization_config")
    if isinstance(q, dict) and "bits" in q:
        return int(q["bits"]), int(q.get("group_size", 64))
    return None


def _weights_bytes(model_dir: Path) -> int:
    return sum(p.stat().st_size for p in Path(model_dir).glob("*.safetensors"))


def _other_files_bytes(model_dir: Path) -> int:
    """Tokenizer, config and card: everything an export writes besides the weights."""
    return dir_size(model_dir) - _weights_bytes(model_dir) + _CARD_BYTES


def _estimate_bytes(stored: int, base_q: tuple[int, int] | None, out_bits: int | None,
                    out_group: int | None) -> int:
    """Rough size of the exported weights, to refuse before loading anything: 16-bit when dequantized."""
    # A quantized layer costs `bits` per weight plus a 16-bit scale and bias per group.
    per_weight = (base_q[0] + 32 / base_q[1]) if base_q else 16.0
    params = stored * 8 / per_weight
    if out_bits is None:
        return int(params * 2)
    return int(params * (out_bits + 32 / (out_group or 64)) / 8)


def _load_fused(base: Path, adapters: Path, dequantize: bool) -> tuple[Any, Any, dict[str, Any], list[str]]:
    """Load the base as mlx-lm does, apply the adapter, and merge every LoRA layer into its linear layer.

    Merged layers come back unquantized (base weight + LoRA delta, in the base's float dtype), exactly what mlx-lm
    computes with the adapter on; the other layers stay as stored unless `dequantize`. Also returns the merged
    layers' module paths.
    """
    import mlx.core as mx
    from mlx.utils import tree_unflatten
    from mlx_lm.utils import dequantize_model

    from .llm import load_model_files

    model, tokenizer, config = load_model_files(base, adapter_path=str(adapters), return_config=True)
    fused = [(name, m.fuse(dequantize=True)) for name, m in model.named_modules() if hasattr(m, "fuse")]
    if not fused:
        raise JobError("The job's adapter holds no LoRA layers to merge.", "Re-run the forget job.")
    model.update_modules(tree_unflatten(fused))
    if dequantize:
        model = dequantize_model(model)
        config.pop("quantization", None)
        config.pop("quantization_config", None)
    mx.eval(model.parameters())
    return model, tokenizer, config, [name for name, _ in fused]


def _keep_mixed_precision(model: Any, config: dict[str, Any], adapted: list[str], bits: int | None,
                          group_size: int) -> None:
    """A quantized base's default fused export: the base's own layers keep their stored quantization (bit for bit),
    the merged layers stay unquantized, or go to `bits` (8 is close to lossless).

    Re-quantizing merged layers to the base's 4 bits can undo the small weight change that made the model forget,
    which is what the evaluation's re-quantization attack measures. mlx-lm's loader reads per-layer entries in
    config["quantization"][<module path>]: a {"bits", "group_size"} dict, or False for a layer kept in float.
    """
    import mlx.nn as nn

    per_layer: dict[str, Any] | bool = False
    if bits is not None:
        per_layer = {"group_size": group_size, "bits": bits}
        wanted = set(adapted)
        nn.quantize(model, class_predicate=lambda path, _: path in wanted and dict(per_layer))
    quantization = dict(config["quantization"])
    quantization.update({path: per_layer for path in adapted})
    config["quantization"] = quantization
    config.pop("quantization_config", None)  # save_config rewrites it from "quantization"


def _param_bytes(model: Any) -> int:
    from mlx.utils import tree_flatten

    return sum(v.nbytes for _, v in tree_flatten(model.parameters()))


def requantization_warnings(report: dict[str, Any] | None, bits: int, group_size: int | None) -> list[str]:
    """Warnings, with the evaluation's numbers, when it saw the fact come back after quantizing to `bits`."""
    hits = [f for f in findings_at(quantization_findings(report), bits, group_size)
            if f.recovery is not None and f.recovery > 0]
    return [f"Re-quantization can bring the fact back. The job's evaluation measured {f.describe()}; this export is "
            f"{bits}-bit (group size {group_size}). Prefer --dequantize, or a bit width the evaluation found safe."
            for f in hits]


def _check_quant_args(dequantize: bool, q_bits: int | None, q_group_size: int, adapted_bits: int | None = None,
                      base_q: tuple[int, int] | None = None) -> None:
    if q_bits is not None and dequantize:
        raise InvalidInput("--dequantize and --q-bits ask for two different outputs.",
                           "Pass --dequantize for a 16-bit model, or --q-bits N to re-quantize, not both.")
    for bits in (q_bits, adapted_bits):
        if bits is not None and bits not in QUANT_BITS:
            raise InvalidInput(f"{bits}-bit quantization is not available.",
                               f"Choose one of {', '.join(map(str, QUANT_BITS))} bits.")
    if adapted_bits is not None and (base_q is None or dequantize or q_bits is not None):
        raise InvalidInput("--adapted-bits applies to the default fused export of a quantized base only.",
                           "Drop --adapted-bits, or --dequantize / --q-bits, or use it with a quantized base.")
    if q_group_size not in QUANT_GROUP_SIZES:
        raise InvalidInput(f"Group size {q_group_size} is not available.",
                           f"Choose one of {', '.join(map(str, QUANT_GROUP_SIZES))}.")


def _requantized_at(base_q: tuple[int, int] | None, dequantize: bool, q_bits: int | None, q_group_size: int,
                    adapted_bits: int | None) -> tuple[int, int] | None:
    """The (bits, group size) the merged layers get quantized to, which is what the re-quantization attack tests;
    None when they stay unquantized."""
    if q_bits is not None:
        return q_bits, q_group_size
    if base_q is not None and not dequantize and adapted_bits is not None:
        return adapted_bits, base_q[1]
    return None


def _fused_quantization_text(base_q: tuple[int, int] | None, dequantize: bool, q_bits: int | None,
                             q_group_size: int, adapted_bits: int | None, adapted: int) -> str:
    if q_bits is not None:
        return f"{q_bits}-bit, group size {q_group_size} (every layer re-quantized)"
    if base_q is None or dequantize:
        return "none (16/32-bit floats)"
    merged = f"{adapted_bits}-bit, group size {base_q[1]}" if adapted_bits else "unquantized (as evaluated)"
    return (f"mixed: the {adapted} layers the adapter changed are {merged}; every other layer keeps the base's "
            f"{base_q[0]}-bit, group size {base_q[1]} weights unchanged")


def _requantization_notes(report: dict[str, Any] | None, requant: tuple[int, int] | None,
                          warnings: list[str]) -> Iterator[Event]:
    for w in warnings:
        yield Log(w, level="warning")
    if requant is not None and not warnings and not findings_at(quantization_findings(report), *requant):
        yield Log(f"The evaluation did not test {requant[0]}-bit re-quantization, so nobody has checked that the "
                  "fact stays gone at that width. Run the evaluation with the quantization attack to check.")


def export_fused(job_dir: Path, out: Path, dequantize: bool = False, q_bits: int | None = None,
                 q_group_size: int = 64, overwrite: bool = False, cancel: Any = None,
                 adapted_bits: int | None = None) -> Iterator[Event]:
    """Merge the adapter into the base and save an mlx-lm model folder (weights, config, tokenizer, card).

    Quantization of the output: by default the base's own, except that on a quantized base the layers the adapter
    changed stay unquantized (or `adapted_bits`, e.g. 8) while the rest keep the base's stored weights (mixed
    precision); none (`dequantize=True`); or `q_bits`/`q_group_size` for every layer (the base is dequantized first,
    then quantized; warns with the evaluation's numbers when it saw the fact come back at that width).
    """
    from mlx_lm.utils import quantize_model, save_config, save_model

    out = Path(out).expanduser()
    job, data, report = _open_finished_job(Path(job_dir))
    base = _base_dir(data)
    base_config = json.loads((base / "config.json").read_text())
    base_q = _quantization_of(base_config)
    _check_quant_args(dequantize, q_bits, q_group_size, adapted_bits, base_q)
    _check_targets([out], overwrite, [job.dir, job.adapters_dir, base])
    out_q = (q_bits, q_group_size) if q_bits is not None else (None if dequantize else base_q)
    ensure_free_space(out.parent, _estimate_bytes(_weights_bytes(base), base_q, *(out_q or (None, None)))
                      + _other_files_bytes(base), "the fused model")
    yield StageStarted("export", f"fused model -> {out}")
    yield from _status_notes(data)

    requant = _requantized_at(base_q, dequantize, q_bits, q_group_size, adapted_bits)
    warnings = requantization_warnings(report, *requant) if requant else []
    yield from _requantization_notes(report, requant, warnings)
    _check_cancel(cancel)

    yield Progress("export", 1, 4, "loading the base model with the adapter")
    model, tokenizer, config, adapted = _load_fused(base, job.adapters_dir,
                                                    dequantize=dequantize or q_bits is not None)
    _check_cancel(cancel)
    if base_q is not None and not dequantize and q_bits is None:
        yield Progress("export", 2, 4, "keeping the adapted layers precise, the rest as the base stores them")
        _keep_mixed_precision(model, config, adapted, adapted_bits, base_q[1])
    elif q_bits is not None:
        yield Progress("export", 2, 4, f"quantizing to {q_bits}-bit, group size {q_group_size}")
        config.pop("quantization", None)
        config.pop("quantization_config", None)
        # mlx-lm prints a bits-per-weight line; progress goes through events here.
        with contextlib.redirect_stdout(io.StringIO()):
            model, config = quantize_model(model, config, q_group_size, q_bits)
    ensure_free_space(out.parent, _param_bytes(model) + _other_files_bytes(base), "the fused model")
    _check_cancel(cancel)

    yield Progress("export", 3, 4, "writing weights, config and tokenizer")
    with _staging(out) as tmp:
        save_model(tmp, model)
        save_config(dict(config), tmp / "config.json")
        tokenizer.save_pretrained(str(tmp))
        details = {"Files": "an mlx-lm model folder (model*.safetensors, config.json, tokenizer)",
                   "Base quantization": f"{base_q[0]}-bit, group size {base_q[1]}" if base_q else "none",
                   "Quantization of this model": _fused_quantization_text(base_q, dequantize, q_bits, q_group_size,
                                                                          adapted_bits, len(adapted))}
        _write_card(tmp / CARD_NAME, data, report, "fused", out, details, warnings)
        _write_marker(tmp / MARKER_NAME, job, "fused", sorted(p.name for p in tmp.iterdir()))
        _check_cancel(cancel)
        _replace(tmp, out)
    yield Progress("export", 4, 4, "done")
    yield _finished(job, "fused", out, out / CARD_NAME, warnings)


# GGUF ------------------------------------------------------------------------------------------------------------
def _check_gguf_config(config: dict[str, Any]) -> None:
    model_type = str(config.get("model_type", "unknown"))
    if model_type not in GGUF_MODEL_TYPES:
        raise UnsupportedModel(
            f"GGUF export supports {' and '.join(GGUF_MODEL_TYPES)} models; this job's base is a '{model_type}' "
            "model.", "Export the fused MLX model instead (`unstar export --fused OUT`), or the adapter (--adapters).")
    scaling = config.get("rope_scaling") or {}
    kind = scaling.get("type") or scaling.get("rope_type")
    if kind and kind != "linear":
        raise UnsupportedModel(
            f"This model uses '{kind}' RoPE scaling, which mlx-lm's GGUF exporter does not write; the GGUF would "
            "answer differently from the evaluated model.",
            "Export the fused MLX model instead (--fused), or convert that with llama.cpp's convert_hf_to_gguf.py.")


def _gguf_tensors(model: Any, config: dict[str, Any]) -> dict[str, Any]:
    """mlx-lm's exporter layout: llama.cpp's q/k row permutation, GGUF names, fp16 weights and fp32 norms."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.gguf import permute_weights, translate_weight_names

    n_head = int(config["num_attention_heads"])
    n_kv = int(config.get("num_key_value_heads") or n_head)
    out = {}
    for name, w in tree_flatten(model.parameters()):
        if "self_attn.q_proj.weight" in name:
            w = permute_weights(w, n_head, n_head)
        elif "self_attn.k_proj.weight" in name:
            w = permute_weights(w, n_head, n_kv)
        gguf_name = translate_weight_names(name)
        out[gguf_name] = w.astype(mx.float32 if "norm" in gguf_name else mx.float16)
    return out


def _pre_tokenizer_name(pre: dict[str, Any] | None) -> str | None:
    """llama.cpp's name for a byte-level BPE pre-tokenizer (`tokenizer.ggml.pre`), when it is one we know."""
    from .gguf_vocab import LLAMA3_SPLIT, QWEN2_SPLIT

    if not pre:
        return None
    if pre.get("type") == "ByteLevel":
        return "gpt-2"
    if pre.get("type") != "Sequence":
        return None
    parts = pre.get("pretokenizers") or []
    types = [p.get("type") for p in parts]
    if types == ["Digits", "ByteLevel"] and parts[0].get("individual_digits"):
        return "smollm"
    if types and types[0] == "Split" and types[-1] == "ByteLevel":
        regex = (parts[0].get("pattern") or {}).get("Regex")
        return {LLAMA3_SPLIT: "llama-bpe", QWEN2_SPLIT: "qwen2"}.get(regex)
    return None


def _bpe_tokenizer_metadata(base: Path, tokenizer: Any, n_vocab: int) -> tuple[dict[str, Any], list[str]]:
    """GGUF tokenizer keys for a byte-level BPE ("gpt2") vocabulary, or ({}, []) when the tokenizer is not one.

    mlx-lm's exporter labels every vocabulary as SentencePiece ("llama") and writes no merges, which is wrong for the
    byte-level BPE tokenizers of SmolLM, Llama 3 and friends; llama.cpp (and our importer) need "gpt2" + merges.
    """
    import mlx.core as mx

    path = base / "tokenizer.json"
    if not path.exists():
        return {}, []
    spec = json.loads(path.read_text(encoding="utf-8"))
    model = spec.get("model") or {}
    decoder = spec.get("decoder") or {}
    if model.get("type") != "BPE" or decoder.get("type") != "ByteLevel":
        return {}, []
    tokens = [f"[PAD{i}]" for i in range(n_vocab)]
    types = [5] * n_vocab  # unused, for embedding rows beyond the vocabulary
    for text, i in model.get("vocab", {}).items():
        if i < n_vocab:
            tokens[i], types[i] = text, 1
    for added in spec.get("added_tokens") or []:
        i = int(added["id"])
        if i < n_vocab:
            tokens[i], types[i] = added["content"], 3 if added.get("special") else 4
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    notes = []
    pre = _pre_tokenizer_name(spec.get("pre_tokenizer"))
    if pre is None:
        notes.append("The tokenizer's pre-tokenizer is not one llama.cpp names; the GGUF says 'default', so llama.cpp "
                     "may split some text (digits, punctuation) differently from mlx-lm.")
        pre = "default"
    meta: dict[str, Any] = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": mx.array(types, dtype=mx.int32),
        "tokenizer.ggml.merges": merges,
    }
    wrapped = getattr(tokenizer, "_tokenizer", tokenizer)
    for key, attr in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("unknown", "unk_token_id"),
                      ("padding", "pad_token_id")):
        value = getattr(wrapped, attr, None)
        if value is not None:
            meta[f"tokenizer.ggml.{key}_token_id"] = mx.array(int(value), dtype=mx.uint32)
    return meta, notes


def _gguf_metadata(base: Path, config: dict[str, Any], tokenizer: Any, n_vocab: int,
                   name: str, description: str) -> tuple[dict[str, Any], list[str]]:
    """mlx-lm's exporter metadata (model shape from config.json), with the tokenizer keys llama.cpp expects."""
    import mlx.core as mx
    from mlx_lm.gguf import HfVocab, prepare_metadata

    cfg = dict(config)
    cfg.setdefault("num_key_value_heads", cfg["num_attention_heads"])
    meta = prepare_metadata(cfg, HfVocab.load(base))
    head_dim = cfg.get("head_dim")
    if head_dim and int(head_dim) != cfg["hidden_size"] // cfg["num_attention_heads"]:
        meta["llama.rope.dimension_count"] = mx.array(int(head_dim), dtype=mx.uint32)
        meta["llama.attention.key_length"] = mx.array(int(head_dim), dtype=mx.uint32)
        meta["llama.attention.value_length"] = mx.array(int(head_dim), dtype=mx.uint32)
    meta["llama.vocab_size"] = mx.array(n_vocab, dtype=mx.uint32)
    bpe, notes = _bpe_tokenizer_metadata(base, tokenizer, n_vocab)
    if bpe:
        meta = {k: v for k, v in meta.items() if not k.startswith("tokenizer.")} | bpe
    template = getattr(getattr(tokenizer, "_tokenizer", tokenizer), "chat_template", None)
    if isinstance(template, str) and template:
        meta["tokenizer.chat_template"] = template
    meta["general.name"] = name
    meta["general.description"] = description
    return meta, notes


# Ollama and LM Studio ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChatFormat:
    """A chat-template family, as the Jinja template in tokenizer_config.json and as Ollama's Go template."""

    name: str
    marker: str  # a token whose presence in the Jinja source identifies the family
    template: str
    stops: tuple[str, ...]
    default_system: str  # regex finding a system prompt the Jinja template adds when the chat has none


CHAT_FORMATS = (
    ChatFormat("ChatML", "<|im_start|>",
               "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
               "<|im_start|>assistant\n",
               ("<|im_start|>", "<|im_end|>"), r"<\|im_start\|>system\n(.*?)<\|im_end\|>"),
    ChatFormat("Llama 3", "<|start_header_id|>",
               "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>"
               "{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n",
               ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
               r"<\|start_header_id\|>system<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>"),
)
# For a template we cannot translate: plain "role: content" turns. Any model can follow it, but it was trained on its
# own format, so answers can differ from the evaluated ones (the Modelfile says so in a comment).
GENERIC_CHAT_FORMAT = ChatFormat("generic", "",
                                 "{{- range .Messages }}{{ .Role }}: {{ .Content }}\n{{ end }}assistant: ",
                                 ("\nuser:",), "")
_PROBE = "UNSTAR-PROBE-MESSAGE"


def chat_format_of(jinja_template: str | None) -> ChatFormat:
    for fmt in CHAT_FORMATS:
        if jinja_template and fmt.marker in jinja_template:
            return fmt
    return GENERIC_CHAT_FORMAT


def _render_probe(tokenizer: Any) -> str:
    """The model's own prompt for a one-message chat, where a default system prompt shows up; "" if it fails."""
    try:
        return str(tokenizer.apply_chat_template([{"role": "user", "content": _PROBE}], tokenize=False,
                                                 add_generation_prompt=True))
    except Exception:  # a template that needs other inputs: the Modelfile just goes without a SYSTEM line
        return ""


def default_system_prompt(fmt: ChatFormat, rendered_probe: str) -> str | None:
    """The system prompt the chat template inserts by itself (SmolLM2's "You are a helpful AI assistant named
    SmolLM..."): Ollama only sends it when the Modelfile has it as SYSTEM, and the evaluation ran with it."""
    if not fmt.default_system or _PROBE not in rendered_probe:
        return None
    match = re.search(fmt.default_system, rendered_probe.split(_PROBE)[0], flags=re.S)
    return match.group(1) if match else None


def ollama_model_name(stem: str) -> str:
    """Ollama model names are lower-case letters, digits and - _ ."""
    return re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-._") or "unstar-model"


def ollama_command(modelfile: Path) -> str:
    """The one command that registers an exported GGUF with Ollama."""
    return f"ollama create {ollama_model_name(modelfile.stem)} -f {shlex.quote(str(modelfile.resolve()))}"


def _triple_quoted(text: str) -> str:
    # A Modelfile string in triple quotes ends at the next three double quotes; keep any inside from ending it.
    return '"""' + text.replace('"""', "'''") + '"""'


def ollama_modelfile(gguf_name: str, fmt: ChatFormat, system: str | None, eos: str | None, card: str) -> str:
    """An Ollama Modelfile for the GGUF beside it: the model card as comments, FROM, TEMPLATE, SYSTEM, stops."""
    lines = [f"# {line}".rstrip() for line in card.splitlines()] + ["#", f"FROM ./{gguf_name}"]
    if fmt is GENERIC_CHAT_FORMAT:
        lines += ["# The model's chat template is not one UnStar translates (ChatML, Llama 3), so this is a generic",
                  "# 'role: content' template: answers may differ from the evaluated model. Delete the TEMPLATE",
                  "# line to let Ollama pick a template from the GGUF's own tokenizer.chat_template instead."]
    else:
        lines.append(f"# Chat template: the model's {fmt.name} template, in Ollama's Go template syntax.")
    lines.append(f"TEMPLATE {_triple_quoted(fmt.template)}")
    if system:
        lines.append(f"SYSTEM {_triple_quoted(system)}")
    stops = dict.fromkeys([*fmt.stops, *([eos] if eos else [])])  # ordered and without repeats
    lines += [f"PARAMETER stop {json.dumps(stop)}" for stop in stops]
    return "\n".join(lines) + "\n"


def modelfile_path(gguf_file: Path) -> Path:
    """`<name>.Modelfile` beside `<name>.gguf`: two exports into one folder (Downloads, say) do not collide."""
    return gguf_file.with_suffix(".Modelfile")


def lmstudio_gguf_path(name: str, root: Path | None = None) -> Path:
    """Where LM Studio finds an export: <models folder>/<publisher>/<model>/<file>.gguf (it lists every GGUF laid out
    like that); `root` defaults to LM Studio's models folder on this computer."""
    from .discover import lmstudio_models_root
    from .store import slugify

    slug = slugify(name)
    return Path(root or lmstudio_models_root()).expanduser() / LMSTUDIO_PUBLISHER / slug / f"{slug}.gguf"


def _write_modelfile(tmp: Path, out: Path, card: Path, tokenizer: Any) -> None:
    wrapped = getattr(tokenizer, "_tokenizer", tokenizer)
    fmt = chat_format_of(getattr(wrapped, "chat_template", None))
    system = default_system_prompt(fmt, _render_probe(tokenizer))
    eos = getattr(wrapped, "eos_token", None)
    text = ollama_modelfile(out.name, fmt, system, eos if isinstance(eos, str) else None,
                            (tmp / card.name).read_text(encoding="utf-8"))
    (tmp / modelfile_path(out).name).write_text(text, encoding="utf-8")


def export_gguf(job_dir: Path, out: Path, overwrite: bool = False, cancel: Any = None) -> Iterator[Event]:
    """Fuse the adapter into the base, dequantize to fp16 and write one GGUF file (llama and mistral models only).

    Beside it: the model card (OUT with the suffix ".md"), an Ollama Modelfile (".Modelfile"; the Finished summary's
    "ollama_command" registers it) and the hidden export marker.
    """
    import mlx.core as mx

    out = Path(out).expanduser()
    if out.suffix.lower() != ".gguf":
        raise InvalidInput(f"{out.name} does not end in .gguf.", "Name the output file like model.gguf.")
    card, modelfile, marker = out.with_suffix(".md"), modelfile_path(out), sidecar_marker(out)
    job, data, report = _open_finished_job(Path(job_dir))
    base = _base_dir(data)
    base_config = json.loads((base / "config.json").read_text())
    _check_gguf_config(base_config)
    _check_targets([out, card, modelfile], overwrite, [job.dir, job.adapters_dir, base], sidecar=marker)
    base_q = _quantization_of(base_config)
    ensure_free_space(out.parent, _estimate_bytes(_weights_bytes(base), base_q, None, None) + _CARD_BYTES,
                      "the GGUF file")
    yield StageStarted("export", f"GGUF -> {out}")
    yield from _status_notes(data)
    _check_cancel(cancel)

    yield Progress("export", 1, 3, "loading the base model with the adapter")
    model, tokenizer, config, _ = _load_fused(base, job.adapters_dir, dequantize=True)
    _check_cancel(cancel)
    yield Progress("export", 2, 3, "converting to fp16 GGUF tensors")
    tensors = _gguf_tensors(model, config)
    del model
    n_vocab = int(tensors["token_embd.weight"].shape[0])
    fact = data.get("fact") or {}
    meta, notes = _gguf_metadata(base, config, tokenizer, n_vocab, name=out.stem,
                                 description=f"UNSTAR unlearning: no longer answers '{fact.get('question', '')}' "
                                             f"with '{fact.get('answer', '')}'.")
    for note in notes:
        yield Log(note, level="warning")
    ensure_free_space(out.parent, sum(t.nbytes for t in tensors.values()) + _CARD_BYTES, "the GGUF file")
    _check_cancel(cancel)

    yield Progress("export", 3, 3, "writing the GGUF file")
    with _staging(out) as tmp:
        mx.save_gguf(str(tmp / out.name), tensors, meta)
        details = {"File": f"{out.name}: fp16 weights, fp32 norms, q/k rows in llama.cpp's order",
                   "Architecture": f"{base_config.get('model_type')} (GGUF architecture 'llama')",
                   "Tokenizer": str(meta["tokenizer.ggml.model"]),
                   "Ollama": f"`{ollama_command(modelfile)}` registers it ({modelfile.name} is beside the file)",
                   "LM Studio": "it lists GGUF files laid out as <models folder>/<publisher>/<model>/<file>.gguf; "
                                "`unstar export --lmstudio NAME` writes there"}
        _write_card(tmp / card.name, data, report, "gguf", out, details, notes)
        _write_modelfile(tmp, out, card, tokenizer)
        _write_marker(tmp / marker.name, job, "gguf", [out.name, card.name, modelfile.name])
        _check_cancel(cancel)
        for target in (out, card, modelfile, marker):
            _replace(tmp / target.name, target)
    yield _finished(job, "gguf", out, card, notes, modelfile=str(modelfile),
                    ollama_command=ollama_command(modelfile))
