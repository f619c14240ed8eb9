"""A lean GGUF header reader: metadata and tensor locations, tensor bytes memory-mapped.

Why not `gguf.GGUFReader`: it builds a numpy view per metadata element, which for a 262k-token vocabulary
(Gemma 3) takes ~16 s and ~700 MB before a single weight is read. This reads the same header (GGUF v2/v3, the
layout in ggml's docs/gguf.md) in well under a second. Tensor values are still decoded by llama.cpp's own
`gguf.quants.dequantize`; this module only finds the bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any

# GGUF metadata value types (ggml docs/gguf.md, `gguf_metadata_value_type`).
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8",
          12: "<f8"}
_STRING, _ARRAY = 8, 9
DEFAULT_ALIGNMENT = 32


class GGUFFormatError(ValueError):
    """The bytes do not follow the GGUF layout (truncated or corrupt file)."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dims: tuple[int, ...]  # ggml order: dims[0] is the row length
    ggml_type: int
    offset: int  # absolute, in the file

    @property
    def n_elements(self) -> int:
        return prod(self.dims)

    @property
    def shape(self) -> tuple[int, ...]:
        """numpy order (rows first), as the dequantized array comes out."""
        return tuple(reversed(self.dims))


@dataclass
class GGUFHeader:
    version: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo]
    data_start: int


class _Cursor:
    def __init__(self, buf: memoryview) -> None:
        self.buf, self.pos = buf, 0

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise GGUFFormatError(f"header ends early (needed {n} bytes at offset {self.pos})")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return bytes(self.take(self.scalar("<Q"))).decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype in _SCALAR:
            return self.scalar(_SCALAR[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            return self.array()
        raise GGUFFormatError(f"unknown metadata value type {vtype}")

    def array(self) -> list[Any]:
        import numpy as np

        etype, count = self.scalar("<I"), self.scalar("<Q")
        if etype in _NUMPY:  # numbers: one read, not one per element
            dtype = np.dtype(_NUMPY[etype])
            return np.frombuffer(self.take(count * dtype.itemsize), dtype=dtype).tolist()
        return [self.value(etype) for _ in range(count)]


def read_header(path: Path) -> GGUFHeader:
    """Parse the header of the GGUF file at `path` (GGUFFormatError if it is not well formed)."""
    import mmap

    size = Path(path).stat().st_size
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        cur = _Cursor(memoryview(mm))
        try:
            if bytes(cur.take(4)) != b"GGUF":
                raise GGUFFormatError("no GGUF signature")
            version = cur.scalar("<I")
            if version not in (2, 3):
                raise GGUFFormatError(f"GGUF version {version} (only 2 and 3 are read)")
            n_tensors, n_kv = cur.scalar("<Q"), cur.scalar("<Q")
            metadata: dict[str, Any] = {}
            for _ in range(n_kv):
                key = cur.string()
                metadata[key] = cur.value(cur.scalar("<I"))
            raw = []
            for _ in range(n_tensors):
                name = cur.string()
                dims = tuple(cur.scalar("<Q") for _ in range(cur.scalar("<I")))
                raw.append((name, dims, cur.scalar("<I"), cur.scalar("<Q")))
            align = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT))
            data_start = (cur.pos + align - 1) // align * align
        finally:
            del cur  # release the memoryview before the mmap closes
    tensors = [TensorInfo(name, dims, ggml_type, data_start + off) for name, dims, ggml_type, off in raw]
    return GGUFHeader(version=version, metadata=metadata, tensors=tensors, data_start=data_start)


def tensor_nbytes(info: TensorInfo) -> int:
    """Bytes the tensor occupies (GGUFFormatError for a type the installed gguf package does not know)."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(info.ggml_type)]
    except (ValueError, KeyError) as exc:
        raise UnknownTensorType(info.ggml_type) from exc
    return info.n_elements // block * type_size


class UnknownTensorType(Exception):
    def __init__(self, ggml_type: int) -> None:
        super().__init__(f"ggml tensor type {ggml_type}")
        self.ggml_type = ggml_type


def tensor_rows(file_map: Any, info: TensorInfo) -> Any:
    """The tensor's bytes as a uint8 array of rows (rows, bytes per row): what gguf.quants.dequantize takes."""
    nbytes = tensor_nbytes(info)
    flat = file_map[info.offset:info.offset + nbytes]
    if flat.size != nbytes:
        raise GGUFFormatError(f"tensor {info.name} runs past the end of the file")
    row_len = info.dims[0] if info.dims else 1
    rows = info.n_elements // row_len if row_len else 0
    return flat.reshape(max(rows, 1), nbytes // max(rows, 1))
