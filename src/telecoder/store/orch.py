"""The tasks of orch runs (``telecoder orch``): a leader's view of a run, not a second queue.

A task is what the leader wants done; dispatching it writes, in one transaction, the task's
new attempt and an ordinary session in the run (``run_id`` the run, ``task_key`` the task),
which the ordinary queue and workers execute. Every change of a task is also a row of
``orch_events`` (``orch wait`` follows them by id). Task statuses change only through guarded
updates (``where status = <as read>``), so two leaders reconciling at once record each change
once.

An orch run's status is its tasks': ``store.runs`` leaves it alone when the run's sessions end
(a task not yet dispatched has no session), and every write here that moves a task sets it.
"""

from __future__ import annotations

import builtins
import graphlib
import time
from collections.abc import Collection
from typing import Any

from sqlalchemy import Row, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from telecoder.domain import (
    NewRun,
    NewSession,
    Run,
    RunKind,
    RunStatus,
    Task,
    TaskAttempt,
    TaskEvent,
    TaskMode,
    TaskStatus,
)
from telecoder.errors import BadInput, Conflict, SessionNotFound
from telecoder.store.db import Database, dumps, loads
from telecoder.store.events import append_events
from telecoder.store.notify import Notice, NoticeKind
from telecoder.store.rows import new_session_values, queued_event
from telecoder.store.runs import run_from_row
from telecoder.store.schema import orch_attempts, orch_deps, orch_events, orch_tasks, runs, sessions

MAX_TASKS = 1000


