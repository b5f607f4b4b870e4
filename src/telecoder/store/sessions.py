"""Session reads and writes that are not the queue's: create, find, list, cancel, retry."""

from __future__ import annotations

import builtins
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from telecoder.domain import (
    Attempt,
    EngineSource,
    Event,
    EventKind,
    FailureKind,
    Mode,
    NewEvent,
    NewSession,
    Session,
    SessionStatus,
)
from telecoder.errors import BadInput, Conflict, SessionNotFound
from telecoder.store.db import Database, dumps, loads
from telecoder.store.events import append_events, event_from_row
from telecoder.store.notify import Notice, NoticeKind
from telecoder.store.rows import (
    attempt_from_row,
    new_session_values,
    queued_event,
    session_from_row,
)
from telecoder.store.schema import attempts, deliveries, events, sessions
from telecoder.store.transitions import status_changed


@dataclass(frozen=True, slots=True)
class Page:
    sessions: list[Session]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Conversation:
    """Where a chat session stands before its next turn.

    ``previous`` is the attempt whose turn ended last (the session went ``blocked``): its
    worktree and agent session are the ones to continue. ``pending`` are the messages sent
    since, oldest first; before the first turn, those sent while it was still queued.
    """

    previous: Attempt | None
    pending: list[Event]

    @property
    def texts(self) -> list[str]:
        return [str(e.data.get("text", "")) for e in self.pending]


