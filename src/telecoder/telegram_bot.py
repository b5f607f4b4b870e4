"""The Telegram bot in front of the conversation core: who may talk to it, and its commands.

Every Telegram message (polled or from the webhook) comes through ``TelegramBot.receive``:

1. somebody not allowed (``TELECODER_TELEGRAM_ALLOWED_USERS``, and for groups
   ``TELECODER_TELEGRAM_ALLOWED_CHATS``) is refused politely, once, and starts nothing — with
   no allowed user configured, nobody is allowed;
2. a reply is put in the thread of the message it answers (``TelegramChannel.resolve``); an
   unaddressed group message in no known thread is ignored;
3. a command (``/run``, ``/status``, ``/logs``, ``/cancel``, ``/retry``, ``/model``, ``/costs``,
   ``/help``) is answered here, once per update; anything else goes to
   ``Conversations.receive``.

Without an id, a command acts on the session of the thread it is said in, else on the chat's
latest. The channel's ``Memory`` (progress message ids, the message → thread map, the polling
offset) is kept in the store's channel preferences and events.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from telecoder.channels.telegram import TelegramChannel
from telecoder.channels.telegram_text import NAME, progress_text
from telecoder.conversation import Conversations, Received, thread_of
from telecoder.domain import Event, Session
from telecoder.errors import Conflict, SessionNotFound, TeleCoderError
from telecoder.protocols import Inbound
from telecoder.store import Store

log = logging.getLogger(__name__)

REFUSED = (
    "Sorry, I only work for the people (and in the group chats) my operator allowed, and "
    "you are not among them (by default nobody is). Ask the operator to add your Telegram "
    "user id {user} to TELECODER_TELEGRAM_ALLOWED_USERS{chat}."
)
HELP = """I turn messages into coding sessions and answer in the thread.

Write a task (in a group: mention me or reply to me). Start it with a repository's
name and a colon to pick one (app: fix the typo).
Reply to my messages to continue a session.

/run [repo:] task — start a new session
/status [id] — where a session stands
/logs [id] — its last events
/cancel [id] — stop it
/retry [id] — run it again
/model [name|reset] — the model your new sessions use
/costs — what your sessions cost today, and everybody's
/help — this

Without an id, a command acts on this thread's session, else on the chat's latest."""
LOG_LINES = 12


class StoreMemory:
    """The channel's ``Memory`` in the store, as channel preferences (``memo``) keyed by the
    channel's name."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def recall(self, key: str) -> str | None:
        return await self.store.channel_events.preference(NAME, key, "memo")

    async def remember(self, key: str, value: str) -> None:
        await self.store.channel_events.prefer(NAME, key, "memo", value)


Handler = Callable[[Inbound, str], Awaitable[str]]


