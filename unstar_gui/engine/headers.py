"""Bounded readers for the headers of weight files we did not write (GGUF, safetensors).

A model file is untrusted input. MLX's GGUF reader is C code that trusts the lengths a file declares: a GGUF with a
huge metadata key length killed the process with SIGSEGV. Everything a loader will later trust (string and array
lengths, tensor counts, dimensions, data offsets) is checked here first, in pure Python, against the file's real
size, so a hostile or damaged file ends in a clear ImportFailed and never reaches native code.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from .errors import ImportFailed, UnsupportedModel

# GGUF value types (gguf spec) -> struct format; 8 = string, 9 = array.
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
                 12: "<d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9
GGUF_VERSIONS = (2, 3)
MAX_KEY_BYTES = 65_535  # the spec's limit for a key
MAX_TENSORS = 1_000_000
MAX_KV = 1_000_000
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_SAFETENSORS_HEADER = 100_000_000  # the safetensors crate's own limit

# safetensors dtype -> bytes per element
SAFETENSORS_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2,
                      "BF16": 2, "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}


@dataclass
class GGUFTensorInfo:
    name: str
    dims: tuple[int, ...]  # ggml order: dims[0] is the row length
    type: int
    offset: int  # from the start of the data section
    nbytes: int


@dataclass
class GGUFHeader:
    version: int
    metadata: dict[str, Any] = field(default_factory=dict)
    tensors: list[GGUFTensorInfo] = field(default_factory=list)
    data_start: int = 0


class _Bad(Exception):
    """A bound the file broke; turned into ImportFailed with the file's name."""


class _UnknownType(Exception):
    def __init__(self, name: str, ggml_type: int) -> None:
        super().__init__(name)
        self.name, self.ggml_type = name, ggml_type


class _Reader:
    def __init__(self, fh: BinaryIO, size: int) -> None:
        self.fh, self.size, self.pos = fh, size, 0

    def read(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.size:
            raise _Bad(f"a field at byte {self.pos} claims {n} bytes, past the end of the file ({self.size} bytes)")
        data = self.fh.read(n)
        self.pos += n
        return data

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self, limit: int | None = None) -> str:
        n = self.unpack("<Q")
        if limit is not None and n > limit:
            raise _Bad(f"a name at byte {self.pos - 8} is {n} bytes long (at most {limit} allowed)")
        # llama.cpp does not validate UTF-8 either; a stray byte in one token must not refuse the file.
        return self.read(n).decode("utf-8", errors="replace")


def _gguf_value(r: _Reader, vtype: int, depth: int = 0) -> Any:
    if vtype in _GGUF_SCALARS:
        return r.unpack(_GGUF_SCALARS[vtype])
    if vtype == _GGUF_STRING:
        return r.string()
    if vtype == _GGUF_ARRAY:
        if depth > 1:
            raise _Bad("arrays nest too deeply")
        etype = r.unpack("<I")
        count = r.unpack("<Q")
        # Every element takes at least one byte (a string at least 8): a count the file can't hold is a lie.
        least = 8 if etype in (_GGUF_STRING, _GGUF_ARRAY) else struct.calcsize(_GGUF_SCALARS.get(etype, "<B"))
        if etype not in _GGUF_SCALARS and etype not in (_GGUF_STRING, _GGUF_ARRAY):
            raise _Bad(f"unknown array element type {etype}")
        if count * least > r.size - r.pos:
            raise _Bad(f"an array claims {count} elements, more than the file holds")
        if etype in _GGUF_SCALARS:  # read scalars in one go: vocabularies hold 100k+ entries
            fmt = _GGUF_SCALARS[etype]
            return list(struct.unpack("<" + fmt[1] * count, r.read(count * struct.calcsize(fmt))))
        return [_gguf_value(r, etype, depth + 1) for _ in range(count)]
    raise _Bad(f"unknown metadata value type {vtype}")


def _ggml_sizes() -> dict[int, tuple[int, int]]:
    """(block size, bytes per block) per GGML tensor type, from llama.cpp's own `gguf` package."""
    from gguf.constants import GGML_QUANT_SIZES

    return {int(k): v for k, v in GGML_QUANT_SIZES.items()}


