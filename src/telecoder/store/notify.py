"""Wake-ups: a session was queued, a cancel was requested, or a session has new events.

Writers call ``Database.notify`` inside their transaction (once per notice and transaction:
repeats are dropped). Subscribers in the same process hear of it as soon as the transaction
commits; on PostgreSQL, ``pg_notify`` tells every other process too (NOTIFY is delivered at
commit, never for a rolled-back transaction). Each worker keeps a ``Listener``: a dedicated
connection that ``LISTEN``\\ s, checks itself every few seconds, and reconnects and listens
again after the connection drops; the live bus keeps one for event notices. Event notices have a
channel of their own, so workers, which do not care for them, are not woken by every line an
agent prints. A notice is only ever a hint to look now: workers and the bus still poll, so a
lost notice delays work by one poll interval at most.

An event notice carries the appended events themselves (``body``, JSON) when they fit in a
PostgreSQL notice (8000 bytes): the bus fans them out as they come, with no query between the
append and the streams; larger ones send the bare notice and the bus reads them.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

CHANNEL = "telecoder"
EVENTS_CHANNEL = "telecoder_events"
MAX_BODY = 7_000  # bytes of events a notice carries (PostgreSQL takes 8000 in all)


class NoticeKind(enum.StrEnum):
    QUEUED = "queued"  # a session can be claimed now
    CANCEL = "cancel"  # a running session was asked to stop
    EVENTS = "events"  # a session has new events (one notice per session and transaction)


@dataclass(frozen=True, slots=True)
class Notice:
    kind: NoticeKind
    session_id: str
    body: str = ""  # EVENTS: the events appended, when they fit (``store.events.carried``)

    @property
    def channel(self) -> str:
        return EVENTS_CHANNEL if self.kind == NoticeKind.EVENTS else CHANNEL

    def encode(self) -> str:
        head = f"{self.kind.value}:{self.session_id}"
        return f"{head}:{self.body}" if self.body else head

    @classmethod
    def decode(cls, payload: str) -> Notice | None:
        kind, _, rest = payload.partition(":")
        session_id, _, body = rest.partition(":")  # session ids have no colon
        try:
            return cls(NoticeKind(kind), session_id, body)
        except ValueError:
            return None


class Listener:
    """LISTEN on PostgreSQL for notices of other processes, for as long as ``run`` runs.

    ``on_connect`` is called after every (re)connection: notices sent while the connection was
    down are lost, so the subscriber should look for work once. ``on_disconnect`` is called
    when the connection is lost (a subscriber may poll faster until it is back).
    """

    def __init__(
        self,
        dsn: str,
        on_notice: Callable[[Notice], None],
        *,
        on_connect: Callable[[], None] = lambda: None,
        on_disconnect: Callable[[], None] = lambda: None,
        channels: Sequence[str] = (CHANNEL,),
        name: str = "telecoder-listen",
        check_seconds: float = 5.0,
        retry_seconds: float = 0.5,
        max_retry_seconds: float = 10.0,
    ) -> None:
        self.dsn = dsn
        self.name = name
        self.connections = 0  # how many times it has connected (and listened)
        self._on_notice = on_notice
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self.channels = tuple(channels)
        self._check_seconds = check_seconds
        self._retry_seconds = retry_seconds
        self._max_retry_seconds = max_retry_seconds

    async def run(self) -> None:
        import psycopg

        delay = self._retry_seconds
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.dsn, autocommit=True, application_name=self.name[:63]
                )
                async with conn:
                    for channel in self.channels:
                        await conn.execute(f"LISTEN {channel}")
                    self.connections += 1
                    delay = self._retry_seconds
                    self._on_connect()
                    while True:
                        async for notify in conn.notifies(timeout=self._check_seconds):
                            if notify.channel in self.channels and (
                                n := Notice.decode(notify.payload)
                            ):
                                self._on_notice(n)
                        # Quiet for a while: make sure the connection is still there.
                        await conn.execute("SELECT 1")
            except psycopg.Error as e:
                log.warning("%s: listening connection lost (%s); reconnecting", self.name, e)
                self._on_disconnect()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_retry_seconds)
