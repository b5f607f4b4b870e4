"""What the agent-CLI engines share: finding binaries, normalised events, usage, failures.

Event shapes (the same for every engine):

- ``message`` ``{"text"}``: a complete assistant message (never token deltas);
- ``thinking`` ``{"text"}``;
- ``tool_call`` ``{"id", "name", "input"}``: input with long strings cut (a few KB at most);
- ``tool_result`` ``{"id", "ok", "output"}``: an excerpt of the output (head and tail);
- ``usage`` ``{"input_tokens", "output_tokens", "cached_tokens", "cost_usd"}``: running totals
  of this run so far, so the last one equals the outcome's usage. ``input_tokens`` counts all
  input tokens, cached ones included; ``cached_tokens`` is the part read from a cache;
  ``cost_usd`` is the CLI's own figure where it reports one, else from ``prices``, else null
  (with the model gateway on, the pipeline records the gateway's usage events instead: the
  session's running totals as metered, marked ``"source": "gateway"``);
- ``error`` ``{"message", ...}``: something the agent reported as wrong, fatal or not;
- ``result`` ``{"text"}``: the final answer, once, when the run succeeded;
- ``output`` ``{"stream", "text"}``: a line that is none of the above, kept for debugging:
  every stderr line and every stdout line that is not JSON; JSON lines an engine does not map
  are not events (the few worth showing, such as retry notices, carry ``"raw": true``) but stay
  in the attempt's raw log (``telecoder.rawlog``) with every other line.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import deque
from collections.abc import Mapping
from typing import Any

from telecoder.domain import EventKind, FailureKind
from telecoder.engines.prices import cost_usd
from telecoder.protocols import AgentEvent, EngineOutcome, Feed, Stream, Usage

AGENT_PATH_VAR = "TELECODER_AGENT_PATH"
RETRIES_VAR = "TELECODER_MODEL_RETRIES"
TEXT_LIMIT = 4000
INPUT_STRING_LIMIT = 1000
STDERR_TAIL_LINES = 30
STDERR_TAIL_CHARS = 3000
NOTHING = Feed()

# Endpoint and key variables each vendor's CLI reads; passed through when the operator sets them.
ANTHROPIC_VARS = ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")
OPENAI_VARS = ("OPENAI_BASE_URL", "OPENAI_API_KEY")
GEMINI_VARS = ("GOOGLE_GEMINI_BASE_URL", "GEMINI_API_KEY", "GOOGLE_API_KEY")
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"


def find_binary(name: str, env: Mapping[str, str]) -> str:
    """The absolute path of ``name``, looked up in ``$TELECODER_AGENT_PATH`` then ``$PATH`` of
    ``env`` (the operator's environment); the bare name when it is nowhere, so starting it fails
    with a clear "not found"."""
    dirs = [env.get(AGENT_PATH_VAR, ""), env.get("PATH", "")]
    search = os.pathsep.join(part for part in dirs if part)
    return shutil.which(name, path=search or None) or name


def model_retries(env: Mapping[str, str]) -> int:
    """How often a CLI may retry a failed model request (``TELECODER_MODEL_RETRIES``, default
    2): CLIs left to their defaults back off for minutes before admitting the model is down."""
    try:
        return max(0, int(env.get(RETRIES_VAR, "2")))
    except ValueError:
        return 2


def pick(env: Mapping[str, str], names: tuple[str, ...]) -> dict[str, str]:
    return {name: env[name] for name in names if env.get(name)}


def loads(line: str) -> dict[str, Any] | None:
    """The JSON object on ``line``, or None for anything else."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def excerpt(text: str, limit: int = TEXT_LIMIT) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n… [{len(text) - limit} characters cut] …\n{text[-half:]}"


def summarise(value: Any, depth: int = 0) -> Any:
    """``value`` (a tool's input) with long strings and lists cut, for an event."""
    if isinstance(value, str):
        return excerpt(value, INPUT_STRING_LIMIT)
    if depth > 4:
        return "…"
    if isinstance(value, Mapping):
        return {str(k): summarise(v, depth + 1) for k, v in list(value.items())[:50]}
    if isinstance(value, list | tuple):
        return [summarise(v, depth + 1) for v in value[:50]]
    return value


def text_of(content: Any) -> str:
    """The text in a content value: a string, a list of blocks, or a block with text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part for part in (text_of(c) for c in content) if part)
    if isinstance(content, Mapping):
        for key in ("text", "content", "output"):
            if key in content:
                return text_of(content[key])
        return ""
    return str(content)


# --- events ------------------------------------------------------------------------------------


def message(text: str) -> AgentEvent:
    return AgentEvent(kind=EventKind.MESSAGE, data={"text": text})


def thinking(text: str) -> AgentEvent:
    return AgentEvent(kind=EventKind.THINKING, data={"text": text})


def tool_call(call_id: str, name: str, tool_input: Any) -> AgentEvent:
    data = {"id": call_id, "name": name, "input": summarise(tool_input)}
    return AgentEvent(kind=EventKind.TOOL_CALL, data=data)


def tool_result(call_id: str, ok: bool, output: str) -> AgentEvent:
    data = {"id": call_id, "ok": ok, "output": excerpt(output)}
    return AgentEvent(kind=EventKind.TOOL_RESULT, data=data)


def usage_event(usage: Usage) -> AgentEvent:
    data = {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cached_tokens": usage.cached_tokens,
        "cost_usd": usage.cost_usd,
    }
    return AgentEvent(kind=EventKind.USAGE, data=data)


def error_event(text: str, **extra: object) -> AgentEvent:
    return AgentEvent(kind=EventKind.ERROR, data={"message": excerpt(text), **extra})


def warning_event(text: str, **extra: object) -> AgentEvent:
    """Something the CLI warned of that does not fail the run (shown as a warning)."""
    return AgentEvent(kind=EventKind.WARNING, data={"message": excerpt(text), **extra})


def result_event(text: str) -> AgentEvent:
    return AgentEvent(kind=EventKind.RESULT, data={"text": text})


def output_event(stream: Stream, text: str, raw: bool = False) -> AgentEvent:
    data: dict[str, object] = {"stream": stream, "text": excerpt(text, 2000)}
    if raw:
        data["raw"] = True
    return AgentEvent(kind=EventKind.OUTPUT, data=data)


# --- state a parser keeps ----------------------------------------------------------------------


class Tally:
    """Running token totals of one run; cost from the CLI when it reports one, else priced."""

    def __init__(self, model: str | None) -> None:
        self.model = model
        self.input_tokens = 0
        self.output_tokens = 0
        self.cached_tokens = 0
        self.reported_cost: float | None = None
        self.seen = False

    def add(self, input_tokens: int, output_tokens: int, cached: int = 0) -> None:
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.cached_tokens += cached
        self.seen = True

    def set(self, input_tokens: int, output_tokens: int, cached: int = 0) -> None:
        self.input_tokens, self.output_tokens, self.cached_tokens = (
            input_tokens,
            output_tokens,
            cached,
        )
        self.seen = True

    def add_cost(self, cost: float | None) -> None:
        if cost is not None:
            self.reported_cost = (self.reported_cost or 0.0) + float(cost)

    def usage(self) -> Usage:
        cost = self.reported_cost
        if cost is None or (cost == 0 and self.input_tokens + self.output_tokens):
            priced = cost_usd(self.model, self.input_tokens, self.output_tokens, self.cached_tokens)
            cost = priced if priced is not None else cost
        return Usage(
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cached_tokens=self.cached_tokens,
            cost_usd=cost,
        )

    def event(self) -> AgentEvent:
        return usage_event(self.usage())


class StderrTail:
    """The last lines a CLI wrote to stderr, for error messages."""

    def __init__(self) -> None:
        self._lines: deque[str] = deque(maxlen=STDERR_TAIL_LINES)

    def add(self, line: str) -> None:
        if line.strip():
            self._lines.append(line)

    def text(self) -> str:
        return "\n".join(self._lines)[-STDERR_TAIL_CHARS:]


def as_int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


class Verdict:
    """How a run ended, as its terminal event said; the outcome is built at the very end, so the
    error carries every stderr line, even those printed after the terminal event."""

    def __init__(self, cli: str) -> None:
        self.cli = cli
        self.stderr = StderrTail()
        self.ok: bool | None = None
        self.text: str | None = None
        self.failure: tuple[FailureKind, str] | None = None

    @property
    def decided(self) -> bool:
        return self.ok is not None

    def succeed(self, text: str | None) -> None:
        self.ok, self.text, self.failure = True, text, None

    def fail(self, kind: FailureKind, error: str) -> None:
        self.ok, self.failure = False, (kind, error)

    def model_failed(self, detail: str) -> None:
        self.fail(FailureKind.MODEL_ERROR, f"the model API failed: {detail}")

    def outcome(
        self, exit_code: int | None, *, session_id: str | None = None, usage: Usage | None = None
    ) -> EngineOutcome:
        if self.ok:
            return EngineOutcome(ok=True, text=self.text, session_id=session_id, usage=usage)
        if self.failure is None:
            status = "was stopped" if exit_code is None else f"exited with status {exit_code}"
            self.failure = (
                FailureKind.ENGINE_ERROR,
                f"{self.cli} {status} without reporting a final result",
            )
        kind, error = self.failure
        tail = self.stderr.text()
        if tail:
            error += f"\n--- {self.cli} stderr (last lines) ---\n{tail}"
        return EngineOutcome(
            ok=False,
            text=self.text,
            session_id=session_id,
            usage=usage,
            failure_kind=kind,
            error=error,
        )


def stderr_feed(verdict: Verdict, line: str) -> Feed:
    """Every stderr line is kept for the error message and recorded as ``output``."""
    verdict.stderr.add(line)
    return Feed(events=[output_event("stderr", line)]) if line.strip() else NOTHING


def stdout_text_feed(line: str) -> Feed:
    """A stdout line that is not JSON: kept as ``output``."""
    return Feed(events=[output_event("stdout", line)]) if line.strip() else NOTHING
