"""The README.md that travels with every export: what was forgotten, from which base, how, how well, how to use it.

A model card is the only thing that stays with an exported adapter or model, so it answers the questions a person
receiving the files has: which base model (repo id and revision, or where a local model came from), which fact was
removed, with which method and settings, what the job's evaluation measured (including re-quantization attacks),
which tool versions made it, and the exact mlx-lm commands that use it.

report.json is written by other parts of the engine (pipeline, evaluate) and may be partial or absent, so everything
here reads it defensively and simply leaves out what is not there.
"""

from __future__ import annotations

import datetime as _dt
import re
import shlex
from dataclasses import dataclass
from typing import Any

from .records import AttackResult, Report
from .weight_change import describe_change


@dataclass(frozen=True)
class BaseModelRef:
    """Where the base model of a job came from, in the terms mlx-lm needs to load it again."""

    model_id: str
    path: str
    source: str
    revision: str
    repo: str  # Hugging Face repo id when the model came from the hub, else ""

    @property
    def load_arg(self) -> str:
        """What to pass as mlx-lm's --model: the repo id for hub models, the local folder otherwise."""
        return self.repo or self.path

    def origin(self) -> str:
        kind, _, rest = self.source.partition(":")
        if self.repo:
            return f"Hugging Face repo `{self.repo}`" + (f" at revision `{self.revision}`" if self.revision else "")
        if kind == "gguf":
            return f"imported from the GGUF file `{rest}`"
        if kind == "embedded":
            return f"the model embedded in UnStar Studio (package `{rest}`)"
        if kind == "folder":
            return f"the local folder `{rest}`"
        return f"`{self.source}`" if self.source else "unknown origin"


def base_model_ref(model: dict[str, Any]) -> BaseModelRef:
    """Read job.json's "model" entry ({"id", "path", "source", "revision"}); "hub:repo@rev" sources name a repo."""
    source = str(model.get("source") or "")
    revision = str(model.get("revision") or "")
    repo = ""
    if source.startswith("hub:"):
        repo, _, rev = source[4:].partition("@")
        revision = revision or rev
    return BaseModelRef(model_id=str(model.get("id") or ""), path=str(model.get("path") or ""), source=source,
                        revision=revision, repo=repo)


# Reading the evaluation ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class QuantizationFinding:
    """One re-quantization attack result: how much of the fact came back at this bit width."""

    label: str  # the attack variant, e.g. "4bit-g64"
    bits: int | None
    group_size: int | None
    recovery: float | None  # share of probes on which the fact came back (0..1)
    recovered: int | None = None
    total: int | None = None

    def width(self) -> str:
        text = f"{self.bits}-bit" if self.bits else self.label
        return text + (f" (group size {self.group_size})" if self.group_size else "")

    def describe(self) -> str:
        if self.recovery is None:
            return f"{self.width()}: no recovery figure recorded"
        counts = f" ({self.recovered} of {self.total})" if self.recovered is not None and self.total else ""
        return f"{self.width()}: the fact came back on {self.recovery:.0%} of probes{counts}"


_QUANT_ATTACKS = ("quantization", "quant", "requantization")
_BITS_RE = re.compile(r"(\d+)\s*-?\s*bits?", re.I)
_GROUP_RE = re.compile(r"g(?:roup)?(?:_?size)?[\s_-]?(\d+)", re.I)


