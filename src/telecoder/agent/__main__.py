"""``python -m telecoder.agent``: the prompt on stdin, one JSON event a line on stdout.

Events (``type``): ``session`` (``id``: the conversation, to ``--resume``), ``assistant`` and
``thought`` (``text``), ``tool_call`` (``id``, ``name``, ``arguments``), ``tool_result`` (``id``,
``ok``, ``observation``), ``usage`` (``input_tokens``, ``output_tokens``: this run's totals),
``format_error`` (``message``), ``notice`` (``text``), and last ``end`` (``reason``: done |
iteration_cap | repeated_call | token_budget | wall_clock | format_errors | model_error;
``text``). Exit status 0 when the reason is ``done``, 1 otherwise, 2 for bad arguments.

The conversation is kept in ``$HOME/.telecoder-agent/<id>.json`` (the engine's home, kept per
session across attempts), written after every turn.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from telecoder.agent.loop import Conversation, Limits, run
from telecoder.agent.model import Client
from telecoder.agent.tools import Limits as ToolLimits
from telecoder.agent.tools import Tools

STORE = ".telecoder-agent"


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m telecoder.agent", description=__doc__)
    p.add_argument("--model", required=True, help="a model name; ollama/NAME for Ollama's API")
    p.add_argument("--resume", metavar="ID", help="continue a stored conversation")
    p.add_argument("--workdir", type=Path, default=Path("."), help="the repository (default: .)")
    p.add_argument("--max-iterations", type=int, default=10, help="model turns at most")
    p.add_argument("--token-budget", type=int, help="input+output tokens at most")
    p.add_argument("--wall-seconds", type=float, help="seconds the run may take")
    p.add_argument(
        "--command-timeout", type=float, default=120.0, help="seconds a command may take"
    )
    p.add_argument("--retries", type=int, default=3, help="retries of a failing model request")
    return p.parse_args(argv)


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    prompt = sys.stdin.read().strip()
    if not prompt:
        sys.stderr.write("no prompt on stdin\n")
        return 2
    directory = Path(os.environ.get("HOME") or Path.home()) / STORE
    if args.resume:
        try:
            conversation = Conversation.load(directory, args.resume)
        except (OSError, ValueError, KeyError) as e:
            sys.stderr.write(f"cannot resume conversation {args.resume}: {e}\n")
            return 2
        conversation.messages.append({"role": "user", "content": prompt})
    else:
        conversation = Conversation.start(directory, prompt)
    conversation.save()
    emit({"type": "session", "id": conversation.id})
    client = Client(model=args.model, env=os.environ, retries=max(0, args.retries))
    tools = Tools(args.workdir, ToolLimits(command_timeout=args.command_timeout))
    limits = Limits(
        max_iterations=max(1, args.max_iterations),
        token_budget=args.token_budget,
        wall_seconds=args.wall_seconds,
    )
    end = run(client, tools, conversation, limits, emit)
    emit({"type": "end", "reason": end.reason, "text": end.text})
    return 0 if end.reason == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