class Orch:
    def __init__(self, db: Database) -> None:
        self._db = db

    # --- runs ---------------------------------------------------------------------------------

    async def create_run(self, run: NewRun) -> Run:
        """An orch run with no task yet (``running``: the leader has work to add)."""
        if run.kind != RunKind.ORCH:
            raise BadInput(f"an orch run is of kind orch, not {run.kind.value}")
        now = time.time()
        async with self._db.write() as conn:
            await conn.execute(
                insert(runs).values(
                    id=run.id,
                    kind=run.kind.value,
                    name=run.name,
                    status=RunStatus.RUNNING.value,
                    spec=dumps(run.spec),
                    created_at=now,
                    updated_at=now,
                )
            )
        return await self.run(run.id)

    async def run(self, run_id: str) -> Run:
        """The orch run ``run_id``; ``SessionNotFound`` for no run, ``BadInput`` for a run of
        another kind."""
        async with self._db.read() as conn:
            return await _run(conn, run_id)

    # --- tasks --------------------------------------------------------------------------------

    async def add_task(
        self,
        run_id: str,
        key: str,
        *,
        prompt: str,
        repo: str,
        engine: str | None,
        acceptance: str | None,
        base: str | None,
        mode: TaskMode,
        assignee: str | None,
    ) -> Task:
        now = time.time()
        async with self._db.write() as conn:
            await _run(conn, run_id, lock=True)
            count = (
                await conn.execute(
                    select(func.count())
                    .select_from(orch_tasks)
                    .where(orch_tasks.c.run_id == run_id)
                )
            ).scalar_one()
            if count >= MAX_TASKS:
                raise BadInput(f"an orch run holds at most {MAX_TASKS} tasks")
            if await _task_row(conn, run_id, key) is not None:
                raise Conflict(f"run {run_id} already has a task {key!r}")
            await conn.execute(
                insert(orch_tasks).values(
                    run_id=run_id,
                    key=key,
                    prompt=prompt,
                    repo=repo,
                    engine=engine,
                    acceptance=acceptance,
                    base=base,
                    mode=mode.value,
                    assignee=assignee,
                    status=TaskStatus.PENDING.value,
                    attempt=0,
                    created_at=now,
                    updated_at=now,
                )
            )
            await record(conn, run_id, key, "added", {"status": TaskStatus.READY.value}, now)
            await settle_run(conn, run_id, now)
        return await self.task(run_id, key)

    async def add_dependency(self, run_id: str, key: str, on: str) -> Task:
        """``key`` waits for ``on`` to succeed. Refused: an unknown task, itself, a task that
        was dispatched already, a cycle (named)."""
        if key == on:
            raise BadInput(f"task {key!r} cannot depend on itself")
        now = time.time()
        async with self._db.write() as conn:
            await _run(conn, run_id, lock=True)
            row = await _task_row(conn, run_id, key)
            if row is None:
                raise SessionNotFound(f"run {run_id} has no task {key!r}")
            if await _task_row(conn, run_id, on) is None:
                raise SessionNotFound(f"run {run_id} has no task {on!r}")
            if row.status != TaskStatus.PENDING.value:
                raise Conflict(
                    f"task {key!r} is {row.status}: only a pending task takes a dependency"
                )
            graph = await _graph(conn, run_id)
            if on in graph.get(key, set()):
                return await _task(conn, run_id, key)
            graph.setdefault(key, set()).add(on)
            try:
                graphlib.TopologicalSorter(graph).prepare()
            except graphlib.CycleError as e:
                cycle = " → ".join(e.args[1])
                raise BadInput(f"the tasks' dependencies would form a cycle: {cycle}") from None
            await conn.execute(insert(orch_deps).values(run_id=run_id, task_key=key, depends_on=on))
            await record(conn, run_id, key, "dependency", {"on": on}, now)
            return await _task(conn, run_id, key)

    async def tasks(self, run_id: str) -> builtins.list[Task]:
        """The run's tasks in the order they were added."""
        async with self._db.read() as conn:
            await _run(conn, run_id)
            return await _tasks(conn, run_id)

    async def task(self, run_id: str, key: str) -> Task:
        async with self._db.read() as conn:
            await _run(conn, run_id)
            return await _task(conn, run_id, key)

    async def by_session(self, session_id: str) -> tuple[str, str] | None:
        """(run, task) of the attempt that made ``session_id``, if one did."""
        query = select(orch_attempts.c.run_id, orch_attempts.c.task_key).where(
            orch_attempts.c.session_id == session_id
        )
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else (row.run_id, row.task_key)

    # --- dispatch -----------------------------------------------------------------------------

    async def dispatch(
        self,
        run_id: str,
        key: str,
        new: NewSession,
        *,
        assignee: str,
        worktree: str,
        allowed: Collection[TaskStatus] = (TaskStatus.READY,),
        event: dict[str, Any] | None = None,
    ) -> Task:
        """In one transaction: the task's next attempt and its session ``new`` (queued in the
        run). ``allowed``: the statuses the task may be in (``ready``: pending with every
        dependency succeeded); ``Conflict`` otherwise, and nothing is written."""
        now = time.time()
        async with self._db.write() as conn:
            await _run(conn, run_id, lock=True)
            task = await _task(conn, run_id, key, lock=True)
            if task.status not in allowed:
                raise Conflict(_not_dispatchable(task))
            if task.status.in_flight:  # reassigned: its attempt ends here
                await _end_attempt(conn, task, TaskStatus.CANCELLED, now)
            number = task.attempt + 1
            values = new_session_values(new, now)
            values.update(run_id=run_id, task_key=key)
            await conn.execute(insert(sessions).values(values))
            await append_events(conn, new.id, None, [queued_event(new)], now=now)
            await self._db.notify(conn, Notice(NoticeKind.QUEUED, new.id))
            await conn.execute(
                insert(orch_attempts).values(
                    run_id=run_id,
                    task_key=key,
                    number=number,
                    session_id=new.id,
                    status=TaskStatus.DISPATCHED.value,
                    assignee=assignee,
                    engine=new.engine,
                    worktree=worktree,
                    branch=new.branch,
                    base_ref=new.base_ref,
                    created_at=now,
                    updated_at=now,
                )
            )
            await conn.execute(
                update(orch_tasks)
                .where(orch_tasks.c.run_id == run_id, orch_tasks.c.key == key)
                .values(
                    status=TaskStatus.DISPATCHED.value,
                    attempt=number,
                    session_id=new.id,
                    updated_at=now,
                )
            )
            data = {
                "status": TaskStatus.DISPATCHED.value,
                "was": task.status.value,
                "attempt": number,
                "session_id": new.id,
                "worktree": worktree,
                "branch": new.branch,
                "base_ref": new.base_ref,
                "assignee": assignee,
                **(event or {}),
            }
            await record(conn, run_id, key, "dispatched", data, now)
            await settle_run(conn, run_id, now)
            return await _task(conn, run_id, key)

    async def set_message(self, run_id: str, key: str, number: int, message_id: int) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                update(orch_attempts)
                .where(_attempt_is(run_id, key, number))
                .values(message_id=message_id)
            )

    # --- changes ------------------------------------------------------------------------------

    async def move(
        self,
        task: Task,
        status: TaskStatus,
        *,
        kind: str = "status",
        data: dict[str, Any] | None = None,
        attempt: dict[str, Any] | None = None,
    ) -> bool:
        """``task`` to ``status`` if it still is as read (else False: another writer moved
        it), its current attempt with it (and ``attempt``'s values), with an event."""
        now = time.time()
        async with self._db.write() as conn:
            stored = TaskStatus.PENDING if status == TaskStatus.READY else status
            was = TaskStatus.PENDING if task.status == TaskStatus.READY else task.status
            done = await conn.execute(
                update(orch_tasks)
                .where(
                    orch_tasks.c.run_id == task.run_id,
                    orch_tasks.c.key == task.key,
                    orch_tasks.c.status == was.value,
                    orch_tasks.c.attempt == task.attempt,
                )
                .values(status=stored.value, updated_at=now)
            )
            if done.rowcount != 1:
                return False
            if task.attempt and task.status.in_flight:
                values = {"status": status.value, "updated_at": now, **(attempt or {})}
                await conn.execute(
                    update(orch_attempts)
                    .where(_attempt_is(task.run_id, task.key, task.attempt))
                    .values(values)
                )
            body = {"status": status.value, "was": task.status.value, **(data or {})}
            if task.session_id is not None:
                body.setdefault("session_id", task.session_id)
            await record(conn, task.run_id, task.key, kind, body, now)
            await settle_run(conn, task.run_id, now)
        return True

    async def update_attempt(self, task: Task, number: int, **values: Any) -> None:
        """Correct what an attempt recorded (its worktree as the worker made it)."""
        async with self._db.write() as conn:
            await conn.execute(
                update(orch_attempts)
                .where(_attempt_is(task.run_id, task.key, number))
                .values(updated_at=time.time(), **values)
            )

    async def reassign(self, task: Task, assignee: str, engine: str | None) -> Task:
        """A task not in flight: its next attempt goes to ``assignee`` (with ``engine``)."""
        now = time.time()
        values: dict[str, Any] = {"assignee": assignee, "updated_at": now}
        if engine is not None:
            values["engine"] = engine
        async with self._db.write() as conn:
            await conn.execute(
                update(orch_tasks)
                .where(orch_tasks.c.run_id == task.run_id, orch_tasks.c.key == task.key)
                .values(values)
            )
            data = {"assignee": assignee, "engine": engine or task.engine}
            await record(conn, task.run_id, task.key, "reassigned", data, now)
            return await _task(conn, task.run_id, task.key)

    async def note(self, task: Task, kind: str, data: dict[str, Any]) -> TaskEvent:
        """An event of ``task`` that changes nothing else (an answer, a cleanup)."""
        now = time.time()
        async with self._db.write() as conn:
            return await record(conn, task.run_id, task.key, kind, data, now)

    async def cleaned(self, task: Task, number: int) -> None:
        await self.update_attempt(task, number, cleaned_at=time.time())

    # --- events -------------------------------------------------------------------------------

    async def events(
        self, run_id: str, *, after: int = 0, limit: int = 500
    ) -> builtins.list[TaskEvent]:
        query = (
            select(orch_events)
            .where(orch_events.c.run_id == run_id, orch_events.c.id > after)
            .order_by(orch_events.c.id)
            .limit(limit)
        )
        async with self._db.read() as conn:
            return [_event(r) for r in (await conn.execute(query)).all()]

    async def last_event(self, run_id: str) -> int:
        query = select(func.max(orch_events.c.id)).where(orch_events.c.run_id == run_id)
        async with self._db.read() as conn:
            return int((await conn.execute(query)).scalar() or 0)


