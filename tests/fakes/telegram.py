"""A fake Telegram Bot API on 127.0.0.1, speaking the real wire protocol.

Methods at ``/bot{token}/{method}`` (JSON or form body), answered ``{"ok": true, "result": …}``
or ``{"ok": false, "error_code": …, "description": …}`` as Telegram does: ``getMe``,
``getUpdates`` (long polling: waits up to ``timeout`` seconds for an update at or after
``offset``; asking with an offset confirms the updates before it, which are then gone; a 409
while a webhook is set), ``sendMessage`` (``reply_parameters``, ``message_thread_id``),
``editMessageText`` (400 "message is not modified" for the same text), ``deleteWebhook``,
``setWebhook``. A wrong token is a 401.

A test plays the users: ``dm``, ``group`` (with or without an @mention, a reply to a message,
a forum topic) add a message and its update; ``messages(chat)`` is the chat as it stands
(users' and the bot's messages, with how often each was edited); ``GET /_chat/{id}`` renders it
as a page (for the README's screenshot). ``fail_updates(n)`` answers the next ``n``
``getUpdates`` with a 502, as a flaky network would.
"""

from __future__ import annotations

import html
import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlparse

import pytest

TOKEN = "123456:AAF-fake-telegram-token_xyz"
BOT_ID = 9000
BOT_USERNAME = "telecoder_bot"
WEBHOOK_SECRET = "telegram-webhook-secret_1"


@dataclass(frozen=True)
class User:
    id: int
    username: str
    first_name: str

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "is_bot": False,
            "first_name": self.first_name,
            "username": self.username,
        }


BOT = {"id": BOT_ID, "is_bot": True, "first_name": "TeleCoder", "username": BOT_USERNAME}


@dataclass
class Message:
    chat: dict[str, Any]
    message_id: int
    sender: dict[str, Any]
    text: str
    date: int
    entities: list[dict[str, Any]] = field(default_factory=list)
    reply_to: Message | None = None
    topic: int | None = None
    edits: int = 0

    @property
    def from_bot(self) -> bool:
        return bool(self.sender.get("is_bot"))

    def json(self, nested: bool = True) -> dict[str, Any]:
        found: dict[str, Any] = {
            "message_id": self.message_id,
            "from": self.sender,
            "chat": self.chat,
            "date": self.date,
            "text": self.text,
        }
        if self.entities:
            found["entities"] = self.entities
        if self.topic is not None:
            found["message_thread_id"] = self.topic
            found["is_topic_message"] = True
        if self.reply_to is not None and nested:
            # Telegram: the replied-to message carries no reply_to_message of its own.
            found["reply_to_message"] = self.reply_to.json(nested=False)
        if self.edits:
            found["edit_date"] = self.date
        return found


def _units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