class TelegramBot:
    def __init__(
        self, store: Store, conversations: Conversations, channel: TelegramChannel
    ) -> None:
        self.store = store
        self.conversations = conversations
        self.channel = channel
        self.commands: dict[str, Handler] = {
            "status": self._status,
            "logs": self._logs,
            "cancel": self._cancel,
            "retry": self._retry,
            "model": self._model,
            "costs": self._costs,
            "help": self._help,
            "start": self._help,
        }

    async def receive(self, inbound: Inbound) -> Received:
        if not self.channel.allows(inbound):
            return await self._refuse(inbound)
        inbound = await self.channel.resolve(inbound)
        chat = inbound.reply["chat_id"]
        if inbound.direct and inbound.reply.get("username"):
            username = str(inbound.reply["username"]).lower()
            await self.channel.memory.remember(f"user:{username}", inbound.sender)
        known = inbound.addressed or await self.store.sessions.in_thread(thread_of(inbound))
        if not known:
            return Received(action="ignored", reason="not addressed to TeleCoder")
        command, _, rest = inbound.text.partition(" ")
        if inbound.addressed and command.startswith("/"):
            return await self._command(inbound, command[1:].lower(), rest.strip())
        await self.channel.remember_message(chat, inbound.reply["message_id"], inbound.thread)
        return await self._forward(inbound)

    async def _forward(self, inbound: Inbound) -> Received:
        received = await self.conversations.receive(inbound)
        if received.session_id and received.action in ("queued", "continued"):
            memory = self.channel.memory
            await memory.remember(f"latest:{inbound.reply['chat_id']}", received.session_id)
            # The turn's end answers the message that asked for it.
            await memory.remember(f"turn:{received.session_id}", str(inbound.reply["message_id"]))
        return received

    async def _refuse(self, inbound: Inbound) -> Received:
        if not inbound.addressed:
            return Received(action="ignored", reason="not addressed to TeleCoder")
        reason = f"user {inbound.sender} in chat {inbound.place} is not allowed"
        once = f"refused:{inbound.place}:{inbound.sender}"
        if await self.store.channel_events.once(NAME, once, "refused"):
            allowed_user = inbound.sender in self.channel.allowed_users
            chat = (
                f" and this chat's id {inbound.place} to TELECODER_TELEGRAM_ALLOWED_CHATS"
                if not inbound.direct
                else ""
            )
            user = inbound.sender if not allowed_user else f"{inbound.sender} (already there)"
            await self._say(inbound, REFUSED.format(user=user, chat=chat))
        return Received(action="refused", reason=reason)

    async def _say(self, inbound: Inbound, text: str) -> None:
        origin = {**dict(inbound.reply), "channel": NAME, "thread": inbound.thread}
        try:
            await self.channel.say(origin, text)
        except TeleCoderError as e:
            log.warning("Telegram: a reply failed: %s", e.message)

    # --- commands ----------------------------------------------------------------------------

    async def _command(self, inbound: Inbound, name: str, rest: str) -> Received:
        if name == "run":
            if not rest:
                await self._say(inbound, "What should I do? /run [repo:] task")
                return Received(action="answered", reason="/run without a task")
            root = f"{inbound.reply['chat_id']}/{inbound.reply['message_id']}"
            fresh = dataclasses.replace(inbound, text=rest, thread=root, addressed=True)
            await self.channel.remember_message(inbound.reply["chat_id"], root.split("/")[1], root)
            return await self._forward(fresh)
        if not await self.store.channel_events.once(NAME, inbound.key, "command"):
            return Received(action="duplicate", reason="seen before")
        handler = self.commands.get(name)
        if handler is None:
            text = f"I don't know /{name}.\n\n{HELP}"
        else:
            try:
                text = await handler(inbound, rest)
            except (SessionNotFound, Conflict) as e:
                text = e.message
        await self._say(inbound, text)
        return Received(action="answered", reason=f"/{name}")

    async def _session(self, inbound: Inbound, ref: str) -> Session:
        if ref:
            # Only this chat's sessions: a chat is not a window on everybody's work.
            named = await self.store.sessions.resolve(ref.split()[0])
            origin = named.origin or {}
            if origin.get("channel") != "telegram" or str(origin.get("place")) != inbound.place:
                raise SessionNotFound(f"No session {ref.split()[0]!r} started in this chat.")
            return named
        found = await self.store.sessions.in_thread(thread_of(inbound))
        if found is not None:
            return found
        latest = await self.channel.memory.recall(f"latest:{inbound.reply['chat_id']}")
        if latest is None:
            raise SessionNotFound("No session has started in this chat yet.")
        return await self.store.sessions.get(latest)

    async def _status(self, inbound: Inbound, rest: str) -> str:
        session = await self._session(inbound, rest)
        return progress_text(session.to_dict())

    async def _logs(self, inbound: Inbound, rest: str) -> str:
        session = await self._session(inbound, rest)
        last = await self.store.events.last_seq(session.id)
        events = await self.store.events.list(session.id, after=max(0, last - LOG_LINES))
        lines = [f"Last events of {session.id} ({session.status.value}):"]
        lines.extend(_event_line(event) for event in events)
        return "\n".join(lines) if events else f"{session.id} has no events yet."

    async def _cancel(self, inbound: Inbound, rest: str) -> str:
        session = await self._session(inbound, rest)
        cancelled = await self.store.sessions.cancel(session.id)
        self.conversations.poke()
        if cancelled.status.terminal:
            return f"Cancelled {cancelled.id}."
        return f"Stopping {cancelled.id}: its worker ends the run."

    async def _retry(self, inbound: Inbound, rest: str) -> str:
        session = await self._session(inbound, rest)
        again = await self.store.sessions.retry(session.id)
        self.conversations.poke()
        await self.channel.memory.remember(f"latest:{inbound.reply['chat_id']}", again.id)
        try:
            await self.channel.report(again.to_dict())
        except TeleCoderError as e:
            log.warning("Telegram: the report of %s failed: %s", again.id, e.message)
        return f"Retrying {session.id} as {again.id}."

    async def _model(self, inbound: Inbound, rest: str) -> str:
        events = self.store.channel_events
        name = rest.split()[0] if rest else ""
        if not name:
            current = await events.preference(NAME, inbound.sender, "model")
            if current is None:
                return "Your sessions use the default model. /model NAME to choose one."
            return f"Your new sessions use {current}. /model reset for the default."
        if name.lower() == "reset":
            await events.prefer(NAME, inbound.sender, "model", None)
            return "Your new sessions use the default model again."
        if len(name) > 200 or not name.isprintable():
            return "That is not a model name."
        await events.prefer(NAME, inbound.sender, "model", name)
        return f"Your new sessions use {name}."

    async def _costs(self, inbound: Inbound, rest: str) -> str:
        now = time.time()
        midnight = now - now % 86400
        report = await self.store.costs.report(since=midnight, top=0, now=now)
        mine = 0.0
        count = 0
        user = f"{NAME}:{inbound.sender}"
        page = await self.store.sessions.list(limit=500)
        for session in page.sessions:
            if session.created_at < midnight:
                break
            if (session.origin or {}).get("user") == user:
                mine += session.cost_usd or 0.0
                count += 1
        total = report.total
        return (
            f"Today (UTC): your {count} session(s) cost ${mine:.2f}; "
            f"everybody's: ${total.cost_usd:.2f} over {total.requests} model request(s)."
        )

    async def _help(self, inbound: Inbound, rest: str) -> str:
        return HELP


def _event_line(event: Event) -> str:
    data: dict[str, Any] = event.data
    detail = (
        data.get("text")
        or data.get("status")
        or data.get("step")
        or " ".join(str(data.get(k) or "") for k in ("name", "input")).strip()
        or data.get("message")
        or ""
    )
    line = " ".join(str(detail).split())
    return f"#{event.seq} {event.kind.value}: {line[:100]}"


def attach(conversations: Conversations | None, store: Store) -> TelegramBot | None:
    """The bot in front of the conversations, when Telegram is configured (its channel's
    memory then lives in ``store``)."""
    if conversations is None:
        return None
    channel = conversations.channels.get(NAME)
    if not isinstance(channel, TelegramChannel):
        return None
    channel.memory = StoreMemory(store)
    return TelegramBot(store, conversations, channel)
