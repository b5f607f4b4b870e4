"""Commands on recorded sessions: list, show, logs, cancel, retry, version."""

from __future__ import annotations

from typing import Annotated

import typer

from telecoder import __version__, rawlog
from telecoder.cli.common import ServerOption, load_settings, opened, run_async
from telecoder.cli.follow import follow
from telecoder.cli.output import (
    Exit,
    out,
    print_json,
    print_json_line,
    print_sessions,
    show_session,
)
from telecoder.cli.run import run_here
from telecoder.domain import SessionStatus
from telecoder.errors import BadInput, RawLogNotFound, Unsupported
from telecoder.settings import Settings
from telecoder.store.sessions import retry_of
from telecoder.urls import is_url


def _status(value: str | None) -> SessionStatus | None:
    if value is None:
        return None
    try:
        return SessionStatus(value)
    except ValueError:
        known = ", ".join(s.value for s in SessionStatus)
        raise BadInput(f"unknown status {value!r} (known: {known})") from None


def _repo_key(repo: str | None) -> str | None:
    """The repo as sessions record it: a URL as given, a path made absolute."""
    if repo is None or is_url(repo):
        return repo
    from pathlib import Path

    return str(Path(repo).expanduser().resolve())


def list_sessions(
    status: Annotated[str | None, typer.Option(help="Only sessions in this status.")] = None,
    repo: Annotated[str | None, typer.Option(help="Only sessions on this repository.")] = None,
    engine: Annotated[str | None, typer.Option(help="Only sessions of this engine.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many.", min=1, max=1000)] = 20,
    cursor: Annotated[
        str | None, typer.Option(help="The next page: the next_cursor of the one before.")
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print the page as the API does: sessions, and next_cursor if more."
        ),
    ] = False,
    server: ServerOption = None,
) -> None:
    """List sessions, newest first."""
    wanted = _status(status)
    if server:
        from telecoder.cli import remote

        return remote.list_sessions(
            server,
            status=wanted,
            repo=repo,
            engine=engine,
            limit=limit,
            cursor=cursor,
            as_json=as_json,
        )
    settings = load_settings()

    async def go() -> None:
        async with opened(settings) as store:
            page = await store.sessions.list(
                status=wanted, repo=_repo_key(repo), engine=engine, limit=limit, cursor=cursor
            )
        if as_json:
            print_json(
                {"sessions": [s.to_dict() for s in page.sessions], "next_cursor": page.next_cursor}
            )
            return
        print_sessions(page.sessions, page.next_cursor)

    run_async(go())


def show(
    session_id: Annotated[str, typer.Argument(help="Session id (or a unique prefix).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    server: ServerOption = None,
) -> None:
    """Show one session: status, result, error, and each attempt (crashed or stopped)."""
    if server:
        from telecoder.cli import remote

        return remote.show(server, session_id=session_id, as_json=as_json)
    settings = load_settings()

    async def go() -> None:
        async with opened(settings) as store:
            session = await store.sessions.resolve(session_id)
            attempts = await store.sessions.attempts(session.id)
            models = await store.usage.models(session.id)
        if as_json:
            attempts_json = [a.to_dict() for a in attempts]
            print_json({**session.to_dict(), "models": models, "attempts": attempts_json})
        else:
            show_session(session, attempts, models)

    run_async(go())


def logs(
    session_id: Annotated[str, typer.Argument(help="Session id (or a unique prefix).")],
    follow_: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the session ends.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    raw: Annotated[
        bool,
        typer.Option(
            "--raw",
            help="Every line the agent CLI printed (kept on the host that ran it), not events.",
        ),
    ] = False,
    attempt: Annotated[
        int | None, typer.Option(help="With --raw: only this attempt.", min=1, show_default=False)
    ] = None,
    server: ServerOption = None,
) -> None:
    """Print a session's events (or, with --raw, its agent's raw output)."""
    if raw and server:
        raise Unsupported(
            "raw logs stay on the worker host that ran the session: run "
            "`telecoder logs --raw` there"
        )
    if server:
        from telecoder.cli import remote

        return remote.logs(server, session_id=session_id, follow=follow_, as_json=as_json)
    settings = load_settings()

    async def go() -> None:
        async with opened(settings) as store:
            session = await store.sessions.resolve(session_id)
            if raw:
                return print_raw(settings, session.id, attempt, as_json=as_json)
            await follow(store, session.id, keep_following=follow_, as_json=as_json)

    run_async(go())


def cancel(
    session_id: Annotated[str, typer.Argument(help="Session id (or a unique prefix).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the session as JSON.")] = False,
    server: ServerOption = None,
) -> None:
    """Cancel a session: at once if queued; a running one stops within a heartbeat."""
    if server:
        from telecoder.cli import remote

        return remote.cancel(server, session_id=session_id, as_json=as_json)
    settings = load_settings()

    async def go() -> None:
        async with opened(settings) as store:
            session = await store.sessions.resolve(session_id)
            session = await store.sessions.cancel(session.id)
        if as_json:
            print_json(session.to_dict())
        elif session.status == SessionStatus.CANCELLED:
            out.print(f"{session.id} cancelled")
        else:
            out.print(f"{session.id} cancel requested; its worker stops it")

    run_async(go())


def retry(
    session_id: Annotated[str, typer.Argument(help="Session id (or a unique prefix).")],
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Queue it; print its id.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the new session as JSON.")] = False,
    server: ServerOption = None,
) -> None:
    """Run a finished session again: a new session, on the same branch and pull request."""
    if server:
        from telecoder.cli import remote

        return remote.retry(server, session_id=session_id, detach=detach, as_json=as_json)
    settings = load_settings()

    async def go() -> Exit:
        async with opened(settings) as store:
            old = await store.sessions.resolve(session_id)
            new = retry_of(old)
            if detach:
                session = await store.sessions.create(new)
                if as_json:
                    print_json(session.to_dict())
                else:
                    out.print(session.id)
                return Exit.OK
            return await run_here(settings, store, new, as_json=as_json)

    raise typer.Exit(run_async(go()))


def version(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print TeleCoder's version."""
    if as_json:
        print_json({"version": __version__})
    else:
        out.print(f"telecoder {__version__}")


def print_raw(settings: Settings, session_id: str, attempt: int | None, *, as_json: bool) -> None:
    """The raw log of a session's attempts (``telecoder logs --raw``)."""
    found = False
    for record in rawlog.read(settings.raw_logs, session_id, attempt):
        found = True
        if as_json:
            print_json_line(record)
        elif "run" in record:
            out.print(f"── attempt {record['attempt']}, run {record['run'] + 1} ──", style="dim")
        elif "truncated" in record:
            out.print(f"[raw log cut at {record['truncated']} bytes]", style="dim")
        else:
            prefix = "[stderr] " if record.get("stream") == "stderr" else ""
            out.print(prefix + str(record.get("line", "")), markup=False, highlight=False)
    if not found:
        which = f"attempt {attempt} of " if attempt is not None else ""
        raise RawLogNotFound(
            f"no raw log of {which}session {session_id} on this host (it stays on the "
            f"host that ran it, for TELECODER_RAW_LOG_DAYS = {settings.raw_log_days:g} days)"
        )
