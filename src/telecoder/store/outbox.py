"""Notifications out: subscriptions, and the outbox their deliveries are sent from.

``record_status`` is called inside the transaction that changes a session's status (the queue's
``finish`` and recovery, a cancel, a chat's idle end): it writes one outbox row per subscription
that wants the event, plus one for the in-process subscribers, so a crash can lose none of them.
A deliverer (``telecoder.deliverer``) claims due rows with a lease, sends them, and marks each
delivered, due again later (exponential backoff, capped), or failed for good after its last try.
"""

from __future__ import annotations

import builtins
import enum
import secrets
import time
from base64 import b64encode
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from telecoder import signing
from telecoder.domain import Session, SessionStatus
from telecoder.errors import BadInput, SubscriptionNotFound
from telecoder.store.db import Database, dumps, loads
from telecoder.store.schema import outbox, subscriptions


class NotifyEvent(enum.StrEnum):
    FINISHED = "finished"  # the session succeeded
    FAILED = "failed"  # failed for good, dead (retries exhausted) or cancelled
    NEEDS_INPUT = "needs_input"  # blocked: waiting for a human's message

    @classmethod
    def of(cls, status: SessionStatus) -> NotifyEvent | None:
        return _EVENTS.get(status)


_EVENTS = {
    SessionStatus.SUCCEEDED: NotifyEvent.FINISHED,
    SessionStatus.FAILED: NotifyEvent.FAILED,
    SessionStatus.DEAD: NotifyEvent.FAILED,
    SessionStatus.CANCELLED: NotifyEvent.FAILED,
    SessionStatus.BLOCKED: NotifyEvent.NEEDS_INPUT,
    SessionStatus.SKIPPED: NotifyEvent.FAILED,
}
ALL = "all"
EVENT_NAMES = (*[e.value for e in NotifyEvent], ALL)


class RowState(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscription:
    id: str
    url: str
    events: list[str]
    secret: str
    created_at: float

    def wants(self, event: NotifyEvent) -> bool:
        return ALL in self.events or event.value in self.events

    def to_dict(self) -> dict[str, Any]:
        """Without the secret: it is shown once, when the subscription is made."""
        return {"id": self.id, "url": self.url, "events": self.events, "created_at": _iso(self)}


def _iso(sub: Subscription) -> str:
    return datetime.fromtimestamp(sub.created_at, UTC).isoformat()


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """One outbox row: a notification for one subscription (None: the in-process ones)."""

    id: str
    subscription_id: str | None
    session_id: str
    event: str
    payload: str  # the exact body that is signed and sent
    state: RowState
    tries: int
    next_at: float
    last_error: str | None
    last_status: int | None
    created_at: float
    delivered_at: float | None
    url: str | None = None  # the subscription's, when claimed or listed
    secret: str | None = None  # the subscription's, when claimed

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "subscription_id": self.subscription_id,
            "url": self.url,
            "session_id": self.session_id,
            "event": self.event,
            "state": self.state.value,
            "tries": self.tries,
            "last_error": self.last_error,
            "last_status": self.last_status,
            "created_at": datetime.fromtimestamp(self.created_at, UTC).isoformat(),
            "delivered_at": (
                datetime.fromtimestamp(self.delivered_at, UTC).isoformat()
                if self.delivered_at
                else None
            ),
        }


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 24 random bytes in base64."""
    return "whsec_" + b64encode(secrets.token_bytes(24)).decode()


def check_events(events: builtins.list[str]) -> builtins.list[str]:
    cleaned = sorted({e.strip() for e in events if e.strip()})
    if not cleaned:
        raise BadInput(f"name at least one event ({', '.join(EVENT_NAMES)})")
    unknown = [e for e in cleaned if e not in EVENT_NAMES]
    if unknown:
        raise BadInput(f"unknown event {unknown[0]!r} (known: {', '.join(EVENT_NAMES)})")
    return cleaned


def _subscription(row: Row[Any]) -> Subscription:
    m = row._mapping
    return Subscription(
        id=m["id"],
        url=m["url"],
        events=loads(m["events"]),
        secret=m["secret"],
        created_at=m["created_at"],
    )


def _delivery(row: Row[Any]) -> Delivery:
    m = row._mapping
    return Delivery(
        id=m["id"],
        subscription_id=m["subscription_id"],
        session_id=m["session_id"],
        event=m["event"],
        payload=m["payload"],
        state=RowState(m["state"]),
        tries=m["tries"],
        next_at=m["next_at"],
        last_error=m["last_error"],
        last_status=m["last_status"],
        created_at=m["created_at"],
        delivered_at=m["delivered_at"],
        url=m.get("url"),
        secret=m.get("secret"),
    )


def payload(event: NotifyEvent, session: Session, now: float) -> str:
    """The body of a notification, in Standard Webhooks' shape: type, timestamp, data."""
    body = {
        "type": f"session.{event.value}",
        "timestamp": datetime.fromtimestamp(now, UTC).isoformat(),
        "data": {"event": event.value, "session": session.to_dict()},
    }
    return dumps(body)


async def record_status(conn: AsyncConnection, session: Session, now: float) -> int:
    """Queue the notifications of ``session``'s new status, in the caller's transaction.

    Returns how many rows were written (0 for a status nobody is told about).
    """
    event = NotifyEvent.of(session.status)
    if event is None:
        return 0
    body = payload(event, session, now)
    rows = (await conn.execute(select(subscriptions))).all()
    targets: list[str | None] = [None]
    targets += [s.id for s in map(_subscription, rows) if s.wants(event)]
    await conn.execute(
        insert(outbox),
        [
            {
                "id": "msg_" + secrets.token_hex(12),
                "subscription_id": target,
                "session_id": session.id,
                "event": event.value,
                "payload": body,
                "state": RowState.PENDING.value,
                "next_at": now,
                "created_at": now,
            }
            for target in targets
        ],
    )
    return len(targets)


