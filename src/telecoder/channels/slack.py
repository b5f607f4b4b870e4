"""Slack: the Events API (or Socket Mode) in, the Web API out.

``verify`` checks Slack's v0 signature: ``X-Slack-Signature: v0=<hex HMAC-SHA256>`` of
``v0:{X-Slack-Request-Timestamp}:{body}`` with the app's signing secret, the timestamp within five
minutes of now, compared in constant time. ``parse`` turns an ``event_callback`` into messages:
an ``app_mention`` in a channel and any ``message`` in a direct message address TeleCoder; any
other ``message`` in a channel is passed on unaddressed (the conversation core continues a
thread it knows and ignores the rest). Bots (TeleCoder itself among them), edits and deletions
are dropped, and so is the ``message`` copy of a mention (its ``app_mention`` carries it).

A thread is ``{channel}/{thread_ts or ts}``. Each session has one status message in its thread,
posted once and then edited (``chat.update``); it is found again after a restart by its message
metadata (``telecoder_status`` + the session id) through ``conversations.replies``. When a turn
or the session ends, the outcome is also posted as a new message (so people are notified),
once, found again the same way (``telecoder_outcome``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import httpx

from telecoder.channels import json_object
from telecoder.channels import slack_blocks as blocks
from telecoder.errors import BadInput, TeleCoderError, WebhookSignatureInvalid
from telecoder.protocols import Inbound

log = logging.getLogger(__name__)

NAME = "slack"
TOLERANCE = 300.0
TIMEOUT = 10.0
RATE_LIMIT_TRIES = 3  # calls of one method, the first included, while Slack answers 429
RATE_LIMIT_WAIT = 30.0  # seconds: a longer Retry-After is not waited out
_KEPT_SUBTYPES = (None, "file_share", "thread_broadcast")


class SlackAPIError(TeleCoderError):
    """Slack refused the request."""


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Slack-Signature`` of ``body`` sent at ``timestamp``."""
    base = f"v0:{timestamp}:".encode() + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def verify(
    secret: str, headers: Mapping[str, str], body: bytes, now: float, tolerance: float = TOLERANCE
) -> None:
    """Raise ``WebhookSignatureInvalid`` unless Slack signed ``body`` within ``tolerance``."""
    lower = {name.lower(): value for name, value in headers.items()}
    stamp, given = lower.get("x-slack-request-timestamp"), lower.get("x-slack-signature")
    if not stamp or not given:
        raise WebhookSignatureInvalid(
            "missing the X-Slack-Request-Timestamp or X-Slack-Signature header"
        )
    try:
        sent = int(stamp)
    except ValueError:
        raise WebhookSignatureInvalid("X-Slack-Request-Timestamp is not a number") from None
    if abs(now - sent) > tolerance:
        raise WebhookSignatureInvalid(
            f"X-Slack-Request-Timestamp is more than {tolerance:g} s from now: refused as a replay"
        )
    if not hmac.compare_digest(given.strip().encode(), signature(secret, stamp, body).encode()):
        raise WebhookSignatureInvalid("the X-Slack-Signature does not match the body")


def thread_key(channel: str, ts: str) -> str:
    return f"{channel}/{ts}"


def _text(raw: str, bot: str | None) -> str:
    """The message without the mention of TeleCoder, with Slack's escapes undone."""
    if bot:
        for mention in (f"<@{bot}>", f"<@{bot}|"):
            while mention in raw:
                start = raw.index(mention)
                end = raw.find(">", start)
                raw = raw[:start] + raw[end + 1 :]
    raw = raw.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return raw.strip()


