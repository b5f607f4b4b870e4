"""The inbox: durable messages between agents, with leases and per-agent read cursors.

A message goes to an agent (``recipient``) or to a thread only. Any agent may ``claim`` an open
message for ``lease`` seconds — one conditional UPDATE, so of two claimers exactly one wins —
and, while it holds the claim, ``renew`` it, post ``update``\\ s and end it ``done`` or
``failed``. A claim that expires is the inbox's again: the message reads ``open`` and anyone may
claim it; its former holder's writes fail with ``LeaseLost``.

What an agent has been shown is kept per agent: ``seen`` (every message to it up to that id was
shown) and the ids above it shown out of order (a reply ``wait-reply`` returned before older
messages were fetched). ``fetch`` returns the rest in order and moves ``seen`` past them;
``unread_replies`` returns the replies among them. So nothing is shown twice, and nothing is
skipped.

Whose a message is (``owner``, a member's ``user``: the API shows a member only theirs): a
message from, to or in the thread of the agent of one of their sessions (``session:<id>``), or in
a task's thread of one of their runs (``orch:<run id>:<task>``). ``None`` reads every message.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import Row, and_, delete, exists, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from telecoder.domain import Artifact, Message, MessageKind, MessageStatus
from telecoder.errors import BadInput, Conflict, LeaseLost, MessageNotFound, TimedOut
from telecoder.store.db import Database
from telecoder.store.schema import (
    inbox_cursors,
    inbox_shown,
    message_artifacts,
    messages,
    runs,
    sessions,
)

T = TypeVar("T")

MAX_BODY = 1_000_000  # characters
MAX_ARTIFACT = 10 * 1024 * 1024  # bytes, each
MAX_NAME = 255
REPLIES = (MessageKind.REPLY, MessageKind.ANSWER)


def new_thread() -> str:
    return "th_" + secrets.token_hex(5)


class Inbox:
    def __init__(self, db: Database) -> None:
        self._db = db

    # --- writing ------------------------------------------------------------------------------

    async def send(
        self,
        *,
        sender: str,
        body: str,
        recipient: str | None = None,
        thread: str | None = None,
        kind: MessageKind = MessageKind.MESSAGE,
        reply_to: int | None = None,
        artifacts: Sequence[tuple[str, bytes]] = (),
    ) -> Message:
        """Store a message to ``recipient`` (an agent) or to ``thread`` (a new thread when
        neither is given); each artifact is stored whole with its SHA-256."""
        _check_name("sender", sender)
        if recipient is not None:
            _check_name("recipient", recipient)
        if thread is not None:
            _check_name("thread", thread)
        if len(body) > MAX_BODY:
            raise BadInput(f"the body is {len(body)} characters long; at most {MAX_BODY}")
        names = [name for name, _ in artifacts]
        if len(set(names)) != len(names):
            raise BadInput("two artifacts have the same name")
        for name, content in artifacts:
            _check_name("artifact name", name)
            if len(content) > MAX_ARTIFACT:
                raise BadInput(f"artifact {name} is {len(content)} bytes; at most {MAX_ARTIFACT}")
        now = time.time()
        async with self._db.write() as conn:
            row = {
                "thread": thread or new_thread(),
                "kind": kind.value,
                "sender": sender,
                "recipient": recipient,
                "body": body,
                "reply_to": reply_to,
                "status": MessageStatus.OPEN.value,
                "created_at": now,
                "updated_at": now,
            }
            message_id = (
                await conn.execute(messages.insert().values(**row).returning(messages.c.id))
            ).scalar_one()
            for name, content in artifacts:
                await conn.execute(
                    message_artifacts.insert().values(
                        message_id=message_id,
                        name=name,
                        sha256=hashlib.sha256(content).hexdigest(),
                        size=len(content),
                        content=content,
                    )
                )
            return await _one(conn, message_id, now)

    async def reply(
        self,
        message_id: int,
        *,
        sender: str,
        body: str,
        kind: MessageKind = MessageKind.REPLY,
        artifacts: Sequence[tuple[str, bytes]] = (),
    ) -> Message:
        """A reply in the message's thread, to its sender."""
        original = await self.get(message_id)
        return await self.send(
            sender=sender,
            body=body,
            recipient=original.sender,
            thread=original.thread,
            kind=kind,
            reply_to=original.id,
            artifacts=artifacts,
        )

    async def claim(self, message_id: int, agent: str, *, lease: float) -> Message:
        """Hold the message for ``lease`` seconds. ``Conflict`` when another agent holds it or it
        has ended; claiming again what one holds extends the lease."""
        _check_name("agent", agent)
        _check_lease(lease)
        now = time.time()
        free = or_(
            messages.c.status == MessageStatus.OPEN.value,
            messages.c.lease_until < now,
            messages.c.claimed_by == agent,
        )
        async with self._db.write() as conn:
            done = await conn.execute(
                update(messages)
                .where(
                    messages.c.id == message_id,
                    messages.c.status.in_((MessageStatus.OPEN.value, MessageStatus.CLAIMED.value)),
                    free,
                )
                .values(
                    status=MessageStatus.CLAIMED.value,
                    claimed_by=agent,
                    lease_until=now + lease,
                    updated_at=now,
                )
            )
            message = await _one(conn, message_id, now)
        if done.rowcount == 0:
            if message.status.terminal:
                raise Conflict(f"message {message_id} is {message.status.value}")
            until = time.strftime("%H:%M:%S", time.localtime(message.lease_until or now))
            raise Conflict(f"message {message_id} is claimed by {message.claimed_by} until {until}")
        return message

    async def renew(self, message_id: int, agent: str, *, lease: float) -> Message:
        """Extend the claim ``agent`` holds; ``LeaseLost`` when it holds none now."""
        _check_lease(lease)
        return await self._holding(message_id, agent, lease_until=time.time() + lease)

    async def update(self, message_id: int, agent: str, progress: str) -> Message:
        """Record the holder's progress; ``LeaseLost`` when ``agent`` holds no claim on it."""
        if len(progress) > MAX_BODY:
            raise BadInput(f"the progress note is {len(progress)} characters; at most {MAX_BODY}")
        return await self._holding(message_id, agent, progress=progress)

    async def finish(
        self, message_id: int, agent: str, status: MessageStatus, note: str | None = None
    ) -> Message:
        """End the message ``done``, ``failed`` or ``cancelled``.

        ``done`` and ``failed`` are the holder's to say (or anyone's while nobody holds it);
        a holder whose lease expired gets ``LeaseLost``. Cancelling is for anyone while it has
        not ended. An ended message is a ``Conflict``.
        """
        if not status.terminal:
            raise BadInput(f"a message ends done, failed or cancelled, not {status.value}")
        now = time.time()
        async with self._db.write() as conn:
            message = await _one(conn, message_id, now, lock=True)
            if message.status.terminal:
                raise Conflict(f"message {message_id} is already {message.status.value}")
            if status != MessageStatus.CANCELLED:
                holder = message.claimed_by
                if holder is not None and holder != agent:
                    raise Conflict(f"message {message_id} is claimed by {holder}")
                row = (
                    await conn.execute(select(messages).where(messages.c.id == message_id))
                ).one()
                if holder is None and row.claimed_by == agent:
                    raise LeaseLost(f"your claim on message {message_id} expired")
            await conn.execute(
                update(messages)
                .where(messages.c.id == message_id)
                .values(status=status.value, note=note, lease_until=None, updated_at=now)
            )
            return await _one(conn, message_id, now)

    async def _holding(self, message_id: int, agent: str, **values: Any) -> Message:
        now = time.time()
        async with self._db.write() as conn:
            done = await conn.execute(
                update(messages)
                .where(
                    messages.c.id == message_id,
                    messages.c.status == MessageStatus.CLAIMED.value,
                    messages.c.claimed_by == agent,
                    messages.c.lease_until >= now,
                )
                .values(updated_at=now, **values)
            )
            message = await _one(conn, message_id, now)
        if done.rowcount == 0:
            if message.status.terminal:
                raise Conflict(f"message {message_id} is {message.status.value}")
            raise LeaseLost(f"{agent} holds no claim on message {message_id} (expired or taken)")
        return message

    # --- reading ------------------------------------------------------------------------------

    async def get(self, message_id: int, *, owner: str | None = None) -> Message:
        """The message; ``MessageNotFound`` also when it is not ``owner``'s (when given)."""
        async with self._db.read() as conn:
            if owner is not None and not await _owned_by(conn, message_id, owner):
                raise MessageNotFound(f"no message {message_id}")
            return await _one(conn, message_id, time.time())

    async def latest(self, *, owner: str | None = None) -> int:
        """The highest message id so far (0: none yet), of ``owner``'s messages when given:
        ``watch`` streams what comes after."""
        query = select(func.max(messages.c.id))
        if owner is not None:
            query = query.where(_owned(owner))
        async with self._db.read() as conn:
            return int((await conn.execute(query)).scalar() or 0)

    async def artifact(self, message_id: int, name: str, *, owner: str | None = None) -> bytes:
        query = select(message_artifacts.c.content).where(
            message_artifacts.c.message_id == message_id, message_artifacts.c.name == name
        )
        if owner is not None:
            query = query.where(
                message_artifacts.c.message_id.in_(
                    select(messages.c.id).where(messages.c.id == message_id, _owned(owner))
                )
            )
        async with self._db.read() as conn:
            content = (await conn.execute(query)).scalar()
        if content is None:
            raise MessageNotFound(f"message {message_id} has no artifact {name!r}")
        return bytes(content)

    async def list(
        self,
        *,
        agent: str | None = None,
        thread: str | None = None,
        status: MessageStatus | None = None,
        after: int = 0,
        limit: int = 100,
        owner: str | None = None,
    ) -> builtins.list[Message]:
        """Messages in id order: those to or from ``agent``, in ``thread``, with ``status`` (as
        read now), with an id above ``after``; ``owner``'s only, when given."""
        now = time.time()
        query = select(messages).where(messages.c.id > after)
        if owner is not None:
            query = query.where(_owned(owner))
        if agent is not None:
            query = query.where(or_(messages.c.recipient == agent, messages.c.sender == agent))
        if thread is not None:
            query = query.where(messages.c.thread == thread)
        if status is not None:
            query = query.where(_status_is(status, now))
        async with self._db.read() as conn:
            rows = (await conn.execute(query.order_by(messages.c.id).limit(limit))).all()
            return await _with_artifacts(conn, rows, now)

    async def fetch(self, agent: str, *, limit: int = 100) -> builtins.list[Message]:
        """The messages to ``agent`` it has not been shown, oldest first; shown from now on."""
        return await self._unread(agent, kinds=None, limit=limit)

    async def unread_replies(
        self, agent: str, *, reply_to: int | None = None
    ) -> builtins.list[Message]:
        """The replies and answers to ``agent`` it has not been shown (to ``reply_to`` only, if
        given); shown from now on."""
        return await self._unread(agent, kinds=REPLIES, reply_to=reply_to, limit=100)

    async def _unread(
        self,
        agent: str,
        *,
        kinds: Sequence[MessageKind] | None,
        limit: int,
        reply_to: int | None = None,
    ) -> builtins.list[Message]:
        _check_name("agent", agent)
        now = time.time()
        async with self._db.write() as conn:
            seen = await _cursor(conn, self._db, agent, now)
            shown = select(inbox_shown.c.message_id).where(inbox_shown.c.agent == agent)
            query = select(messages).where(
                messages.c.recipient == agent,
                messages.c.id > seen,
                messages.c.id.not_in(shown),
            )
            if kinds is not None:
                query = query.where(messages.c.kind.in_([k.value for k in kinds]))
            if reply_to is not None:
                query = query.where(messages.c.reply_to == reply_to)
            rows = (await conn.execute(query.order_by(messages.c.id).limit(limit))).all()
            if rows:
                await _mark_shown(conn, agent, [row.id for row in rows], seen, now)
            return await _with_artifacts(conn, rows, now)

    async def wait(
        self,
        probe: Callable[[], Awaitable[T | None]],
        *,
        seconds: float,
        what: str,
        interval: float = 0.2,
    ) -> T:
        """The first result of ``probe`` that is not None, asked every ``interval`` seconds;
        ``TimedOut`` (naming ``what``) after ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            found = await probe()
            if found is not None:
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimedOut(f"no {what} within {seconds:g} s")
            await asyncio.sleep(min(interval, left))


# --- helpers ----------------------------------------------------------------------------------


def _check_name(what: str, name: str) -> None:
    if not name or not name.strip():
        raise BadInput(f"the {what} is empty")
    if len(name) > MAX_NAME:
        raise BadInput(f"the {what} is {len(name)} characters long; at most {MAX_NAME}")


def _check_lease(lease: float) -> None:
    if not 0 < lease <= 86_400:
        raise BadInput(f"a lease is more than 0 and at most 86400 seconds, not {lease:g}")


def _owned(owner: str) -> Any:
    """Whether a message is ``owner``'s (see the module's docstring): one query, whatever the
    number of their sessions."""
    agents = select(literal("session:") + sessions.c.id).where(sessions.c.user == owner)
    prefix = literal("orch:") + runs.c.id + literal(":")
    in_run = exists().where(
        runs.c.user == owner,
        func.substr(messages.c.thread, 1, func.length(prefix)) == prefix,
    )
    return or_(
        messages.c.sender.in_(agents),
        messages.c.recipient.in_(agents),
        messages.c.thread.in_(agents),
        messages.c.thread.like("orch:%") & in_run,
    )


async def _owned_by(conn: AsyncConnection, message_id: int, owner: str) -> bool:
    query = select(messages.c.id).where(messages.c.id == message_id, _owned(owner))
    return (await conn.execute(query)).first() is not None


def _status_is(status: MessageStatus, now: float) -> Any:
    live = and_(messages.c.status == MessageStatus.CLAIMED.value, messages.c.lease_until >= now)
    if status == MessageStatus.CLAIMED:
        return live
    if status == MessageStatus.OPEN:
        return or_(
            messages.c.status == MessageStatus.OPEN.value,
            and_(messages.c.status == MessageStatus.CLAIMED.value, messages.c.lease_until < now),
        )
    return messages.c.status == status.value


async def _cursor(conn: AsyncConnection, db: Database, agent: str, now: float) -> int:
    """The agent's ``seen``, its row locked for this transaction (made if it was missing)."""
    dialect = sqlite if db.is_sqlite else postgresql
    await conn.execute(
        dialect.insert(inbox_cursors)
        .values(agent=agent, seen=0, updated_at=now)
        .on_conflict_do_nothing()
    )
    query = select(inbox_cursors.c.seen).where(inbox_cursors.c.agent == agent)
    if not db.is_sqlite:
        query = query.with_for_update()
    return int((await conn.execute(query)).scalar_one())


