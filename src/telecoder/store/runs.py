"""Runs: sessions that belong together, and the dependencies between them.

``create`` writes a run, all its sessions and their dependencies in one transaction (a
fan-out of 100 repositories is one write). A session that depends on others starts
``waiting``; the rest start ``queued``. A cycle is refused before anything is written.

``settle`` runs inside every transaction that ends a session of a run (``transitions``): each
``waiting`` dependant whose dependencies have all ended is queued — or ``skipped`` when one it
waited ``after`` did not succeed, which skips its own dependants in turn — and the run's status
follows its sessions. So a crash can never leave a dependant waiting for a session that ended.
"""

from __future__ import annotations

import builtins
import graphlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Row, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from telecoder.domain import (
    After,
    Dependency,
    EventKind,
    NewEvent,
    NewRun,
    NewSession,
    Run,
    RunKind,
    RunStatus,
    Session,
    SessionStatus,
)
from telecoder.errors import BadInput, Conflict, SessionNotFound
from telecoder.store.db import Database, dumps, loads
from telecoder.store.events import append_events
from telecoder.store.notify import Notice, NoticeKind
from telecoder.store.outbox import record_status
from telecoder.store.rows import new_session_values, queued_event, session_from_row
from telecoder.store.schema import job_slots, runs, session_deps, sessions

MAX_SESSIONS = 1000
_GOOD = SessionStatus.SUCCEEDED.value
_RETRIED = frozenset({SessionStatus.FAILED, SessionStatus.DEAD, SessionStatus.CANCELLED})


class SlotTaken(Conflict):
    """Another firing owns this (job, slot): nothing was created."""