class Subscriptions:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(
        self, url: str, events: builtins.list[str], secret: str | None = None
    ) -> Subscription:
        if not url.startswith(("http://", "https://")):
            raise BadInput(f"the subscription URL must be http(s)://…, not {url!r}")
        if secret is not None:
            signing.secret_bytes(secret)  # BadInput unless whsec_<base64>
        sub = Subscription(
            id="sub_" + secrets.token_hex(6),
            url=url,
            events=check_events(events),
            secret=secret or new_secret(),
            created_at=time.time(),
        )
        async with self._db.write() as conn:
            await conn.execute(
                insert(subscriptions).values(
                    id=sub.id,
                    url=sub.url,
                    events=dumps(sub.events),
                    secret=sub.secret,
                    created_at=sub.created_at,
                )
            )
        return sub

    async def list(self) -> builtins.list[Subscription]:
        async with self._db.read() as conn:
            rows = (await conn.execute(select(subscriptions).order_by("created_at"))).all()
        return [_subscription(r) for r in rows]

    async def remove(self, sub_id: str) -> None:
        """Remove a subscription; its notifications not yet sent fail with a reason."""
        async with self._db.write() as conn:
            done = await conn.execute(delete(subscriptions).where(subscriptions.c.id == sub_id))
            if not done.rowcount:
                raise SubscriptionNotFound(f"no subscription {sub_id!r}")
            await conn.execute(
                update(outbox)
                .where(
                    outbox.c.subscription_id == sub_id,
                    outbox.c.state == RowState.PENDING.value,
                )
                .values(state=RowState.FAILED.value, last_error="the subscription was removed")
            )


class Outbox:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def claim(self, holder: str, *, lease_seconds: float, limit: int = 20) -> list[Delivery]:
        """Due rows nobody holds, now held by ``holder`` until its lease ends."""
        now = time.time()
        due = (
            select(outbox.c.id)
            .where(
                outbox.c.state == RowState.PENDING.value,
                outbox.c.next_at <= now,
                or_(outbox.c.lease_until.is_(None), outbox.c.lease_until < now),
            )
            .order_by(outbox.c.next_at, outbox.c.created_at)
            .limit(limit)
        )
        async with self._db.read() as conn:  # the usual answer, "none", takes no write lock
            if (await conn.execute(due.limit(1))).first() is None:
                return []
        if not self._db.is_sqlite:
            due = due.with_for_update(skip_locked=True)
        async with self._db.write() as conn:
            ids = (await conn.execute(due)).scalars().all()
            if not ids:
                return []
            await conn.execute(
                update(outbox)
                .where(outbox.c.id.in_(ids))
                .values(claimed_by=holder, lease_until=now + lease_seconds)
            )
            rows = (
                await conn.execute(
                    select(outbox, subscriptions.c.url, subscriptions.c.secret)
                    .select_from(
                        outbox.outerjoin(
                            subscriptions, subscriptions.c.id == outbox.c.subscription_id
                        )
                    )
                    .where(outbox.c.id.in_(ids))
                    .order_by(outbox.c.next_at, outbox.c.created_at)
                )
            ).all()
        return [_delivery(r) for r in rows]

    async def delivered(self, holder: str, row_id: str, status: int | None) -> bool:
        now = time.time()
        async with self._db.write() as conn:
            done = await conn.execute(
                self._held(holder, row_id).values(
                    state=RowState.DELIVERED.value,
                    tries=outbox.c.tries + 1,
                    delivered_at=now,
                    last_status=status,
                    last_error=None,
                    claimed_by=None,
                    lease_until=None,
                )
            )
        return bool(done.rowcount)

    async def retry(
        self,
        holder: str,
        delivery: Delivery,
        *,
        error: str,
        status: int | None,
        max_tries: int,
        backoff: float,
        backoff_max: float,
    ) -> RowState:
        """Record a failed try: due again after a backoff, or failed for good after the last."""
        tries = delivery.tries + 1
        state = RowState.FAILED if tries >= max_tries else RowState.PENDING
        delay = min(backoff * 2 ** (tries - 1), backoff_max)
        async with self._db.write() as conn:
            await conn.execute(
                self._held(holder, delivery.id).values(
                    state=state.value,
                    tries=tries,
                    next_at=time.time() + delay,
                    last_error=error[:1000],
                    last_status=status,
                    claimed_by=None,
                    lease_until=None,
                )
            )
        return state

    def _held(self, holder: str, row_id: str) -> Any:
        return update(outbox).where(
            outbox.c.id == row_id,
            outbox.c.claimed_by == holder,
            outbox.c.state == RowState.PENDING.value,
        )

    async def prune(self, older_than: float) -> int:
        """Delete delivered and failed rows created more than ``older_than`` seconds ago."""
        async with self._db.write() as conn:
            done = await conn.execute(
                delete(outbox).where(
                    outbox.c.state != RowState.PENDING.value,
                    outbox.c.created_at < time.time() - older_than,
                )
            )
        return int(done.rowcount or 0)

    async def recent(self, limit: int = 50, *, local: bool = False) -> builtins.list[Delivery]:
        """The newest deliveries to subscriptions (and to the in-process ones if ``local``)."""
        query = (
            select(outbox, subscriptions.c.url)
            .select_from(
                outbox.outerjoin(subscriptions, subscriptions.c.id == outbox.c.subscription_id)
            )
            .order_by(outbox.c.created_at.desc(), outbox.c.id)
            .limit(limit)
        )
        if not local:
            query = query.where(outbox.c.subscription_id.is_not(None))
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_delivery(r) for r in rows]