async def _mark_shown(
    conn: AsyncConnection, agent: str, ids: Sequence[int], seen: int, now: float
) -> None:
    """Record ``ids`` as shown, then move ``seen`` up over every message to the agent that has
    been shown, so the out-of-order set stays small."""
    await conn.execute(inbox_shown.insert(), [{"agent": agent, "message_id": i} for i in ids])
    shown = set(
        (
            await conn.execute(select(inbox_shown.c.message_id).where(inbox_shown.c.agent == agent))
        ).scalars()
    )
    pending = (
        await conn.execute(
            select(messages.c.id)
            .where(messages.c.recipient == agent, messages.c.id > seen)
            .order_by(messages.c.id)
        )
    ).scalars()
    for message_id in pending:
        if message_id not in shown:
            break
        seen = message_id
    await conn.execute(
        update(inbox_cursors)
        .where(inbox_cursors.c.agent == agent)
        .values(seen=seen, updated_at=now)
    )
    await conn.execute(
        delete(inbox_shown).where(inbox_shown.c.agent == agent, inbox_shown.c.message_id <= seen)
    )


async def _one(
    conn: AsyncConnection, message_id: int, now: float, *, lock: bool = False
) -> Message:
    query = select(messages).where(messages.c.id == message_id)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    if row is None:
        raise MessageNotFound(f"no message {message_id}")
    return (await _with_artifacts(conn, [row], now))[0]