class Sessions:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, new: NewSession) -> Session:
        if not new.prompt.strip():
            raise BadInput("the prompt is empty")
        now = time.time()
        async with self._db.write() as conn:
            await conn.execute(insert(sessions).values(new_session_values(new, now)))
            await append_events(conn, new.id, None, [queued_event(new)], now=now)
            await self._db.notify(conn, Notice(NoticeKind.QUEUED, new.id))
        return await self.get(new.id)

    async def get(self, session_id: str) -> Session:
        async with self._db.read() as conn:
            return await _get(conn, session_id)

    async def resolve(self, ref: str) -> Session:
        """A session by id or by a unique prefix of at least four characters (as git does)."""
        async with self._db.read() as conn:
            row = (await conn.execute(select(sessions).where(sessions.c.id == ref))).first()
            if row is None and len(ref) >= 4:
                rows = (
                    await conn.execute(
                        select(sessions)
                        .where(sessions.c.id.startswith(ref, autoescape=True))
                        .limit(2)
                    )
                ).all()
                if len(rows) > 1:
                    raise BadInput(f"session id {ref!r} is ambiguous: give more characters")
                row = rows[0] if rows else None
        if row is None:
            raise SessionNotFound(f"no session {ref!r}")
        return session_from_row(row)

    async def list(
        self,
        *,
        status: SessionStatus | None = None,
        repo: str | None = None,
        engine: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        user: str | None = None,
    ) -> Page:
        """Newest first; ``cursor`` is the ``next_cursor`` of the page before; ``user``: only
        the sessions that user submitted (a member's list)."""
        query = select(sessions)
        if user is not None:
            query = query.where(sessions.c.user == user)
        if status is not None:
            query = query.where(sessions.c.status == status.value)
        if repo is not None:
            query = query.where(sessions.c.repo == repo)
        if engine is not None:
            query = query.where(sessions.c.engine == engine)
        if cursor:
            created, _, sid = cursor.partition(":")
            try:
                created_at = float(created)
            except ValueError:
                raise BadInput(f"invalid cursor {cursor!r}") from None
            query = query.where(
                or_(
                    sessions.c.created_at < created_at,
                    and_(sessions.c.created_at == created_at, sessions.c.id < sid),
                )
            )
        query = query.order_by(sessions.c.created_at.desc(), sessions.c.id.desc()).limit(limit + 1)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        found = [session_from_row(r) for r in rows[:limit]]
        more = len(rows) > limit
        next_cursor = f"{found[-1].created_at!r}:{found[-1].id}" if more and found else None
        return Page(found, next_cursor)

    async def counts(self) -> dict[str, int]:
        """How many sessions are in each status (statuses with none left out)."""
        query = select(sessions.c.status, func.count()).group_by(sessions.c.status)
        async with self._db.read() as conn:
            return {str(status): int(n) for status, n in (await conn.execute(query)).all()}

    async def attempts(self, session_id: str) -> builtins.list[Attempt]:
        query = (
            select(attempts).where(attempts.c.session_id == session_id).order_by(attempts.c.number)
        )
        async with self._db.read() as conn:
            return [attempt_from_row(r) for r in (await conn.execute(query)).all()]

    async def cancel(self, session_id: str) -> Session:
        """Cancel now if queued; flag a running session for its worker to stop."""
        now = time.time()
        async with self._db.write() as conn:
            session = await _get(conn, session_id)
            if session.status.terminal:
                raise Conflict(f"session {session_id} is already {session.status.value}")
            if session.status == SessionStatus.RUNNING:
                await conn.execute(
                    update(sessions)
                    .where(sessions.c.id == session_id)
                    .values(cancel_requested=True, updated_at=now)
                )
                event = NewEvent(kind=EventKind.PROGRESS, data={"step": "cancel_requested"})
                await self._db.notify(conn, Notice(NoticeKind.CANCEL, session_id))
            else:
                await conn.execute(
                    update(sessions)
                    .where(sessions.c.id == session_id)
                    .values(
                        status=SessionStatus.CANCELLED.value,
                        cancel_requested=True,
                        failure_kind=FailureKind.CANCELLED.value,
                        error=_cancelled_while(session),
                        finished_at=now,
                        updated_at=now,
                    )
                )
                event = NewEvent(
                    kind=EventKind.STATUS, data={"status": SessionStatus.CANCELLED.value}
                )
                await status_changed(conn, self._db, await _get(conn, session_id), now)
            await append_events(conn, session_id, None, [event], now=now)
        return await self.get(session_id)

    async def add_message(
        self,
        session_id: str,
        text: str,
        *,
        sender: str | None = None,
        once: tuple[str, str] | None = None,
    ) -> tuple[Session, int]:
        """Send a chat session a message, or answer a session's question: recorded as an event;
        a waiting chat (or a session blocked with a question) is queued, its question cleared.
        Returns the session as it is now and the seq of the message's event.

        Refused (``Conflict``) for a task session that asks nothing, an ended chat, and a chat
        whose agent is in the middle of a turn (send again once it waits). A chat queued but
        not yet started takes more messages: its next turn gets them all.

        ``once``: the (source, key) of the delivery that carries the message, recorded in the
        same transaction; a key seen before adds nothing and answers seq 0.
        """
        now = time.time()
        async with self._db.write() as conn:
            session = await _get(conn, session_id, lock=True)
            if once is not None and not await self._claim(conn, once, session_id, now):
                return session, 0
            asks = session.status == SessionStatus.BLOCKED and session.question is not None
            if session.mode != Mode.CHAT and not asks:
                raise Conflict(
                    f"session {session_id} is a task, not a chat: it takes no follow-ups "
                    "(start a chat with --mode chat) unless it waits with a question"
                )
            if session.status.terminal:
                raise Conflict(f"session {session_id} is {session.status.value}: the chat ended")
            if session.status == SessionStatus.RUNNING:
                raise Conflict(
                    f"session {session_id} is in the middle of a turn: send once it waits"
                )
            said: dict[str, Any] = {"role": "user", "text": text}
            if sender is not None:
                said["from"] = sender
            new = [NewEvent(kind=EventKind.MESSAGE, data=said)]
            values: dict[str, Any] = {"updated_at": now}
            if session.status == SessionStatus.BLOCKED:
                values.update(
                    status=SessionStatus.QUEUED.value, available_at=now, error=None, question=None
                )
                reason = "an answer arrived" if asks else "a message arrived"
                status = {"status": SessionStatus.QUEUED.value, "reason": reason}
                new.append(NewEvent(kind=EventKind.STATUS, data=status))
            await conn.execute(update(sessions).where(sessions.c.id == session_id).values(values))
            last = await append_events(conn, session_id, None, new, now=now)
            if session.status == SessionStatus.BLOCKED:
                await self._db.notify(conn, Notice(NoticeKind.QUEUED, session_id))
        return await self.get(session_id), last - len(new) + 1

    async def set_notify(self, session_id: str, targets: Sequence[str]) -> Session:
        """Replace whom the session tells when it finishes, fails or asks (checked targets,
        ``notifications.targets``). ``SessionNotFound``."""
        async with self._db.write() as conn:
            await _get(conn, session_id, lock=True)
            values = {
                "notify": dumps(list(targets)) if targets else None,
                "updated_at": time.time(),
            }
            await conn.execute(update(sessions).where(sessions.c.id == session_id).values(values))
        return await self.get(session_id)

    async def _claim(
        self, conn: AsyncConnection, once: tuple[str, str], session_id: str, now: float
    ) -> bool:
        dialect = sqlite if self._db.is_sqlite else postgresql
        claim = (
            dialect.insert(deliveries)
            .values(source=once[0], key=once[1], session_id=session_id, created_at=now)
            .on_conflict_do_nothing()
            .returning(deliveries.c.session_id)
        )
        return (await conn.execute(claim)).first() is not None

    async def in_thread(self, thread: str) -> Session | None:
        """The newest session of a channel's thread ("channel:key"), if it started any."""
        async with self._db.read() as conn:
            row = (
                await conn.execute(
                    select(sessions)
                    .where(sessions.c.thread == thread)
                    .order_by(sessions.c.created_at.desc())
                    .limit(1)
                )
            ).first()
        return session_from_row(row) if row is not None else None

    async def conversation(self, session_id: str) -> Conversation:
        """The chat's last finished turn and the messages its next turn must answer."""
        async with self._db.read() as conn:
            statuses = (
                await conn.execute(
                    select(events.c.seq, events.c.attempt, events.c.data)
                    .where(events.c.session_id == session_id, events.c.kind == "status")
                    .order_by(events.c.seq)
                )
            ).all()
            blocked = [r for r in statuses if loads(r.data).get("status") == "blocked"]
            after = blocked[-1].seq if blocked else 0
            rows = (
                await conn.execute(
                    select(events)
                    .where(
                        events.c.session_id == session_id,
                        events.c.kind == EventKind.MESSAGE.value,
                        events.c.seq > after,
                        events.c.data.like('%"role":"user"%'),
                    )
                    .order_by(events.c.seq)
                )
            ).all()
            previous = None
            if blocked:
                row = (
                    await conn.execute(
                        select(attempts).where(
                            attempts.c.session_id == session_id,
                            attempts.c.number == blocked[-1].attempt,
                        )
                    )
                ).first()
                previous = attempt_from_row(row) if row is not None else None
        pending = [event_from_row(r) for r in rows]
        return Conversation(previous, [e for e in pending if e.data.get("role") == "user"])

    async def end_idle_chats(self, idle_seconds: float) -> builtins.list[str]:
        """Chats that waited ``idle_seconds`` for a message end ``succeeded`` (their last
        result stays); returns their ids. Their worktrees are the host's to remove."""
        now = time.time()
        idle = select(sessions.c.id).where(
            sessions.c.status == SessionStatus.BLOCKED.value,
            sessions.c.mode == Mode.CHAT.value,
            sessions.c.updated_at < now - idle_seconds,
        )
        async with self._db.read() as conn:  # the usual answer, "none", takes no write lock
            ids = (await conn.execute(idle)).scalars().all()
        ended: builtins.list[str] = []
        if not ids:
            return ended
        async with self._db.write() as conn:
            for session_id in ids:
                done = await conn.execute(
                    update(sessions)
                    .where(
                        sessions.c.id == session_id,
                        sessions.c.status == SessionStatus.BLOCKED.value,
                        sessions.c.updated_at < now - idle_seconds,  # no message came meanwhile
                    )
                    .values(status=SessionStatus.SUCCEEDED.value, finished_at=now, updated_at=now)
                )
                if not done.rowcount:
                    continue
                data = {
                    "status": SessionStatus.SUCCEEDED.value,
                    "reason": f"no message for {idle_seconds:g} s: the chat ended",
                }
                status = NewEvent(kind=EventKind.STATUS, data=data)
                await append_events(conn, session_id, None, [status], now=now)
                await status_changed(conn, self._db, await _get(conn, session_id), now)
                ended.append(session_id)
        return ended

    async def retry(self, session_id: str) -> Session:
        """A new queued session with the same parameters, linked to the old one."""
        return await self.create(retry_of(await self.get(session_id)))


