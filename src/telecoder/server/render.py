"""Turning records into what a person reads: events as HTML pieces, ages, durations, money.

Assistant messages are Markdown rendered without raw HTML (markdown-it's CommonMark with
``html`` off, which also refuses ``javascript:`` links); everything else goes through Jinja's
autoescaping. A tool call reads as one line (``$ pytest -q``, a file's path), a progress step as
words, and a session's error is shown once on its page (``Timeline``).
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Mapping
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
    preview: str = ""  # one line after the title (a tool call's command or path)


PREVIEW_CHARS = 160
# The argument that says what a tool call does, first found wins (a search's pattern before
# the folder it searches); the first two are commands, shown as ``$ …``.
_TOOL_GIST = ("command", "cmd", "file_path", "pattern", "query", "path", "url", "prompt")
_COMMANDS = ("command", "cmd")
_SHELL_TOOLS = {"bash", "shell", "sh", "exec", "exec_command", "run_shell_command", "terminal"}


def one_line(text: str, width: int = PREVIEW_CHARS) -> str:
    """The first non-blank line of ``text``, cut at ``width``; ``…`` when something is left out."""
    lines = [line.strip() for line in text.strip().splitlines()]
    first = lines[0] if lines else ""
    more = len(lines) > 1
    if len(first) > width:
        first, more = first[: width - 1], True
    return first + ("…" if more else "")


def tool_preview(name: str, args: Any) -> str:
    """A tool call in one line: ``$ pytest -q`` for a command, the path for an edit or a read,
    the pattern of a search; else its arguments as compact JSON."""
    if isinstance(args, Mapping):
        for key in _TOOL_GIST:
            gist = args.get(key)
            if isinstance(gist, list) and gist and all(isinstance(p, str) for p in gist):
                gist = shlex.join(gist)
            if isinstance(gist, str) and gist.strip():
                return one_line(f"$ {gist}" if key in _COMMANDS else gist)
        if not args:
            return ""
        return one_line(json.dumps(args, ensure_ascii=False, separators=(", ", ": "), default=str))
    if isinstance(args, str):
        shell = name.lower() in _SHELL_TOOLS
        return one_line(f"$ {args}" if shell and args.strip() else args)
    if args is None:
        return ""
    return one_line(json.dumps(args, ensure_ascii=False, default=str))


def fields_text(data: Mapping[str, Any]) -> str:
    """A progress step's fields as ``key value`` pairs for people (``attempt 2, base main``);
    unset ones (None, False, "") left out, a true flag as its name, nested values as JSON."""
    parts = []
    for k, v in data.items():
        if v is None or v is False or v == "":
            continue
        label = k.replace("_", " ")
        if v is True:
            parts.append(label)
        elif isinstance(v, Mapping | list):
            parts.append(f"{label} {json.dumps(v, ensure_ascii=False, default=str)}")
        else:
            parts.append(f"{label} {v}")
    return ", ".join(parts)


def view(event: Event, shown: set[str] | None = None) -> EventView:
    """``event`` for the page; an error text in ``shown`` is already on it, so not repeated
    (and one shown here is added)."""
    d = event.data
    seen: set[str] = set() if shown is None else shown

    def made(
        title: str,
        body: Markup | str,
        css: str,
        collapsible: bool = False,
        preformatted: bool = False,
        preview: str = "",
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
            preview=preview,
        )

    match event.kind:
        case EventKind.STATUS:
            status = str(d.get("status", "?"))
            extra = ", ".join(
                f"{k} {d[k]}" for k in ("attempt", "worker", "failure_kind", "retry_in") if k in d
            )
            title = f"{status}" + (f" ({extra})" if extra else "")
            css = "status " + ("bad" if status in _BAD else "good" if status == "succeeded" else "")
            error = str(d.get("error") or "")
            if error and error in seen:  # the error event before it, or the page's head, says it
                return made(title=title, body="", css=css)
            if error:
                seen.add(error)
            return made(title=title, body=error or str(d.get("reason", "")), css=css)
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
                preview=tool_preview(name, args),
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
            message = str(d.get("message", d.get("error", "")))
            kind = d.get("failure_kind")
            title = f"error ({kind})" if kind else "error"
            if message and message in seen:
                return made(title=f"{title}: shown above", body="", css="error bad")
            if message:
                seen.add(message)
            rest = {k: v for k, v in d.items() if k not in ("message", "error", "failure_kind")}
            body = message or fields_text(rest)
            return made(title=title, body=body, css="error bad", preformatted=True)
        case EventKind.WARNING:
            body = str(d.get("message", pretty(d)))
            return made(title="warning", body=body, css="warning", preformatted=True)
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
        case _:  # progress steps, chain notes, and kinds added later: words, not JSON
            step = d.get("step")
            title = str(step).replace("_", " ") if step else event.kind.value.replace("_", " ")
            note = d.get("message")
            rest = {k: v for k, v in d.items() if k not in ("step", "message")}
            body = str(note) if note else fields_text(rest)
            return made(title=title, body=body, css=event.kind.value)


class Timeline:
    """A session's events as its page shows them, in order: an error's text once (the head
    shows the session's error; the error event and the status after it do not repeat it)."""

    def __init__(self, error: str | None = None) -> None:
        self._shown: set[str] = set()
        self._shown_by: dict[str, Event] = {}  # error text -> the error event showing it
        self.knows(error)

    def knows(self, error: str | None) -> Event | None:
        """``error`` is on the page now (the head shows it). Returns the event that showed it
        already, live, to be shown again without it."""
        if not error:
            return None
        self._shown.add(error)
        return self._shown_by.pop(error, None)

    def view(self, event: Event) -> EventView:
        new = event.kind == EventKind.ERROR and str(event.data.get("message", ""))
        shows = bool(new) and new not in self._shown
        seen = view(event, self._shown)
        if shows and new:
            self._shown_by[new] = event
        return seen

    def views(self, events: list[Event]) -> list[EventView]:
        return [self.view(e) for e in events]


def uncertain_lines(lines: list[str], error: str | None) -> list[str]:
    """The outcome's Uncertain lines but the one quoting the session's error (shown above)."""
    if not error:
        return lines
    return [line for line in lines if not line.startswith("Error: ")]


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
        view=view,
        diff_lines=diff_lines,
        now=time.time,
        github_origin=github.origin_url,
        uncertain_lines=uncertain_lines,
    )
    return t
