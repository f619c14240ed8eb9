"""`unstar forget`: make a model forget one fact (UNSTAR), with live progress; `--resume DIR` continues a job."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from typing import Any, Iterator, Sequence

from ..engine.errors import InvalidInput
from ..engine.settings import PRESETS, ForgetSettings, cli_fields, default_of
from .common import add_json_flag, drive, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "forget", help="make a model forget one fact",
        description="Make a model forget one fact with UNSTAR anti-samples (LoRA), keeping the facts around it. "
                    "Writes a job folder with the adapter (mlx-lm format), samples, metrics and report.json.")
    p.add_argument("--model", default=None, help="model id (default: the default model)")
    p.add_argument("--question", "-q", default=None, help='the question, e.g. "Where did Harry Potter go to school?"')
    p.add_argument("--answer", "-a", default=None, help='the answer to forget, e.g. "Hogwarts"')
    p.add_argument("--alias", action="append", default=[], help="another way of writing the answer (repeatable)")
    p.add_argument("--keep", action="append", default=[], metavar='"Q => A"',
                   help="a fact that must stay (repeatable)")
    p.add_argument("--out", default=None, help="job folder (default: a new folder under the data folder's jobs/)")
    p.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="start from a named recipe: 'paper' is the original UNSTAR recipe and the default (adapter "
                        "on every linear module of the last 16 blocks); 'locality' adds the null-space constraint and "
                        "the early stop: more general knowledge kept, related facts at risk (README \"Locality\")")
    add_setting_options(p)
    p.add_argument("--force", action="store_true", help="unlearn even if the model doesn't seem to know the fact")
    p.add_argument("--resume", default=None, metavar="DIR", help="continue a stopped job from its last checkpoint")
    add_json_flag(p)
    p.set_defaults(func=cmd_forget)


def add_setting_options(p: argparse.ArgumentParser, names: Sequence[str] | None = None) -> None:
    """One option per ForgetSettings field with a "flag" in its metadata (only the fields in `names`, when given).
    The parser's default is None (unset), so a --preset's values stand unless an option is given; the help says the
    setting's own default."""
    for f in cli_fields():
        if names is not None and f.name not in names:
            continue
        meta, value = f.metadata, default_of(f)
        flag = meta["flag"]
        if "choices" in meta:
            kind: dict[str, Any] = {"choices": meta["choices"]}
        elif isinstance(value, bool):
            kind = {"action": argparse.BooleanOptionalAction}
        else:  # the metavar argparse would give the flag (--layers LAYERS), not the field's name
            kind = {"type": type(value), "metavar": meta.get("metavar", flag[2:].upper().replace("-", "_"))}
        p.add_argument(flag, dest=f.name, default=None, help=f"{meta['help']} (default: {value})", **kind)


def settings_from_args(args: argparse.Namespace) -> ForgetSettings:
    """The --preset's settings (or the defaults), with every option given on the command line on top."""
    preset = getattr(args, "preset", None)
    settings = ForgetSettings.preset_named(preset) if preset else ForgetSettings()
    for f in cli_fields():
        value = getattr(args, f.name, None)  # a command that offers only some of the options
        if value is not None:
            setattr(settings, f.name, value)
    return settings


def request_from_args(args: argparse.Namespace):
    from pathlib import Path

    from ..engine.pipeline import ForgetRequest, parse_keep

    if args.question is None or args.answer is None:
        raise InvalidInput("--question and --answer are needed.",
                           'e.g. unstar forget --question "Where did Harry Potter go to school?" --answer Hogwarts')
    settings = settings_from_args(args)
    return ForgetRequest(question=args.question, answer=args.answer, aliases=list(args.alias),
                         keep=[parse_keep(k) for k in args.keep], model=args.model, settings=settings,
                         out_dir=Path(args.out) if args.out else None, force=args.force)


@contextlib.contextmanager
def stop_on_signals(cancel) -> Iterator[None]:
    """SIGTERM or Ctrl-C stop the job at its next safe point (a checkpoint is written, the job is marked
    interrupted); a second one stops at once. Only the main thread may set handlers: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if cancel.cancelled:
            raise KeyboardInterrupt
        cancel.cancel(reason="signal")
        print(f"\n{signal.Signals(signum).name}: stopping at the next safe point (again to stop at once)...",
              file=sys.stderr, flush=True)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def cmd_forget(args: argparse.Namespace) -> int:
    from ..engine.events import Finished, Log
    from ..engine.pipeline import create_forget_job, resume_forget, run_job
    from ..engine.cancel import CancelToken

    cancel = CancelToken()
    if args.resume:
        job_dir = args.resume
        events = resume_forget(job_dir, cancel=cancel)
    else:
        job = create_forget_job(request_from_args(args))
        job_dir = str(job.dir)
        events = run_job(job, cancel=cancel)
    # The job folder comes first, in JSON too: a script that is killed later still knows where the work is.
    first = Log(f"job folder: {job_dir}")
    if args.json:
        print(json.dumps(dict(first.to_dict(), job_dir=str(job_dir)), ensure_ascii=False), flush=True)
    else:
        print(first.message)
    try:
        with stop_on_signals(cancel):
            last = drive(events, as_json=args.json)
    except KeyboardInterrupt:
        events.close()  # the job marks itself interrupted
        print(f"\ninterrupted: partial work is kept. Resume with: unstar forget --resume {job_dir}", file=sys.stderr)
        return 130
    if isinstance(last, Finished) and not args.json:
        m = last.summary
        print_json({"job": last.job_dir, "adapter": m.get("adapter_path"), "rounds": m.get("rounds"),
                    "steps": m.get("steps"), "efficacy_heldout": m.get("efficacy_heldout"),
                    "retention_neighbours": m.get("retention_neighbours"),
                    "general_accuracy_ratio": m.get("general_accuracy_ratio"),
                    "general_heldout_ratio": m.get("general_heldout_ratio"), "total_s": m.get("total_s")})
    return 0