# --- helpers ----------------------------------------------------------------------------------


async def record(
    conn: AsyncConnection, run_id: str, key: str, kind: str, data: dict[str, Any], now: float
) -> TaskEvent:
    event_id = (
        await conn.execute(
            insert(orch_events)
            .values(run_id=run_id, task_key=key, kind=kind, data=dumps(data), created_at=now)
            .returning(orch_events.c.id)
        )
    ).scalar_one()
    return TaskEvent(id=event_id, run_id=run_id, task=key, kind=kind, data=data, created_at=now)


async def settle_run(conn: AsyncConnection, run_id: str, now: float) -> None:
    """The orch run's status from its tasks: running while one has not ended (or none was
    added); then succeeded, cancelled (one was) or failed."""
    statuses = [
        TaskStatus(s)
        for s in (
            await conn.execute(select(orch_tasks.c.status).where(orch_tasks.c.run_id == run_id))
        ).scalars()
    ]
    if not statuses or not all(s.terminal for s in statuses):
        status, finished = RunStatus.RUNNING, None
    elif all(s == TaskStatus.SUCCEEDED for s in statuses):
        status, finished = RunStatus.SUCCEEDED, now
    elif TaskStatus.CANCELLED in statuses:
        status, finished = RunStatus.CANCELLED, now
    else:
        status, finished = RunStatus.FAILED, now
    await conn.execute(
        update(runs)
        .where(runs.c.id == run_id, runs.c.status != status.value)
        .values(status=status.value, finished_at=finished, updated_at=now)
    )


