"""Telegram: a bot that takes tasks in private chats and groups, and answers in their threads.

The Bot API over httpx: every method is ``POST {TELECODER_TELEGRAM_API_URL}/bot{token}/{method}``
with a JSON body, answered ``{"ok": true, "result": …}``. The token is in every URL, so no URL
and no httpx error text leaves this module unmasked: errors name the method, never the address.

Messages arrive by long polling (``listen``: ``getUpdates`` with an offset kept in ``Memory``,
so a restart does not handle an update again; backoff on network errors; ``stop`` ends it at
once) or, when ``TELECODER_TELEGRAM_WEBHOOK_SECRET`` is set, by the webhook route, which
``verify`` checks with the ``X-Telegram-Bot-Api-Secret-Token`` header (constant-time).

Who is talking to TeleCoder (``parse``): in a private chat, every message; in a group, an
@mention of the bot, a command, or a reply to one of its messages. A group message that is
none of these is passed on unaddressed only when it may belong to a known thread (a reply, a
forum topic): the conversation core continues a thread's session with it, and ignores it
otherwise. The thread is ``{chat}/{topic}`` in a forum topic, else ``{chat}/{root}`` where
root is the message the conversation started from: a reply to a message TeleCoder knows
(one it sent, or one said in a thread) belongs to that message's thread (``resolve``).

``report`` keeps one progress message per session, sent once and then edited (its id is kept
in ``Memory``, so a restart edits it rather than posting another); a turn's end (blocked with
a question, the outcome) is also sent as a reply, once, so the user is notified.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

import httpx

from telecoder import outcome as outcomes
from telecoder.channels.telegram_text import (
    NAME,
    Bot,
    cut,
    final_text,
    parse_update,
    progress_text,
)
from telecoder.errors import TeleCoderError, WebhookSignatureInvalid
from telecoder.protocols import Inbound
from telecoder.settings import Settings

log = logging.getLogger(__name__)

SECRET_HEADER = "x-telegram-bot-api-secret-token"
POLL_SECONDS = 25  # getUpdates' long-poll timeout
BACKOFF = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
ENDED = frozenset(outcomes.ENDED)
_TOKENISH = re.compile(r"bot\d+:[A-Za-z0-9_-]+")


class TelegramUnavailable(TeleCoderError):
    """The Telegram Bot API refused the request or could not be reached."""


class Memory(Protocol):
    """What the channel keeps across restarts (the server backs it with the store)."""

    async def recall(self, key: str) -> str | None: ...

    async def remember(self, key: str, value: str) -> None: ...


class InMemory:
    """A ``Memory`` for a process that has no store (tests of the channel alone)."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    async def recall(self, key: str) -> str | None:
        return self.values.get(key)

    async def remember(self, key: str, value: str) -> None:
        self.values[key] = value