def retry_of(old: Session) -> NewSession:
    """The request that runs ``old`` again, on its branch (so its pull request is reused)."""
    if not old.status.terminal:
        raise Conflict(f"session {old.id} is still {old.status.value}")
    # An engine the repository chose is chosen again, from its .telecoder.yml as it is now.
    source = EngineSource.SETTINGS if old.engine_source == EngineSource.REPO else old.engine_source
    return NewSession(
        repo=old.repo,
        prompt=old.prompt,
        engine=old.engine,
        engine_source=source,
        model=old.model,
        base_ref=old.base_ref,
        mode=old.mode,
        priority=old.priority,
        forge=old.forge,
        max_attempts=old.max_attempts,
        timeout_seconds=old.timeout_seconds,
        budget_usd=old.budget_usd,
        parent_id=old.id,
        origin=old.origin,
        branch=old.branch,
        tier=old.tier,  # routed to the same tier's models
        thread=old.thread,  # it answers in the same thread
        steps=old.steps,
        notify=old.notify,
        read_only=old.read_only,
        user=old.user,
    )


def _cancelled_while(session: Session) -> str:
    if session.status != SessionStatus.BLOCKED:
        return "cancelled before it started"
    if session.failure_kind == FailureKind.BUDGET_REACHED:
        return "cancelled while it waited for its budget to be raised"
    return "cancelled while it waited for a message"


async def _get(conn: AsyncConnection, session_id: str, *, lock: bool = False) -> Session:
    query = select(sessions).where(sessions.c.id == session_id)
    if lock:
        query = query.with_for_update()  # PostgreSQL; SQLite's write lock is already held
    row = (await conn.execute(query)).first()
    if row is None:
        raise SessionNotFound(f"no session {session_id!r}")
    return session_from_row(row)
