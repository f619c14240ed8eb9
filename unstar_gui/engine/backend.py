"""Compute backend: Metal GPU or CPU, the dtype policy that follows, and the Linux BLAS preload.

On Apple silicon, 4-bit QLoRA on Metal is the normal path. On CPU, MLX's quantized matmul is single-threaded and
does not use BLAS (about 20x slower than float32 with OpenBLAS), so models are dequantized to float32 there.
The mlx-cpu wheel bundles the reference BLAS; preloading an optimized one (Debian's OpenBLAS) gave 47x on a
1024x1024 matmul. LD_PRELOAD only works at process start, so the launchers re-exec themselves once.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

PRELOAD_DISABLE_ENV = "UNSTAR_NO_BLAS_PRELOAD"
PRELOAD_MARK_ENV = "UNSTAR_BLAS_PRELOADED"

BLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)


@dataclass(frozen=True)
class Backend:
    device: str  # "gpu" (Metal) or "cpu"
    label: str  # for people: "Metal GPU" / "CPU (OpenBLAS)"
    dequantize: bool  # compute in dequantized float32 (CPU) instead of quantized weights (Metal)
    blas: str  # preloaded BLAS library, or "" for the bundled one


def find_blas() -> str:
    for cand in BLAS_CANDIDATES:
        if Path(cand).exists():
            return cand
    return ""


def blas_in_use() -> str:
    preload = os.environ.get("LD_PRELOAD", "")
    for lib in preload.split(":"):
        if "blas" in lib.lower():
            return lib
    return ""


def metal_available() -> bool:
    try:
        import mlx.core as mx

        return bool(mx.metal.is_available())
    except Exception:
        return False


def detect() -> Backend:
    if sys.platform == "darwin" and metal_available():
        return Backend("gpu", "Metal GPU", dequantize=False, blas="")
    blas = blas_in_use()
    label = "CPU (OpenBLAS)" if blas else "CPU (reference BLAS: slow; install libopenblas0-pthread)"
    return Backend("cpu", label, dequantize=True, blas=blas)


def maybe_reexec_with_blas(argv: list[str] | None = None) -> None:
    """On Linux, re-exec the current process once with an optimized BLAS preloaded (no-op elsewhere).

    Turned off by UNSTAR_NO_BLAS_PRELOAD=1; the mark variable stops a second re-exec.
    """
    if not sys.platform.startswith("linux"):
        return
    if os.environ.get(PRELOAD_DISABLE_ENV) or os.environ.get(PRELOAD_MARK_ENV):
        return
    if blas_in_use():
        return
    lib = find_blas()
    if not lib:
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = ":".join(p for p in (lib, env.get("LD_PRELOAD", "")) if p)
    env[PRELOAD_MARK_ENV] = "1"
    args = argv if argv is not None else [sys.executable, *sys.argv]
    try:
        os.execve(args[0], args, env)
    except OSError:
        return  # keep running with the bundled BLAS rather than fail to start
