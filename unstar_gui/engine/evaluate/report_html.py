"""report.json -> one self-contained HTML page (inline CSS, inline SVG charts, no scripts, no network)."""

from __future__ import annotations

from html import escape
from typing import Any, Sequence

from . import charts

SECTIONS = ("summary", "charts", "metrics", "attacks", "answers", "antisamples", "timing")

CSS = """
body{font-family:-apple-system,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1180px;color:#222;
     padding:0 16px;line-height:1.4}
h1{font-size:24px;margin-bottom:4px} h2{font-size:19px;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin-bottom:6px} .muted{color:#666;font-size:13px}
.verdict{padding:14px 18px;border-radius:6px;font-size:18px;font-weight:600;margin:16px 0 6px}
.verdict.good{background:#e8f5e9;border-left:6px solid #2e7d32}
.verdict.warn{background:#fff3e0;border-left:6px solid #ef6c00}
.verdict.bad{background:#ffebee;border-left:6px solid #c62828}
.verdict.none{background:#eceff1;border-left:6px solid #78909c}
table{border-collapse:collapse;width:100%;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:5px 7px;text-align:left;vertical-align:top}
th{background:#f5f5f5} td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.leak{background:#ffebee} .ok{background:#e8f5e9}
.tag{display:inline-block;padding:0 6px;border-radius:3px;font-size:11px;background:#eceff1;margin-left:4px}
.tag.leak{background:#ffcdd2} .tag.ok{background:#c8e6c9}
.charts{display:flex;flex-wrap:wrap;gap:24px} details{margin:6px 0} summary{cursor:pointer;font-weight:600}
.answer{white-space:pre-wrap;max-width:420px}
"""


def pct(v: Any) -> str:
    return "n/a" if v is None else f"{v:.0%}"


def num(v: Any, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.{digits}f}"


def render_html(report: dict[str, Any]) -> str:
    """The whole page; every section is present (saying "not measured" where the report has no data)."""
    ev = report.get("evaluation") or {}
    fact = report.get("fact") or {}
    model = report.get("model") or {}
    title = f"UnStar report: {fact.get('question', 'unknown fact')}"
    body = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="muted">Forgotten answer: <b>{escape(str(fact.get("answer", "")))}</b>'
        + (f" (aliases: {escape(', '.join(fact.get('aliases') or []))})" if fact.get("aliases") else "")
        + f" · model {escape(str(model.get('id') or model.get('path') or 'unknown'))}"
        + f" · method {escape(str(report.get('method') or 'unstar'))}"
        + (f" · evaluated {escape(ev['created'])}" if ev.get("created") else "") + "</p>",
        _summary(ev), _comparison(report), _charts(ev), _metrics(ev, report), _attacks(ev), _answers(ev, report),
        _antisamples(ev), _timing(ev, report),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _section(key: str, heading: str, content: str) -> str:
    return f'<section id="{key}"><h2>{escape(heading)}</h2>\n{content}</section>'


def _summary(ev: dict[str, Any]) -> str:
    v = ev.get("verdict") or {"label": "Not evaluated yet", "level": "none",
                              "detail": "Run `unstar eval --job DIR` to measure this job."}
    return _section("summary", "Summary",
                    f'<div class="verdict {escape(v.get("level", "none"))}">{escape(v["label"])}</div>'
                    f'<p>{escape(v.get("detail", ""))}</p>')


def _charts(ev: dict[str, Any]) -> str:
    eff, ret, flu = ev.get("efficacy") or {}, ev.get("retention") or {}, ev.get("fluency") or {}
    rows = [("Efficacy, held-out probes", eff.get("heldout"), charts.GOOD),
            ("Efficacy, training probes", eff.get("train"), charts.GOOD),
            ("Efficacy, original question", eff.get("original"), charts.GOOD),
            ("Retention, neighbour facts", ret.get("neighbours"), charts.BLUE),
            ("Retention, general knowledge", ret.get("general"), charts.BLUE),
            ("Degenerate answers after", flu.get("degenerate_after"), charts.WARN)]
    parts = [charts.hbar_chart(rows, title="Forgetting and retention")]
    attacks = [a for a in ev.get("attacks") or [] if not a.get("skipped")]
    if attacks:
        parts.append(charts.paired_hbar_chart(
            [a["title"] for a in attacks], [a.get("base_leak_rate") for a in attacks],
            [a.get("leak_rate") for a in attacks], ("base model gives the fact", "after unlearning + attack"),
            colours=(charts.GREY, charts.BAD), title="Attacks: share of known probes that leak"))
    return _section("charts", "Charts", f'<div class="charts">{"".join(parts)}</div>')


