"""`unstar compare`: run several unlearning methods on the same fact and samples, evaluate each, print the table."""

from __future__ import annotations

import argparse
import sys

from ..engine.methods import METHODS
from .common import add_json_flag, drive
from .forget import add_setting_options, settings_from_args

# the settings a comparison shares between its methods (the same training budget and seed for each)
SHARED_SETTINGS = ("steps_per_round", "max_rounds", "seed")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="compare unlearning methods on the same fact",
        description="Generate the probes, anti-samples and retain set once, then unlearn the fact with each method "
                    "on those same files, evaluate each with the full suite (attacks included), and write "
                    "comparison.md, comparison.json and a Comparison section in every method's report.html. "
                    f"Methods: {', '.join(sorted(METHODS))}.")
    p.add_argument("--model", default=None, help="model id (default: the default model)")
    p.add_argument("--question", "-q", required=True, help="the question whose answer should be forgotten")
    p.add_argument("--answer", "-a", required=True, help="the answer to forget")
    p.add_argument("--methods", default="unstar,ga_kl,npo,idk,negate",
                   help="comma-separated methods (default: all five)")
    p.add_argument("--alias", action="append", default=[], help="another way of writing the answer (repeatable)")
    p.add_argument("--keep", action="append", default=[], metavar='"Q => A"', help="a fact that must stay")
    p.add_argument("--out", default=None, help="folder for the comparison (default: a new one under the data "
                                               "folder's comparisons/)")
    add_setting_options(p, names=SHARED_SETTINGS)
    p.add_argument("--attacks", default="all",
                   help="attacks in the evaluation (quant and relearn fill the table; default all)")
    p.add_argument("--force", action="store_true", help="go on even if the model doesn't seem to know the fact")
    add_json_flag(p)
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    from ..engine.compare import CompareSettings, compare_methods, comparison_markdown
    from ..engine.events import Finished
    from ..engine.fsutil import read_json
    from ..engine.pipeline import parse_keep

    settings = CompareSettings(forget=settings_from_args(args), attacks=args.attacks, force=args.force)
    events = compare_methods(args.model, args.question, args.answer, args.methods.split(","), args.out,
                             aliases=args.alias, keep=[parse_keep(k) for k in args.keep], settings=settings)
    try:
        last = drive(events, as_json=args.json)
    except KeyboardInterrupt:
        events.close()
        print("\ninterrupted: the finished methods' job folders are kept.", file=sys.stderr)
        return 130
    if isinstance(last, Finished) and not args.json:  # with --json the Finished line carries the rows
        print()
        print(comparison_markdown(read_json(last.summary["json"])))
        print(f"table: {last.summary['markdown']}")
    return 0
