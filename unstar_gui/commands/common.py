"""What every command shares: error handling, JSON output, and a live progress line for event streams."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from typing import Any, Iterable, Iterator

from ..engine.errors import UnstarError
from ..engine.events import (DownloadProgress, Event, Finished, Log, ProbeResult, Progress, SamplesReady,
                             StageStarted, TrainStep)


# Libraries (transformers' "Loading weights", huggingface_hub, tqdm) draw their own bars on stderr.
_BAR_SWITCHES = ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS")


@contextlib.contextmanager
def quiet_library_bars(enabled: bool) -> Iterator[None]:
    """With --json, stdout is one event per line and stderr carries only errors: library bars are switched off
    (our own Progress events carry the same information)."""
    if not enabled:
        yield
        return
    saved = {k: os.environ.get(k) for k in _BAR_SWITCHES}
    os.environ.update({k: "1" for k in _BAR_SWITCHES})
    try:
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError:
            pass
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_command(args: argparse.Namespace) -> int:
    """Run `args.func`; user errors become one line on stderr and a non-zero exit code."""
    try:
        with quiet_library_bars(bool(getattr(args, "json", False))):
            rc = args.func(args)
        return int(rc or 0)
    except UnstarError as exc:
        print(f"error: {exc.message}" + (f" {exc.hint}" if exc.hint else ""), file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a file-system failure no engine check foresaw: still one line, never a traceback
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"error: {exc.strerror or exc}{where}. Check that the folder exists and is writable, and that the disk "
              "has space.", file=sys.stderr)
        return 5
    except KeyboardInterrupt:
        print("error: interrupted. Partial work was kept: run the same command again to continue a download, or "
              "`unstar forget --resume JOB_DIR` for a forget job.",
              file=sys.stderr)
        return 130


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


def add_json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON (one event per line for jobs)")


def _fmt_eta(s: float | None) -> str:
    if s is None:
        return ""
    s = int(s)
    return f" ETA {s // 60}m{s % 60:02d}s" if s >= 60 else f" ETA {s}s"


def _fmt_bytes(n: float) -> str:
    from ..engine.fsutil import human_bytes

    return human_bytes(n)


class EventPrinter:
    """Prints events as a live, overwritten progress line on a terminal, or as JSON lines with --json."""

    def __init__(self, as_json: bool = False, stream=None) -> None:
        self.as_json = as_json
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self._last_line = 0.0
        self._open_line = False

    def _line(self, text: str, transient: bool, final: bool = False) -> None:
        if transient and self.tty:
            now = time.monotonic()
            if now - self._last_line < 0.1 and not final:
                return
            self._last_line = now
            self.stream.write("\r\033[K" + text)
            self._open_line = True
        else:
            if self._open_line:
                self.stream.write("\n")
                self._open_line = False
            if transient:  # not a terminal: keep logs short, print every progress line once
                pass
            self.stream.write(text + "\n")
        self.stream.flush()

    def __call__(self, event: Event) -> None:
        if self.as_json:
            self.stream.write(json.dumps(event.to_dict(), ensure_ascii=False, default=str) + "\n")
            self.stream.flush()
            return
        if isinstance(event, StageStarted):
            r = f" (round {event.round})" if event.round else ""
            self._line(f"== {event.stage}{r}: {event.message}", False)
        elif isinstance(event, TrainStep):
            self._line(f"  round {event.round} step {event.step}/{event.total_steps}  loss {event.loss:.3f}  "
                       f"forget {event.forget_loss:.3f}  retain {event.retain_loss:.3f}  "
                       f"{event.tokens_per_s:.0f} tok/s{_fmt_eta(event.eta_s)}", True)
        elif isinstance(event, ProbeResult):
            self._line(f"  probe round {event.round}: fact gone on {event.forgotten}/{event.total} probes "
                       f"(efficacy {event.efficacy:.0%}), retention {event.retention:.0%}", False)
        elif isinstance(event, Progress):
            total = f"/{event.total:.0f}" if event.total else ""
            self._line(f"  {event.stage}: {event.done:.0f}{total} {event.message}{_fmt_eta(event.eta_s)}", True,
                       final=bool(event.total) and event.done >= event.total)
        elif isinstance(event, DownloadProgress):
            pct = 100.0 * event.done_bytes / event.total_bytes if event.total_bytes else 0.0
            self._line(f"  {pct:5.1f}%  {_fmt_bytes(event.done_bytes)} / {_fmt_bytes(event.total_bytes)}  "
                       f"{_fmt_bytes(event.speed_bps)}/s{_fmt_eta(event.eta_s)}", True,
                       final=event.done_bytes >= event.total_bytes)
        elif isinstance(event, SamplesReady):
            self._line(f"  {event.count} {event.kind.replace('_', ' ')}", False)
        elif isinstance(event, Log):
            self._line(("warning: " if event.level == "warning" else "  ") + event.message, False)
        elif isinstance(event, Finished):
            self._line(f"done: {event.job_dir}" if event.job_dir else "done", False)

    def close(self) -> None:
        if self._open_line:
            self.stream.write("\n")
            self._open_line = False


def drive(events: Iterable[Event], as_json: bool = False) -> Event | None:
    """Consume an event stream, printing it; returns the last event."""
    printer = EventPrinter(as_json)
    last = None
    try:
        for ev in events:
            printer(ev)
            last = ev
    finally:
        printer.close()
    return last