def run_from_row(row: Row[Any]) -> Run:
    m = row._mapping
    return Run(
        id=m["id"],
        kind=RunKind(m["kind"]),
        name=m["name"],
        status=RunStatus(m["status"]),
        spec=loads(m["spec"]) or {},
        job=m["job"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        finished_at=m["finished_at"],
        user=m["user"],
    )


def owner_of(run: NewRun, new: Sequence[NewSession]) -> str | None:
    """A run's user: the one it names, else its sessions' (they come from one request)."""
    if run.user is not None:
        return run.user
    return next((s.user for s in new if s.user is not None), None)


def check_graph(new: Sequence[NewSession], deps: Sequence[Dependency]) -> None:
    """BadInput for a dependency on a session not in the run, or a cycle."""
    ids = {s.id for s in new}
    graph: dict[str, set[str]] = {s.id: set() for s in new}
    for dep in deps:
        if dep.session_id not in ids or dep.depends_on not in ids:
            raise BadInput("a dependency names a session that is not in the run")
        if dep.session_id == dep.depends_on:
            raise BadInput("a session cannot depend on itself")
        graph[dep.session_id].add(dep.depends_on)
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as e:
        names = {s.id: s.task_key or s.id for s in new}
        cycle = " → ".join(names.get(i, i) for i in e.args[1])
        raise BadInput(f"the tasks' dependencies form a cycle: {cycle}") from None


class Runs:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        run: NewRun,
        new: Sequence[NewSession],
        deps: Sequence[Dependency] = (),
        *,
        slot: tuple[str, float] | None = None,
    ) -> tuple[Run, builtins.list[Session]]:
        """The run and its sessions (``run_id`` set here), in one transaction.

        ``slot``: a cron job's ``(job, slot)``, claimed in the same transaction — SlotTaken (and
        nothing written) when another firing holds it, so each slot fires exactly once."""
        if not new:
            raise BadInput("a run needs at least one session")
        if len(new) > MAX_SESSIONS:
            raise BadInput(f"a run holds at most {MAX_SESSIONS} sessions")
        check_graph(new, deps)
        now = time.time()
        waiting = {dep.session_id for dep in deps}
        rows, events = [], []
        for index, item in enumerate(new):
            # A microsecond apart: listed (and, at one priority, claimed) in the order given.
            values = new_session_values(item, now + index * 1e-6)
            values["run_id"] = run.id
            if item.id in waiting:
                values["status"] = SessionStatus.WAITING.value
            rows.append(values)
        async with self._db.write() as conn:
            if slot is not None:
                dialect: Any = sqlite if self._db.is_sqlite else postgresql
                claimed = await conn.execute(
                    dialect.insert(job_slots)
                    .values(job=slot[0], slot=slot[1], run_id=run.id, created_at=now)
                    .on_conflict_do_nothing()
                    .returning(job_slots.c.job)  # (rowcount is -1 here on PostgreSQL)
                )
                if claimed.first() is None:
                    raise SlotTaken(f"job {slot[0]!r}: slot {slot[1]} has fired already")
            await conn.execute(
                insert(runs).values(
                    id=run.id,
                    kind=run.kind.value,
                    name=run.name,
                    status=RunStatus.RUNNING.value,
                    spec=dumps(run.spec),
                    job=run.job,
                    user=owner_of(run, new),
                    created_at=now,
                    updated_at=now,
                )
            )
            await conn.execute(insert(sessions), rows)
            if deps:
                await conn.execute(
                    insert(session_deps),
                    [
                        {"session_id": d.session_id, "depends_on": d.depends_on, "after": d.after}
                        for d in deps
                    ],
                )
            for item in new:
                if item.id in waiting:
                    data = {"status": SessionStatus.WAITING.value, "run_id": run.id}
                    events = [NewEvent(kind=EventKind.STATUS, data=data)]
                else:
                    events = [queued_event(item)]
                    await self._db.notify(conn, Notice(NoticeKind.QUEUED, item.id))
                await append_events(conn, item.id, None, events, now=now)
        return await self.get(run.id), await self.sessions(run.id)

    async def join(self, new: NewSession, after: str, *, how: After = After.SUCCESS) -> Run:
        """``new``, waiting for the session ``after``, in ``after``'s run — one of kind
        ``single`` made for it when it has none (a dependency never crosses runs). In one
        transaction that locks ``after``'s row, so its end cannot slip between reading its
        status and writing the dependency: if it has already ended, ``new`` is queued (or
        skipped) at once, as ``settle`` would have done."""
        now = time.time()
        async with self._db.write() as conn:
            query = select(sessions).where(sessions.c.id == after).with_for_update()
            row = (await conn.execute(query)).first()
            if row is None:
                raise SessionNotFound(f"no session {after!r} to run after")
            anchor = session_from_row(row)
            run_id = anchor.run_id
            if run_id is None:
                made = NewRun(kind=RunKind.SINGLE, spec={"after": after})
                run_id = made.id
                status = RunStatus.SUCCEEDED if anchor.status.terminal else RunStatus.RUNNING
                await conn.execute(
                    insert(runs).values(
                        id=run_id,
                        kind=made.kind.value,
                        status=status.value,
                        spec=dumps(made.spec),
                        user=anchor.user,
                        created_at=now,
                        updated_at=now,
                    )
                )
                await conn.execute(
                    update(sessions)
                    .where(sessions.c.id == after)
                    .values(run_id=run_id, task_key=anchor.task_key or after)
                )
            # The run has work again.
            await conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(status=RunStatus.RUNNING.value, finished_at=None, updated_at=now)
            )
            values = new_session_values(new, now)
            values.update(run_id=run_id, status=SessionStatus.WAITING.value)
            values["task_key"] = new.task_key or new.id
            await conn.execute(insert(sessions).values(values))
            await conn.execute(
                insert(session_deps).values(session_id=new.id, depends_on=after, after=how.value)
            )
            data = {"status": SessionStatus.WAITING.value, "run_id": run_id, "after": after}
            await append_events(
                conn, new.id, None, [NewEvent(kind=EventKind.STATUS, data=data)], now=now
            )
            if anchor.status.terminal:
                await _release(conn, db=self._db, session_id=new.id, now=now)
                await _run_status(conn, run_id, now)
        return await self.get(run_id)

    async def get(self, run_id: str) -> Run:
        async with self._db.read() as conn:
            row = (await conn.execute(select(runs).where(runs.c.id == run_id))).first()
        if row is None:
            raise SessionNotFound(f"no run {run_id!r}")
        return run_from_row(row)

    async def list(
        self, *, limit: int = 50, job: str | None = None, user: str | None = None
    ) -> builtins.list[Run]:
        """Newest first; ``user``: only that user's runs (a member's list)."""
        query = select(runs).order_by(runs.c.created_at.desc()).limit(limit)
        if job is not None:
            query = query.where(runs.c.job == job)
        if user is not None:
            query = query.where(runs.c.user == user)
        async with self._db.read() as conn:
            return [run_from_row(r) for r in (await conn.execute(query)).all()]

    async def sessions(self, run_id: str) -> builtins.list[Session]:
        """The run's sessions, oldest first."""
        query = (
            select(sessions)
            .where(sessions.c.run_id == run_id)
            .order_by(sessions.c.created_at, sessions.c.id)
        )
        async with self._db.read() as conn:
            return [session_from_row(r) for r in (await conn.execute(query)).all()]

    async def update_spec(
        self,
        run_id: str,
        change: Callable[[Run], dict[str, Any] | None],
        status: RunStatus | None = None,
    ) -> Run | None:
        """Write ``change(run)`` as the run's spec (and ``status``, if given) unless another
        writer changed the spec since it was read: the write is guarded on the spec as read, so
        of two servers claiming the same step exactly one gets it. None: ``change`` declined
        (returned None), or another writer came first."""
        async with self._db.write() as conn:
            row = (await conn.execute(select(runs).where(runs.c.id == run_id))).first()
            if row is None:
                raise SessionNotFound(f"no run {run_id!r}")
            spec = change(run_from_row(row))
            if spec is None:
                return None
            now = time.time()
            values: dict[str, Any] = {"spec": dumps(spec), "updated_at": now}
            if status is not None:
                values["status"] = status.value
                values["finished_at"] = row.finished_at or now
            done = await conn.execute(
                update(runs).where(runs.c.id == run_id, runs.c.spec == row.spec).values(values)
            )
            if done.rowcount != 1:
                return None
        return await self.get(run_id)

    async def ended_of_kind(
        self, kind: RunKind, *, unless: str, limit: int = 20
    ) -> builtins.list[Run]:
        """Runs of ``kind`` whose sessions all ended and whose spec does not contain ``unless``
        (a marker of a step done), oldest first: the work due on them."""
        query = (
            select(runs)
            .where(
                runs.c.kind == kind.value,
                runs.c.status != RunStatus.RUNNING.value,
                runs.c.spec.not_like(f"%{unless}%"),
            )
            .order_by(runs.c.created_at)
            .limit(limit)
        )
        async with self._db.read() as conn:
            return [run_from_row(r) for r in (await conn.execute(query)).all()]

    async def dependencies(self, run_id: str) -> builtins.list[Dependency]:
        query = (
            select(session_deps)
            .join(sessions, sessions.c.id == session_deps.c.session_id)
            .where(sessions.c.run_id == run_id)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [
            Dependency(session_id=r.session_id, depends_on=r.depends_on, after=After(r.after))
            for r in rows
        ]

    async def retry_failed(self, run_id: str) -> tuple[Run, builtins.list[Session]]:
        """In one transaction: every failed, dead or cancelled session of the run is queued
        for a new attempt (its ``max_attempts`` raised so that attempt can run), every skipped
        one waits again, and the graph settles; the run is ``running`` again. Each gets a
        status event saying it was retried (its history stays). Returns the run and the
        sessions retried. ``Conflict`` when nothing failed."""
        now = time.time()
        async with self._db.write() as conn:
            # Sessions first, then the run's row: the order a session's end takes (its row,
            # then ``_run_status``), so the two never wait for each other in a circle.
            row = (await conn.execute(select(runs.c.id).where(runs.c.id == run_id))).first()
            if row is None:
                raise SessionNotFound(f"no run {run_id!r}")
            found = [
                session_from_row(r)
                for r in (
                    await conn.execute(
                        select(sessions)
                        .where(sessions.c.run_id == run_id)
                        .order_by(sessions.c.created_at, sessions.c.id)
                    )
                ).all()
            ]
            again: builtins.list[Session] = []
            waits: builtins.list[Session] = []
            for session in found:
                if session.status not in _RETRIED and session.status != SessionStatus.SKIPPED:
                    continue
                # Held, and still as read (a concurrent retry-failed took it otherwise).
                held = await conn.execute(
                    update(sessions)
                    .where(sessions.c.id == session.id, sessions.c.status == session.status)
                    .values(updated_at=now)
                )
                if held.rowcount:
                    was_skipped = session.status == SessionStatus.SKIPPED
                    (waits if was_skipped else again).append(session)
            if not again:
                raise Conflict(f"run {run_id} has no failed, dead or cancelled session to retry")
            for session in again:
                values: dict[str, Any] = {
                    "status": SessionStatus.QUEUED.value,
                    "max_attempts": max(session.max_attempts, session.attempt + 1),
                    "cancel_requested": False,
                    "error": None,
                    "failure_kind": None,
                    "question": None,
                    "finished_at": None,
                    "available_at": now,
                    "updated_at": now,
                }
                await conn.execute(
                    update(sessions).where(sessions.c.id == session.id).values(values)
                )
                data = {
                    "status": SessionStatus.QUEUED.value,
                    "reason": f"retried: it was {session.status.value} (run {run_id})",
                    "retried": session.status.value,
                }
                status = NewEvent(kind=EventKind.STATUS, data=data)
                await append_events(conn, session.id, None, [status], now=now)
                await self._db.notify(conn, Notice(NoticeKind.QUEUED, session.id))
            for session in waits:
                values = {
                    "status": SessionStatus.WAITING.value,
                    "error": None,
                    "finished_at": None,
                    "updated_at": now,
                }
                await conn.execute(
                    update(sessions).where(sessions.c.id == session.id).values(values)
                )
                data = {
                    "status": SessionStatus.WAITING.value,
                    "reason": f"retried: it was skipped (run {run_id})",
                    "retried": SessionStatus.SKIPPED.value,
                }
                status = NewEvent(kind=EventKind.STATUS, data=data)
                await append_events(conn, session.id, None, [status], now=now)
            await conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(status=RunStatus.RUNNING.value, finished_at=None, updated_at=now)
            )
            # What waits again may already have all it needs (or be skipped once more).
            for session in waits:
                skipped = await _release(conn, self._db, session.id, now)
                if skipped is not None:
                    await settle(conn, self._db, skipped, now)
        return await self.get(run_id), [await self._one(s.id) for s in again]

    async def _one(self, session_id: str) -> Session:
        async with self._db.read() as conn:
            row = (await conn.execute(select(sessions).where(sessions.c.id == session_id))).one()
        return session_from_row(row)