class FakeTelegram:
    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.webhook: dict[str, Any] | None = None
        self.last_update: dict[str, Any] = {}
        self._updates: list[dict[str, Any]] = []
        self._ids = itertools.count(1000)
        self._chats: dict[int, list[Message]] = {}
        self._chat_info: dict[int, dict[str, Any]] = {}
        self._next_message: dict[int, Iterator[int]] = {}
        self._failures = 0
        self._changed = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeTelegram:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                raw = self.rfile.read(length)
                kind = self.headers.get("content-type", "")
                if "json" in kind:
                    params = json.loads(raw or b"{}")
                else:
                    params = dict(parse_qsl(raw.decode()))
                status, answer = fake._call(urlparse(self.path).path, params)
                self._send(status, json.dumps(answer).encode(), "application/json")

            def do_GET(self) -> None:
                path = urlparse(self.path).path
                if path.startswith("/_chat/"):
                    page = fake.render(int(path.rsplit("/", 1)[1])).encode()
                    self._send(200, page, "text/html; charset=utf-8")
                    return
                status, answer = fake._call(path, dict(parse_qsl(urlparse(self.path).query)))
                self._send(status, json.dumps(answer).encode(), "application/json")

            def _send(self, status: int, body: bytes, kind: str) -> None:
                try:
                    self.send_response(status)
                    self.send_header("content-type", kind)
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a long poll cancelled)

            def log_message(self, *_: Any) -> None:
                pass

        ThreadingHTTPServer.daemon_threads = True
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        with self._changed:
            self._changed.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # --- the Bot API -------------------------------------------------------------------------

    def _call(self, path: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        prefix, _, method = path.lstrip("/").partition("/")
        if prefix != f"bot{self.token}":
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        with self._changed:
            self.requests.append((method, params))
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            return 404, {"ok": False, "error_code": 404, "description": "Not Found"}
        try:
            return 200, {"ok": True, "result": handler(params)}
        except _Refused as e:
            return e.code, {"ok": False, "error_code": e.code, "description": e.description}

    def _m_getMe(self, params: dict[str, Any]) -> Any:
        return {**BOT, "can_join_groups": True, "can_read_all_group_messages": False}

    def _m_deleteWebhook(self, params: dict[str, Any]) -> Any:
        self.webhook = None
        return True

    def _m_setWebhook(self, params: dict[str, Any]) -> Any:
        self.webhook = dict(params)
        return True

    def _m_getUpdates(self, params: dict[str, Any]) -> Any:
        if self.webhook is not None:
            raise _Refused(409, "Conflict: can't use getUpdates method while webhook is active")
        offset = int(params.get("offset") or 0)
        timeout = float(params.get("timeout") or 0)
        deadline = time.monotonic() + timeout
        with self._changed:
            if self._failures:
                self._failures -= 1
                raise _Refused(502, "Bad Gateway")
            if offset:
                self._updates = [u for u in self._updates if u["update_id"] >= offset]
            while True:
                ready = [u for u in self._updates if u["update_id"] >= offset]
                left = deadline - time.monotonic()
                if ready or left <= 0 or self._server is None:
                    return ready[:100]
                self._changed.wait(min(left, 0.5))

    def _m_sendMessage(self, params: dict[str, Any]) -> Any:
        chat = int(params["chat_id"])
        if chat not in self._chat_info:
            raise _Refused(400, "Bad Request: chat not found")
        reply = params.get("reply_parameters") or {}
        if isinstance(reply, str):
            reply = json.loads(reply)
        text = str(params.get("text") or "")
        if not text.strip():
            raise _Refused(400, "Bad Request: message text is empty")
        if _units(text) > 4096:
            raise _Refused(400, "Bad Request: message is too long")
        with self._changed:
            replied = self._find(chat, reply.get("message_id")) if reply else None
            message = self._add(
                chat, BOT, text, reply_to=replied, topic=params.get("message_thread_id")
            )
        return message.json()

    def _m_editMessageText(self, params: dict[str, Any]) -> Any:
        chat = int(params["chat_id"])
        with self._changed:
            message = self._find(chat, params.get("message_id"))
            if message is None or not message.from_bot:
                raise _Refused(400, "Bad Request: message to edit not found")
            text = str(params.get("text") or "")
            if text == message.text:
                raise _Refused(
                    400,
                    "Bad Request: message is not modified: specified new message content and "
                    "reply markup are exactly the same as a current content and reply markup "
                    "of the message",
                )
            message.text = text
            message.edits += 1
            return message.json()

    # --- the users ---------------------------------------------------------------------------

    def dm(self, user: User, text: str, *, reply_to: Message | None = None) -> Message:
        """``user`` writes to the bot in their private chat."""
        chat = {"id": user.id, "type": "private", "first_name": user.first_name}
        chat.update(username=user.username)
        return self.post(chat, user, text, reply_to=reply_to)

    def group(
        self,
        chat_id: int,
        user: User,
        text: str,
        *,
        mention: bool = False,
        reply_to: Message | None = None,
        topic: int | None = None,
        title: str = "Team",
    ) -> Message:
        """``user`` writes in the group ``chat_id`` (a negative id), ``@telecoder_bot `` first
        when ``mention``."""
        chat = {"id": chat_id, "type": "supergroup", "title": title}
        if topic is not None:
            chat["is_forum"] = True
        said = f"@{BOT_USERNAME} {text}" if mention else text
        return self.post(chat, user, said, reply_to=reply_to, topic=topic)

    def post(
        self,
        chat: dict[str, Any],
        user: User,
        text: str,
        *,
        reply_to: Message | None = None,
        topic: int | None = None,
    ) -> Message:
        entities = []
        at = text.find(f"@{BOT_USERNAME}")
        if at >= 0 and not text.startswith("/"):
            offset = _units(text[:at])
            entities.append({"type": "mention", "offset": offset, "length": 1 + len(BOT_USERNAME)})
        if text.startswith("/"):
            entities.append({"type": "bot_command", "offset": 0, "length": _units(text.split()[0])})
        with self._changed:
            self._chat_info.setdefault(chat["id"], chat)
            message = self._add(chat["id"], user.json(), text, reply_to=reply_to, topic=topic)
            message.entities = entities
            self.last_update = self.push_update({"message": message.json()})
        return message

    def delete(self, chat: int, message_id: int) -> None:
        """A user deletes a message (the bot's, in a group, by an admin)."""
        with self._changed:
            self._chats[chat] = [m for m in self._chats[chat] if m.message_id != message_id]

    def push_update(self, body: dict[str, Any]) -> dict[str, Any]:
        """Queue an update (``update_id`` added); returns it."""
        with self._changed:
            update = {"update_id": next(self._ids), **body}
            self._updates.append(update)
            self._changed.notify_all()
        return update

    def fail_updates(self, times: int) -> None:
        with self._changed:
            self._failures = times

    def _add(
        self,
        chat: int,
        sender: dict[str, Any],
        text: str,
        *,
        reply_to: Message | None = None,
        topic: Any = None,
    ) -> Message:
        ids = self._next_message.setdefault(chat, itertools.count(1))
        message = Message(
            chat=self._chat_info[chat],
            message_id=next(ids),
            sender=sender,
            text=text,
            date=int(time.time()),
            reply_to=reply_to,
            topic=int(topic) if topic is not None else None,
        )
        self._chats.setdefault(chat, []).append(message)
        self._changed.notify_all()
        return message

    def _find(self, chat: int, message_id: Any) -> Message | None:
        if message_id is None:
            return None
        return next((m for m in self._chats.get(chat, []) if m.message_id == int(message_id)), None)

    # --- what a test reads -------------------------------------------------------------------

    def messages(self, chat: int) -> list[Message]:
        with self._changed:
            return list(self._chats.get(chat, []))

    def bot_messages(self, chat: int) -> list[Message]:
        return [m for m in self.messages(chat) if m.from_bot]

    def called(self, method: str) -> list[dict[str, Any]]:
        with self._changed:
            return [params for name, params in self.requests if name == method]

    def render(self, chat: int) -> str:
        """The chat as a page, in Telegram's colours."""
        info = self._chat_info.get(chat, {"title": str(chat)})
        title = info.get("title") or info.get("first_name") or str(chat)
        rows = []
        for m in self.messages(chat):
            who = "bot" if m.from_bot else "user"
            name = m.sender.get("first_name", "")
            quote = ""
            if m.reply_to is not None:
                first = m.reply_to.text.splitlines()[0] if m.reply_to.text else ""
                quote = (
                    f'<div class="quote"><b>{html.escape(m.reply_to.sender.get("first_name", ""))}'
                    f"</b><br>{html.escape(first[:80])}</div>"
                )
            edited = '<span class="edited">edited</span>' if m.edits else ""
            stamp = time.strftime("%H:%M", time.gmtime(m.date))
            rows.append(
                f'<div class="row {who}"><div class="bubble"><div class="name">'
                f'{html.escape(name)}</div>{quote}<div class="text">{html.escape(m.text)}</div>'
                f'<div class="meta">{edited} {stamp}</div></div></div>'
            )
        return PAGE.format(title=html.escape(str(title)), rows="\n".join(rows))


class _Refused(Exception):
    def __init__(self, code: int, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ margin: 0; font: 15px/1.4 -apple-system, "Segoe UI", Roboto, sans-serif;
  background: #99ba92; }}
header {{ background: #517da2; color: #fff; padding: 12px 18px; font-weight: 600; }}
header small {{ display: block; font-weight: 400; opacity: .8; }}
main {{ padding: 14px 18px; display: flex; flex-direction: column; gap: 8px; }}
.row {{ display: flex; }}
.row.bot {{ justify-content: flex-start; }}
.row.user {{ justify-content: flex-end; }}
.bubble {{ max-width: 72%; padding: 6px 10px 4px; border-radius: 12px;
  box-shadow: 0 1px 1px rgba(0,0,0,.15); }}
.bot .bubble {{ background: #fff; border-bottom-left-radius: 4px; }}
.user .bubble {{ background: #effdde; border-bottom-right-radius: 4px; }}
.name {{ color: #3a8ac4; font-weight: 600; font-size: 13px; }}
.user .name {{ color: #4fae4e; }}
.quote {{ border-left: 3px solid #3a8ac4; padding-left: 6px; margin: 3px 0; font-size: 13px;
  color: #555; }}
.text {{ white-space: pre-wrap; word-wrap: break-word; }}
.meta {{ text-align: right; font-size: 11px; color: #8a9a8a; }}
.edited {{ font-style: italic; }}
</style></head>
<body><header>{title}<small>TeleCoder bot</small></header>
<main>
{rows}
</main></body></html>
"""


@pytest.fixture
def fake_telegram() -> Iterator[FakeTelegram]:
    with FakeTelegram() as server:
        yield server