async def _with_artifacts(
    conn: AsyncConnection, rows: Sequence[Row[Any]], now: float
) -> builtins.list[Message]:
    ids = [row.id for row in rows]
    found: dict[int, builtins.list[Artifact]] = {i: [] for i in ids}
    if ids:
        query = (
            select(
                message_artifacts.c.message_id,
                message_artifacts.c.name,
                message_artifacts.c.sha256,
                message_artifacts.c.size,
            )
            .where(message_artifacts.c.message_id.in_(ids))
            .order_by(message_artifacts.c.message_id, message_artifacts.c.name)
        )
        for a in (await conn.execute(query)).all():
            found[a.message_id].append(Artifact(name=a.name, sha256=a.sha256, size=a.size))
    return [_message(row, tuple(found[row.id]), now) for row in rows]


def _message(row: Row[Any], artifacts: tuple[Artifact, ...], now: float) -> Message:
    status = MessageStatus(row.status)
    held = status == MessageStatus.CLAIMED and (row.lease_until or 0) >= now
    if status == MessageStatus.CLAIMED and not held:
        status = MessageStatus.OPEN  # the claim expired: the inbox's again
    return Message(
        id=row.id,
        thread=row.thread,
        kind=MessageKind(row.kind),
        sender=row.sender,
        recipient=row.recipient,
        body=row.body,
        reply_to=row.reply_to,
        status=status,
        claimed_by=row.claimed_by if held else None,
        lease_until=row.lease_until if held else None,
        progress=row.progress,
        note=row.note,
        artifacts=artifacts,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
