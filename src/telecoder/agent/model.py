"""The chat client: one non-streaming request a turn, to an OpenAI-compatible server or Ollama.

``--model ollama/NAME`` speaks Ollama's native API (``POST {OLLAMA_HOST}/api/chat``); any other
name speaks OpenAI Chat Completions (``POST {OPENAI_BASE_URL}/chat/completions``, the key from
``OPENAI_API_KEY``). With TeleCoder's gateway on, those variables name the gateway and the
session's key, so usage and cost are metered there.

The conversation is kept in the OpenAI shape (``tool_calls`` with JSON-string arguments, ``tool``
messages with ``tool_call_id``); Ollama's messages are converted on the way out and in.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

OLLAMA_PREFIX = "ollama/"
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_OLLAMA_HOST = "http://127.0.0.1:11434"
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})


class ModelError(Exception):
    """The model API failed for good (after retries); ``str(e)`` says how."""


class ToolsRejected(ModelError):
    """The server refused the ``tools`` field: the model must write its calls as text."""


class OutOfTime(ModelError):
    """The run's wall clock ran out while waiting for the model."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    message: dict[str, Any]  # OpenAI shape: role, content, tool_calls (maybe)
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(slots=True, kw_only=True)
class Client:
    """A model by name, at the endpoint the environment names."""

    model: str
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 600.0
    retries: int = 3
    backoff: float = 1.0  # seconds before the first retry, doubled after each

    @property
    def ollama(self) -> bool:
        return self.model.startswith(OLLAMA_PREFIX)

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: list[dict[str, Any]] | None,
        deadline: float | None = None,
    ) -> Answer:
        """One completion; ``tools`` None sends none (text mode). ``deadline`` (``time.monotonic``):
        no request or retry outlives it (``OutOfTime``)."""
        if self.ollama:
            url, headers, body = self._ollama_request(messages, tools)
        else:
            url, headers, body = self._openai_request(messages, tools)
        data = self._post(url, headers, body, tools=tools is not None, deadline=deadline)
        return _ollama_answer(data) if self.ollama else _openai_answer(data)

    def _openai_request(
        self, messages: Sequence[Mapping[str, Any]], tools: list[dict[str, Any]] | None
    ) -> tuple[str, dict[str, str], dict[str, Any]]:
        base = (self.env.get("OPENAI_BASE_URL") or DEFAULT_OPENAI_BASE_URL).rstrip("/")
        headers = {"content-type": "application/json"}
        if key := self.env.get("OPENAI_API_KEY"):
            headers["authorization"] = f"Bearer {key}"
        body: dict[str, Any] = {"model": self.model, "messages": list(messages), "stream": False}
        if tools is not None:
            body["tools"] = tools
        return f"{base}/chat/completions", headers, body

    def _ollama_request(
        self, messages: Sequence[Mapping[str, Any]], tools: list[dict[str, Any]] | None
    ) -> tuple[str, dict[str, str], dict[str, Any]]:
        host = (self.env.get("OLLAMA_HOST") or DEFAULT_OLLAMA_HOST).rstrip("/")
        if "://" not in host:
            host = f"http://{host}"
        body: dict[str, Any] = {
            "model": self.model.removeprefix(OLLAMA_PREFIX),
            "messages": [_to_ollama(m) for m in messages],
            "stream": False,
        }
        if tools is not None:
            body["tools"] = tools
        return f"{host}/api/chat", {"content-type": "application/json"}, body

    def _post(
        self,
        url: str,
        headers: dict[str, str],
        body: dict[str, Any],
        *,
        tools: bool,
        deadline: float | None,
    ) -> dict[str, Any]:
        """The answer's JSON; retries what may pass (429, 5xx, a dropped connection)."""
        wait = self.backoff
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            timeout = self.timeout
            if deadline is not None:
                timeout = min(timeout, deadline - time.monotonic())
                if timeout <= 0:
                    raise OutOfTime("no time was left for the model's answer")
            try:
                response = httpx.post(url, headers=headers, json=body, timeout=timeout)
            except httpx.HTTPError as e:
                if deadline is not None and time.monotonic() >= deadline:
                    raise OutOfTime("no time was left for the model's answer") from None
                if last:
                    raise ModelError(f"cannot reach the model at {_where(url)}: {e}") from None
            else:
                status = response.status_code
                if status < 400:
                    try:
                        data = response.json()
                    except ValueError:
                        raise ModelError(f"the model answered no JSON ({status})") from None
                    if isinstance(data, dict):
                        return data
                    raise ModelError("the model answered JSON that is no object")
                detail = _error_text(response)
                if status == 400 and tools and "tool" in detail.lower():
                    raise ToolsRejected(f"the server refuses tools: {detail}")
                if status not in RETRY_STATUSES or last:
                    raise ModelError(f"HTTP {status} from {_where(url)}: {detail}")
                wait = max(wait, _retry_after(response))
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - time.monotonic()))
            time.sleep(wait)
            wait *= 2
        raise AssertionError("unreachable")  # the last attempt returned or raised