def _metrics(ev: dict[str, Any], report: dict[str, Any]) -> str:
    if not ev:
        pipeline = report.get("metrics") or {}
        rows = [(k, num(v) if isinstance(v, float) else escape(str(v))) for k, v in pipeline.items()]
        return _section("metrics", "Metrics", _table(["metric", "value"], rows) if rows else "<p>Not measured.</p>")
    eff, ret = ev.get("efficacy") or {}, ev.get("retention") or {}
    prob, flu = ev.get("probabilities") or {}, ev.get("fluency") or {}
    before, after = prob.get("before") or {}, prob.get("after") or {}
    c_eff, c_ret = eff.get("counts") or {}, ret.get("counts") or {}

    def count(c: dict[str, Any], a: str, b: str) -> str:
        return f"{c.get(a, 0)}/{c.get(b, 0)}" if c else ""

    rows = [
        ("Efficacy: held-out paraphrases (never trained on)", "", pct(eff.get("heldout")),
         count(c_eff.get("heldout", {}), "forgotten", "known")),
        ("Efficacy: training paraphrases", "", pct(eff.get("train")), count(c_eff.get("train", {}), "forgotten", "known")),
        ("Efficacy: original question", "", pct(eff.get("original")),
         count(c_eff.get("original", {}), "forgotten", "known")),
        ("Retention: neighbour facts", "", pct(ret.get("neighbours")), count(c_ret.get("neighbours", {}), "kept", "known")),
        ("Retention: general knowledge", "", pct(ret.get("general")), count(c_ret.get("general", {}), "kept", "known")),
        ("Mean log-prob of the true answer (forget set)", num(before.get("forget_logprob")),
         num(after.get("forget_logprob")), ""),
        ("Mean log-prob of the true answer (retain set)", num(before.get("retain_logprob")),
         num(after.get("retain_logprob")), ""),
        (f"Truth ratio, forget set (vs {prob.get('n_wrong', 0)} wrong answers)", num(before.get("truth_ratio")),
         num(after.get("truth_ratio")), ""),
        ("Degenerate / repetitive answers", pct(flu.get("degenerate_before")), pct(flu.get("degenerate_after")), ""),
        ("Perplexity on the reference text", num(flu.get("perplexity_before"), 2), num(flu.get("perplexity_after"), 2),
         escape(flu.get("reference") or "")),
    ]
    note = ('<p class="muted">Efficacy and retention count only items the base model answered right. Truth ratio '
            "(TOFU): mean probability of wrong answers over that of the true one; near 0 the model still prefers the "
            "truth, about 1 or above it no longer does.</p>")
    return _section("metrics", "Metrics", _table(["metric", "before", "after", "count"],
                                                 [(escape(a), b, c, d) for a, b, c, d in rows], num_cols=(1, 2, 3))
                    + note)


def _attacks(ev: dict[str, Any]) -> str:
    attacks = ev.get("attacks") or []
    if not attacks:
        run = ev.get("attacks_run")
        msg = "No attack was run." if run == [] else "Not measured."
        return _section("attacks", "Attacks", f"<p>{msg}</p>")
    rows = []
    for a in attacks:
        rows.append((escape(a["attack"]), escape(a["title"]) + (f'<br><span class="muted">skipped: '
                                                               f'{escape(a["skipped"])}</span>' if a.get("skipped")
                                                               else ""),
                     pct(a.get("recovery")), pct(a.get("leak_rate")), pct(a.get("base_leak_rate")),
                     str(a.get("known", 0)), f"{a.get('wall_s', 0):.1f} s"))
    table = _table(["attack", "variant", "recovery", "leak rate", "base leak rate", "probes", "time"], rows,
                   num_cols=(2, 3, 4, 5, 6))
    note = ('<p class="muted">Recovery: share of the probes the base model knew, forgotten after unlearning, that '
            "give the fact again under the attack. Leak rate: share that give it under the attack at all. Base leak "
            "rate: the same prompt on the original model (an attack the base model cannot answer proves little)."
            "</p>")
    details = []
    for a in attacks:
        if not a.get("examples"):
            continue
        ex = [(escape(e["prompt"]).replace("\n", "<br>"), f'<div class="answer">{escape(e["answer"])}</div>',
               _flag(e["leak"])) for e in a["examples"]]
        details.append(f"<details><summary>{escape(a['title'])}: answers</summary>"
                       f"{_table(['prompt', 'answer', ''], ex)}</details>")
    return _section("attacks", "Attacks", table + note + "".join(details))


