"""`unstar`: the headless face of UnStar Studio. Each command group lives in unstar_gui/commands/."""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .commands import COMMAND_MODULES
from .commands.common import run_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unstar",
        description="Make a local LLM forget one fact (UNSTAR unlearning), check it, and export the result.",
    )
    parser.add_argument("--version", action="version", version=f"unstar {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