def _where(url: str) -> str:
    """The URL without its path's key (Ollama's gateway URL carries the session's key)."""
    parts = httpx.URL(url)
    return (
        f"{parts.scheme}://{parts.host}:{parts.port}"
        if parts.port
        else f"{parts.scheme}://{parts.host}"
    )


def _error_text(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:500]
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error)[:500]
    return str(error or data)[:500]


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(30.0, float(response.headers.get("retry-after") or 0))
    except ValueError:
        return 0.0


def _openai_answer(data: Mapping[str, Any]) -> Answer:
    choices = data.get("choices") or []
    if not choices or not isinstance(choices[0], Mapping):
        raise ModelError(f"the model's answer has no choices: {str(data)[:300]}")
    raw = choices[0].get("message") or {}
    message: dict[str, Any] = {"role": "assistant", "content": raw.get("content") or ""}
    if raw.get("tool_calls"):
        message["tool_calls"] = list(raw["tool_calls"])
    if reasoning := raw.get("reasoning_content") or raw.get("reasoning"):
        message["reasoning_content"] = reasoning  # vLLM, DeepSeek, LM Studio: shown, not sent
    usage = data.get("usage") or {}
    return Answer(
        message=message,
        input_tokens=_int(usage.get("prompt_tokens")),
        output_tokens=_int(usage.get("completion_tokens")),
    )


def _ollama_answer(data: Mapping[str, Any]) -> Answer:
    raw = data.get("message") or {}
    message: dict[str, Any] = {"role": "assistant", "content": raw.get("content") or ""}
    calls = []
    for n, call in enumerate(raw.get("tool_calls") or []):
        fn = call.get("function") or {}
        arguments = fn.get("arguments")
        text = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
        call_id = str(call.get("id") or f"call_{int(time.time() * 1000)}_{n}")
        calls.append(
            {
                "id": call_id,
                "type": "function",
                "function": {"name": fn.get("name"), "arguments": text},
            }
        )
    if calls:
        message["tool_calls"] = calls
    if raw.get("thinking"):
        message["reasoning_content"] = raw["thinking"]
    return Answer(
        message=message,
        input_tokens=_int(data.get("prompt_eval_count")),
        output_tokens=_int(data.get("eval_count")),
    )


def _to_ollama(message: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI-shaped message as Ollama reads it: arguments as objects, no ids."""
    out: dict[str, Any] = {"role": message["role"], "content": message.get("content") or ""}
    calls = []
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        try:
            arguments = json.loads(fn.get("arguments") or "{}")
        except ValueError:
            arguments = {}
        calls.append({"function": {"name": fn.get("name"), "arguments": arguments}})
    if calls:
        out["tool_calls"] = calls
    return out


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0