def _answers(ev: dict[str, Any], report: dict[str, Any]) -> str:
    answers = ev.get("answers") or {}
    probes = answers.get("probes")
    if probes is None:  # a pipeline report without evaluation still has its before/after list
        probes = [{"question": r.get("question", ""), "split": r.get("split", ""), "before": r.get("before", ""),
                   "after": r.get("after", ""), "known_before": r.get("known_before"),
                   "leaks_after": r.get("leaks_after")} for r in report.get("before_after") or []]
    rows = [(escape(r["question"]) + f'<span class="tag">{escape(str(r.get("split", "")))}</span>',
             f'<div class="answer">{escape(r["before"])}</div>', f'<div class="answer">{escape(r["after"])}</div>',
             ("" if r.get("known_before") else '<span class="tag">base did not know</span>')
             + _flag(r.get("leaks_after"))) for r in probes]
    parts = ["<h3>The fact (probes)</h3>",
             _table(["question", "before (base model)", "after unlearning", ""], rows) if rows else "<p>None.</p>"]
    retain = answers.get("retain") or []
    if retain:
        rrows = [(escape(r["question"]) + f'<span class="tag">{escape(r["kind"])}</span>'
                  + f'<br><span class="muted">reference: {escape(r["reference"])}</span>',
                  f'<div class="answer">{escape(r["before"])}</div>', f'<div class="answer">{escape(r["after"])}</div>',
                  ("" if r["known_before"] else '<span class="tag">base did not know</span>')
                  + ('<span class="tag ok">kept</span>' if r["correct_after"] else '<span class="tag leak">lost</span>'))
                 for r in retain]
        parts += ["<h3>Facts to keep (retain set)</h3>",
                  _table(["question", "before (base model)", "after unlearning", ""], rrows)]
    return _section("answers", "Before and after", "".join(parts))


def _antisamples(ev: dict[str, Any]) -> str:
    rows = [(escape(a["question"]), escape(a["wrong_answer"]), escape(a["rationale"]),
             escape(a["style"]) + (f'<br><span class="muted">{escape(a["source"])}</span>' if a.get("source") else ""),
             str(a.get("round", 0))) for a in ev.get("antisamples") or []]
    total = ev.get("antisamples_total", len(rows))
    head = f'<p class="muted">{len(rows)} of {total} anti-samples shown.</p>' if rows else "<p>None recorded.</p>"
    return _section("antisamples", "Anti-samples used",
                    head + (_table(["question", "wrong answer", "misleading rationale", "style", "round"], rows,
                                   num_cols=(4,)) if rows else ""))


def _comparison(report: dict[str, Any]) -> str:
    """The table `unstar compare` writes into each method's report (engine/compare.html_section); absent otherwise."""
    comp = report.get("comparison")
    if not comp:
        return ""
    rows = [[f"<b>{escape(c)}</b>" if row[0] == comp.get("current") else escape(c) for c in row]
            for row in comp.get("rows", [])]
    note = f'<p class="muted">{escape(comp.get("note", ""))} Folder: {escape(comp.get("dir", ""))}</p>'
    return _section("comparison", "Comparison: " + comp.get("title", ""),
                    _table(comp.get("columns", []), rows, num_cols=range(1, len(comp.get("columns", [])))) + note)


def _timing(ev: dict[str, Any], report: dict[str, Any]) -> str:
    timing = {**(report.get("timing") or {}), **(ev.get("timing") or {})}
    rows = [(escape(k), f"{v:.1f} s" if isinstance(v, (int, float)) else escape(str(v))) for k, v in timing.items()]
    return _section("timing", "Timing", _table(["stage", "wall time"], rows, num_cols=(1,)) if rows
                    else "<p>Not recorded.</p>")


def _flag(leak: Any) -> str:
    if leak is None:
        return ""
    return '<span class="tag leak">gives the fact</span>' if leak else '<span class="tag ok">fact gone</span>'


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], num_cols: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i in num_cols else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
