"""The model APIs the gateway serves, and how a key travels in each.

Each kind of endpoint has a path prefix at the gateway, so each vendor variable an agent gets
names its own base URL (``ANTHROPIC_BASE_URL=http://127.0.0.1:PORT/anthropic``, …):

=========  ================  ===============================================================
kind       prefix            model requests (metered; everything else is forwarded unmetered)
=========  ================  ===============================================================
anthropic  ``/anthropic``    ``POST /v1/messages`` (``anthropic``)
openai     ``/openai/v1``    ``POST /chat/completions`` (``openai-chat``), ``POST /responses``
                             (``openai-responses``); ``/models`` and the rest unmetered
gemini     ``/gemini``       ``POST …/models/M:generateContent`` and ``…:streamGenerateContent``
                             (``gemini``)
ollama     ``/ollama``       ``POST /api/chat``, ``POST /api/generate`` (``ollama``); also at
                             the root (``/api/…``) for clients that drop a base path
=========  ================  ===============================================================

What follows the prefix is appended to the upstream's base URL. An agent may present its key as
``x-api-key``, ``Authorization: Bearer``, ``x-goog-api-key``, ``?key=`` or (Ollama, whose clients
send no key) as the first path segment after ``/ollama``; every one of those places is emptied
before the request goes upstream with the real key.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class Kind(enum.StrEnum):
    """What an endpoint speaks (``endpoints.kind``)."""

    ANTHROPIC = "anthropic"
    OPENAI = "openai"
    GEMINI = "gemini"
    OLLAMA = "ollama"


# API names (the ``usage.api`` column, ``meter_for``, routing).
ANTHROPIC = "anthropic"
OPENAI_CHAT = "openai-chat"
OPENAI_RESPONSES = "openai-responses"
GEMINI = "gemini"
OLLAMA = "ollama"

PREFIXES: Mapping[Kind, str] = {
    Kind.ANTHROPIC: "/anthropic",
    Kind.OPENAI: "/openai/v1",
    Kind.GEMINI: "/gemini",
    Kind.OLLAMA: "/ollama",
}
KEY_PREFIX = "tc-"  # every gateway key starts so
# Where an agent's key may travel: all emptied before a request goes upstream.
KEY_HEADERS = frozenset({"authorization", "x-api-key", "x-goog-api-key", "api-key"})

_GEMINI_MODEL = re.compile(r"/models/([^/:]+):(stream)?[gG]enerateContent$")


@dataclass(frozen=True, slots=True)
class Call:
    """One request to the gateway, as far as its path tells."""

    kind: Kind
    rest: str  # the path after the prefix: appended to the upstream's base URL
    query: str  # the query string, the agent's ``key=`` taken out
    api: str | None  # the API of a model request (metered); None: forwarded unmetered
    path_key: str | None = None  # a key given as a path segment (Ollama)

    def upstream_path(self) -> str:
        return f"{self.rest}?{self.query}" if self.query else self.rest


def parse(method: str, target: str) -> Call | None:
    """The call a request line's method and target make; None: no API of the gateway's."""
    path, _, query = target.partition("?")
    found = next((k for k, p in PREFIXES.items() if path == p or path.startswith(p + "/")), None)
    if found is not None:
        kind, rest = found, path[len(PREFIXES[found]) :]
    elif path.startswith("/api/"):
        kind, rest = Kind.OLLAMA, path
    else:
        return None
    path_key = None
    if kind == Kind.OLLAMA:
        first, _, after = rest.lstrip("/").partition("/")
        if first.startswith(KEY_PREFIX):
            path_key, rest = first, "/" + after
    return Call(kind, rest, query, _api(kind, method.upper(), rest), path_key)


def _api(kind: Kind, method: str, rest: str) -> str | None:
    if method != "POST":
        return None
    if kind == Kind.ANTHROPIC and rest.endswith("/v1/messages"):
        return ANTHROPIC
    if kind == Kind.OPENAI and rest == "/chat/completions":
        return OPENAI_CHAT
    if kind == Kind.OPENAI and rest == "/responses":
        return OPENAI_RESPONSES
    if kind == Kind.GEMINI and _GEMINI_MODEL.search(rest):
        return GEMINI
    if kind == Kind.OLLAMA and rest in ("/api/chat", "/api/generate"):
        return OLLAMA
    return None


def presented_key(call: Call, headers: Mapping[str, str]) -> str | None:
    """The key the agent presented (``headers`` with lower-case names), wherever it put it."""
    bearer = headers.get("authorization", "")
    scheme, _, token = bearer.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    for name in ("x-api-key", "x-goog-api-key", "api-key"):
        if headers.get(name):
            return headers[name].strip()
    for item in call.query.split("&"):
        name, _, value = item.partition("=")
        if name == "key" and value:
            return value
    return call.path_key


def without_key(query: str) -> str:
    """The query string without a ``key=`` parameter (Gemini's way to pass a key)."""
    if "key=" not in query:
        return query
    return "&".join(item for item in query.split("&") if item.partition("=")[0] != "key")


def request_model(call: Call, body: Mapping[str, Any] | None) -> str | None:
    """The model a request asks for: Gemini names it in the path, the others in the body."""
    if call.kind == Kind.GEMINI:
        found = _GEMINI_MODEL.search(call.rest)
        return found.group(1) if found else None
    model = body.get("model") if body is not None else None
    return model if isinstance(model, str) and model else None


def streamed(call: Call, body: Mapping[str, Any] | None) -> bool:
    """Whether the response to a model request streams (Ollama's do unless told not to)."""
    if call.api == GEMINI:
        return ":streamGenerateContent" in call.rest
    stream = body.get("stream") if body is not None else None
    if call.api == OLLAMA:
        return stream is not False
    return stream is True


# status -> (Anthropic error type, OpenAI error code, Gemini status)
_CODES: Mapping[int, tuple[str, str, str]] = {
    400: ("invalid_request_error", "invalid_request", "INVALID_ARGUMENT"),
    401: ("authentication_error", "invalid_api_key", "UNAUTHENTICATED"),
    402: ("billing_error", "budget_reached", "RESOURCE_EXHAUSTED"),
    404: ("not_found_error", "not_found", "NOT_FOUND"),
    413: ("request_too_large", "request_too_large", "INVALID_ARGUMENT"),
    502: ("api_error", "upstream_unreachable", "UNAVAILABLE"),
}


def error_body(kind: Kind, status: int, message: str) -> bytes:
    """An error in the shape the kind's clients read, so an agent CLI shows ``message``."""
    anthropic, openai, gemini = _CODES.get(status, ("api_error", "gateway_error", "INTERNAL"))
    payload: dict[str, Any]
    if kind == Kind.ANTHROPIC:
        payload = {"type": "error", "error": {"type": anthropic, "message": message}}
    elif kind == Kind.GEMINI:
        payload = {"error": {"code": status, "message": message, "status": gemini}}
    elif kind == Kind.OLLAMA:
        payload = {"error": message}
    else:
        payload = {"error": {"message": message, "type": openai, "code": openai}}
    return json.dumps(payload).encode()
