"""Read a GGUF file into an mlx-lm model folder (config.json, model.safetensors, tokenizer files).

Two ways to read the tensors:
  - a file holding only types MLX reads itself (F32/F16/BF16, Q4_0, Q4_1, Q8_0) goes through `mx.load`, which
    hands Q4_0/Q4_1/Q8_0 back already packed as MLX affine weights (group size 32), so they stay quantized with
    no loss;
  - any other file (K-quants, Q5_0/Q5_1, IQ types...) is memory-mapped and read one tensor (in row chunks) at a
    time, dequantized by llama.cpp's own Python package (`gguf.quants.dequantize`); the result is kept as
    float16 or re-quantized to MLX affine 4/8-bit (see PRECISIONS). The header is parsed by gguf_file.py.
The architecture-specific parts (tensor names, config fields, llama.cpp's weight edits) live in gguf_arch.py,
the tokenizer in gguf_vocab.py.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .errors import ImportFailed, UnsupportedModel
from .gguf_arch import (SUPPORTED_ARCHITECTURES, ArchSpec, arch_spec, build_config, llama3_rope_scaling,
                        mlx_name)
from .gguf_file import (GGUFFormatError, GGUFHeader, TensorInfo, UnknownTensorType, read_header, tensor_nbytes,
                        tensor_rows)
from .gguf_vocab import build_tokenizer_files, check_vocab

__all__ = ["PRECISIONS", "SUPPORTED_ARCHITECTURES", "convert_gguf", "open_gguf", "GGUFFile"]

# --gguf-precision: what dequantized weights become. "auto": float16 under AUTO_QUANTIZE_PARAMS parameters,
# MLX 4-bit from there on; a file MLX reads natively is kept exactly as stored.
PRECISIONS = ("auto", "float16", "8", "4")
AUTO_QUANTIZE_PARAMS = 1_000_000_000
GROUP_SIZE = 32  # the block size of Q4_0/Q8_0 and of K-quant sub-blocks: re-quantizing at 32 loses least
MLX_NATIVE_TYPES = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q8_0")
_NATIVE_BITS = {"Q4_0": 4, "Q4_1": 4, "Q8_0": 8}


@dataclass
class GGUFFile:
    path: Path
    header: GGUFHeader
    file_map: Any  # numpy uint8 memmap of the whole file: tensors are sliced from it, one at a time

    @property
    def metadata(self) -> dict[str, Any]:
        return self.header.metadata

    @property
    def tensors(self) -> list[TensorInfo]:
        return self.header.tensors

    @property
    def tensor_names(self) -> set[str]:
        return {t.name for t in self.tensors}

    @property
    def n_params(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    def type_name(self, t: TensorInfo) -> str:
        from gguf.constants import GGMLQuantizationType

        return GGMLQuantizationType(t.ggml_type).name

    @property
    def native(self) -> bool:
        """True when `mx.load` can read every tensor (and keeps the quantized ones packed, exactly)."""
        return all(self.type_name(t) in MLX_NATIVE_TYPES for t in self.tensors)


def _check_gguf_package() -> None:
    try:
        import gguf  # noqa: F401  (llama.cpp's Python package: tensor types and dequantizers)
    except ImportError as exc:
        raise ImportFailed("Reading GGUF files needs the 'gguf' package, which is not installed.",
                           "Install it with `pip install gguf`.") from exc


def _check_file(path: Path) -> None:
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


def _corrupt(path: Path, exc: BaseException) -> ImportFailed:
    return ImportFailed(f"Could not read {path.name}: the file is truncated or corrupt ({str(exc)[:200]}).",
                        "Download the file again and re-import it.")


def open_gguf(path: Path) -> GGUFFile:
    """Read a GGUF file's header and memory-map it; checks every tensor's type and extent before any is read."""
    import numpy as np

    path = Path(path)
    _check_file(path)
    _check_gguf_package()
    try:
        header = read_header(path)
    except (GGUFFormatError, struct.error, OverflowError, MemoryError) as exc:
        raise _corrupt(path, exc) from exc
    size = path.stat().st_size
    for t in header.tensors:
        try:
            end = t.offset + tensor_nbytes(t)
        except UnknownTensorType as exc:
            raise UnsupportedModel(
                f"{path.name} uses ggml tensor type {exc.ggml_type}, which this version of the gguf package "
                "does not know.", "Update it (`pip install -U gguf`), or use a Q4_K_M/Q8_0/F16 file.") from exc
        if end > size:
            raise _corrupt(path, GGUFFormatError(f"tensor {t.name} runs past the end of the file"))
    file_map = np.memmap(path, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
    return GGUFFile(path=path, header=header, file_map=file_map)


# --------------------------------------------------------------------------------------------- tensor data


@dataclass
class Packed:
    """An MLX affine-quantized weight: uint32 codes + float scales/biases."""
    weight: Any
    scales: Any
    biases: Any
    bits: int
    group_size: int = GROUP_SIZE


CHUNK_ELEMENTS = 1 << 22  # dequantize ~4M values (16 MB of float32) at a time: numpy's temporaries stay small


def _dequantized_chunks(gf: GGUFFile, tensor: TensorInfo) -> Iterator[Any]:
    """One GGUF tensor as float32 mx.arrays of consecutive rows, via llama.cpp's reference dequantizer.

    Rows are independent in every GGUF type (blocks never straddle rows), so slicing the memory-mapped rows
    bounds the memory `gguf.quants.dequantize` needs by the chunk, not by the (possibly 1 GB) tensor.
    """
    import mlx.core as mx
    import numpy as np
    from gguf.constants import GGMLQuantizationType
    from gguf.quants import dequantize

    if len(tensor.dims) > 2:
        raise UnsupportedModel(f"{gf.path.name} holds a {len(tensor.dims)}-D tensor ({tensor.name}).",
                               "Mixture-of-experts GGUFs are not imported; use the Hugging Face folder.")
    qtype = GGMLQuantizationType(tensor.ggml_type)
    data = tensor_rows(gf.file_map, tensor)
    rows = data.shape[0]
    step = max(1, CHUNK_ELEMENTS // max(1, tensor.dims[0]))
    for start in range(0, rows, step):
        try:
            arr = dequantize(data[start:start + step], qtype)
        except NotImplementedError as exc:
            raise UnsupportedModel(
                f"{gf.path.name} holds '{qtype.name}' tensors, which the gguf package cannot dequantize.",
                "Use a file in another quantization (Q4_K_M, Q5_K_M, Q8_0 or F16 all work).") from exc
        if len(tensor.dims) == 1:
            arr = arr.reshape(-1)
        yield mx.array(np.ascontiguousarray(arr, dtype=np.float32))


def _native_tensors(gf: GGUFFile) -> dict[str, Any]:
    """All tensors through mx.load: {gguf name: float array or Packed}."""
    import mlx.core as mx

    try:
        # format= because Ollama keeps its GGUF weights in blobs named sha256-<hex>, with no .gguf suffix.
        raw = mx.load(str(gf.path), format="gguf")
    except Exception as exc:  # MLX raises plain exceptions for truncated files
        raise _corrupt(gf.path, exc) from exc
    types = {t.name: gf.type_name(t) for t in gf.tensors}
    out: dict[str, Any] = {}
    for name, ggml_type in types.items():
        if ggml_type in _NATIVE_BITS:
            base = name[: -len(".weight")] if name.endswith(".weight") else name
            out[name] = Packed(raw[name], raw[base + ".scales"], raw[base + ".biases"], _NATIVE_BITS[ggml_type])
        else:
            out[name] = raw[name]
    return out


def iter_tensors(gf: GGUFFile) -> Iterator[tuple[str, Iterator[Any]]]:
    """(gguf name, its data as row chunks: float mx.arrays or one Packed) for every tensor, one at a time."""
    if gf.native:
        for name, item in _native_tensors(gf).items():
            yield name, iter([item])
        return
    for t in gf.tensors:
        yield t.name, _dequantized_chunks(gf, t)


# ------------------------------------------------------------------------------------------ weight edits


def _unpermute_rows(a: Any, n_head: int) -> Any:
    """Inverse of llama.cpp's q/k permutation, applied to rows (works on packed weights, scales and biases)."""
    rows = a.shape[0]
    rest = a.shape[1:]
    # llama.cpp applied reshape(n_head, 2, d/2).swapaxes(1, 2); undo it with the transposed reshape.
    return a.reshape(n_head, rows // n_head // 2, 2, *rest).swapaxes(1, 2).reshape(rows, *rest)


def _rows(item: Any, fn: Any) -> Any:
    if isinstance(item, Packed):
        return Packed(fn(item.weight), fn(item.scales), fn(item.biases), item.bits, item.group_size)
    return fn(item)


def undo_norm_shift(gguf_name: str, item: Any, spec: ArchSpec) -> Any:
    """Gemma: llama.cpp stored 1 + w for every RMSNorm weight. Undone in float32, before any cast to float16."""
    import mlx.core as mx

    if spec.norm_shift and gguf_name.endswith("norm.weight") and not isinstance(item, Packed):
        return item.astype(mx.float32) - spec.norm_shift
    return item


def undo_permutation(gguf_name: str, arrays: dict[str, Any], spec: ArchSpec, config: dict[str, Any]) -> dict[str, Any]:
    """llama: un-permute q/k rows. A pure row shuffle, so it applies as well to float16 or packed rows."""
    kind = gguf_name.split(".")[2] if gguf_name.startswith("blk.") else ""
    if not spec.permute_qk or kind not in ("attn_q", "attn_k"):
        return arrays
    heads = config["num_attention_heads"] if kind == "attn_q" else config["num_key_value_heads"]
    return {k: _unpermute_rows(a, heads) for k, a in arrays.items()}


# ----------------------------------------------------------------------------------------------- precision


def check_precision(precision: str) -> str:
    precision = str(precision).lower().replace("fp16", "float16")
    if precision not in PRECISIONS:
        from .errors import InvalidInput

        raise InvalidInput(f"Unknown GGUF precision '{precision}'.", f"Use one of: {', '.join(PRECISIONS)}.")
    return precision


def _target(precision: str, gf: GGUFFile) -> str | int:
    """'asis', 'float16' or a bit width for the matrices of this file."""
    if precision == "auto":
        if gf.native:
            return "asis"
        return 4 if gf.n_params >= AUTO_QUANTIZE_PARAMS else "float16"
    return "float16" if precision == "float16" else int(precision)


def _is_matrix(name: str, item: Any) -> bool:
    """A Linear/Embedding weight MLX can quantize (2-D, input size a multiple of the group size)."""
    if isinstance(item, Packed):
        return True
    return name.endswith(".weight") and item.ndim == 2 and item.shape[-1] % GROUP_SIZE == 0


def apply_precision(name: str, item: Any, target: str | int) -> dict[str, Any]:
    """{mlx name: array} for one weight at the target precision (a quantized one gives .weight/.scales/.biases)."""
    import mlx.core as mx

    base = name[: -len(".weight")]
    if target == "asis":
        if isinstance(item, Packed):
            return {name: item.weight, base + ".scales": item.scales, base + ".biases": item.biases}
        return {name: item}
    if isinstance(item, Packed):
        if isinstance(target, int) and item.bits <= target:  # already as small as asked, and exact: keep it
            return apply_precision(name, item, "asis")
        item = mx.dequantize(item.weight, item.scales, item.biases, group_size=item.group_size, bits=item.bits)
    if isinstance(target, int) and _is_matrix(name, item):
        w, s, b = mx.quantize(item.astype(mx.float32), group_size=GROUP_SIZE, bits=target)
        return {name: w, base + ".scales": s.astype(mx.float16), base + ".biases": b.astype(mx.float16)}
    return {name: item.astype(mx.float16)}


def estimate_output_bytes(path: Path, precision: str = "auto") -> int:
    """Roughly how big the imported folder will be, for the free-space check before anything is written."""
    gf = open_gguf(Path(path))
    size = gf.path.stat().st_size
    target = _target(check_precision(precision), gf)
    if target == "asis":
        return int(size * 1.3)  # packed as stored, plus tokenizer files
    per_value = 2.0 if target == "float16" else target / 8 + 4 / GROUP_SIZE  # codes + float16 scale and bias
    return int(gf.n_params * per_value) + size // 10


def quantization_config(weights: dict[str, Any], config: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """Per-module bits/group size from the packed shapes; returns (config entry, short label)."""
    per_layer: dict[str, tuple[int, int]] = {}
    for name, scales in weights.items():
        if not name.endswith(".scales"):
            continue
        module = name[: -len(".scales")]
        packed_cols = weights[module + ".weight"].shape[-1]
        in_features = scales.shape[-1] * GROUP_SIZE  # every packed tensor here uses group size 32
        per_layer[module] = (GROUP_SIZE, packed_cols * 32 // in_features)
    if not per_layer:
        return None, "float16"
    common = Counter(per_layer.values()).most_common(1)[0][0]
    q: dict[str, Any] = {"group_size": common[0], "bits": common[1]}
    for module, (group, bits) in per_layer.items():
        if (group, bits) != common:
            q[module] = {"group_size": group, "bits": bits}
    n_matrices = sum(1 for k, v in weights.items() if k.endswith(".weight") and v.ndim == 2)
    mixed = len(q) > 2 or len(per_layer) < n_matrices  # other bit widths, or some matrices left in float16
    label = f"{common[1]}bit-g{common[0]}" + ("+mixed" if mixed else "")
    return q, label


# ------------------------------------------------------------------------------------------------- convert


def _convert_one(gguf_name: str, new: str, chunks: Iterator[Any], spec: ArchSpec, config: dict[str, Any],
                 target: str | int) -> dict[str, Any]:
    import mlx.core as mx

    parts: list[dict[str, Any]] = []
    for chunk in chunks:
        out = apply_precision(new, undo_norm_shift(gguf_name, chunk, spec), target)
        mx.eval(*out.values())  # materialize now so the float32 chunk can be freed...
        del chunk
        mx.clear_cache()  # ...and handed back, not kept in MLX's buffer cache until the end
        parts.append(out)
    arrays = parts[0] if len(parts) == 1 else {k: mx.concatenate([p[k] for p in parts]) for k in parts[0]}
    arrays = undo_permutation(gguf_name, arrays, spec, config)
    mx.eval(*arrays.values())
    return arrays


def convert_weights(gf: GGUFFile, spec: ArchSpec, config: dict[str, Any], precision: str) -> dict[str, Any]:
    """Every tensor mapped to its mlx-lm name, llama.cpp's edits undone, at the chosen precision."""
    target = _target(precision, gf)
    weights: dict[str, Any] = {}
    for gguf_name, chunks in iter_tensors(gf):
        new = mlx_name(gguf_name, spec)
        if new is not None:
            weights.update(_convert_one(gguf_name, new, chunks, spec, config, target))
    return weights


def _rope_from_tensor(gf: GGUFFile, spec: ArchSpec, config: dict[str, Any]) -> None:
    """Llama 3.1+ stores its RoPE scaling as a `rope_freqs` tensor: turn it back into config settings."""
    if spec.gguf_name != "llama" or "rope_freqs.weight" not in gf.tensor_names or "rope_scaling" in config:
        return
    tensor = next(t for t in gf.tensors if t.name == "rope_freqs.weight")
    factors = next(_dequantized_chunks(gf, tensor))
    config["rope_scaling"] = llama3_rope_scaling(factors.tolist(), config)


def convert_gguf(path: Path, out_dir: Path, precision: str = "auto") -> dict[str, Any]:
    """Write an mlx-lm folder for the GGUF at `path` into `out_dir` (which must exist and be empty).

    Everything that can be refused (architecture, vocabulary, metadata, precision) is checked before any
    tensor is read. Returns a summary: architecture, quantization label, config, name, license.
    """
    import mlx.core as mx

    path, out_dir = Path(path), Path(out_dir)
    precision = check_precision(precision)
    gf = open_gguf(path)
    meta = gf.metadata
    spec = arch_spec(meta, path.name)
    check_vocab(meta, path.name)
    try:
        config = build_config(meta, spec, gf.tensor_names)
    except KeyError as exc:
        raise ImportFailed(f"{path.name} lacks the metadata key {exc}.", "The file is incomplete; "
                           "download it again.") from exc
    _rope_from_tensor(gf, spec, config)
    weights = convert_weights(gf, spec, config, precision)
    quant, label = quantization_config(weights, config)
    if quant:
        config["quantization"] = quant
    build_tokenizer_files(meta, out_dir, path.name)
    mx.save_safetensors(str(out_dir / "model.safetensors"), weights, metadata={"format": "mlx"})
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    return {"architecture": spec.model_type, "quantization": label, "config": config,
            "name": meta.get("general.name", path.stem), "license": meta.get("general.license", "")}