def parse_payload(payload: Mapping[str, Any]) -> list[Inbound]:
    """An Events API envelope (``event_callback``) as the messages it carries (none or one)."""
    if payload.get("type") != "event_callback":
        return []
    event = payload.get("event")
    key = payload.get("event_id")
    if not isinstance(event, Mapping) or not isinstance(key, str) or not key:
        return []
    bot = _own_user(payload)
    kind, subtype = event.get("type"), event.get("subtype")
    user, channel, ts = event.get("user"), event.get("channel"), event.get("ts")
    if not isinstance(user, str) or not isinstance(channel, str) or not isinstance(ts, str):
        return []  # bot_message, message_changed, message_deleted carry no user of their own
    if event.get("bot_id") or subtype not in _KEPT_SUBTYPES or user == bot:
        return []
    raw = str(event.get("text") or "")
    direct = event.get("channel_type") == "im" or channel.startswith("D")
    if kind == "app_mention":
        if direct:
            return []  # its message event carries it
        addressed = True
    elif kind == "message":
        if not direct and bot and f"<@{bot}" in raw:
            return []  # its app_mention carries it
        addressed = direct
    else:
        return []
    thread_ts = event.get("thread_ts") if isinstance(event.get("thread_ts"), str) else None
    files = event.get("files")
    files = files if isinstance(files, list) else []
    names = tuple(str(f.get("name")) for f in files if isinstance(f, Mapping) and f.get("name"))
    return [
        Inbound(
            channel=NAME,
            key=key,
            thread=thread_key(channel, thread_ts or ts),
            place=channel,
            sender=user,
            text=_text(raw, bot),
            addressed=addressed,
            direct=direct,
            attachments=names,
            reply={"channel_id": channel, "thread_ts": thread_ts or ts},
        )
    ]


def _own_user(payload: Mapping[str, Any]) -> str | None:
    """TeleCoder's own user id: the envelope's authorizations name it."""
    for found in payload.get("authorizations") or []:
        if isinstance(found, Mapping) and found.get("is_bot") and found.get("user_id"):
            return str(found["user_id"])
    users = payload.get("authed_users")
    return str(users[0]) if isinstance(users, list) and len(users) == 1 else None


def where(origin: Mapping[str, object]) -> tuple[str, str | None]:
    """The Slack channel id and thread ts of an origin (a session's, or an Inbound's reply)."""
    channel, ts = origin.get("channel_id"), origin.get("thread_ts")
    if not isinstance(channel, str):
        thread = str(origin.get("thread") or "")
        channel, _, found = thread.partition("/")
        ts = found or None
    if not channel:
        raise BadInput("the origin names no Slack channel")
    return channel, ts if isinstance(ts, str) and ts else None


