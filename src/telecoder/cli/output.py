"""What the CLI prints: exit codes, session JSON, tables and the live event stream."""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from telecoder import outcome as outcomes
from telecoder.amounts import shown_duration
from telecoder.cli.exits import Exit as Exit
from telecoder.cli.exits import print_json as print_json
from telecoder.cli.exits import print_json_line as print_json_line
from telecoder.domain import (
    Attempt,
    AttemptStatus,
    Event,
    EventKind,
    FailureKind,
    Session,
    SessionStatus,
)


def exit_for(session: Session) -> Exit:
    if session.status == SessionStatus.SUCCEEDED:
        return Exit.OK
    if session.status == SessionStatus.CANCELLED:
        return Exit.CANCELLED
    if session.status.terminal:
        return Exit.TASK_FAILED
    return Exit.OK


# emoji=False: a prompt or an agent's text is printed as written (":memo:" stays ":memo:"), and
# Rich's 3,600-entry emoji table is not imported on each command's first print.
out = Console(highlight=False, soft_wrap=True, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


_STATUS_STYLE = {
    "lost": "red",
    "released": "cyan",
    "queued": "cyan",
    "running": "yellow",
    "succeeded": "green",
    "failed": "red",
    "dead": "red",
    "cancelled": "magenta",
    "blocked": "blue",
    "waiting": "cyan",
    "skipped": "magenta",
}


def status_text(status: str) -> str:
    return f"[{_STATUS_STYLE.get(status, 'white')}]{status}[/]"


def age(ts: float) -> str:
    seconds = max(0, int(time.time() - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def diff_text(files: int, insertions: int, deletions: int) -> str:
    """``1 file +2 -0``, ``3 files +10 -4``."""
    return f"{files} file{'' if files == 1 else 's'} +{insertions} -{deletions}"


def attempt_text(session: Session) -> str:
    """``2 of 3``; a chat's turns (each an attempt) and a session run again past its limit say
    only which attempt it is, never ``5 of 3``."""
    if session.mode.value == "chat" or session.attempt > session.max_attempts:
        return str(session.attempt)
    return f"{session.attempt} of {session.max_attempts}"


# The argument that says what a tool call does, by the names agents give it.
_TOOL_GIST = ("command", "cmd", "file_path", "path", "pattern", "query", "url", "prompt")


def tool_input_text(value: Any) -> str:
    """A tool call's input for people: its command (or path, pattern, …) when it has one, else
    compact JSON; never a Python dict's repr with escaped newlines."""
    if isinstance(value, Mapping):
        for key in _TOOL_GIST:
            gist = value.get(key)
            if isinstance(gist, list) and all(isinstance(p, str) for p in gist):
                gist = shlex.join(gist)
            if isinstance(gist, str) and gist:
                return gist
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def progress_extra(data: Mapping[str, Any]) -> str:
    """A progress event's fields as ``key=value``; unset ones (None, False) left out, a true
    flag as its name."""
    parts = []
    for k, v in data.items():
        if k in ("step", "path") or v is None or v is False or v == "":
            continue
        parts.append(k if v is True else f"{k}={escape(str(v))}")
    return " ".join(parts)


def short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


SESSION_COLUMNS = ("ID", "STATUS", "ENGINE", "AGE", "REPO", "PROMPT", "RESULT")


def session_row(s: Session) -> tuple[str, ...]:
    """A session's cells, as plain text (no markup)."""
    return (
        s.id,
        s.status.value,
        s.engine,
        age(s.created_at),
        short(s.repo, 32),
        short(s.prompt, 40),
        result_summary(s),
    )


def sessions_table(sessions: list[Session]) -> Table:
    rows = [session_row(s) for s in sessions]
    table = whole_columns_table(SESSION_COLUMNS, rows, whole=("ID", "STATUS"))
    for s, row in zip(sessions, rows, strict=True):
        cells = [escape(c) for c in row]
        cells[1] = status_text(s.status.value)
        table.add_row(*cells)
    return table


def whole_columns_table(
    columns: Sequence[str], rows: Sequence[Sequence[str]], *, whole: Sequence[str]
) -> Table:
    """A table whose ``whole`` columns (ids, statuses) are never cut, however narrow the
    terminal: the other columns give way."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for i, column in enumerate(columns):
        if column in whole:
            width = max([len(column), *(len(r[i]) for r in rows)])
            table.add_column(column, no_wrap=True, min_width=width)
        else:
            table.add_column(column, no_wrap=column != columns[-1], overflow="ellipsis")
    return table


def print_plain(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Rows as tab-separated lines, a header first: for a pipe, where columns are not cut."""
    for row in (columns, *rows):
        sys.stdout.write("\t".join(" ".join(str(c).split()) for c in row) + "\n")
    sys.stdout.flush()


def print_sessions(sessions: list[Session], next_cursor: str | None) -> None:
    """The sessions as a table on a terminal, tab-separated lines in a pipe; where the next page
    starts, on stderr."""
    if not sessions:
        err.print("no sessions")
    elif out.is_terminal:
        out.print(sessions_table(sessions))
    else:
        print_plain(SESSION_COLUMNS, [session_row(s) for s in sessions])
    if next_cursor:
        err.print(f"[dim]more: add --cursor {next_cursor}[/]")


def result_summary(session: Session) -> str:
    r = session.result
    if session.status.terminal and session.status != SessionStatus.SUCCEEDED:
        return short(session.error or session.status.value, 60)
    if session.question and session.status == SessionStatus.BLOCKED:
        return short(f"asks: {session.question}", 60)
    if session.error and session.status in (SessionStatus.QUEUED, SessionStatus.BLOCKED):
        return short(session.error, 60)  # waiting on a budget
    if r is None:
        return ""
    if r.pr_url:
        return r.pr_url
    if r.branch:
        return (
            f"{r.branch} ({diff_text(r.diff.files_changed, r.diff.insertions, r.diff.deletions)})"
        )
    return short(r.text or "(no change)", 60)


def show_session(
    session: Session,
    attempts: Sequence[Attempt] = (),
    models: Sequence[Mapping[str, Any]] = (),
) -> None:
    rows: list[tuple[str, str]] = [
        ("id", session.id),
        ("status", status_text(session.status.value)),
        ("repo", escape(session.repo)),
        ("engine", session.engine + (f" ({session.model})" if session.model else "")),
        ("mode", session.mode.value),
        ("base", session.base_ref or "(default branch)"),
        ("branch", session.branch),
        ("attempt", attempt_text(session)),
        ("created", f"{age(session.created_at)} ago"),
    ]
    if session.parent_id and session.chain_id and session.depth:
        rows.append(("follows", session.parent_id))
    elif session.parent_id:
        rows.append(("retry of", session.parent_id))
    if session.chain_id:
        rows.append(("chain", f"{session.chain_id} (depth {session.depth})"))
    if session.steps:
        rows.append(("steps", escape(" → ".join(session.steps))))
    ticket = session.origin or {}
    if ticket.get("channel") in ("linear", "jira") and ticket.get("url"):
        name = ticket.get("identifier") or ticket.get("thread") or ""
        rows.append(("ticket", escape(f"{name} {ticket['url']}".strip())))
    if session.finished_at and session.started_at:
        rows.append(("took", f"{session.finished_at - session.started_at:.1f}s"))
    if session.cost_usd or session.input_tokens:
        rows.append(
            (
                "usage",
                f"${session.cost_usd:.4f} · {session.input_tokens} in / "
                f"{session.output_tokens} out tokens",
            )
        )
    if session.tier:
        rows.append(("tier", session.tier))
    if models:
        rows.append(("models", escape(models_text(models))))
    if session.budget_usd is not None:
        rows.append(("budget", f"${session.budget_usd:.2f} (spent ${session.cost_usd:.2f})"))
    if session.timeout_seconds:
        rows.append(("time limit", shown_duration(session.timeout_seconds)))
    r = session.result
    if r is not None:
        if r.branch:
            rows.append(("commit", r.commit or ""))
            rows.append(
                ("diff", diff_text(r.diff.files_changed, r.diff.insertions, r.diff.deletions))
            )
        if r.pr_url:
            rows.append(("pull request", r.pr_url + (" (draft)" if r.partial else "")))
        if r.partial:
            rows.append(("partial", "[yellow]yes: stopped by its limit, pushed as a draft[/]"))
        if r.failed_ref:
            rows.append(("failed work", f"pushed to {escape(r.failed_ref)} (no pull request)"))
        if r.text and not r.branch:
            rows.append(("answer", escape(r.text)))
    if session.question:
        rows.append(("question", f"[bold blue]{escape(session.question)}[/]"))
        rows.append(("answer it", f'telecoder answer {session.id} "…"'))
    if session.notify:
        rows.append(("notify", escape(", ".join(session.notify))))
    if session.error:
        rows.append(("error", f"[red]{escape(session.error)}[/]"))
    if session.failure_kind:
        rows.append(("failure kind", session.failure_kind.value))
    if (found := session.outcome()) is not None:
        rows.extend((label.lower(), escape(text)) for label, text in outcomes.lines(found))
    for attempt in attempts:
        rows.append(
            ("attempts" if attempt.number == attempts[0].number else "", attempt_line(attempt))
        )
    rows.append(("prompt", escape(session.prompt)))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        out.print(f"[bold]{key.ljust(width)}[/]  {value}")


def models_text(models: Sequence[Mapping[str, Any]]) -> str:
    """``claude-haiku-4-5 at anthropic (12), claude-sonnet-4-5 at anthropic-2 (3)``."""
    return ", ".join(
        f"{m.get('model') or '?'} at {m.get('endpoint')} ({m.get('requests', 0)})" for m in models
    )


def attempt_line(attempt: Attempt) -> str:
    """``2 on worker-b: lost (crashed) after 3.1s · worker worker-b stopped renewing …``"""
    line = f"{attempt.number} on {escape(attempt.worker_id)}: {status_text(attempt.status.value)}"
    if attempt.interrupted:
        line += f" ({attempt.interrupted})"
    if attempt.finished_at is not None:
        line += f" after {attempt.finished_at - attempt.started_at:.1f}s"
    if attempt.error and attempt.status != AttemptStatus.SUCCEEDED:
        line += f" · {escape(short(attempt.error, 80))}"
    return line


def render_event(event: Event) -> str | None:
    """One event as a line for people; None for events not worth a line."""
    stamp = time.strftime("%H:%M:%S", time.localtime(event.ts))
    d = event.data
    kind = event.kind
    if kind == EventKind.STATUS:
        text = status_text(str(d.get("status")))
        if d.get("attempt"):
            text += f" (attempt {d['attempt']} on {escape(str(d.get('worker')))})"
        if d.get("interrupted"):
            text += f" [dim]({escape(str(d['interrupted']))})[/]"
        if d.get("error"):
            text += f" [red]{escape(str(d['error']))}[/]"
        elif d.get("reason"):
            text += f" [dim]{escape(str(d['reason']))}[/]"
        if d.get("retry_in") is not None:
            text += f" — retrying in {d['retry_in']:.1f}s"
    elif kind == EventKind.PROGRESS:
        step = str(d.get("step", "")).replace("_", " ")
        extra = progress_extra(d)
        text = f"[dim]▸ {step}[/] [dim]{extra}[/]".rstrip()
    elif kind == EventKind.OUTPUT:
        style = "red" if d.get("stream") == "stderr" else "dim"
        text = f"[{style}]│ {escape(str(d.get('text', '')))}[/]"
    elif kind == EventKind.MESSAGE and d.get("role") == "user":
        text = f"[bold cyan]› {escape(str(d.get('text', '')))}[/]"
    elif kind == EventKind.MESSAGE:
        text = escape(str(d.get("text", "")))
    elif kind == EventKind.THINKING:
        text = f"[italic dim]{escape(short(str(d.get('text', '')), 200))}[/]"
    elif kind == EventKind.TOOL_CALL:
        gist = short(tool_input_text(d.get("input")), 160)
        text = f"[blue]⚙ {escape(str(d.get('name')))}[/] {escape(gist)}"
    elif kind == EventKind.TOOL_RESULT:
        mark = "[green]✓[/]" if d.get("ok", True) else "[red]✗[/]"
        text = f"  {mark} [dim]{escape(short(str(d.get('output', '')), 160))}[/]"
    elif kind == EventKind.USAGE:
        cost = d.get("cost_usd")
        text = f"[dim]usage: {d.get('input_tokens', 0)} in / {d.get('output_tokens', 0)} out"
        text += f" · ${cost:.4f}[/]" if isinstance(cost, int | float) else "[/]"
    elif kind in (EventKind.SETUP, EventKind.VERIFY):
        ok = d.get("ok")
        text = (
            f"{'[green]✓' if ok else '[red]✗'} {kind.value}[/] {escape(str(d.get('command', '')))}"
        )
        if not ok and d.get("output_tail"):
            tail = str(d["output_tail"]).strip().splitlines()[-1]
            text += f" [dim]{escape(short(tail, 160))}[/]"
    elif kind == EventKind.ERROR:
        text = f"[red]error: {escape(str(d.get('message', '')))}[/]"
    elif kind == EventKind.WARNING:
        text = f"[yellow]warning: {escape(str(d.get('message', '')))}[/]"
    elif kind == EventKind.OUTPUT_TRUNCATED:
        text = f"[yellow]… {escape(str(d.get('message', 'output truncated')))}[/]"
    elif kind == EventKind.BUDGET_ALERT:
        text = f"[yellow]budget alert[/] {escape(str(d.get('message', '')))}"
    elif kind == EventKind.NETWORK_DENIED:
        text = f"[yellow]network denied[/] {escape(denied_text(d))}"
    elif kind == EventKind.CHAIN:
        text = f"[cyan]chain[/] {escape(str(d.get('message', '')))}"
    elif kind == EventKind.RESULT:
        return None
    else:
        text = escape(json.dumps(d))
    return f"[dim]{stamp}[/] {text}"


def denied_text(d: Mapping[str, Any]) -> str:
    """``example.com:443 (agent): not a model endpoint (network policy model)``."""
    return f"{d.get('host')}:{d.get('port')} ({d.get('by', '?')}): {d.get('reason', '')}"


def event_json(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "session_id": event.session_id,
        "seq": event.seq,
        "attempt": event.attempt,
        "ts": event.ts,
        "kind": event.kind.value,
        "data": event.data,
    }


def final_line(session: Session) -> str:
    status = status_text(session.status.value)
    r = session.result
    waits = session.status == SessionStatus.BLOCKED
    if waits and session.question and session.failure_kind != FailureKind.BUDGET_REACHED:
        line = f"{status} · it asks:\n[bold]{escape(session.question)}[/]"
        if r is not None and r.branch:
            line += f"\npushed [bold]{r.branch}[/] ({(r.commit or '')[:12]})"
        return line + f'\nanswer: telecoder answer {session.id} "…"'
    if waits and session.failure_kind == FailureKind.BUDGET_REACHED:
        line = f"{status} · {escape(session.error or 'budget reached')}"
        return (
            f"{line}\nraise it: telecoder budget {session.id} +1.00 · "
            f"or stop it: telecoder cancel {session.id}"
        )
    if session.status == SessionStatus.BLOCKED:
        line = f"{status} · the chat waits for a message"
        if r is not None and r.branch:
            line += f" · pushed [bold]{r.branch}[/] ({(r.commit or '')[:12]})"
        if r is not None and r.text:
            line += f"\n{escape(r.text)}"
        return line + f'\nreply: telecoder send {session.id} "…"'
    if session.status == SessionStatus.SUCCEEDED and r is not None:
        if r.branch:
            line = f"{status} · pushed [bold]{r.branch}[/] ({(r.commit or '')[:12]})"
            line += f" · {diff_text(r.diff.files_changed, r.diff.insertions, r.diff.deletions)}"
            if r.pr_url:
                line += f"\npull request: {r.pr_url}"
            return line
        return f"{status} · no change\n{escape(r.text or '')}".rstrip()
    line = f"{status} · session {session.id}"
    if r is not None and r.partial and r.branch:
        line += f" · partial result pushed to [bold]{r.branch}[/] ({(r.commit or '')[:12]})"
        if r.pr_url:
            line += f"\ndraft pull request: {r.pr_url}"
    if r is not None and r.failed_ref:
        line += f" · the failed work pushed to [bold]{escape(r.failed_ref)}[/]"
    if session.error:
        line += f"\n[red]{escape(session.error)}[/]"
    return line


def budgets_table(found: Sequence[Mapping[str, Any]]) -> Table:
    """``telecoder budgets list``: one row per period budget."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("SCOPE", "PERIOD", "LIMIT", "SPENT", "%", "ALERTED", "STATE", "SOURCE"):
        table.add_column(column, no_wrap=True)
    for b in found:
        state = "[red]reached: new sessions wait[/]" if b["reached"] else "[green]ok[/]"
        table.add_row(
            escape(str(b["scope"])),
            f"{b['period']} {b['period_key']}",
            f"${b['limit_usd']:.2f}",
            f"${b['spent_usd']:.2f}",
            f"{b['percent']:g}",
            f"{b['alerted_level']} %" if b["alerted_level"] else "",
            state,
            str(b["source"]),
        )
    return table
