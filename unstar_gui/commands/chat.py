"""`unstar chat "question"`: one answer from a model (optionally with a job's adapter)."""

from __future__ import annotations

import argparse

from ..engine.errors import InvalidInput
from ..engine.embedded import resolve_model
from ..engine.store import ModelStore
from .common import add_json_flag, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="ask a model one question", description="Ask a model one question.")
    p.add_argument("question", help="the question to ask")
    p.add_argument("--model", default=None, help="model id (default: the default model)")
    p.add_argument("--adapter", default=None, help="an adapters folder (mlx-lm format) to apply")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--system", default=None, help="a system prompt")
    add_json_flag(p)
    p.set_defaults(func=cmd_chat)


def cmd_chat(args: argparse.Namespace) -> int:
    from ..engine.llm import LLM

    if not args.question.strip():
        raise InvalidInput("The question is empty.", 'Type a question, e.g. unstar chat "What is the capital of France?"')
    record = resolve_model(ModelStore(), args.model)
    llm = LLM(record.path, model_id=record.id)
    if args.adapter:
        llm.load_adapter(args.adapter)
    answer = llm.answer([args.question], max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed,
                        system=args.system)[0]
    if args.json:
        print_json({"model": record.id, "question": args.question, "answer": answer, "adapter": args.adapter})
    else:
        print(answer)
    return 0
