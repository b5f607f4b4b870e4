"""Turning records into what a person reads: events as HTML pieces, ages, durations, money.

Assistant messages are Markdown rendered without raw HTML (markdown-it's CommonMark with
``html`` off, which also refuses ``javascript:`` links); everything else goes through Jinja's
autoescaping.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.templating import Jinja2Templates
from markdown_it import MarkdownIt
from markupsafe import Markup

from telecoder.channels import github
from telecoder.domain import Event, EventKind, SessionStatus

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
MAX_DIFF_LINES = 5000

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})


def markdown(text: str) -> Markup:
    return Markup(_markdown.render(text))  # html is off: the output is safe


def age(ts: float | None, now: float | None = None) -> str:
    """``42s``, ``5m``, ``3h``, ``2d`` — how long ago ``ts`` was."""
    if ts is None:
        return ""
    return span((now or time.time()) - ts)


def span(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    if seconds < 86400:
        return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"
    return f"{seconds // 86400:.0f}d{seconds % 86400 // 3600:.0f}h"


def duration(start: float | None, end: float | None) -> str:
    if start is None:
        return ""
    return span((end or time.time()) - start)


def money(usd: float) -> str:
    return f"${usd:.2f}" if usd >= 0.01 or usd == 0 else f"${usd:.4f}"


def clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def pretty(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


@dataclass(frozen=True, slots=True)
class EventView:
    """One event as the session page shows it."""

    seq: int
    kind: str
    time: str
    title: str
    body: Markup | str
    css: str
    collapsible: bool = False
    preformatted: bool = False


def view(event: Event) -> EventView:
    d = event.data

    def made(
        title: str,
        body: Markup | str,
        css: str,
        collapsible: bool = False,
        preformatted: bool = False,
    ) -> EventView:
        return EventView(
            seq=event.seq,
            kind=event.kind.value,
            time=clock(event.ts),
            title=title,
            body=body,
            css=css,
            collapsible=collapsible,
            preformatted=preformatted,
        )

    match event.kind:
        case EventKind.STATUS:
            status = str(d.get("status", "?"))
            extra = ", ".join(
                f"{k} {d[k]}" for k in ("attempt", "worker", "failure_kind", "retry_in") if k in d
            )
            title = f"{status}" + (f" ({extra})" if extra else "")
            css = "status " + ("bad" if status in _BAD else "good" if status == "succeeded" else "")
            return made(title=title, body=str(d.get("error") or d.get("reason", "")), css=css)
        case EventKind.MESSAGE:
            who = "you" if d.get("role") == "user" else "agent"
            return made(title=who, body=markdown(str(d.get("text", ""))), css=f"message {who}")
        case EventKind.THINKING:
            return made(
                title="thinking",
                body=str(d.get("text", "")),
                css="thinking",
                collapsible=True,
                preformatted=True,
            )
        case EventKind.TOOL_CALL:
            name = str(d.get("name") or d.get("tool") or "tool")
            args = d.get("input", d.get("args", d.get("arguments", "")))
            return made(
                title=f"→ {name}",
                body=pretty(args),
                css="tool",
                collapsible=True,
                preformatted=True,
            )
        case EventKind.TOOL_RESULT:
            failed = d.get("ok") is False or bool(d.get("is_error"))
            output = d.get("output", d.get("content", d.get("text", "")))
            return made(
                title="← result" + (" (error)" if failed else ""),
                body=pretty(output),
                css="tool-result" + (" bad" if failed else ""),
                collapsible=True,
                preformatted=True,
            )
        case EventKind.OUTPUT:
            stream = str(d.get("stream", "stdout"))
            return made(
                title=stream,
                body=str(d.get("text", "")),
                css=f"output {stream}",
                preformatted=True,
            )
        case EventKind.SETUP | EventKind.VERIFY:
            ok = bool(d.get("ok", False))
            command = str(d.get("command", event.kind.value))
            return made(
                title=f"{event.kind.value} {'passed' if ok else 'failed'}: {command}",
                body=str(d.get("output_tail", "")),
                css="verify " + ("good" if ok else "bad"),
                collapsible=True,
                preformatted=True,
            )
        case EventKind.ERROR:
            return made(
                title="error",
                body=str(d.get("message", d.get("error", pretty(d)))),
                css="error bad",
                preformatted=True,
            )
        case EventKind.RESULT:
            return made(title="result", body=_result_text(d), css="result good")
        case EventKind.USAGE:
            return made(title="usage", body=_usage_text(d), css="usage")
        case EventKind.OUTPUT_TRUNCATED:
            message = str(d.get("message", "output truncated"))
            return made(title="output truncated", body=message, css="output_truncated")
        case EventKind.BUDGET_ALERT:
            message = str(d.get("message", "budget alert"))
            css = "budget_alert" + (" bad" if d.get("level") == 100 else "")
            return made(title=f"budget alert {d.get('level', '')} %", body=message, css=css)
        case EventKind.NETWORK_DENIED:
            where = f"{d.get('host')}:{d.get('port')}"
            body = f"{where} refused for the {d.get('by', 'agent')}: {d.get('reason', '')}"
            return made(title="network denied", body=body, css="network_denied bad")
        case _:
            step = d.get("step")
            title = str(step) if step else event.kind.value
            rest = {k: v for k, v in d.items() if k != "step"}
            return made(title=title, body=pretty(rest) if rest else "", css=event.kind.value)


_BAD = {
    SessionStatus.FAILED.value,
    SessionStatus.DEAD.value,
    SessionStatus.CANCELLED.value,
    SessionStatus.SKIPPED.value,
}


def _result_text(d: dict[str, Any]) -> str:
    parts = [str(d[k]) for k in ("pr_url", "branch", "text") if d.get(k)]
    return " · ".join(parts) if parts else pretty(d)


def _usage_text(d: dict[str, Any]) -> str:
    parts = []
    if "input_tokens" in d or "output_tokens" in d:
        parts.append(f"{d.get('input_tokens', 0)} in / {d.get('output_tokens', 0)} out tokens")
    if d.get("cost_usd") is not None:
        parts.append(money(float(d["cost_usd"])))
    return ", ".join(parts) if parts else pretty(d)


@dataclass(frozen=True, slots=True)
class DiffLine:
    text: str
    css: str


def diff_lines(text: str) -> tuple[list[DiffLine], bool]:
    lines = text.splitlines()
    shown = lines[:MAX_DIFF_LINES]
    out = []
    for line in shown:
        if line.startswith(("diff --git", "index ", "+++ ", "--- ")):
            css = "file"
        elif line.startswith("@@"):
            css = "hunk"
        elif line.startswith("+"):
            css = "add"
        elif line.startswith("-"):
            css = "del"
        else:
            css = ""
        out.append(DiffLine(line, css))
    return out, len(lines) > len(shown)


def templates() -> Jinja2Templates:
    t = Jinja2Templates(directory=str(TEMPLATES))
    t.env.filters.update(age=age, duration=duration, money=money, clock=clock, markdown=markdown)
    t.env.globals.update(
        view=view, diff_lines=diff_lines, now=time.time, github_origin=github.origin_url
    )
    return t
