"""`unstar doctor`: what this machine gives UnStar (backend, BLAS, versions, data folder)."""

from __future__ import annotations

import argparse
import platform
import sys

from .. import __version__
from ..engine.store import ModelStore
from .common import add_json_flag, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="show the compute backend, BLAS, versions and data folder")
    p.add_argument("--clean", action="store_true",
                   help="remove what killed imports and downloads left behind (staging folders, lock and temporary "
                        "files) and set damaged records aside as *.corrupt-<time>")
    add_json_flag(p)
    p.set_defaults(func=cmd_doctor)


def collect() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    from ..engine.backend import detect, find_blas

    def v(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    b = detect()
    return {
        "unstar": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "backend": b.label,
        "device": b.device,
        "dequantize_on_load": b.dequantize,
        "blas_preloaded": b.blas,
        "blas_available": find_blas(),
        "data_dir": str(ModelStore().root),
        "versions": {n: v(n) for n in ("mlx", "mlx-lm", "PySide6", "sentence-transformers", "huggingface_hub")},
    }


def cmd_doctor(args: argparse.Namespace) -> int:
    if args.clean:
        from dataclasses import asdict

        from ..engine.housekeeping import clean_data_folder

        report = clean_data_folder()
        if args.json:
            print_json(asdict(report))
        else:
            print("\n".join(report.lines()))
        return 0
    info = collect()
    if args.json:
        print_json(info)
        return 0
    for k, val in info.items():
        if isinstance(val, dict):
            val = ", ".join(f"{a} {b}" for a, b in val.items())
        print(f"{k:20} {val}")
    if info["device"] == "cpu" and not info["blas_preloaded"]:
        print("\nhint: install OpenBLAS (Debian/Ubuntu: apt-get install libopenblas0-pthread) for ~40x faster "
              "CPU matmuls; the `unstar` launcher preloads it automatically.")
    return 0