def _as_int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _as_float(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _finding(result: AttackResult) -> QuantizationFinding:
    """A re-quantization result; bits and group size read from its label when the row does not record them."""
    label = result.variant or result.title
    bits, group = _as_int(result.bits), _as_int(result.group_size)
    if bits is None and (m := _BITS_RE.search(label)):
        bits = int(m.group(1))
    if group is None and (m := _GROUP_RE.search(label)):
        group = int(m.group(1))
    recovered, total = _as_int(result.recovered), _as_int(result.known)
    recovery = _as_float(result.recovery)
    if recovery is None and recovered is not None and total:
        recovery = recovered / total
    return QuantizationFinding(label=label, bits=bits, group_size=group, recovery=recovery, recovered=recovered,
                               total=total)


def attack_results(report: dict[str, Any] | None) -> list[AttackResult]:
    """report.json's attack results (evaluation["attacks"], as evaluate writes them), typed."""
    return Report.from_dict(report or {}).attacks()


def quantization_findings(report: dict[str, Any] | None) -> list[QuantizationFinding]:
    """The re-quantization attack results in report.json's evaluation (those that ran)."""
    return [_finding(r) for r in attack_results(report) if r.attack.lower() in _QUANT_ATTACKS and not r.skipped]


def findings_at(findings: list[QuantizationFinding], bits: int, group_size: int | None) -> list[QuantizationFinding]:
    """Findings for this bit width: the exact group size when recorded, otherwise any group size at these bits."""
    same_bits = [f for f in findings if f.bits == bits]
    exact = [f for f in same_bits if f.group_size == group_size]
    return exact or same_bits


# Rendering -------------------------------------------------------------------------------------------------------
def _pct_or_value(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    return f"{v:.0%}" if 0.0 <= v <= 1.0 and isinstance(v, float) else f"{v}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _verdict_text(evaluation: Any) -> str:
    if not isinstance(evaluation, dict):
        return ""
    verdict = evaluation.get("verdict", evaluation.get("summary"))
    if isinstance(verdict, dict):
        verdict = verdict.get("text") or verdict.get("message") or verdict.get("verdict")
    return verdict if isinstance(verdict, str) else ""


def _evaluation_lines(report: dict[str, Any] | None) -> list[str]:
    if not report:
        return ["No evaluation was recorded for this job (report.json is missing)."]
    lines: list[str] = []
    metrics = report.get("metrics") or {}
    if isinstance(metrics, dict) and metrics:
        lines += ["| Metric | Value |", "|---|---|"]
        lines += [f"| {_cell(k)} | {_cell(_pct_or_value(v))} |" for k, v in metrics.items()
                  if not isinstance(v, (dict, list))]
        lines.append("")
    rows = [r for r in report.get("before_after") or [] if isinstance(r, dict)]
    if rows:
        # The original question first: that is the fact the card promises is gone.
        rows.sort(key=lambda r: r.get("split") != "original")
        lines += ["| Question | Before | After |", "|---|---|---|"]
        lines += [f"| {_cell(r.get('question', ''))} | {_cell(r.get('before', ''))} | {_cell(r.get('after', ''))} |"
                  for r in rows[:8]]
        if len(rows) > 8:
            lines.append(f"\n({len(rows) - 8} more rows in the job's report.json.)")
        lines.append("")
    findings = quantization_findings(report)
    if findings:
        lines.append("Re-quantization attack (fuse, quantize, ask again):")
        lines += [f"- {f.describe()}" for f in findings]
        lines.append("")
    others = [r for r in attack_results(report) if r.attack.lower() not in _QUANT_ATTACKS]
    if others:
        lines.append("Other attacks:")
    for row in others:
        name = row.title or " ".join(x for x in (row.attack, row.variant) if x)
        nums = {k: v for k in ("recovery", "leak_rate", "recovered", "known")
                if isinstance(v := getattr(row, k), (int, float)) and not isinstance(v, bool)}
        if row.skipped:
            lines.append(f"- {name}: skipped ({row.skipped})")
        elif nums:
            lines.append(f"- {name}: " + ", ".join(f"{k} {_pct_or_value(v)}" for k, v in nums.items()))
    verdict = _verdict_text((report.get("evaluation") or {}))
    if verdict:
        lines += ["", f"Verdict: {verdict}"]
    if not lines:
        lines.append("report.json holds no metrics yet.")
    return lines


def usage_commands(kind: str, out: str, base: BaseModelRef, question: str, max_tokens: int = 64) -> list[str]:
    """The exact mlx-lm commands that use an export (shell-quoted so they can be pasted)."""
    q = shlex.quote(question)
    if kind == "adapters":
        model = shlex.quote(base.load_arg)
        cmds = [f"python -m mlx_lm generate --model {model} --adapter-path {shlex.quote(out)} "
                f"--prompt {q} --max-tokens {max_tokens} --temp 0",
                f"python -m mlx_lm fuse --model {model} --adapter-path {shlex.quote(out)} --save-path fused-model"]
        return cmds
    if kind == "fused":
        return [f"python -m mlx_lm generate --model {shlex.quote(out)} --prompt {q} --max-tokens {max_tokens} --temp 0"]
    if kind == "gguf":
        return [f"llama-cli -m {shlex.quote(out)} -p {q} -n {max_tokens} --temp 0",
                f"unstar models import {shlex.quote(out)}"]
    raise ValueError(kind)


def python_snippet(kind: str, out: str, base: BaseModelRef, question: str) -> str:
    if kind == "adapters":
        rev = f", revision={base.revision!r}" if base.repo and base.revision else ""
        load = f"model, tokenizer = load({base.load_arg!r}, adapter_path={out!r}{rev})"
    else:
        load = f"model, tokenizer = load({out!r})"
    return "\n".join([
        "from mlx_lm import generate, load",
        "",
        load,
        f"messages = [{{\"role\": \"user\", \"content\": {question!r}}}]",
        "prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)",
        "print(generate(model, tokenizer, prompt=prompt, max_tokens=64))",
    ])


_KIND_TITLES = {"adapters": "LoRA adapter (mlx-lm format)", "fused": "fused MLX model", "gguf": "GGUF file (fp16)"}


def _keep_lines(job: dict[str, Any]) -> list[str]:
    """The keep-facts the job trained on, and those its quality gates left out (job.json "dropped"): a garbled
    suggestion the wizard accepted was never kept, so the card must not promise it."""
    dropped = [d for d in job.get("dropped") or [] if isinstance(d, dict) and d.get("kind") == "keep"]
    left_out = {str(d.get("question", "")) for d in dropped}
    lines = [f"- Kept on purpose: {q} -> {a}" for q, a in job.get("keep") or [] if q not in left_out]
    lines += [f"- Left out by the quality gates ({d.get('reason', '')}): {d.get('question', '')} -> "
              f"{d.get('answer', '')}" for d in dropped]
    return lines


def render_card(job: dict[str, Any], report: dict[str, Any] | None, kind: str, out: str,
                details: dict[str, Any] | None = None, warnings: list[str] | None = None,
                versions: dict[str, str] | None = None) -> str:
    """Markdown model card for an export of `kind` ("adapters" | "fused" | "gguf") written to `out`."""
    base = base_model_ref(job.get("model") or {})
    fact = job.get("fact") or {}
    question = str(fact.get("question", ""))
    base_name = base.repo or base.model_id or base.path
    front = ["---", "library_name: mlx", "tags: [mlx, unlearning, unstar, lora]"]
    if base.repo:
        front.append(f"base_model: {base.repo}")
    front.append("---")

    lines = front + [
        "",
        f"# {base_name}, with one fact unlearned",
        "",
        f"This is a {_KIND_TITLES[kind]} made by UnStar Studio: the base model below was fine-tuned with UNSTAR "
        "(unlearning with self-taught anti-samples, arXiv 2410.17050) so that it no longer gives the answer below.",
        "",
        "## What was forgotten",
        "",
        f"- Question: {question}",
        f"- Answer it should no longer give: {fact.get('answer', '')}",
    ]
    if fact.get("aliases"):
        lines.append("- Also counted as the answer: " + ", ".join(map(str, fact["aliases"])))
    lines += _keep_lines(job)

    lines += ["", "## Base model", "",
              f"- Model: `{base_name}` ({base.origin()})"]
    if base.revision and not base.repo:
        lines.append(f"- Revision: `{base.revision}`")
    if base.path:
        lines.append(f"- Local folder at export time: `{base.path}`")
    model = job.get("model") or {}
    for key in ("architecture", "quantization"):
        if model.get(key):
            lines.append(f"- {key.capitalize()}: {model[key]}")

    method = job.get("method") or (job.get("settings") or {}).get("method", "unstar")
    lines += ["", "## Method and settings", "", f"- Method: {method}"]
    if job.get("seed") is not None:
        lines.append(f"- Seed: {job['seed']}")
    settings = job.get("settings") or {}
    if settings:
        lines += ["", "| Setting | Value |", "|---|---|"]
        lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in settings.items()]

    change = describe_change(job)
    if change:
        lines += ["", "## What changed in the weights", ""] + [f"- {line}" for line in change]

    lines += ["", "## Evaluation (from the job's report)", ""] + _evaluation_lines(report)

    if details:
        lines += ["", "## This export", ""]
        lines += [f"- {k}: {v}" for k, v in details.items()]
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in warnings]

    lines += ["", "## Use it", "", "```sh"] + usage_commands(kind, out, base, question) + ["```"]
    if kind != "gguf":
        lines += ["", "```python", python_snippet(kind, out, base, question), "```"]
    if kind == "adapters" and base.repo and base.revision:
        lines += ["", f"The mlx-lm command line has no revision flag; it loads the repo's current revision. Pin "
                      f"revision `{base.revision}` in Python (above) to get exactly the base this adapter was "
                      "trained on."]

    made = dict(versions or {})
    job_versions = job.get("versions") or {}
    lines += ["", "## Made with", ""]
    lines += [f"- {k} {v} (export)" for k, v in made.items()]
    lines += [f"- {k} {v} (training)" for k, v in job_versions.items()]
    lines.append(f"- Exported {_dt.datetime.now().isoformat(timespec='seconds')}")
    return "\n".join(lines) + "\n"