async def _run(conn: AsyncConnection, run_id: str, *, lock: bool = False) -> Run:
    query = select(runs).where(runs.c.id == run_id)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()  # one writer of a run's tasks at a time
    row = (await conn.execute(query)).first()
    if row is None:
        raise SessionNotFound(f"no run {run_id!r}")
    run = run_from_row(row)
    if run.kind != RunKind.ORCH:
        raise BadInput(f"run {run_id} is a {run.kind.value} run, not an orch run")
    return run


async def _task_row(conn: AsyncConnection, run_id: str, key: str) -> Row[Any] | None:
    query = select(orch_tasks).where(orch_tasks.c.run_id == run_id, orch_tasks.c.key == key)
    return (await conn.execute(query)).first()


async def _graph(conn: AsyncConnection, run_id: str) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    query = select(orch_deps).where(orch_deps.c.run_id == run_id)
    for row in (await conn.execute(query)).all():
        graph.setdefault(row.task_key, set()).add(row.depends_on)
    return graph


async def _task(conn: AsyncConnection, run_id: str, key: str, *, lock: bool = False) -> Task:
    for task in await _tasks(conn, run_id, lock=lock):
        if task.key == key:
            return task
    raise SessionNotFound(f"run {run_id} has no task {key!r}")


async def _tasks(conn: AsyncConnection, run_id: str, *, lock: bool = False) -> builtins.list[Task]:
    query = (
        select(orch_tasks)
        .where(orch_tasks.c.run_id == run_id)
        .order_by(orch_tasks.c.created_at, orch_tasks.c.key)
    )
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    rows = (await conn.execute(query)).all()
    graph = await _graph(conn, run_id)
    found: dict[tuple[str, int], TaskAttempt] = {}
    attempts: dict[str, builtins.list[TaskAttempt]] = {}
    query = (
        select(orch_attempts)
        .where(orch_attempts.c.run_id == run_id)
        .order_by(orch_attempts.c.task_key, orch_attempts.c.number)
    )
    for a in (await conn.execute(query)).all():
        attempt = _attempt(a)
        found[(a.task_key, a.number)] = attempt
        attempts.setdefault(a.task_key, []).append(attempt)
    status = {row.key: TaskStatus(row.status) for row in rows}
    tasks = []
    for row in rows:
        waits = tuple(sorted(graph.get(row.key, ())))
        current = status[row.key]
        if current == TaskStatus.PENDING and all(
            status.get(d) == TaskStatus.SUCCEEDED for d in waits
        ):
            current = TaskStatus.READY
        tasks.append(
            Task(
                run_id=row.run_id,
                key=row.key,
                prompt=row.prompt,
                repo=row.repo,
                engine=row.engine,
                acceptance=row.acceptance,
                base=row.base,
                mode=TaskMode(row.mode),
                assignee=row.assignee,
                status=current,
                attempt=row.attempt,
                session_id=row.session_id,
                depends_on=waits,
                attempts=tuple(attempts.get(row.key, ())),
                created_at=row.created_at,
                updated_at=row.updated_at,
            )
        )
    return tasks


def _attempt(row: Row[Any]) -> TaskAttempt:
    return TaskAttempt(
        number=row.number,
        session_id=row.session_id,
        status=TaskStatus(row.status),
        assignee=row.assignee,
        engine=row.engine,
        worktree=row.worktree,
        branch=row.branch,
        base_ref=row.base_ref,
        message_id=row.message_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        cleaned_at=row.cleaned_at,
    )


def _event(row: Row[Any]) -> TaskEvent:
    return TaskEvent(
        id=row.id,
        run_id=row.run_id,
        task=row.task_key,
        kind=row.kind,
        data=loads(row.data) or {},
        created_at=row.created_at,
    )


def _attempt_is(run_id: str, key: str, number: int) -> Any:
    return (
        (orch_attempts.c.run_id == run_id)
        & (orch_attempts.c.task_key == key)
        & (orch_attempts.c.number == number)
    )


async def _end_attempt(conn: AsyncConnection, task: Task, status: TaskStatus, now: float) -> None:
    await conn.execute(
        update(orch_attempts)
        .where(_attempt_is(task.run_id, task.key, task.attempt))
        .values(status=status.value, updated_at=now)
    )


def _not_dispatchable(task: Task) -> str:
    if task.status == TaskStatus.PENDING:
        return f"task {task.key!r} is pending: it waits for {', '.join(task.depends_on)}"
    return f"task {task.key!r} is {task.status.value}: it cannot be dispatched now"