def read_gguf_header(path: Path) -> GGUFHeader:
    """Parse and bounds-check a GGUF file's header, metadata and tensor table; raises ImportFailed naming the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            return _parse_gguf(_Reader(fh, size))
    except _Bad as exc:
        raise ImportFailed(f"{path.name} is not a valid GGUF file (truncated or corrupt): {exc}.",
                           "The file is damaged or not a model; download it again.") from exc
    except _UnknownType as exc:
        raise UnsupportedModel(
            f"{path.name} uses ggml tensor type {exc.ggml_type} (tensor {exc.name!r}), which this version of the "
            "gguf package does not know.", "Update it (`pip install -U gguf`), or use a Q4_K_M/Q8_0/F16 file.") from exc
    except OSError as exc:
        raise ImportFailed(f"Could not read {path}: {exc.strerror or exc}.", "Check the file and try again.") from exc


def _parse_gguf(r: _Reader) -> GGUFHeader:
    if r.read(4) != b"GGUF":
        raise _Bad("it does not start with the GGUF signature")
    version = r.unpack("<I")
    if version not in GGUF_VERSIONS:
        raise _Bad(f"GGUF version {version} is not supported (only {', '.join(map(str, GGUF_VERSIONS))})")
    n_tensors, n_kv = r.unpack("<Q"), r.unpack("<Q")
    if n_tensors > MAX_TENSORS or n_kv > MAX_KV:
        raise _Bad(f"it claims {n_tensors} tensors and {n_kv} metadata entries")
    header = GGUFHeader(version=version)
    for _ in range(n_kv):
        key = r.string(MAX_KEY_BYTES)
        header.metadata[key] = _gguf_value(r, r.unpack("<I"))
    sizes = _ggml_sizes()
    for _ in range(n_tensors):
        name = r.string(MAX_KEY_BYTES)
        n_dims = r.unpack("<I")
        if not 1 <= n_dims <= MAX_DIMS:
            raise _Bad(f"tensor {name!r} has {n_dims} dimensions")
        shape = tuple(r.unpack("<Q") for _ in range(n_dims))
        ttype, offset = r.unpack("<I"), r.unpack("<Q")
        if ttype not in sizes:
            raise _UnknownType(name, ttype)
        block, block_bytes = sizes[ttype]
        count = math.prod(shape)
        if count <= 0 or count % block or shape[0] % block:
            raise _Bad(f"tensor {name!r} has shape {shape}, which type {ttype} can't hold")
        header.tensors.append(GGUFTensorInfo(name, shape, ttype, offset, count // block * block_bytes))
    alignment = header.metadata.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise _Bad(f"general.alignment is {alignment!r}, not a power of two")
    header.data_start = -(-r.pos // alignment) * alignment
    data_bytes = r.size - header.data_start
    for t in header.tensors:
        if t.offset % alignment or t.offset + t.nbytes > data_bytes:
            raise _Bad(f"tensor {t.name!r} lies outside the file (truncated download?)")
    return header


# safetensors -----------------------------------------------------------------------------------------------------
def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, after checking every tensor's dtype, shape and bytes against the file.

    Raises ValueError saying what is wrong (callers add the file's name and what to do)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        raw = fh.read(8)
        length = int.from_bytes(raw, "little") if len(raw) == 8 else 0
        if length <= 0 or length > MAX_SAFETENSORS_HEADER or 8 + length > size:
            raise ValueError("its header length points past the end of the file")
        try:
            header = json.loads(fh.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise ValueError(f"its header is not valid JSON ({type(exc).__name__})") from exc
    if not isinstance(header, dict):
        raise ValueError("its header is not a JSON object")
    data_len = size - 8 - length
    end_max = 0
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict):
                raise ValueError("its __metadata__ is not an object")
            continue
        end_max = max(end_max, _check_safetensors_entry(name, info, data_len))
    if end_max != data_len:
        raise ValueError(f"it holds {data_len} data bytes but its tensors cover {end_max}")
    return header


def _check_safetensors_entry(name: str, info: Any, data_len: int) -> int:
    if not isinstance(info, dict):
        raise ValueError(f"tensor {name} has no description")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in SAFETENSORS_DTYPES:
        raise ValueError(f"tensor {name} has unknown dtype {dtype!r}")
    if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                            for d in shape)):
        raise ValueError(f"tensor {name} has an invalid shape")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
        raise ValueError(f"tensor {name} has no data offsets")
    start, end = offsets
    if not 0 <= start <= end <= data_len:
        raise ValueError(f"tensor {name} lies outside the file")
    if end - start != math.prod(shape) * SAFETENSORS_DTYPES[dtype]:
        raise ValueError(f"tensor {name}'s bytes do not match its shape {shape} and dtype {dtype}")
    return end


def safetensors_tensor_names(path: Path) -> set[str]:
    """The tensor names in a safetensors file whose header passed read_safetensors_header."""
    return {k for k in read_safetensors_header(path) if k != "__metadata__"}
