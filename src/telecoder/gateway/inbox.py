"""The agents' inbox on the gateway: ``/inbox/v1/…``, for an agent inside its sandbox.

The gateway is the one TeleCoder endpoint a sandbox reaches, and it knows each attempt's key;
so an agent's ``telecoder-inbox`` tool talks to it, with ``Authorization: Bearer <the attempt's
key>``. The key says whose agent is asking (its ticket's session); the agent reaches its own
thread and its own messages, nothing else — no other thread, no session API, no database:

    POST /inbox/v1/post {"body": "…"}         a note in its thread        → {"id", "thread"}
    POST /inbox/v1/ask {"question": "…"}      a question to its leader    → {"id", "thread", "to"}
    GET  /inbox/v1/answer?id=N&wait=S         the answer to its question N, waiting up to S s
                                              (bounded)                   → {"id", "answer"}
    GET  /inbox/v1/messages                   the messages to it it has not seen → {"messages"}

An unknown or revoked key is a 401; bad JSON a 400, a missing or empty field a 422, a body past
``MAX_REQUEST`` bytes a 413; errors are ``{"error": {"code", "message"}}``. Who and where is
``agentinbox.place_of``. A question is told in the session's events ("asked the leader: …") and
remembered on the ticket, so the attempt ends ``blocked`` if it is still open then.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from telecoder import agentinbox
from telecoder.errors import BadInput, MessageNotFound
from telecoder.gateway.http import Reply, Request
from telecoder.gateway.tickets import Ticket, Tickets

if TYPE_CHECKING:
    from telecoder.store import Store

PREFIX = "/inbox/v1"
MAX_REQUEST = 64 * 1024  # bytes of a request body
MAX_WAIT = 300.0  # seconds an answer is waited for in one request
POLL = 0.25  # seconds between looks for an answer
METHODS = {"/post": "POST", "/ask": "POST", "/answer": "GET", "/messages": "GET"}
_JSON = [(b"content-type", b"application/json")]


def is_inbox(target: str) -> bool:
    path = target.split("?", 1)[0]
    return path == PREFIX or path.startswith(PREFIX + "/")


class InboxAPI:
    def __init__(
        self, tickets: Tickets, store: Store | None, *, max_wait: float = MAX_WAIT
    ) -> None:
        self.tickets = tickets
        self.store = store
        self.max_wait = max_wait

    async def handle(self, request: Request, reply: Reply) -> None:
        url = urlsplit(request.target)
        path = url.path.removeprefix(PREFIX)
        handler = {
            "/post": self._post,
            "/ask": self._ask,
            "/answer": self._answer,
            "/messages": self._messages,
        }.get(path)
        ticket = self.tickets.get(_bearer(request))
        if ticket is None:
            message = "unknown or revoked inbox token: it is valid only while its attempt runs"
            return await _error(reply, 401, "unauthorized", message)
        if handler is None:
            return await _error(reply, 404, "not_found", f"no {url.path} here")
        if request.method != METHODS[path]:
            message = f"{url.path} takes {METHODS[path]}, not {request.method}"
            return await _error(reply, 405, "method_not_allowed", message)
        if self.store is None:
            return await _error(reply, 503, "unavailable", "this gateway has no inbox")
        if len(request.body) > MAX_REQUEST:
            return await _error(reply, 413, "too_large", f"at most {MAX_REQUEST} bytes")
        try:
            status, body = await handler(ticket, self.store, request, parse_qs(url.query))
        except BadInput as e:
            return await _error(reply, 422, "bad_input", e.message)
        except MessageNotFound as e:
            return await _error(reply, 404, "not_found", e.message)
        except _BadJSON as e:
            return await _error(reply, 400, "bad_json", str(e))
        await reply.whole(status, _JSON, json.dumps(body).encode())

    async def _post(
        self, ticket: Ticket, store: Store, request: Request, _: dict[str, list[str]]
    ) -> tuple[int, dict[str, Any]]:
        place = await agentinbox.place_of(store, ticket.session_id)
        message = await agentinbox.post(store, place, _field(request, "body"))
        return 201, {"id": message.id, "thread": message.thread}

    async def _ask(
        self, ticket: Ticket, store: Store, request: Request, _: dict[str, list[str]]
    ) -> tuple[int, dict[str, Any]]:
        place = await agentinbox.place_of(store, ticket.session_id)
        message = await agentinbox.ask(store, place, _field(request, "question"))
        ticket.asked.append(message.id)
        whom = "the leader" if place.leader else "for help"
        ticket.tell(
            "progress",
            {
                "step": "asked",
                "message": f"asked {whom}: {_short(message.body)}",
                "message_id": message.id,
                "to": place.leader,
                "thread": place.thread,
            },
        )
        return 201, {"id": message.id, "thread": message.thread, "to": place.leader}

    async def _answer(
        self, ticket: Ticket, store: Store, _: Request, query: dict[str, list[str]]
    ) -> tuple[int, dict[str, Any]]:
        message_id = _number(query, "id", whole=True)
        wait = min(max(_number(query, "wait", default=0.0), 0.0), self.max_wait)
        place = await agentinbox.place_of(store, ticket.session_id)
        question = await agentinbox.own_question(store, place, int(message_id))
        deadline = time.monotonic() + wait
        while True:
            found = await agentinbox.answer_of(store, place, question)
            left = deadline - time.monotonic()
            if found is not None or left <= 0 or ticket.revoked:
                break
            await asyncio.sleep(min(POLL, left))
        return 200, {"id": question.id, "answer": found.to_dict() if found else None}

    async def _messages(
        self, ticket: Ticket, store: Store, _: Request, __: dict[str, list[str]]
    ) -> tuple[int, dict[str, Any]]:
        found = await store.inbox.fetch(agentinbox.agent_of(ticket.session_id))
        return 200, {"messages": [m.to_dict() for m in found]}


class _BadJSON(Exception):
    pass


def _bearer(request: Request) -> str | None:
    value = request.header("authorization") or ""
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _field(request: Request, name: str) -> object:
    try:
        payload = json.loads(request.body or b"")
    except (ValueError, UnicodeDecodeError) as e:
        raise _BadJSON(f"the request body is not JSON: {e}") from None
    if not isinstance(payload, dict):
        raise _BadJSON('the request body is not a JSON object (send {"' + name + '": "…"})')
    if name not in payload:
        raise BadInput(f"the request has no {name!r}")
    return payload[name]


def _number(
    query: dict[str, list[str]], name: str, *, default: float | None = None, whole: bool = False
) -> float:
    values = query.get(name)
    if not values:
        if default is None:
            raise BadInput(f"the request has no {name!r}")
        return default
    try:
        value = int(values[0]) if whole else float(values[0])
    except ValueError:
        raise BadInput(f"{name} is not a number: {values[0]!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise BadInput(f"{name} is not a number: {values[0]!r}")
    return value


def _short(text: str, width: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


async def _error(reply: Reply, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await reply.whole(status, _JSON, body)
