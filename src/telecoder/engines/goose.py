"""The ``goose`` engine: ``goose run --output-format stream-json``.

Goose is not installable from a package registry here, so this engine is built from its
documentation and source (``goose run``'s ``StreamEvent``), and its parser is tested on the
documented lines. Endpoint and key: Goose's ``openai`` provider with ``OPENAI_HOST`` (the bare
origin of ``OPENAI_BASE_URL``), ``OPENAI_BASE_PATH`` (the rest of it plus
``/chat/completions``) and ``OPENAI_API_KEY``; ``GOOSE_MODE=auto`` approves every tool.
The session is named after the engine home, so a resume finds it (``--resume --name``).

Output (one JSON event a line): ``message`` (a goose ``Message``: ``text``, ``thinking``,
``toolRequest`` and ``toolResponse`` content), ``notification`` (extension logs),
``error``, and ``complete`` with token totals and, when known, ``cost_usd``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from telecoder.domain import FailureKind
from telecoder.engines import _support as s
from telecoder.protocols import AgentEvent, EngineCommand, EngineOutcome, EngineTask, Feed, Stream

_MODEL_HINTS = ("status", "api", "provider", "request failed", "rate limit", "unauthorized")


def session_name(task: EngineTask) -> str:
    return f"telecoder-{task.home.name}"


class GooseEngine:
    name = "goose"
    binary = "goose"
    variables = s.OPENAI_VARS

    def command(self, task: EngineTask) -> EngineCommand:
        name = task.resume_id or session_name(task)
        argv = [
            s.find_binary(self.binary, task.env),
            "run",
            "--output-format",
            "stream-json",
            "--with-builtin",
            "developer",
            "--name",
            name,
        ]
        if task.resume_id:
            argv.append("--resume")
        argv += ["--instructions", "-"]
        base = urlsplit(task.env.get("OPENAI_BASE_URL") or s.DEFAULT_OPENAI_BASE_URL)
        env = {
            **s.pick(task.env, s.OPENAI_VARS),
            "HOME": str(task.home),
            "GOOSE_MODE": "auto",
            "GOOSE_PROVIDER": "openai",
            "GOOSE_DISABLE_KEYRING": "1",
            "OPENAI_HOST": f"{base.scheme}://{base.netloc}",
            "OPENAI_BASE_PATH": f"{base.path.strip('/')}/chat/completions".lstrip("/"),
        }
        if task.model:
            env["GOOSE_MODEL"] = task.model
        return EngineCommand(argv=argv, env=env, stdin=task.prompt.encode())

    def parser(self, task: EngineTask) -> GooseParser:
        return GooseParser(task.model, session_id=task.resume_id or session_name(task))


class GooseParser:
    def __init__(self, model: str | None, session_id: str) -> None:
        self._tally = s.Tally(model)
        self._verdict = s.Verdict("goose")
        self._session_id = session_id
        self._last_text: str | None = None
        self._error: str | None = None

    def feed(self, stream: Stream, line: str) -> Feed:
        if stream == "stderr":
            return s.stderr_feed(self._verdict, line)
        obj = s.loads(line)
        if obj is None:
            return s.stdout_text_feed(line)
        kind = obj.get("type")
        if kind == "message":
            return Feed(events=self._message(obj.get("message") or {}))
        if kind == "error":
            self._error = s.text_of(obj.get("error")) or "unknown error"
            return Feed(events=[s.error_event(self._error, fatal=True)])
        if kind == "complete":
            return Feed(events=self._complete(obj))
        return s.NOTHING

    def _message(self, msg: dict[str, Any]) -> list[AgentEvent]:
        events: list[AgentEvent] = []
        for item in msg.get("content") or []:
            kind = item.get("type")
            if kind == "text" and item.get("text") and msg.get("role") == "assistant":
                self._last_text = str(item["text"])
                events.append(s.message(self._last_text))
            elif kind == "thinking" and item.get("thinking"):
                events.append(s.thinking(str(item["thinking"])))
            elif kind == "toolRequest":
                call = item.get("toolCall") or {}
                value = call.get("value") or {}
                name = str(value.get("name") or "tool")
                events.append(s.tool_call(str(item.get("id")), name, value.get("arguments")))
            elif kind == "toolResponse":
                result = item.get("toolResult") or {}
                value = result.get("value")
                ok = result.get("status") == "success"
                if isinstance(value, dict):
                    ok = ok and not value.get("isError")
                    value = value.get("content")
                output = s.text_of(value if ok else result.get("error") or value)
                events.append(s.tool_result(str(item.get("id")), ok, output))
        return events

    def _complete(self, obj: dict[str, Any]) -> list[AgentEvent]:
        read = s.as_int(obj.get("cache_read_input_tokens"))
        self._tally.set(s.as_int(obj.get("input_tokens")), s.as_int(obj.get("output_tokens")), read)
        if obj.get("cost_usd") is not None:
            self._tally.reported_cost = float(obj["cost_usd"])
        events = [self._tally.event()]
        if self._error is None:
            self._verdict.succeed(self._last_text)
            events.append(s.result_event(self._last_text or ""))
        return events

    def finish(self, exit_code: int | None) -> EngineOutcome:
        if self._error is not None:
            lowered = self._error.lower()
            if any(hint in lowered for hint in _MODEL_HINTS):
                self._verdict.model_failed(self._error)
            else:
                self._verdict.fail(FailureKind.ENGINE_ERROR, f"goose failed: {self._error}")
        usage = self._tally.usage() if self._tally.seen else None
        return self._verdict.outcome(exit_code, session_id=self._session_id, usage=usage)
