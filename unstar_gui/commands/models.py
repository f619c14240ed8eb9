"""`unstar models list|path|import|remove|default|catalog|download|discover`."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from ..engine.fsutil import human_bytes
from ..engine.embedded import resolve_model
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
    imp.add_argument("--gguf-precision", choices=("auto", "float16", "8", "4"), default="auto",
                     help="for a GGUF whose weights MLX can't keep as stored (K-quants, Q5_0, IQ...): keep them as "
                          "float16 or re-quantize to MLX 8/4-bit. auto (default): float16 under 1B parameters, "
                          "4-bit from 1B; a Q4_0/Q4_1/Q8_0/F16 file stays exactly as stored")
    add_json_flag(imp)
    imp.set_defaults(func=cmd_import)

    rm = msub.add_parser("remove", help="remove a model from the library (deletes files the app owns)")
    rm.add_argument("model")
    rm.add_argument("--keep-files", action="store_true", help="only unregister, keep the folder")
    rm.set_defaults(func=cmd_remove)

    de = msub.add_parser("default", help="make a model the default")
    de.add_argument("model")
    de.set_defaults(func=cmd_default)

    cat = msub.add_parser("catalog", help="list the models UnStar can download, with size, memory and licence")
    add_json_flag(cat)
    cat.set_defaults(func=cmd_catalog)

    disc = msub.add_parser("discover", help="list the GGUF models LM Studio and Ollama already have on this computer",
                           description="Find GGUF models in LM Studio's models folder (~/.lmstudio/models) and "
                                       "Ollama's library ($OLLAMA_MODELS or ~/.ollama/models), and print the "
                                       "`unstar models import` command for each one UnStar can import.")
    disc.add_argument("--lmstudio-dir", type=Path, action="append", default=None, metavar="DIR",
                      help="an LM Studio models folder to search instead of the default ones (repeatable)")
    disc.add_argument("--ollama-dir", type=Path, default=None, metavar="DIR",
                      help="Ollama's models folder (default: $OLLAMA_MODELS or ~/.ollama/models)")
    add_json_flag(disc)
    disc.set_defaults(func=cmd_discover)

    dl = msub.add_parser("download", help="download a catalog model (or any MLX repo) from the Hugging Face Hub",
                         description="Download a model from the Hugging Face Hub with a live progress line. "
                                     "Ctrl-C stops it; run the same command again to continue where it stopped. "
                                     "Gated repos need a token: HF_TOKEN, or hf_token in the app's settings.")
    dl.add_argument("model", help="a catalog id (see `unstar models catalog`) or a Hub repo id (org/name)")
    dl.add_argument("--revision", default=None, help="branch, tag or commit (default: the catalog's, else main)")
    dl.add_argument("--id", dest="model_id", default=None, help="id to install it under (default: the catalog id)")
    dl.add_argument("--restart", action="store_true", help="throw away an interrupted download and start over")
    add_json_flag(dl)
    dl.set_defaults(func=cmd_download)


def cmd_list(args: argparse.Namespace) -> int:
    store = ModelStore()
    resolve_model(store)  # registers the embedded model on first use
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
    print(resolve_model(ModelStore(), args.model).path)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from ..engine.importers import import_any

    record = import_any(ModelStore(), Path(args.source), args.model_id, quantize_bits=args.quantize, copy=args.copy,
                        gguf_precision=args.gguf_precision)
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


def cmd_catalog(args: argparse.Namespace) -> int:
    from ..engine.catalog import catalog_entries

    entries = catalog_entries(ModelStore())
    if args.json:
        print_json([dict(asdict(e), hub_url=e.hub_url) for e in entries])
        return 0
    print(f"{'':2}{'ID':30} {'SIZE':>9} {'RUN':>6} {'TRAIN':>6}  {'LICENCE':14} STATUS")
    for e in entries:
        status = ("installed" if e.installed else
                  f"partial ({human_bytes(e.partial_bytes)})" if e.partial_bytes else "-")
        print(f"{'* ' if e.default else '  '}{e.id:30} {human_bytes(e.size_bytes):>9} {e.run_memory_gb:>4.1f}GB "
              f"{e.train_memory_gb:>4.1f}GB  {e.license:14} {status}")
    print("\n* recommended. RUN / TRAIN: memory estimates for Apple silicon with the 4-bit weights.")
    print("Download one with `unstar models download ID`.")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from ..engine.hub import download_model
    from .common import drive

    store = ModelStore()
    last = drive(download_model(args.model, revision=args.revision, store=store, model_id=args.model_id,
                                restart=args.restart), as_json=args.json)
    if not args.json and last is not None:
        record = store.get(last.summary["model_id"])
        print(f"installed {record.id} ({record.architecture}, {record.quantization}, "
              f"{human_bytes(record.size_bytes)}) -> {record.path}")
        print(f'try it: unstar chat --model {record.id} "What is the capital of France?"')
    return 0


def cmd_discover(args: argparse.Namespace) -> int:
    from ..engine.discover import discover, imported_ids

    found = discover(args.lmstudio_dir, args.ollama_dir)
    imported = imported_ids(found, ModelStore())
    if args.json:
        print_json([dict(asdict(m), import_command=m.import_command, imported_as=imported.get(m.path))
                    for m in found])
        return 0
    if not found:
        print("No LM Studio or Ollama models found on this computer.")
        return 0
    print(f"{'APP':10} {'NAME':40} {'ARCH':8} {'QUANT':8} {'SIZE':>9}  IMPORT")
    for m in found:
        status = f"imported as {imported[m.path]}" if m.path in imported else ("yes" if m.importable else m.reason)
        print(f"{m.app:10} {m.name:40} {m.architecture or '-':8} {m.quantization or '-':8} "
              f"{human_bytes(m.size_bytes):>9}  {status}")
    commands = [m.import_command for m in found if m.importable and m.path not in imported]
    if commands:
        print("\nImport one with:")
        print("\n".join(f"  {c}" for c in commands))
    return 0
