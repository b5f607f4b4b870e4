"""``telecoder run`` over many repositories (``--repo a --repo b``, ``--repos-file``), from a
plan (``-f plan.yaml``) or after another session (``--after ID``): one run, made in one call.

Local store mode makes the run here (``telecoder.runmake``) and, without ``--detach``, runs its
sessions in this process (``worker_concurrency`` at once; workers elsewhere may take some)
while a compact table shows each session's status, until all ended. ``--server`` makes it with
``POST /api/runs`` and follows its sessions over the API. The exit code is 0 only if every
session succeeded; else that of the first that did not (1 failed, 5 cancelled).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from rich.live import Live
from rich.table import Table

from telecoder import budgeting, plans, registry, runmake
from telecoder.assemble import build_forges, build_worker, build_workspace
from telecoder.cli.common import load_settings, opened, run_async
from telecoder.cli.output import Exit, err, exit_for, out, print_json, status_text
from telecoder.domain import Session, SessionStatus
from telecoder.errors import Conflict
from telecoder.intake import Accepted, Request, accept
from telecoder.settings import Settings
from telecoder.store import Store
from telecoder.worker import Worker

POLL_SECONDS = 0.2


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Ask:
    """What was asked on the command line: exactly one of ``repos`` (2+ or from a file),
    ``plan`` or ``after``."""

    request: Request
    repos: list[str] = dataclasses.field(default_factory=list)
    plan: plans.Plan | None = None
    after: str | None = None
    detach: bool = False
    as_json: bool = False


def local(ask: Ask) -> None:
    settings = load_settings()
    workspace = build_workspace(settings)
    forges = build_forges(settings)
    engines = registry.names("engines")

    async def intake(request: Request) -> Accepted:
        return await accept(
            request, settings=settings, workspace=workspace, engines=engines, forges=forges
        )

    async def go() -> Exit:
        async with opened(settings) as store:
            if ask.plan is not None:
                made = await runmake.from_plan(store, intake, ask.request, ask.plan)
            elif ask.after is not None:
                made = await runmake.after(store, intake, ask.request, ask.after)
            else:
                made = await runmake.fan_out(store, intake, ask.request, ask.repos)
            for warning in made.warnings:
                err.print(f"[yellow]warning:[/] {warning}")
            if ask.detach:
                _print_made(made.to_dict(), ask.as_json)
                return Exit.OK
            ids = list(made.created)  # follow what this command made (--after: not the anchor)
            return await _run_here(settings, store, made.run.id, ids, as_json=ask.as_json)

    raise SystemExit(run_async(go()))


def _print_made(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(data)
        return
    out.print(data["id"])
    err.print(f"run {data['id']}: {len(data['sessions'])} sessions ({data['kind']})")


async def _run_here(
    settings: Settings, store: Store, run_id: str, ids: list[str], *, as_json: bool
) -> Exit:
    """Run the sessions ``ids`` of the run in this process, showing their progress."""
    worker = build_worker(settings, store, one_shot=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    runner = asyncio.create_task(_execute(worker, store, run_id, ids, stop))
    try:
        await _show(lambda: _sessions(store, ids), runner, stop, as_json=as_json)
        if stop.is_set():
            await _cancel_all(store, worker, ids)
        await runner
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    sessions = await _sessions(store, ids)
    return await _finish(sessions, (await runmake.made(store, run_id)).to_dict(), as_json)


async def _sessions(store: Store, ids: list[str]) -> list[Session]:
    return [await store.sessions.get(i) for i in ids]


async def _execute(
    worker: Worker, store: Store, run_id: str, ids: list[str], stop: asyncio.Event
) -> None:
    """Claim and run the run's queued sessions (up to ``worker_concurrency`` at once) until
    those of ``ids`` ended; sessions waiting for others are claimed once they are queued (so
    ``--after`` runs the session it waits for too, if no worker took it)."""
    active: dict[str, asyncio.Task[Any]] = {}
    capacity = worker.settings.worker_concurrency
    while not stop.is_set():
        if all(_settled(s) for s in await _sessions(store, ids)) and not active:
            return
        sessions = await store.runs.sessions(run_id)
        now = time.time()
        for s in sessions:
            if len(active) >= capacity:
                break
            if s.status != SessionStatus.QUEUED or s.id in active or s.available_at > now:
                continue
            held = await budgeting.gate(store, worker.settings)
            claimed = await store.queue.claim(worker.id, only=s.id, limits=worker.limits, held=held)
            if claimed is not None:
                active[s.id] = asyncio.create_task(worker.execute(claimed))
        for sid in [sid for sid, task in active.items() if task.done()]:
            active.pop(sid).result()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), POLL_SECONDS)
    if active:
        await asyncio.gather(*active.values(), return_exceptions=True)


async def _cancel_all(store: Store, worker: Worker, ids: list[str]) -> None:
    from telecoder.recorder import StopReason

    for session_id in ids:
        if not worker.stop_session(session_id, StopReason.CANCELLED):
            with contextlib.suppress(Conflict):
                await store.sessions.cancel(session_id)


async def _show(
    current: Callable[[], Awaitable[list[Session]]],
    until: asyncio.Task[Any],
    stop: asyncio.Event,
    *,
    as_json: bool,
) -> None:
    """A live table of the sessions on a terminal; else a line per change (none for --json)."""
    live = Live(console=err, auto_refresh=False) if err.is_terminal and not as_json else None
    seen: dict[str, str] = {}
    with live if live is not None else contextlib.nullcontext():
        while True:
            sessions = await current()
            if live is not None:
                live.update(progress_table(sessions), refresh=True)
            elif not as_json:
                for s in sessions:
                    if seen.get(s.id) != s.status.value:
                        seen[s.id] = s.status.value
                        err.print(f"{s.id}  {s.task_key or s.repo}  {s.status.value}")
            if until.done() or stop.is_set() or all(_settled(s) for s in sessions):
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(until), POLL_SECONDS)


def _settled(session: Session) -> bool:
    """Nothing more happens to it unless someone acts: it ended, or it waits for a person."""
    return session.status.terminal or session.status == SessionStatus.BLOCKED


def progress_table(sessions: Sequence[Session]) -> Table:
    done = sum(s.status.terminal for s in sessions)
    table = Table(title=f"{done}/{len(sessions)} ended", title_justify="left", box=None)
    for column in ("SESSION", "TASK", "STATUS", "BRANCH / RESULT"):
        table.add_column(column, no_wrap=True)
    for s in sessions:
        where = s.result.pr_url or s.branch if s.result else (s.error or s.branch)
        table.add_row(s.id, s.task_key or s.repo, status_text(s.status.value), where or "")
    return table


async def _finish(sessions: list[Session], run: dict[str, Any], as_json: bool) -> Exit:
    if as_json:
        print_json(run)
    else:
        out.print(progress_table(sessions))
        out.print(f"run {run['id']}: {run['status']}")
    return (
        next((exit_for(s) for s in sessions if exit_for(s) != Exit.OK), Exit.OK)
        if all(s.status.terminal for s in sessions)
        else Exit.INTERRUPTED
    )


# --- --server -------------------------------------------------------------------------------


def remote(server: str, body: dict[str, Any], *, detach: bool, as_json: bool) -> None:
    from telecoder.cli.remote import connect
    from telecoder.domain.wire import session_of

    async def go() -> Exit:
        async with connect(server) as api:
            made = await api.create_run(body)
            for warning in made.pop("warnings", []):
                err.print(f"[yellow]warning:[/] {warning}")
            if detach:
                _print_made(made, as_json)
                return Exit.OK
            ids = [s["id"] for s in made["sessions"]]
            if body.get("after"):
                ids = ids[-1:]

            async def current() -> list[Session]:
                return [session_of(await api.get(i)) for i in ids]

            async def wait_all() -> None:
                while not all(_settled(s) for s in await current()):  # noqa: ASYNC110
                    await asyncio.sleep(POLL_SECONDS * 5)

            stop = asyncio.Event()
            waiter = asyncio.create_task(wait_all())
            await _show(current, waiter, stop, as_json=as_json)
            await waiter
            sessions = await current()
            waits = {s["id"]: s.get("depends_on", []) for s in made["sessions"]}
            final = [await api.get(i) for i in ids]
            run = {**made, "sessions": [{**s, "depends_on": waits.get(s["id"], [])} for s in final]}
            run["status"] = _status_of(sessions)
            return await _finish(sessions, run, as_json)

    raise SystemExit(run_async(go()))


def _status_of(sessions: Sequence[Session]) -> str:
    if all(s.status == SessionStatus.SUCCEEDED for s in sessions):
        return "succeeded"
    return "failed" if all(s.status.terminal for s in sessions) else "running"


def api_body(
    prompt: str | None,
    repos: list[str],
    plan: plans.Plan | None,
    after: str | None,
    request: dict[str, Any],
) -> dict[str, Any]:
    """The ``POST /api/runs`` body; local paths made absolute (the server resolves them)."""
    from telecoder.cli.remote import absolute

    body: dict[str, Any] = {k: v for k, v in request.items() if v not in (None, ())}
    if "notify" in body:
        body["notify"] = list(body["notify"])
    if plan is not None:
        data = plan.model_dump(exclude_none=True)
        for task in data["tasks"]:
            if "repo" in task:
                task["repo"] = absolute(task["repo"])
        if "repo" in data or repos:
            data["repo"] = absolute(data.get("repo") or repos[0])
        body.update(data)
    elif after is not None:
        body.update(prompt=prompt, repo=absolute(repos[0]), after=after)
    else:
        body.update(prompt=prompt, repos=[absolute(r) for r in repos])
    return body
