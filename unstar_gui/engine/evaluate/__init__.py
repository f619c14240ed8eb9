"""Evaluation of a forget job: is the fact gone (not hidden), and did nothing else break?

`evaluate_job(job_dir, llm=None, attacks=ALL, cancel=None)` measures efficacy, retention, answer probabilities and
fluency, runs the attacks (re-quantization, relearning, other formats, multi-hop), and writes
report.json["evaluation"] plus report.html. `render_html(report)` renders a report dict on its own.
"""

from .attacks import ALL, ATTACKS, AttackSettings, lora_finetune, parse_attacks
from .report_html import render_html
from .runner import EvalSettings, evaluate_job

__all__ = ["ALL", "ATTACKS", "AttackSettings", "EvalSettings", "evaluate_job", "lora_finetune", "parse_attacks",
           "render_html"]
