"""`unstar models list|path|import|remove|default`."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from ..engine.fsutil import human_bytes
from ..engine.store import ModelStore
from .common import add_json_flag, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list, import and remove local models",
                       description="Manage the local model library.")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True

    ls = msub.add_parser("list", help="list installed models (the embedded default is registered on first use)")
    add_json_flag(ls)
    ls.set_defaults(func=cmd_list)

    path = msub.add_parser("path", help="print the folder of a model")
    path.add_argument("model", nargs="?", default=None, help="model id (default: the default model)")
    path.set_defaults(func=cmd_path)

    imp = msub.add_parser("import", help="import a GGUF file, a Hugging Face folder or an MLX folder")
    imp.add_argument("source", help="path to a .gguf file or a model folder")
    imp.add_argument("--id", dest="model_id", default=None, help="id to register it under")
    imp.add_argument("--quantize", type=int, choices=(4, 8), default=None,
                     help="quantize a Hugging Face folder to this many bits while converting")
    imp.add_argument("--copy", action="store_true", help="copy an MLX folder into the data folder")
    add_json_flag(imp)
    imp.set_defaults(func=cmd_import)

    rm = msub.add_parser("remove", help="remove a model from the library (deletes files the app owns)")
    rm.add_argument("model")
    rm.add_argument("--keep-files", action="store_true", help="only unregister, keep the folder")
    rm.set_defaults(func=cmd_remove)

    de = msub.add_parser("default", help="make a model the default")
    de.add_argument("model")
    de.set_defaults(func=cmd_default)


def cmd_list(args: argparse.Namespace) -> int:
    store = ModelStore()
    store.resolve(None)  # registers the embedded model on first use
    records = store.list()
    if args.json:
        print_json([asdict(r) for r in records])
        return 0
    print(f"{'':2}{'ID':32} {'ARCH':8} {'QUANT':16} {'SIZE':>9}  SOURCE")
    for r in records:
        mark = "* " if r.default else "  "
        print(f"{mark}{r.id:32} {r.architecture:8} {r.quantization:16} {human_bytes(r.size_bytes):>9}  {r.source}")
    print("\n* default model")
    return 0


def cmd_path(args: argparse.Namespace) -> int:
    print(ModelStore().resolve(args.model).path)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from ..engine.importers import import_any

    record = import_any(ModelStore(), Path(args.source), args.model_id, quantize_bits=args.quantize, copy=args.copy)
    if args.json:
        print_json(asdict(record))
    else:
        print(f"imported {record.id} ({record.architecture}, {record.quantization}, "
              f"{human_bytes(record.size_bytes)}) -> {record.path}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    record = ModelStore().remove(args.model, delete_files=not args.keep_files)
    print(f"removed {record.id}")
    return 0


def cmd_default(args: argparse.Namespace) -> int:
    ModelStore().set_default(args.model)
    print(f"default model: {args.model}")
    return 0
