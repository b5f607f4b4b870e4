"""The ``telecoder`` command's entry point: start-up and exit tuned for a short-lived process.

Importing the CLI creates some 70,000 tracked objects that live until the process ends. Collecting
garbage while they are created finds none and costs ~15% of start-up, so collection waits until
they are in; they are then frozen (never scanned again), and frozen once more at exit so the
interpreter's last collection does not walk every object for nothing (~0.1 s saved).

``telecoder run --detach --server URL`` (one task, one repository, plain options) is answered
before the CLI is imported: importing typer alone costs ~45 ms of CPU, more than the rest of
the submission. Anything else on that command line — an option this reader does not know, a
value it would have to judge (a priority or time-out that is not a plain number, a bad amount),
``--help`` — leaves it to the CLI, which parses and reports it as ever; nothing is sent before.
"""

from __future__ import annotations

import gc
import os
import sys

TYPE_CHECKING = False  # not typing's: importing typing costs ~3 ms of the quick submit
if TYPE_CHECKING:
    from typing import Any

# `telecoder run`'s options this reader takes (cli/run.py), with the parameter each sets.
_VALUED = {
    "--repo": "repo", "-r": "repo", "--engine": "engine", "-e": "engine",
    "--model": "model", "-m": "model", "--tier": "tier", "--base": "base", "-b": "base",
    "--forge": "forge", "--mode": "mode", "--priority": "priority", "--timeout": "timeout",
    "--max-time": "max_time", "--budget": "budget", "--notify": "notify", "--step": "step",
    "--server": "server",
}  # fmt: skip
_FLAGS = {"--detach": "detach", "-d": "detach", "--json": "as_json"}
_REPEATED = ("repo", "notify", "step")
SERVER_ENV = "TELECODER_SERVER"  # cli/options.py's ServerOption
TOKEN_ENV = "TELECODER_TOKEN"


def main() -> None:
    code = quick_submit(sys.argv[1:])
    if code is not None:
        sys.exit(code)
    gc.disable()
    try:
        from telecoder.cli import main as cli
    finally:
        gc.enable()
    gc.freeze()
    try:
        cli()
    finally:
        gc.freeze()


def quick_submit(args: list[str]) -> int | None:
    """``telecoder run --detach --server URL`` without the CLI: the exit code, or None when
    the command line is for the CLI (nothing was sent)."""
    if len(args) < 2 or args[0] != "run":
        return None
    given: dict[str, Any] = {}
    lists: dict[str, list[str]] = {name: [] for name in _REPEATED}
    prompts: list[str] = []
    rest = iter(args[1:])
    for arg in rest:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            return None
        if not arg.startswith("-"):
            prompts.append(arg)
            continue
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name in _FLAGS and not eq:
            given[_FLAGS[name]] = True
            continue
        key = _VALUED.get(name)
        if key is None:
            return None
        if not eq:
            value = next(rest, None)  # type: ignore[assignment]
            if value is None:
                return None
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return None
        if key in lists:
            lists[key].append(value)
        else:
            given[key] = value  # the last one wins, as in click
    server = given["server"] if "server" in given else os.environ.get(SERVER_ENV)
    repos = [r.strip() for r in lists["repo"] if r.strip()]
    if not given.get("detach") or not server or len(repos) != 1 or len(prompts) > 1:
        return None
    if not prompts and not lists["step"]:
        return None
    body = _body(given, prompts[0] if prompts else "", repos[0], lists)
    if body is None:
        return None
    from telecoder import submit
    from telecoder.errors import TeleCoderError

    as_json = bool(given.get("as_json"))
    try:
        created = submit.create(server, body, token=os.environ.get(TOKEN_ENV) or None)
    except TeleCoderError as e:
        from telecoder.cli import report

        report(e, as_json=as_json)
    if created is None:
        return None
    _print_created(created, as_json)
    return 0


def _body(
    given: dict[str, Any], prompt: str, repo: str, lists: dict[str, list[str]]
) -> dict[str, Any] | None:
    """cli/run.py's request body, or None when a value needs the CLI's judgement."""
    from telecoder import submit

    priority = given.get("priority", "0")
    timeout_text = given.get("timeout")
    if not _integer(priority):
        return None
    if timeout_text is not None and not _decimal(timeout_text):
        return None
    timeout = float(timeout_text) if timeout_text is not None else None
    if timeout is not None and timeout < 1:
        return None
    budget_usd = None
    if "max_time" in given or "budget" in given:  # amounts imports dataclasses: ~8 ms
        from telecoder import amounts
        from telecoder.errors import BadInput

        try:
            if "max_time" in given:
                if timeout is not None:
                    return None
                timeout = amounts.duration(given["max_time"])
            if "budget" in given:
                budget_usd = amounts.dollars(given["budget"])
        except BadInput:
            return None
    return submit.session_body(
        prompt=prompt, repo=repo, engine=given.get("engine"), model=given.get("model"),
        base=given.get("base"), forge=given.get("forge"), priority=int(priority),
        timeout=timeout, mode=given.get("mode", "task"), tier=given.get("tier"),
        budget_usd=budget_usd, notify=lists["notify"], steps=lists["step"],
    )  # fmt: skip


def _integer(text: str) -> bool:
    """``-?[0-9]+`` (without importing re)."""
    digits = text.removeprefix("-")
    return digits.isascii() and digits.isdigit()


def _decimal(text: str) -> bool:
    """``[0-9]+(\\.[0-9]+)?``."""
    whole, dot, fraction = text.partition(".")
    return text.isascii() and whole.isdigit() and (not dot or fraction.isdigit())


def _print_created(created: dict[str, Any], as_json: bool) -> None:
    """As cli/run.py prints a queued session (cli/exits.py's print_json for --json)."""
    warnings = created.pop("warnings", [])
    if warnings:
        from telecoder.cli.output import err

        for warning in warnings:
            err.print(f"[yellow]warning:[/] {warning}")
    if as_json:
        import json

        sys.stdout.write(json.dumps(created, ensure_ascii=False, indent=2) + "\n")
    else:
        sys.stdout.write(created["id"] + "\n")
    sys.stdout.flush()
