"""A fake Slack on 127.0.0.1: the Web API methods TeleCoder calls, Socket Mode, and a user's side.

Web API (``{url}/api/{method}``, Bearer tokens checked, answers ``{"ok": …}`` as Slack does):
``chat.postMessage``, ``chat.update``, ``conversations.replies`` (message metadata only with
``include_all_metadata``), ``conversations.open``, ``auth.test``, ``apps.connections.open`` (with
the app-level token: a one-use websocket URL). Messages are recorded per channel, with their
threads and every edit; ``limited`` makes a method's next calls answer 429 with
``Retry-After`` as Slack's rate limits do. The websocket (Socket Mode) sends ``hello``, then
the envelopes a test pushes with ``push_event``, and records the acks.

The user's side: ``message`` records what a person writes and returns the Events API envelope
Slack would send about it; ``signed`` signs a body as Slack does (v0, HMAC-SHA256 of
``v0:{timestamp}:{body}``). ``GET /_thread/{channel}/{ts}`` renders a thread as HTML (for the
README's screenshot).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from websockets.sync.server import Server, ServerConnection, serve

BOT_TOKEN = "xoxb-fake-bot-token-0123456789"
APP_TOKEN = "xapp-1-fake-app-token-0123456789"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_USER = "U0TELECODER"
BOT_ID = "B0TELECODER"
TEAM = "T0ACME"


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    user: str | None = None  # a person; None: TeleCoder (the bot)
    thread_ts: str | None = None
    blocks: list[Any] = field(default_factory=list)
    metadata: dict[str, Any] | None = None
    edits: list[str] = field(default_factory=list)  # earlier texts, oldest first
    files: list[str] = field(default_factory=list)

    @property
    def from_bot(self) -> bool:
        return self.user is None

    @property
    def shown(self) -> str:
        """The text and the blocks' texts, as a person reads the message."""
        parts = [self.text, *_block_texts(self.blocks)]
        return "\n".join(parts)

    def to_json(self, metadata: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {"type": "message", "ts": self.ts, "text": self.text}
        if self.user:
            data["user"] = self.user
        else:
            data.update(bot_id=BOT_ID, user=BOT_USER, app_id="A0TELECODER")
        if self.thread_ts:
            data["thread_ts"] = self.thread_ts
        if self.blocks:
            data["blocks"] = self.blocks
        if metadata and self.metadata:
            data["metadata"] = self.metadata
        return data


def _block_texts(blocks: list[Any]) -> Iterator[str]:
    for block in blocks:
        text = block.get("text")
        if isinstance(text, dict):
            yield str(text.get("text") or "")
        for element in block.get("elements") or []:
            inner = element.get("text")
            if isinstance(inner, dict):
                yield f"[{inner.get('text')}]"
            elif isinstance(inner, str):
                yield inner


def signature(secret: str, timestamp: str, body: bytes) -> str:
    base = f"v0:{timestamp}:".encode() + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


class FakeSlack:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []  # (method, arguments)
        self.acks: list[str] = []
        self.closed = 0  # Socket Mode connections the client closed
        self.sockets: list[ServerConnection] = []
        self._lock = threading.Lock()
        self._clock = itertools.count(1)
        self._events = itertools.count(1)
        self._tickets: set[str] = set()
        self._http: ThreadingHTTPServer | None = None
        self._ws: Server | None = None
        self.port = 0
        self.ws_port = 0
        self.names: dict[str, str] = {BOT_USER: "TeleCoder"}  # user id -> display name
        self.limited: dict[str, int] = {}  # method -> how many of its next calls answer 429
        self.retry_after = 1  # seconds, the Retry-After of those answers

    # --- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> FakeSlack:
        fake = self

        class Handler(_Handler):
            pass

        Handler.fake = fake
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._http.server_address[1]
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        self._ws = serve(self._socket, "127.0.0.1", 0)
        self.ws_port = self._ws.socket.getsockname()[1]
        threading.Thread(target=self._ws.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        if self._ws is not None:
            self._ws.shutdown()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    # --- what was said --------------------------------------------------------------------------

    def thread(self, channel: str, ts: str) -> list[Message]:
        with self._lock:
            return [
                m
                for m in self.messages
                if m.channel == channel and (m.ts == ts or m.thread_ts == ts)
            ]

    def bot_messages(self, channel: str | None = None) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if m.from_bot and channel in (None, m.channel)]

    def called(self, method: str) -> list[dict[str, Any]]:
        with self._lock:
            return [args for name, args in self.calls if name == method]

    # --- a person's side ------------------------------------------------------------------------

    def _ts(self) -> str:
        return f"{1_764_000_000 + next(self._clock)}.{next(self._clock):06d}"

    def message(
        self,
        channel: str,
        text: str,
        *,
        user: str = "U0ALICE",
        thread_ts: str | None = None,
        mention: bool = True,
        files: tuple[str, ...] = (),
    ) -> tuple[Message, dict[str, Any]]:
        """A person writes in ``channel`` (``D…``: a direct message): the message as stored and
        the Events API envelope Slack sends about it (an ``app_mention`` when it mentions the
        bot in a channel, else a ``message``)."""
        direct = channel.startswith("D")
        said = f"<@{BOT_USER}> {text}" if mention and not direct else text
        with self._lock:
            message = Message(
                channel=channel,
                ts=self._ts(),
                text=said,
                user=user,
                thread_ts=thread_ts,
                files=list(files),
            )
            self.messages.append(message)
        event: dict[str, Any] = {
            "type": "app_mention" if mention and not direct else "message",
            "user": user,
            "text": said,
            "ts": message.ts,
            "channel": channel,
            "event_ts": message.ts,
        }
        if event["type"] == "message":
            event["channel_type"] = "im" if direct else "channel"
        if thread_ts:
            event["thread_ts"] = thread_ts
        if files:
            event["subtype"] = "file_share"
            event["files"] = [{"id": f"F{i}", "name": name} for i, name in enumerate(files)]
        return message, self.envelope(event)

    def envelope(self, event: dict[str, Any]) -> dict[str, Any]:
        return {
            "token": "deprecated-verification-token",
            "team_id": TEAM,
            "api_app_id": "A0TELECODER",
            "event": event,
            "type": "event_callback",
            "event_id": f"Ev{next(self._events):08d}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "team_id": TEAM,
                    "user_id": BOT_USER,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
        }

    def signed(
        self,
        body: bytes,
        *,
        secret: str = SIGNING_SECRET,
        timestamp: float | None = None,
        retry: int | None = None,
        content_type: str = "application/json",
    ) -> dict[str, str]:
        """The headers Slack sends with ``body``."""
        stamp = str(int(time.time() if timestamp is None else timestamp))
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": signature(secret, stamp, body),
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
        }
        if retry is not None:
            headers["X-Slack-Retry-Num"] = str(retry)
            headers["X-Slack-Retry-Reason"] = "http_timeout"
        return headers

    def click(self, message: Message, action_id: str, *, user: str = "U0ALICE") -> dict[str, Any]:
        """The interactivity payload of a click on ``message``'s button ``action_id``."""
        button = next(
            element
            for block in message.blocks
            if block.get("type") == "actions"
            for element in block["elements"]
            if element.get("action_id") == action_id
        )
        return {
            "type": "block_actions",
            "user": {"id": user, "username": user.lower(), "team_id": TEAM},
            "api_app_id": "A0TELECODER",
            "team": {"id": TEAM, "domain": "acme"},
            "container": {
                "type": "message",
                "message_ts": message.ts,
                "channel_id": message.channel,
                "is_ephemeral": False,
                "thread_ts": message.thread_ts,
            },
            "channel": {"id": message.channel, "name": "dev"},
            "message": message.to_json(),
            "trigger_id": "1.2.3",
            "response_url": f"{self.url}/actions/hook",
            "actions": [
                {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": "b1",
                    "text": button["text"],
                    "value": button["value"],
                    "action_ts": str(time.time()),
                }
            ],
        }

    # --- Socket Mode ----------------------------------------------------------------------------

    def _socket(self, connection: ServerConnection) -> None:
        ticket = dict(parse_qsl(urlsplit(connection.request.path).query)).get("ticket", "")
        with self._lock:
            if ticket not in self._tickets:
                connection.close(1008, "invalid ticket")
                return
            self._tickets.discard(ticket)  # one use
            self.sockets.append(connection)
        connection.send(json.dumps({"type": "hello", "num_connections": 1}))
        for frame in connection:
            data = json.loads(frame)
            with self._lock:
                self.acks.append(str(data.get("envelope_id")))
        with self._lock:
            self.closed += 1

    def push_event(self, envelope: dict[str, Any], retry_attempt: int = 0) -> str:
        """Send an Events API payload over the newest Socket Mode connection; its envelope id."""
        envelope_id = f"env-{envelope['event_id']}-{retry_attempt}"
        frame = {
            "envelope_id": envelope_id,
            "payload": envelope,
            "type": "events_api",
            "accepts_response_payload": False,
            "retry_attempt": retry_attempt,
            "retry_reason": "timeout" if retry_attempt else "",
        }
        with self._lock:
            connection = self.sockets[-1]
        connection.send(json.dumps(frame))
        return envelope_id

    def push_click(self, payload: dict[str, Any]) -> str:
        """Send an interactivity payload (a button click) over Socket Mode; its envelope id."""
        envelope_id = f"env-click-{next(self._events)}"
        frame = {"envelope_id": envelope_id, "payload": payload, "type": "interactive",
                 "accepts_response_payload": False}  # fmt: skip
        with self._lock:
            connection = self.sockets[-1]
        connection.send(json.dumps(frame))
        return envelope_id

    def disconnect(self) -> None:
        """Ask the client to reconnect, as Slack does before it closes a connection."""
        with self._lock:
            connection = self.sockets[-1]
        connection.send(json.dumps({"type": "disconnect", "reason": "refresh_requested"}))
        # Slack closes it a few seconds later; a client that heeds the notice has closed it by
        # then (closing here would block the caller's event loop on the close handshake).

    # --- the Web API ----------------------------------------------------------------------------

    def api(self, method: str, token: str | None, args: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.calls.append((method, args))
        if method == "apps.connections.open":
            if token != APP_TOKEN:
                return {"ok": False, "error": "invalid_auth"}
            ticket = f"t{next(self._events)}"
            with self._lock:
                self._tickets.add(ticket)
            return {"ok": True, "url": f"ws://127.0.0.1:{self.ws_port}/link/?ticket={ticket}"}
        if token != BOT_TOKEN:
            return {"ok": False, "error": "invalid_auth" if token else "not_authed"}
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        if handler is None:
            return {"ok": False, "error": "unknown_method"}
        return handler(args)  # type: ignore[no-any-return]

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "team_id": TEAM,
            "user_id": BOT_USER,
            "bot_id": BOT_ID,
            "user": "telecoder",
        }

    def _chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = args.get("channel")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not args.get("text") and not args.get("blocks"):
            return {"ok": False, "error": "no_text"}
        if any(len(b.get("text", {}).get("text", "")) > 3000 for b in args.get("blocks") or []):
            return {"ok": False, "error": "invalid_blocks"}
        with self._lock:
            message = Message(
                channel=str(channel),
                ts=self._ts(),
                text=str(args.get("text") or ""),
                thread_ts=args.get("thread_ts"),
                blocks=list(args.get("blocks") or []),
                metadata=args.get("metadata"),
            )
            self.messages.append(message)
        return {"ok": True, "channel": channel, "ts": message.ts, "message": message.to_json()}

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            found = next(
                (
                    m
                    for m in self.messages
                    if m.channel == args.get("channel") and m.ts == args.get("ts")
                ),
                None,
            )
            if found is None:
                return {"ok": False, "error": "message_not_found"}
            if not found.from_bot:
                return {"ok": False, "error": "cant_update_message"}
            found.edits.append(found.shown)
            found.text = str(args.get("text") or found.text)
            if "blocks" in args:
                found.blocks = list(args["blocks"] or [])
            if "metadata" in args:
                found.metadata = args["metadata"]
        return {"ok": True, "channel": found.channel, "ts": found.ts, "text": found.text}

    def _conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = args.get("channel"), args.get("ts")
        if not channel or not ts:
            return {"ok": False, "error": "invalid_arguments"}
        found = self.thread(str(channel), str(ts))
        if not found:
            return {"ok": False, "error": "thread_not_found"}
        metadata = str(args.get("include_all_metadata")).lower() in ("true", "1")
        limit = int(args.get("limit") or 1000)
        start = int(args.get("cursor") or 0)
        page = found[start : start + limit]
        more = start + limit < len(found)
        return {
            "ok": True,
            "messages": [m.to_json(metadata) for m in page],
            "has_more": more,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }

    def _conversations_open(self, args: dict[str, Any]) -> dict[str, Any]:
        users = str(args.get("users") or "")
        if not users.startswith("U"):
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "channel": {"id": "D" + users[1:]}}

    # --- the HTML view of a thread --------------------------------------------------------------

    def render(self, channel: str, ts: str) -> str:
        rows = []
        for m in self.thread(channel, ts):
            who = "TeleCoder" if m.from_bot else self.names.get(m.user or "", m.user or "?")
            avatar = (
                '<div class="avatar bot">TC</div>'
                if m.from_bot
                else (f'<div class="avatar">{html.escape(who[:1].upper())}</div>')
            )
            body = _blocks_html(m.blocks, self.names) if m.blocks else _mrkdwn(m.text, self.names)
            edited = ' <span class="edited">(edited)</span>' if m.edits else ""
            app = ' <span class="app">APP</span>' if m.from_bot else ""
            rows.append(
                f'<div class="msg">{avatar}<div class="content"><b>{html.escape(who)}</b>{app}'
                f'<span class="ts">{_clock(m.ts)}</span>{edited}<div class="body">{body}</div>'
                "</div></div>"
            )
            if m.ts == ts and len(rows) == 1:
                replies = len(self.thread(channel, ts)) - 1
                rows.append(f'<div class="replies">{replies} replies</div>')
        return _PAGE.format(channel=html.escape(channel), rows="\n".join(rows))