class TelegramChannel:
    name = NAME

    def __init__(
        self,
        token: str,
        *,
        api_url: str = "https://api.telegram.org",
        allowed_users: Sequence[str] = (),
        allowed_chats: Sequence[str] = (),
        webhook_secret: str | None = None,
        public_url: str | None = None,
        memory: Memory | None = None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self._token = token
        self._base = f"{api_url.rstrip('/')}/bot{token}/"
        self.allowed_users = frozenset(allowed_users)
        self.allowed_chats = frozenset(allowed_chats)
        self._webhook_secret = webhook_secret
        self.public_url = public_url
        self.memory: Memory = memory or InMemory()
        self.poll_seconds = poll_seconds
        self.backoff: Sequence[float] = BACKOFF
        self.bot: Bot | None = None
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(poll_seconds + 15, connect=10))
        self._locks: dict[str, asyncio.Lock] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> TelegramChannel:
        assert settings.telegram_bot_token is not None
        secret = settings.telegram_webhook_secret
        return cls(
            settings.telegram_bot_token.get_secret_value(),
            api_url=settings.telegram_api_url,
            allowed_users=settings.telegram_allowed_users,
            allowed_chats=settings.telegram_allowed_chats,
            webhook_secret=secret.get_secret_value() if secret else None,
            public_url=settings.public_url,
        )

    @property
    def webhook_mode(self) -> bool:
        return self._webhook_secret is not None

    # --- the Bot API -----------------------------------------------------------------------

    def _masked(self, text: str) -> str:
        return _TOKENISH.sub("bot***", text.replace(self._token, "***"))

    async def call(self, method: str, *, wait: float | None = None, **params: Any) -> Any:
        """``method`` with ``params`` (None values left out); its ``result``."""
        body = {k: v for k, v in params.items() if v is not None}
        try:
            response = await self._client.post(
                self._base + method,
                json=body,
                timeout=httpx.USE_CLIENT_DEFAULT if wait is None else wait,
            )
        except httpx.HTTPError as e:
            raise TelegramUnavailable(
                self._masked(f"Telegram {method} failed: {type(e).__name__} {e}")
            ) from None
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if response.status_code != 200 or not answer.get("ok"):
            described = answer.get("description") or response.reason_phrase
            raise TelegramUnavailable(
                self._masked(f"Telegram {method}: {response.status_code} {described}")
            )
        return answer.get("result")

    async def ready(self) -> Bot:
        """Who the bot is (``getMe``), asked once."""
        if self.bot is None:
            me = await self.call("getMe")
            self.bot = Bot(id=int(me["id"]), username=str(me.get("username") or ""))
        return self.bot

    async def close(self) -> None:
        await self._client.aclose()

    # --- in --------------------------------------------------------------------------------

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> None:
        found = {k.lower(): v for k, v in headers.items()}.get(SECRET_HEADER, "")
        expected = self._webhook_secret or ""
        if not expected or not hmac.compare_digest(found.encode(), expected.encode()):
            raise WebhookSignatureInvalid("X-Telegram-Bot-Api-Secret-Token is missing or wrong")

    def parse(self, headers: Mapping[str, str], body: bytes) -> Sequence[Inbound]:
        try:
            update = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return []
        return self.parse_update(update) if isinstance(update, dict) else []

    def parse_update(self, update: Mapping[str, Any]) -> list[Inbound]:
        """The message an update carries, if it is for TeleCoder (or may be in a thread)."""
        return parse_update(update, self.bot or Bot(id=0, username=""))

    async def resolve(self, inbound: Inbound) -> Inbound:
        """The thread a reply belongs to: that of the message it answers, when known."""
        reply_to = inbound.reply.get("reply_to")
        if reply_to is None or inbound.reply.get("topic"):
            return inbound
        chat = inbound.reply["chat_id"]
        async with self._chat(chat):  # not while a message is sent and not yet remembered
            known = await self.memory.recall(f"msg:{chat}/{reply_to}")
        return replace(inbound, thread=known or f"{chat}/{reply_to}")

    def _chat(self, chat: object) -> asyncio.Lock:
        return self._locks.setdefault(f"chat:{chat}", asyncio.Lock())

    async def remember_message(self, chat: object, message_id: object, thread: str) -> None:
        await self.memory.remember(f"msg:{chat}/{message_id}", thread)

    def allows(self, inbound: Inbound) -> bool:
        """An allowed user, in a private chat or an allowed group."""
        if inbound.sender not in self.allowed_users:
            return False
        return inbound.direct or inbound.place in self.allowed_chats

    async def listen(
        self, receive: Callable[[Inbound], Awaitable[object]], stop: asyncio.Event
    ) -> None:
        """Long polling until ``stop``: each message to ``receive``, each update once."""
        failures = 0
        while not stop.is_set():
            try:
                await self.ready()
                if self.webhook_mode:  # Telegram sends the updates to the webhook route
                    await self._set_webhook()
                    return
                await self.call("deleteWebhook")
                break
            except TeleCoderError as e:
                log.warning("Telegram: %s", e.message)
                failures += 1
                await _pause(stop, self._backoff(failures))
        bot = await self.ready()
        offset = int(await self.memory.recall(f"offset:{bot.id}") or 0)
        failures = 0
        while not stop.is_set():
            try:
                updates = await _until(stop, self._updates(offset))
            except TeleCoderError as e:
                failures += 1
                log.warning("Telegram: %s (retrying)", e.message)
                await _pause(stop, self._backoff(failures))
                continue
            if updates is None:  # stopped
                return
            failures = 0
            for update in updates:
                try:
                    for inbound in self.parse_update(update):
                        await receive(inbound)
                except Exception:
                    log.exception("Telegram: update %s failed", update.get("update_id"))
                    failures += 1
                    await _pause(stop, self._backoff(failures))
                    break  # not acknowledged: fetched again (its key makes nothing twice)
                offset = int(update["update_id"]) + 1
                await self.memory.remember(f"offset:{bot.id}", str(offset))

    def _backoff(self, failures: int) -> float:
        return self.backoff[min(failures, len(self.backoff)) - 1]

    async def _updates(self, offset: int) -> list[dict[str, Any]]:
        found = await self.call(
            "getUpdates",
            wait=self.poll_seconds + 15,
            offset=offset or None,
            timeout=self.poll_seconds,
            allowed_updates=["message"],
        )
        return [u for u in found or [] if isinstance(u, dict) and "update_id" in u]

    async def _set_webhook(self) -> None:
        if not self.public_url:
            log.info("Telegram: webhook mode; set the webhook to /api/channels/telegram/webhook")
            return
        url = f"{self.public_url.rstrip('/')}/api/channels/telegram/webhook"
        await self.call(
            "setWebhook",
            url=url,
            secret_token=self._webhook_secret,
            allowed_updates=["message"],
        )

    # --- out -------------------------------------------------------------------------------

    async def send(
        self, chat: object, text: str, *, reply_to: object = None, topic: object = None
    ) -> int:
        """Send ``text``; the new message's id."""
        parameters = (
            {"message_id": reply_to, "allow_sending_without_reply": True} if reply_to else None
        )
        sent = await self.call(
            "sendMessage",
            chat_id=chat,
            text=cut(text),
            message_thread_id=topic,
            reply_parameters=parameters,
            link_preview_options={"is_disabled": True},
        )
        return int(sent["message_id"])

    async def say(self, origin: Mapping[str, object], text: str) -> None:
        chat = origin.get("chat_id")
        if chat is None:
            raise TelegramUnavailable("the origin names no Telegram chat")
        async with self._chat(chat):
            sent = await self.send(
                chat, text, reply_to=origin.get("message_id"), topic=origin.get("topic")
            )
            if origin.get("thread"):
                await self.remember_message(chat, sent, str(origin["thread"]))

    async def report(self, session: Mapping[str, object]) -> None:
        origin = session.get("origin")
        if not isinstance(origin, dict) or origin.get("chat_id") is None:
            return
        sid = str(session["id"])
        lock = self._locks.setdefault(sid, asyncio.Lock())
        async with lock:
            await self._progress(session, origin)
            status = str(session.get("status"))
            if status in ENDED:
                # Once per turn's end: remembered after it was sent, so a failed send is tried
                # again (the outbox retries) and a report said again is not.
                told = f"told:{sid}:{status}:{session.get('updated_at')}"
                if await self.memory.recall(told) is None:
                    # In reply to the message that asked for this turn (who is to be told).
                    asker = await self.memory.recall(f"turn:{sid}")
                    asked = {**origin, "message_id": int(asker)} if asker else origin
                    await self.say(asked, final_text(session))
                    await self.memory.remember(told, "1")
            if status in ENDED and status != "blocked":
                self._locks.pop(sid, None)

    async def _progress(self, session: Mapping[str, object], origin: Mapping[str, Any]) -> None:
        key = f"progress:{session['id']}"
        text = progress_text(session)
        known = await self.memory.recall(key)
        chat = origin["chat_id"]
        if known is not None:
            try:
                await self.call(
                    "editMessageText",
                    chat_id=chat,
                    message_id=int(known),
                    text=cut(text),
                    link_preview_options={"is_disabled": True},
                )
            except TelegramUnavailable as e:
                if "not modified" in e.message:
                    return
                if "message to edit not found" not in e.message:
                    raise
                # Deleted in the chat: a new progress message takes its place.
            else:
                return
        async with self._chat(chat):
            sent = await self.send(
                chat, text, reply_to=origin.get("message_id"), topic=origin.get("topic")
            )
            await self.memory.remember(key, str(sent))
            if origin.get("thread"):
                await self.remember_message(chat, sent, str(origin["thread"]))

    async def address(self, who: str, user: str | None = None) -> dict[str, object]:
        """A notify target as an origin ``say`` accepts: ``@me`` (``user``'s private chat, a
        Telegram user id: the bot may write to a user who has written to it), a chat id, or
        ``@username`` of somebody who has written to the bot."""
        who = who.strip()
        if who == "@me":
            if not user or not user.lstrip("-").isdigit():
                raise TelegramUnavailable("telegram:@me needs your Telegram user id")
            chat = user
        elif who.lstrip("-").isdigit():
            chat = who
        elif who.startswith("@"):
            found = await self.memory.recall(f"user:{who[1:].lower()}")
            if found is None:
                raise TelegramUnavailable(
                    f"telegram:{who}: that user has not written to the bot yet"
                )
            chat = found
        else:
            raise TelegramUnavailable(f"telegram:{who}: expected @me, @username or a chat id")
        return {"channel": NAME, "chat_id": int(chat), "thread": f"{chat}/notify"}


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _until(stop: asyncio.Event, work: Awaitable[Any]) -> Any:
    """``work``'s result, or None as soon as ``stop`` is set (``work`` is cancelled)."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None
    return task.result()
