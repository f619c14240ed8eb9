"""`unstar export --job DIR --adapters OUT | --fused OUT [--dequantize | --q-bits N --q-group-size G | --adapted-bits N]
| --gguf OUT | --lmstudio [NAME] [--lmstudio-root DIR]`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..engine.errors import InvalidInput
from ..engine.events import Finished
from .common import add_json_flag, drive

_KIND_NAMES = {"adapters": "adapter", "fused": "fused model", "gguf": "GGUF file"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a forget job: mlx-lm adapter, fused model or GGUF, each with a model card",
        description="Export a finished forget job. Every export carries a README model card: base model, the fact "
                    "forgotten, method and settings, evaluation summary, and the mlx-lm command to use it.")
    p.add_argument("--job", required=True, type=Path, help="the job folder (made by `unstar forget`)")
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--adapters", type=Path, metavar="OUT",
                      help="folder for adapters.safetensors + adapter_config.json (mlx-lm --adapter-path)")
    kind.add_argument("--fused", type=Path, metavar="OUT", help="folder for the adapter merged into the base model")
    kind.add_argument("--gguf", type=Path, metavar="OUT",
                      help="fp16 .gguf file (llama and mistral models), with an Ollama Modelfile beside it")
    kind.add_argument("--lmstudio", nargs="?", const="", default=None, metavar="NAME",
                      help="fp16 GGUF where LM Studio lists it: <LM Studio models>/unstar/NAME/NAME.gguf "
                           "(NAME defaults to the job folder's name)")
    p.add_argument("--lmstudio-root", type=Path, default=None, metavar="DIR",
                   help="--lmstudio: LM Studio's models folder, if not ~/.lmstudio/models")
    p.add_argument("--dequantize", action="store_true", help="--fused: write 16-bit weights even for a quantized base")
    p.add_argument("--q-bits", type=int, default=None, metavar="N", help="--fused: re-quantize to N bits")
    p.add_argument("--q-group-size", type=int, default=None, metavar="G",
                   help="--fused: quantization group size (default 64)")
    p.add_argument("--adapted-bits", type=int, default=None, metavar="N",
                   help="--fused on a quantized base: quantize the layers the adapter changed to N bits (default: "
                        "keep them unquantized; the other layers always keep the base's own weights)")
    p.add_argument("--force", action="store_true",
                   help="replace an earlier export at OUT (only ever one UnStar wrote: it carries our marker)")
    add_json_flag(p)
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from ..engine import export

    fused_only = (args.dequantize or args.q_bits is not None or args.q_group_size is not None
                  or args.adapted_bits is not None)
    if fused_only and args.fused is None:
        raise InvalidInput("--dequantize, --q-bits, --q-group-size and --adapted-bits apply to --fused exports only.",
                           "Use them with --fused OUT.")
    if args.lmstudio_root is not None and args.lmstudio is None:
        raise InvalidInput("--lmstudio-root applies to --lmstudio exports only.", "Add --lmstudio [NAME].")
    if args.q_group_size is not None and args.q_bits is None:
        raise InvalidInput("--q-group-size needs --q-bits.", "Pass --q-bits N with it, e.g. --q-bits 8.")
    if args.adapters is not None:
        kind, events = "adapters", export.export_adapters(args.job, args.adapters, overwrite=args.force)
    elif args.fused is not None:
        kind, events = "fused", export.export_fused(args.job, args.fused, dequantize=args.dequantize,
                                                    q_bits=args.q_bits, q_group_size=args.q_group_size or 64,
                                                    adapted_bits=args.adapted_bits, overwrite=args.force)
    else:
        out = args.gguf
        if out is None:  # --lmstudio: the folder layout LM Studio scans
            out = export.lmstudio_gguf_path(args.lmstudio or Path(args.job).resolve().name, args.lmstudio_root)
        kind, events = "gguf", export.export_gguf(args.job, out, overwrite=args.force)
    last = drive(events, as_json=args.json)
    if isinstance(last, Finished) and not args.json:
        print(f"exported {_KIND_NAMES[kind]} -> {last.summary['path']} (model card: {last.summary['card']})")
        if last.summary.get("ollama_command"):
            print(f"use it in Ollama: {last.summary['ollama_command']}")
        if args.lmstudio is not None:
            print("LM Studio lists it under My Models (unstar publisher) after a refresh")
    return 0
