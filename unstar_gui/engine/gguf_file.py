"""GGUF tensor locations for the importer: the header (parsed by headers.read_gguf_header), tensor bytes
memory-mapped.

Why not `gguf.GGUFReader`: it builds a numpy view per metadata element, which for a 262k-token vocabulary
(Gemma 3) takes ~16 s and ~700 MB before a single weight is read. Tensor values are still decoded by llama.cpp's
own `gguf.quants.dequantize`; this module only finds the bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any

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


def read_header(path: Path) -> GGUFHeader:
    """The header of the GGUF file at `path`, parsed by the one bounded reader (headers.read_gguf_header: every
    length is checked against the file before anything trusts it), with absolute tensor offsets."""
    from .headers import read_gguf_header

    h = read_gguf_header(path)
    tensors = [TensorInfo(t.name, t.dims, t.type, h.data_start + t.offset) for t in h.tensors]
    return GGUFHeader(version=h.version, metadata=h.metadata, tensors=tensors, data_start=h.data_start)


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