async def settle(conn: AsyncConnection, db: Database, ended: Session, now: float) -> None:
    """After ``ended`` ended (in the caller's transaction): queue or skip its waiting
    dependants, and bring its run's status up to date."""
    todo = [ended]
    while todo:
        done = todo.pop()
        dependants = (
            await conn.execute(
                select(session_deps.c.session_id).where(session_deps.c.depends_on == done.id)
            )
        ).scalars()
        for dependant in builtins.list(dependants):
            skipped = await _release(conn, db, dependant, now)
            if skipped is not None:
                todo.append(skipped)
    if ended.run_id is not None:
        await _run_status(conn, ended.run_id, now)


async def _release(
    conn: AsyncConnection, db: Database, session_id: str, now: float
) -> Session | None:
    """Queue ``session_id`` if all it waits for ended (well, where it must); skip it if one it
    waited ``after`` ended badly (returned: its own dependants are next)."""
    row = (await conn.execute(select(sessions).where(sessions.c.id == session_id))).first()
    if row is None or row.status != SessionStatus.WAITING.value:
        return None
    found = (
        await conn.execute(
            select(session_deps.c.after, sessions.c.id, sessions.c.status)
            .join(sessions, sessions.c.id == session_deps.c.depends_on)
            .where(session_deps.c.session_id == session_id)
        )
    ).all()
    failed = [
        r.id
        for r in found
        if r.after == After.SUCCESS.value and SessionStatus(r.status).terminal and r.status != _GOOD
    ]
    if failed:
        values: dict[str, Any] = {
            "status": SessionStatus.SKIPPED.value,
            "finished_at": now,
            "updated_at": now,
            "error": f"skipped: {', '.join(failed)} did not succeed",
        }
        data = {"status": SessionStatus.SKIPPED.value, "because": failed}
    elif all(SessionStatus(r.status).terminal for r in found):
        values = {"status": SessionStatus.QUEUED.value, "available_at": now, "updated_at": now}
        data = {"status": SessionStatus.QUEUED.value, "reason": "its dependencies ended"}
    else:
        return None
    await conn.execute(update(sessions).where(sessions.c.id == session_id).values(values))
    status = NewEvent(kind=EventKind.STATUS, data=data)
    await append_events(conn, session_id, None, [status], now=now)
    after = session_from_row(
        (await conn.execute(select(sessions).where(sessions.c.id == session_id))).one()
    )
    if after.status == SessionStatus.QUEUED:
        await db.notify(conn, Notice(NoticeKind.QUEUED, session_id))
        return None
    await record_status(conn, after, now)
    return after


async def _run_status(conn: AsyncConnection, run_id: str, now: float) -> None:
    # The run's row first: a retry-failed that holds it commits before the statuses are read.
    kind = (
        await conn.execute(select(runs.c.kind).where(runs.c.id == run_id).with_for_update())
    ).scalar()
    if kind == RunKind.ORCH.value:
        return  # an orch run's status is its leader's tasks' (store.orch), not its sessions'
    statuses = [
        SessionStatus(s)
        for s in (
            await conn.execute(select(sessions.c.status).where(sessions.c.run_id == run_id))
        ).scalars()
    ]
    if not statuses or not all(s.terminal for s in statuses):
        return
    if all(s == SessionStatus.SUCCEEDED for s in statuses):
        status = RunStatus.SUCCEEDED
    elif SessionStatus.CANCELLED in statuses:  # cancelled by hand (or the run was)
        status = RunStatus.CANCELLED
    else:
        status = RunStatus.FAILED
    await conn.execute(
        update(runs)
        .where(runs.c.id == run_id, runs.c.status == RunStatus.RUNNING.value)
        .values(status=status.value, finished_at=now, updated_at=now)
    )
