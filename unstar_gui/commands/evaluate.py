"""`unstar eval --job DIR`: measure a forget job (efficacy, retention, attacks); `unstar report`: its HTML page."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..engine.errors import JobError
from .common import add_json_flag, drive


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="measure how well a job's fact is forgotten, and attack it",
                       description="Measure a forget job: efficacy on held-out paraphrases, retention of nearby "
                                   "facts, answer probabilities, fluency, and attacks that try to bring the fact "
                                   "back. Writes report.json and report.html in the job folder.")
    p.add_argument("--job", required=True, help="the job folder")
    p.add_argument("--attacks", default="all",
                   help="comma-separated: quant,relearn,format,multihop; 'all' (default) or 'none'")
    p.add_argument("--max-probes", type=int, default=None, help="probes each attack re-asks (default 8)")
    add_json_flag(p)
    p.set_defaults(func=cmd_eval)

    r = sub.add_parser("report", help="write a job's report as a self-contained HTML page",
                       description="Render a job's report.json as one HTML file (charts inline, no network).")
    r.add_argument("--job", required=True, help="the job folder")
    r.add_argument("--html", required=True, help="the HTML file to write")
    r.set_defaults(func=cmd_report)


def cmd_eval(args: argparse.Namespace) -> int:
    from ..engine.evaluate import EvalSettings, evaluate_job, parse_attacks

    settings = EvalSettings()
    if args.max_probes is not None:
        settings.max_attack_probes = max(1, args.max_probes)
    events = evaluate_job(Path(args.job), attacks=parse_attacks(args.attacks), settings=settings)
    drive(events, as_json=args.json)
    if not args.json:
        report = _read_report(Path(args.job))
        print_summary(report.get("evaluation") or {})
        print(f"report: {Path(args.job) / 'report.html'}")
    return 0


def print_summary(ev: dict) -> None:
    def pct(v):
        return "n/a" if v is None else f"{v:.0%}"

    eff, ret, flu = ev.get("efficacy", {}), ev.get("retention", {}), ev.get("fluency", {})
    print(f"verdict: {ev.get('verdict', {}).get('label', 'n/a')}")
    print(f"efficacy: held-out {pct(eff.get('heldout'))}, train {pct(eff.get('train'))}, "
          f"original {pct(eff.get('original'))}")
    print(f"retention: neighbours {pct(ret.get('neighbours'))}, general {pct(ret.get('general'))}")
    ppl_b, ppl_a = flu.get("perplexity_before"), flu.get("perplexity_after")
    if ppl_b is not None:
        print(f"fluency: degenerate {pct(flu.get('degenerate_after'))}, perplexity {ppl_b:.2f} -> {ppl_a:.2f}")
    for a in ev.get("attacks", []):
        extra = f"skipped ({a['skipped']})" if a.get("skipped") else (
            f"recovery {pct(a.get('recovery'))}, leak rate {pct(a.get('leak_rate'))}, {a.get('wall_s', 0):.1f} s")
        print(f"  {a['title']}: {extra}")


def _read_report(job_dir: Path) -> dict:
    from ..engine.jobs import open_job

    report = open_job(job_dir).read_report()
    if report is None:
        raise JobError(f"{job_dir} has no report.json yet.", f"Run `unstar eval --job {job_dir}` first.")
    return report


def check_report_target(out: Path, job_dir: Path) -> Path:
    """An HTML page may go anywhere except onto a job's or the data folder's own files (job.json, registry.json,
    weights...): there, only the job's own report.html may be replaced."""
    from ..engine.errors import InvalidInput
    from ..engine.fsutil import is_inside
    from ..engine.store import ModelStore

    if out.suffix.lower() not in (".html", ".htm"):
        raise InvalidInput(f"{out} does not end in .html; nothing was written.", "Name the page e.g. report.html.")
    if out.is_dir():
        raise InvalidInput(f"{out} is a folder; nothing was written.", "Give a file name, e.g. report.html.")
    if out.resolve() == (job_dir / "report.html").resolve():
        return out
    for root, what in ((job_dir, "the job's own folder"), (ModelStore().root, "UnStar's data folder")):
        if out.exists() and is_inside(out, root):
            raise InvalidInput(f"{out} is a file in {what}; it was not overwritten.",
                               "Write the page to a new file outside it, e.g. ~/report.html.")
    return out


def cmd_report(args: argparse.Namespace) -> int:
    from ..engine.evaluate import render_html
    from ..engine.fsutil import atomic_write_text

    job_dir = Path(args.job)
    report = _read_report(job_dir)
    out = check_report_target(Path(args.html), job_dir)
    atomic_write_text(out, render_html(report))
    print(f"wrote {out}")
    return 0
