"""What one model response used, read from its body as the bytes pass through the gateway.

Usage sits under one JSON key per API whatever the framing (SSE, NDJSON, a JSON array, one JSON
document), so a ``Meter`` neither splits lines nor parses events: it finds its keys with a plain
byte search and decodes only the value after a key. The rest of the body is dropped as it
passes, so memory stays bounded (a value still arriving is kept, up to ``VALUE_LIMIT`` bytes,
and read again each time the buffer doubles), and the cost per byte is a ``bytes.find`` per key.

- ``anthropic``: ``usage``, its counts merged (SSE: ``message_start``'s, then the cumulative
  ``message_delta``'s: a count never goes down); model ``model``.
- ``openai-chat``: ``usage`` (streamed: the final chunk, which ``prepare`` asks for; the chunks
  before say ``"usage": null``); model ``model``.
- ``openai-responses``: ``usage`` (streamed: ``response.completed``); model ``model``.
- ``gemini``: ``usageMetadata`` (streamed: the last chunk's); model ``modelVersion``.
- ``ollama``: ``prompt_eval_count`` and ``eval_count`` of the final object; model ``model``.

The last usage wins (every API writes it after the content), the first model name wins (every
API writes it before). A key in JSON text is ``"name"`` then ``:``; inside a JSON string its
quotes are escaped, so model output cannot fake one; a value that is not usage-shaped (a tool's
argument named ``usage``) is ignored. Input tokens are normalised to the fresh part: cache reads
and writes are counted apart.

The meter reads the body as the client gets it: the gateway must not let a compressed body
through (ask upstream for ``accept-encoding: identity``, or feed the decoded bytes).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

VALUE_LIMIT = 64 * 1024  # a usage object or model name longer than this is not one
_FIRST_TRY = 1024  # bytes decoded for a value at first; more only when it is longer
_COLON = re.compile(rb"[ \t\r\n]*:[ \t\r\n]*")
_SLACK = 64  # spaces a key may be followed by before its ':' and still be found across chunks
_DECODER = json.JSONDecoder()

APIS = ("anthropic", "openai-chat", "openai-responses", "gemini", "ollama")


@dataclass(frozen=True, slots=True)
class Metered:
    """What one response used: ``input_tokens`` is the fresh input only (cache reads and writes
    are counted apart), ``output_tokens`` includes reasoning."""

    model: str | None
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _has_int(obj: dict[str, Any], *keys: str) -> bool:
    return any(isinstance(obj.get(key), int) for key in keys)


def _details(obj: dict[str, Any], key: str) -> int:
    details = obj.get(key)
    return _int(details.get("cached_tokens")) if isinstance(details, dict) else 0


# --- per API: (usage key, merge fields?, normalise) --------------------------------------------


def _anthropic(u: dict[str, Any]) -> tuple[int, int, int, int] | None:
    if not _has_int(u, "input_tokens", "output_tokens"):
        return None
    return (
        _int(u.get("input_tokens")),
        _int(u.get("output_tokens")),
        _int(u.get("cache_read_input_tokens")),
        _int(u.get("cache_creation_input_tokens")),
    )


def _chat(u: dict[str, Any]) -> tuple[int, int, int, int] | None:
    if not _has_int(u, "prompt_tokens", "completion_tokens"):
        return None
    cached = _details(u, "prompt_tokens_details")
    prompt = _int(u.get("prompt_tokens"))
    return max(prompt - cached, 0), _int(u.get("completion_tokens")), min(cached, prompt), 0


def _responses(u: dict[str, Any]) -> tuple[int, int, int, int] | None:
    if not _has_int(u, "input_tokens", "output_tokens"):
        return None
    cached = _details(u, "input_tokens_details")
    prompt = _int(u.get("input_tokens"))
    return max(prompt - cached, 0), _int(u.get("output_tokens")), min(cached, prompt), 0


def _gemini(u: dict[str, Any]) -> tuple[int, int, int, int] | None:
    if not _has_int(u, "promptTokenCount", "candidatesTokenCount", "totalTokenCount"):
        return None
    prompt = _int(u.get("promptTokenCount")) + _int(u.get("toolUsePromptTokenCount"))
    cached = min(_int(u.get("cachedContentTokenCount")), prompt)
    output = _int(u.get("candidatesTokenCount")) + _int(u.get("thoughtsTokenCount"))
    return prompt - cached, output, cached, 0


def _cumulative(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Counts that only grow: a later event's zero or missing count keeps the earlier one."""
    merged = {**before, **after}
    for key, old in before.items():
        if isinstance(old, int) and not (isinstance(after.get(key), int) and after[key] > old):
            merged[key] = old
    return merged


_Normalise = Callable[[dict[str, Any]], tuple[int, int, int, int] | None]
_USAGE: dict[str, tuple[bytes, bool, _Normalise]] = {
    "anthropic": (b'"usage"', True, _anthropic),
    "openai-chat": (b'"usage"', False, _chat),
    "openai-responses": (b'"usage"', False, _responses),
    "gemini": (b'"usageMetadata"', False, _gemini),
}
_MODEL_KEY = {"gemini": b'"modelVersion"'}
_OLLAMA_IN = b'"prompt_eval_count"'
_OLLAMA_OUT = b'"eval_count"'