class SlackChannel:
    """The Slack channel: verify and parse events, post and edit messages in threads."""

    name = NAME

    def __init__(
        self,
        *,
        bot_token: str,
        signing_secret: str | None = None,
        api_url: str = "https://slack.com/api/",
        app_token: str | None = None,
        public_url: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._token = bot_token
        self._secret = signing_secret
        self.api_url = api_url.rstrip("/") + "/"
        self._app_token = app_token
        self.public_url = public_url
        self._transport = transport
        self._writing: dict[str, asyncio.Lock] = {}  # session id -> its messages' writer
        self._status_ts: dict[str, tuple[str, str]] = {}  # session id -> (channel, ts): a cache
        # What a button click over Socket Mode is given to (the server sets it).
        self.on_action: Callable[[dict[str, Any]], Awaitable[object]] | None = None

    @property
    def socket_mode(self) -> bool:
        return self._app_token is not None

    # --- in ------------------------------------------------------------------------------------

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> None:
        if self._secret is None:
            raise WebhookSignatureInvalid("no Slack signing secret is configured")
        verify(self._secret, headers, body, now)

    def parse(self, headers: Mapping[str, str], body: bytes) -> Sequence[Inbound]:
        return parse_payload(json_object(body))

    async def listen(
        self, receive: Callable[[Inbound], Awaitable[object]], stop: asyncio.Event
    ) -> None:
        """Socket Mode: events over a websocket Slack opens (``TELECODER_SLACK_APP_TOKEN``)."""
        if self._app_token is None:
            return
        from telecoder.channels.slack_socket import SocketMode  # websockets only when used

        socket = SocketMode(self.api_url, self._app_token, self._transport)
        await socket.run(receive, stop, on_action=self._clicked)

    async def _clicked(self, payload: dict[str, Any]) -> None:
        if self.on_action is not None:
            await self.on_action(payload)

    # --- the Web API ---------------------------------------------------------------------------

    async def call(
        self, method: str, body: Mapping[str, Any] | None = None, *, read: bool = False
    ) -> dict[str, Any]:
        """Call a Web API method: JSON for writes, query parameters for reads; Slack's
        ``{"ok": false, "error": …}`` is a ``SlackAPIError`` naming the method and the error.

        A rate limit (HTTP 429) is waited out as its ``Retry-After`` asks, up to
        ``RATE_LIMIT_TRIES`` times and ``RATE_LIMIT_WAIT`` seconds each; then it is an error."""
        for tries in itertools.count(1):
            response = await self._send(method, body, read=read)
            if response.status_code != 429:
                break
            wait = _retry_after(response.headers.get("retry-after"))
            if tries >= RATE_LIMIT_TRIES or wait > RATE_LIMIT_WAIT:
                raise SlackAPIError(
                    f"Slack {method} is rate limited: retry after {wait:g} s ({tries} tries)"
                )
            log.info("Slack %s is rate limited: retrying in %g s", method, wait)
            await asyncio.sleep(wait)
        try:
            data = response.json()
        except ValueError:
            raise SlackAPIError(
                f"Slack {method} answered {response.status_code}, not JSON"
            ) from None
        if not isinstance(data, dict) or not data.get("ok"):
            error = data.get("error") if isinstance(data, dict) else None
            raise SlackAPIError(f"Slack {method} failed: {error or response.status_code}")
        return data

    async def _send(
        self, method: str, body: Mapping[str, Any] | None, *, read: bool
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self._token}"}
        async with httpx.AsyncClient(timeout=TIMEOUT, transport=self._transport) as client:
            try:
                if read:
                    params = {k: str(v) for k, v in (body or {}).items()}
                    return await client.get(self.api_url + method, params=params, headers=headers)
                return await client.post(
                    self.api_url + method, json=dict(body or {}), headers=headers
                )
            except httpx.HTTPError as e:
                raise SlackAPIError(f"Slack {method} could not be reached: {e}") from None

    # --- out -----------------------------------------------------------------------------------

    async def say(self, origin: Mapping[str, object], text: str) -> None:
        channel, ts = where(origin)
        message: dict[str, Any] = {"channel": channel, "text": blocks.clip(text, 39_000)}
        if ts:
            message["thread_ts"] = ts
        await self.call("chat.postMessage", message)

    async def address(self, who: str) -> dict[str, object]:
        """A notify target as an origin ``say`` accepts: a user (``U…``, ``@U…``) gets a direct
        message (``conversations.open``); a channel (``C…``, ``#name``) gets it posted there."""
        target = who.strip()
        if target.startswith("@") and target[1:2] in ("U", "W") and target[2:].isalnum():
            target = target[1:]
        if target[:1] in ("U", "W") and target.isalnum():
            opened = await self.call("conversations.open", {"users": target})
            found = (opened.get("channel") or {}).get("id")
            if not isinstance(found, str):
                raise SlackAPIError("Slack conversations.open returned no channel")
            return {"channel": NAME, "channel_id": found}
        if target.startswith("#") and len(target) > 1:
            return {"channel": NAME, "channel_id": target}
        if target[:1] in ("C", "G", "D") and target.isalnum():
            return {"channel": NAME, "channel_id": target}
        raise BadInput(
            f"{who!r} is no Slack notify target: use a user id (U…), a channel id (C…) or #name"
            + (
                " (@me is resolved to your Slack user id before it gets here)"
                if who == "@me"
                else ""
            )
        )

    async def report(self, session: Mapping[str, object]) -> None:
        """The session's status message in its thread (posted once, then edited), and its
        outcome as a new message once a turn or the session ended."""
        origin = session.get("origin")
        if not isinstance(origin, Mapping):
            return
        session_id = str(session.get("id"))
        lock = self._writing.setdefault(session_id, asyncio.Lock())
        async with lock:
            await self._report(dict(session), origin)
        if blocks.ended(dict(session)) and not lock.locked():
            self._writing.pop(session_id, None)
            self._status_ts.pop(session_id, None)

    async def _report(self, session: dict[str, Any], origin: Mapping[str, object]) -> None:
        channel, ts = where(origin)
        session_id = str(session["id"])
        status = str(session.get("status"))
        found = await self._find(channel, ts, blocks.STATUS_EVENT, session_id)
        updated = str(session.get("updated_at") or "")
        message = {
            "channel": channel,
            "text": blocks.status_line(session),
            "blocks": blocks.status_blocks(session, self.public_url),
            "metadata": _metadata(
                blocks.STATUS_EVENT, session_id, status=status, updated_at=updated
            ),
        }
        if found is None:
            if ts:
                message["thread_ts"] = ts
            posted = await self.call("chat.postMessage", message)
            self._status_ts[session_id] = (channel, str(posted.get("ts")))
        elif _newer(found[1], status, updated):
            await self.call("chat.update", {**message, "ts": found[0]})
        # else: what the message says is newer (a late "queued" or "running" undoes nothing)
        if (status == "blocked" and session.get("result")) or blocks.ended(session):
            turn = f"{status}@{session.get('updated_at')}"
            if await self._find(channel, ts, blocks.OUTCOME_EVENT, session_id, turn) is None:
                text, parts = blocks.outcome_blocks(session)
                said: dict[str, Any] = {
                    "channel": channel,
                    "text": blocks.clip(text, 3000),
                    "blocks": parts,
                    "metadata": _metadata(blocks.OUTCOME_EVENT, session_id, turn=turn),
                }
                if ts:
                    said["thread_ts"] = ts
                await self.call("chat.postMessage", said)

    async def _find(
        self, channel: str, ts: str | None, event: str, session_id: str, turn: str | None = None
    ) -> tuple[str, Mapping[str, Any]] | None:
        """The ts of TeleCoder's message in the thread with this metadata, and the metadata."""
        cached = self._status_ts.get(session_id) if event == blocks.STATUS_EVENT else None
        if ts is None:  # a message outside a thread: only this process knows it
            return (cached[1], {}) if cached else None
        cursor: str | None = None
        while True:
            query: dict[str, Any] = {
                "channel": channel,
                "ts": ts,
                "include_all_metadata": "true",
                "limit": 200,
            }
            if cursor:
                query["cursor"] = cursor
            data = await self.call("conversations.replies", query, read=True)
            for message in data.get("messages") or []:
                meta = message.get("metadata") or {}
                payload = meta.get("event_payload") or {}
                if meta.get("event_type") != event or payload.get("session") != session_id:
                    continue
                if turn is None or payload.get("turn") == turn:
                    return str(message.get("ts")), payload
            cursor = (data.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                return None


def _newer(shown: Mapping[str, Any], status: str, updated: str) -> bool:
    """Whether a report of ``status`` at ``updated`` is newer than the message shows."""
    if shown.get("status") in blocks.ENDED and status not in blocks.ENDED:
        return False  # the end is there already
    return updated >= str(shown.get("updated_at") or "")


def _metadata(event: str, session_id: str, **more: str) -> dict[str, Any]:
    return {"event_type": event, "event_payload": {"session": session_id, **more}}


def _retry_after(value: str | None) -> float:
    """Seconds a 429's ``Retry-After`` asks for (1 when it is missing or not a number)."""
    try:
        return max(0.0, float(value)) if value is not None else 1.0
    except ValueError:
        return 1.0
