"""Where ``telecoder inbox`` reads and writes: the local database, or a server (``--server``).

Both backends answer with the message JSON of ``Message.to_dict`` (the API's shape), so the
commands print one thing whichever they talk to. The blocking waits block here: locally through
``Inbox.wait``; against a server as a series of long-polls, each bounded by ``POLL_SECONDS``.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Sequence
from typing import Any, Protocol

from telecoder.client import Client
from telecoder.domain import Message, MessageStatus
from telecoder.errors import TimedOut
from telecoder.store.inbox import Inbox

Json = dict[str, Any]
POLL_SECONDS = 20.0  # the longest one long-poll waits on the server (below the client's timeout)


class InboxBackend(Protocol):
    async def send(
        self,
        *,
        sender: str,
        body: str,
        recipient: str | None,
        thread: str | None,
        artifacts: Sequence[tuple[str, bytes]],
    ) -> Json: ...

    async def reply(
        self, message_id: int, *, sender: str, body: str, artifacts: Sequence[tuple[str, bytes]]
    ) -> Json: ...

    async def claim(self, message_id: int, agent: str, *, lease: float) -> Json: ...

    async def renew(self, message_id: int, agent: str, *, lease: float) -> Json: ...

    async def update(self, message_id: int, agent: str, progress: str) -> Json: ...

    async def finish(
        self, message_id: int, agent: str, status: MessageStatus, note: str | None
    ) -> Json: ...

    async def get(self, message_id: int) -> Json: ...

    async def artifact(self, message_id: int, name: str) -> bytes: ...

    async def fetch(self, agent: str, *, limit: int) -> list[Json]: ...

    async def list(
        self,
        *,
        agent: str | None,
        thread: str | None,
        status: MessageStatus | None,
        after: int,
        limit: int,
    ) -> builtins.list[Json]: ...

    async def latest(self) -> int: ...

    async def next_messages(
        self, *, agent: str | None, thread: str | None, after: int, seconds: float
    ) -> builtins.list[Json]:
        """The messages after ``after`` (to or from ``agent``, in ``thread``), waiting up to
        ``seconds`` for one to land; ``[]`` when none did."""
        ...

    async def wait_replies(
        self, agent: str, *, reply_to: int | None, seconds: float
    ) -> builtins.list[Json]:
        """The replies to ``agent`` it has not seen (to ``reply_to`` only, if given), waiting
        up to ``seconds`` for one; ``TimedOut`` when none landed."""
        ...


def _json(messages: Sequence[Message]) -> list[Json]:
    return [m.to_dict() for m in messages]


class LocalInbox:
    """The inbox in the database this CLI opens."""

    def __init__(self, inbox: Inbox) -> None:
        self._inbox = inbox

    async def send(
        self,
        *,
        sender: str,
        body: str,
        recipient: str | None,
        thread: str | None,
        artifacts: Sequence[tuple[str, bytes]],
    ) -> Json:
        sent = await self._inbox.send(
            sender=sender, body=body, recipient=recipient, thread=thread, artifacts=artifacts
        )
        return sent.to_dict()

    async def reply(
        self, message_id: int, *, sender: str, body: str, artifacts: Sequence[tuple[str, bytes]]
    ) -> Json:
        sent = await self._inbox.reply(message_id, sender=sender, body=body, artifacts=artifacts)
        return sent.to_dict()

    async def claim(self, message_id: int, agent: str, *, lease: float) -> Json:
        return (await self._inbox.claim(message_id, agent, lease=lease)).to_dict()

    async def renew(self, message_id: int, agent: str, *, lease: float) -> Json:
        return (await self._inbox.renew(message_id, agent, lease=lease)).to_dict()

    async def update(self, message_id: int, agent: str, progress: str) -> Json:
        return (await self._inbox.update(message_id, agent, progress)).to_dict()

    async def finish(
        self, message_id: int, agent: str, status: MessageStatus, note: str | None
    ) -> Json:
        return (await self._inbox.finish(message_id, agent, status, note)).to_dict()

    async def get(self, message_id: int) -> Json:
        return (await self._inbox.get(message_id)).to_dict()

    async def artifact(self, message_id: int, name: str) -> bytes:
        return await self._inbox.artifact(message_id, name)

    async def fetch(self, agent: str, *, limit: int) -> list[Json]:
        return _json(await self._inbox.fetch(agent, limit=limit))

    async def list(
        self,
        *,
        agent: str | None,
        thread: str | None,
        status: MessageStatus | None,
        after: int,
        limit: int,
    ) -> builtins.list[Json]:
        found = await self._inbox.list(
            agent=agent, thread=thread, status=status, after=after, limit=limit
        )
        return _json(found)

    async def latest(self) -> int:
        return await self._inbox.latest()

    async def next_messages(
        self, *, agent: str | None, thread: str | None, after: int, seconds: float
    ) -> builtins.list[Json]:
        async def probe() -> builtins.list[Message] | None:
            found = await self._inbox.list(agent=agent, thread=thread, after=after, limit=100)
            return found or None

        try:
            return _json(await self._inbox.wait(probe, seconds=seconds, what="message"))
        except TimedOut:
            return []

    async def wait_replies(
        self, agent: str, *, reply_to: int | None, seconds: float
    ) -> builtins.list[Json]:
        async def probe() -> builtins.list[Message] | None:
            return await self._inbox.unread_replies(agent, reply_to=reply_to) or None

        what = "reply" if reply_to is None else f"reply to message {reply_to}"
        return _json(await self._inbox.wait(probe, seconds=seconds, what=what))


class RemoteInbox:
    """The inbox of a TeleCoder server, over ``/api/inbox``."""

    def __init__(self, api: Client) -> None:
        self._api = api

    async def send(
        self,
        *,
        sender: str,
        body: str,
        recipient: str | None,
        thread: str | None,
        artifacts: Sequence[tuple[str, bytes]],
    ) -> Json:
        return await self._api.inbox_send(
            agent=sender, body=body, to=recipient, thread=thread, artifacts=artifacts
        )

    async def reply(
        self, message_id: int, *, sender: str, body: str, artifacts: Sequence[tuple[str, bytes]]
    ) -> Json:
        return await self._api.inbox_reply(message_id, agent=sender, body=body, artifacts=artifacts)

    async def claim(self, message_id: int, agent: str, *, lease: float) -> Json:
        return await self._api.inbox_act(message_id, "claim", agent=agent, lease=lease)

    async def renew(self, message_id: int, agent: str, *, lease: float) -> Json:
        return await self._api.inbox_act(message_id, "renew", agent=agent, lease=lease)

    async def update(self, message_id: int, agent: str, progress: str) -> Json:
        return await self._api.inbox_act(message_id, "update", agent=agent, progress=progress)

    async def finish(
        self, message_id: int, agent: str, status: MessageStatus, note: str | None
    ) -> Json:
        action = {MessageStatus.DONE: "done", MessageStatus.FAILED: "fail"}.get(status, "cancel")
        return await self._api.inbox_act(message_id, action, agent=agent, note=note)

    async def get(self, message_id: int) -> Json:
        return await self._api.inbox_message(message_id)

    async def artifact(self, message_id: int, name: str) -> bytes:
        return await self._api.inbox_artifact(message_id, name)

    async def fetch(self, agent: str, *, limit: int) -> list[Json]:
        return await self._api.inbox_fetch(agent=agent, limit=limit)

    async def list(
        self,
        *,
        agent: str | None,
        thread: str | None,
        status: MessageStatus | None,
        after: int,
        limit: int,
    ) -> builtins.list[Json]:
        return await self._api.inbox_list(
            agent=agent,
            thread=thread,
            status=status.value if status else None,
            after=after,
            limit=limit,
        )

    async def latest(self) -> int:
        return await self._api.inbox_latest()

    async def next_messages(
        self, *, agent: str | None, thread: str | None, after: int, seconds: float
    ) -> builtins.list[Json]:
        deadline = time.monotonic() + seconds
        while True:
            wait = min(POLL_SECONDS, max(0.0, deadline - time.monotonic()))
            found = await self._api.inbox_list(
                agent=agent, thread=thread, after=after, limit=100, wait=wait
            )
            if found or time.monotonic() >= deadline:
                return found

    async def wait_replies(
        self, agent: str, *, reply_to: int | None, seconds: float
    ) -> builtins.list[Json]:
        deadline = time.monotonic() + seconds
        while True:
            wait = min(POLL_SECONDS, max(0.0, deadline - time.monotonic()))
            found = await self._api.inbox_replies(agent=agent, reply_to=reply_to, wait=wait)
            if found:
                return found
            if time.monotonic() >= deadline:
                what = "reply" if reply_to is None else f"reply to message {reply_to}"
                raise TimedOut(f"no {what} within {seconds:g} s")