class Meter:
    """Reads one response's usage from its body bytes, fed in any chunks; never raises."""

    __slots__ = (
        "_api",
        "_broken",
        "_buf",
        "_fields",
        "_keys",
        "_model",
        "_model_key",
        "_overlap",
        "_request_model",
        "_retry_at",
        "_usage_key",
    )

    def __init__(self, api: str, *, request_model: str | None) -> None:
        self._api = api
        self._request_model = request_model
        self._model: str | None = None
        self._fields: dict[str, Any] = {}  # the usage object (merged) or Ollama's counts
        self._broken = False
        self._buf = bytearray()  # the overlap for a key cut in two, or a value still arriving
        self._retry_at = 0  # a value still arriving is read again once the buffer is this long
        self._model_key = _MODEL_KEY.get(api, b'"model"')
        self._usage_key = _USAGE[api][0] if api in _USAGE else None
        self._keys = [self._usage_key] if self._usage_key else [_OLLAMA_IN, _OLLAMA_OUT]
        self._overlap = max(len(k) for k in (*self._keys, self._model_key)) - 1
        if api not in APIS:
            self._broken = True  # not an API we meter: no usage

    def feed(self, chunk: bytes) -> None:
        if self._broken or not chunk:
            return
        try:
            self._buf += chunk
            if len(self._buf) >= self._retry_at:  # doubling: a value is read a few times at most
                self._scan(self._buf, final=False)
        except Exception:  # a meter must never break the response it reads
            self._broken, self._buf = True, bytearray()

    def _scan(self, buf: bytearray, *, final: bool) -> None:
        """Handle every key in ``buf`` in order; keep what a later chunk may complete."""
        keys = self._keys if self._model is not None else [self._model_key, *self._keys]
        found = [(buf.find(key), key) for key in keys]
        done = 0  # where the last value handled ends: never read twice
        while found:
            pos, key = min(found) if len(found) > 1 else found[0]
            if pos < 0:
                found = [entry for entry in found if entry[0] >= 0]
                continue
            end = self._value_at(buf, pos + len(key), key, final=final)
            if end is None:  # the value goes on in the next chunk
                if len(buf) - pos <= VALUE_LIMIT and not final:
                    self._buf = buf[pos:]
                    self._retry_at = 2 * len(self._buf) + 64
                    return
                end = pos + len(key)  # too long to be ours, or cut short: skip it
            done = end
            found.remove((pos, key))
            if key != self._model_key or self._model is None:  # the first model name wins
                found.append((buf.find(key, end), key))
        self._buf = buf[max(len(buf) - self._overlap, done) :]
        self._retry_at = 0

    def _value_at(self, buf: bytearray, start: int, key: bytes, *, final: bool) -> int | None:
        """Decode the value after ``key`` (ending at ``start``) and take it; where it ends, or
        ``None`` when the buffer ends first."""
        size = len(buf)
        colon = _COLON.match(buf, start)
        if colon is None:  # the name was a string value, not a key (or the buffer ends)
            return None if size - start < _SLACK and not buf[start:].strip() else start
        at = colon.end()
        if at >= size:
            return None
        if buf.startswith(b"null", at):  # OpenAI-like chunks say "usage": null until the last
            return at + 4
        window = _FIRST_TRY
        while True:
            text = buf[at : at + window].decode("utf-8", "surrogateescape")
            try:
                value, used = _DECODER.raw_decode(text)
            except ValueError:
                if at + window >= size:
                    return None if size - at < VALUE_LIMIT else at
                if window >= VALUE_LIMIT:
                    return at  # not a value of ours: move on
                window *= 4
                continue
            number = isinstance(value, int | float)
            if number and not final and used == len(text) and at + window >= size:
                return None  # a number at the end of the buffer may go on
            self._take(key, value)
            return at + len(text[:used].encode("utf-8", "surrogateescape"))

    def _take(self, key: bytes, value: Any) -> None:
        if key == self._model_key:
            if isinstance(value, str) and value and self._model is None:
                self._model = value
        elif key == self._usage_key:
            if isinstance(value, dict) and _USAGE[self._api][2](value) is not None:
                merge = _USAGE[self._api][1]
                self._fields = _cumulative(self._fields, value) if merge else value
        elif isinstance(value, int) and not isinstance(value, bool):
            self._fields[key.decode().strip('"')] = value

    def result(self) -> Metered | None:
        """What the response used; ``None`` when it carried no usage (or could not be read)."""
        if self._broken:
            return None
        try:
            if self._retry_at:  # the body ended while a value was still arriving
                self._scan(self._buf, final=True)
            if not self._fields:
                return None
            if self._usage_key is None:  # ollama
                counts = (
                    _int(self._fields.get("prompt_eval_count")),
                    _int(self._fields.get("eval_count")),
                    0,
                    0,
                )
            else:
                parsed = _USAGE[self._api][2](self._fields)
                if parsed is None:
                    return None
                counts = parsed
        except Exception:
            return None
        fresh, output, read, write = counts
        model = self._model or self._request_model
        return Metered(model, fresh, output, read, write)


def meter_for(api: str, *, streamed: bool, request_model: str | None) -> Meter:
    """A meter for one response of ``api`` (one of ``APIS``; any other gives ``None`` results).
    ``streamed`` is for the record: the keys are the same in a stream and in one JSON document."""
    return Meter(api, request_model=request_model)


def prepare(api: str, body: dict[str, Any]) -> dict[str, Any]:
    """The request body with what metering needs: a streamed OpenAI Chat request asks for the
    final usage chunk (``stream_options.include_usage``). Other bodies are returned as they are."""
    if api != "openai-chat" or body.get("stream") is not True:
        return body
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return body
    merged = {**options, "include_usage": True} if isinstance(options, dict) else {}
    return {**body, "stream_options": merged or {"include_usage": True}}