_TOKEN = re.compile(r"<([^<>]+)>")


def _mrkdwn(text: str, names: dict[str, str]) -> str:
    """Slack mrkdwn as HTML: links, mentions, *bold*, `code`, line breaks."""
    out, last = [], 0
    for found in _TOKEN.finditer(text):
        out.append(_inline(text[last : found.start()]))
        target, _, label = found.group(1).partition("|")
        if target.startswith("@"):
            out.append(
                f'<span class="mention">@{html.escape(names.get(target[1:], target[1:]))}</span>'
            )
        else:
            shown = html.escape(label or target)
            out.append(f'<a href="{html.escape(target)}">{shown}</a>')
        last = found.end()
    out.append(_inline(text[last:]))
    return "".join(out).replace("\n", "<br>")


def _inline(text: str) -> str:
    text = html.escape(html.unescape(text), quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*([^*\n]+)\*", r"<b>\1</b>", text)


def _blocks_html(blocks: list[Any], names: dict[str, str]) -> str:
    parts = []
    for block in blocks:
        if block.get("type") == "section":
            parts.append(f'<div class="section">{_mrkdwn(block["text"]["text"], names)}</div>')
        elif block.get("type") == "context":
            texts = " ".join(_mrkdwn(e.get("text", ""), names) for e in block["elements"])
            parts.append(f'<div class="context">{texts}</div>')
        elif block.get("type") == "actions":
            buttons = "".join(
                f'<span class="button {e.get("style", "")}">{html.escape(e["text"]["text"])}</span>'
                for e in block["elements"]
            )
            parts.append(f"<div>{buttons}</div>")
    return "".join(parts)


def _clock(ts: str) -> str:
    seconds = int(float(ts)) % 86_400
    return f"{9 + seconds // 3600 % 12}:{seconds // 60 % 60:02d} AM"


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>#{channel}</title><style>
body {{ font: 15px/1.46 Lato, 'Helvetica Neue', Arial, 'Noto Color Emoji', sans-serif; margin: 0;
  color: #1d1c1d; background: #fff; }}
header {{ padding: 14px 20px; border-bottom: 1px solid #e2e2e2; font-weight: 900;
  font-size: 18px; }}
header span {{ color: #616061; font-weight: 400; font-size: 14px; margin-left: 8px; }}
.msg {{ display: flex; gap: 10px; padding: 8px 20px; }}
.avatar {{ width: 36px; height: 36px; border-radius: 6px; background: #e8912d; color: #fff;
  font-weight: 900; display: flex; align-items: center; justify-content: center; flex: none; }}
.avatar.bot {{ background: #4a154b; font-size: 13px; }}
.content {{ min-width: 0; }}
.ts, .edited {{ color: #616061; font-size: 12px; margin-left: 8px; }}
.app {{ background: #e8e8e8; color: #616061; font-size: 10px; font-weight: 700; padding: 1px 3px;
  border-radius: 2px; margin-left: 4px; }}
.section {{ margin: 2px 0 6px; }}
.context {{ color: #616061; font-size: 13px; }}
.replies {{ margin: 4px 20px 4px 66px; padding-bottom: 8px; border-bottom: 1px solid #e2e2e2;
  color: #1264a3; font-size: 13px; font-weight: 700; }}
.mention {{ background: #e8f5fa; color: #1264a3; border-radius: 3px; padding: 0 2px; }}
a {{ color: #1264a3; text-decoration: none; }}
code {{ font: 12px Monaco, Menlo, monospace; color: #e01e5a; background: #f6f6f6;
  border: 1px solid #ddd; border-radius: 3px; padding: 0 3px; }}
.button {{ display: inline-block; border: 1px solid #bbb; border-radius: 4px; padding: 3px 12px;
  margin: 4px 8px 0 0; font-weight: 700; font-size: 13px; }}
.button.danger {{ color: #e01e5a; }}
</style></head><body><header>Thread <span>#{channel}</span></header>
{rows}
</body></html>"""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeSlack

    def log_message(self, *_: Any) -> None:
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path.startswith("/_thread/"):
            _, _, channel, ts = parts.path.split("/", 3)
            self._send(200, self.fake.render(channel, ts).encode(), "text/html; charset=utf-8")
            return
        self._api(parts.path, dict(parse_qsl(parts.query)))

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        kind = self.headers.get("Content-Type", "")
        if kind.startswith("application/json"):
            args = json.loads(raw) if raw else {}
        else:
            args = dict(parse_qsl(raw.decode()))
        self._api(parts.path, {**dict(parse_qsl(parts.query)), **args})

    def _api(self, path: str, args: dict[str, Any]) -> None:
        if not path.startswith("/api/"):
            self._send(404, b"not found", "text/plain")
            return
        method = path.removeprefix("/api/")
        with self.fake._lock:
            limited = self.fake.limited.get(method, 0) > 0
            if limited:
                self.fake.limited[method] -= 1
                self.fake.calls.append((method + " (rate limited)", args))
        if limited:  # as Slack does: HTTP 429 with Retry-After, the call not made
            self.send_response(429)
            self.send_header("Retry-After", str(self.fake.retry_after))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        auth = self.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else args.get("token")
        answer = self.fake.api(path.removeprefix("/api/"), token, args)
        self._send(200, json.dumps(answer).encode(), "application/json; charset=utf-8")

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    with FakeSlack() as server:
        yield server
