"""The ``claude-code`` engine: ``claude -p --output-format stream-json --verbose``.

The prompt goes on stdin (then closed), so no prompt can be mistaken for a flag. Claude's state
lives in the engine home (``HOME`` and ``CLAUDE_CONFIG_DIR``), so ``--resume`` finds the session
again from the same worktree. ``IS_SANDBOX=1`` lets ``--dangerously-skip-permissions`` run as
root. Endpoint and key: ``ANTHROPIC_BASE_URL`` / ``ANTHROPIC_API_KEY`` (or
``ANTHROPIC_AUTH_TOKEN``) from the operator's environment.

Output (SDK messages, one JSON object a line): ``system/init`` carries the session id;
``assistant`` lines carry one content block each (text, thinking, tool_use); ``user`` lines carry
tool results; ``result`` ends the run. Success is a ``result`` with ``is_error: false`` — an
HTTP error from the model arrives as ``subtype: "success"`` with ``is_error: true`` and
``api_error_status``. Cost is Claude's own ``total_cost_usd`` (cumulative: the latest wins).

Qwen Code prints the same format; ``StreamJsonParser`` serves both.
"""

from __future__ import annotations

import re
from typing import Any

from telecoder.domain import FailureKind
from telecoder.engines import _support as s
from telecoder.protocols import AgentEvent, EngineCommand, EngineOutcome, EngineTask, Feed, Stream

_API_ERROR = re.compile(r"^\[?API Error\b")


class ClaudeCodeEngine:
    name = "claude-code"
    binary = "claude"
    variables = s.ANTHROPIC_VARS

    def command(self, task: EngineTask) -> EngineCommand:
        argv = [
            s.find_binary(self.binary, task.env),
            "--print",
            "--output-format",
            "stream-json",
            "--verbose",
            "--dangerously-skip-permissions",
        ]
        if task.model:
            argv += ["--model", task.model]
        if task.resume_id:
            argv += ["--resume", task.resume_id]
        env = {
            **s.pick(task.env, s.ANTHROPIC_VARS),
            "HOME": str(task.home),
            "CLAUDE_CONFIG_DIR": str(task.home / ".claude"),
            "IS_SANDBOX": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "CLAUDE_CODE_MAX_RETRIES": str(s.model_retries(task.env)),
        }
        return EngineCommand(argv=argv, env=env, stdin=task.prompt.encode())

    def parser(self, task: EngineTask) -> StreamJsonParser:
        return StreamJsonParser("claude", task.model, session_id=task.resume_id)


class StreamJsonParser:
    """Claude Code's stream-json (also Qwen Code's)."""

    def __init__(self, cli: str, model: str | None, session_id: str | None = None) -> None:
        self._tally = s.Tally(model)
        self._verdict = s.Verdict(cli)
        self._session_id = session_id
        self._api_error: str | None = None

    def feed(self, stream: Stream, line: str) -> Feed:
        if stream == "stderr":
            return s.stderr_feed(self._verdict, line)
        obj = s.loads(line)
        if obj is None:
            return s.stdout_text_feed(line)
        if isinstance(obj.get("session_id"), str):
            self._session_id = obj["session_id"]
        kind = obj.get("type")
        if kind == "assistant":
            return Feed(events=self._assistant(obj))
        if kind == "user":
            return Feed(events=self._user(obj))
        if kind == "result":
            return Feed(events=self._result(obj))
        if kind == "system" and obj.get("subtype") == "init" and obj.get("model"):
            self._tally.model = self._tally.model or str(obj["model"])
        if kind == "system" and obj.get("subtype") == "api_retry":
            status = obj.get("error_status")
            text = f"retrying the model API (attempt {obj.get('attempt')}, HTTP {status})"
            return Feed(events=[s.output_event("stdout", text, raw=True)])
        return s.NOTHING

    def _assistant(self, obj: dict[str, Any]) -> list[AgentEvent]:
        msg = obj.get("message") or {}
        events: list[AgentEvent] = []
        for block in msg.get("content") or []:
            kind = block.get("type")
            if kind == "text" and block.get("text"):
                text = str(block["text"])
                if _API_ERROR.match(text):  # Claude's synthetic message, Qwen's "[API Error: …]"
                    self._api_error = text
                    events.append(s.error_event(text))
                else:
                    events.append(s.message(text))
            elif kind == "thinking" and block.get("thinking"):
                events.append(s.thinking(str(block["thinking"])))
            elif kind == "tool_use":
                events.append(
                    s.tool_call(str(block.get("id")), str(block.get("name")), block.get("input"))
                )
        return events

    def _user(self, obj: dict[str, Any]) -> list[AgentEvent]:
        content = (obj.get("message") or {}).get("content")
        if not isinstance(content, list):
            return []
        return [
            s.tool_result(
                str(block.get("tool_use_id")),
                not block.get("is_error"),
                s.text_of(block.get("content")),
            )
            for block in content
            if isinstance(block, dict) and block.get("type") == "tool_result"
        ]

    def _result(self, obj: dict[str, Any]) -> list[AgentEvent]:
        usage = obj.get("usage") or {}
        cache_read = s.as_int(usage.get("cache_read_input_tokens"))
        cache_write = s.as_int(usage.get("cache_creation_input_tokens"))
        self._tally.set(
            s.as_int(usage.get("input_tokens")) + cache_read + cache_write,
            s.as_int(usage.get("output_tokens")),
            cache_read,
        )
        if obj.get("total_cost_usd") is not None:
            self._tally.reported_cost = float(obj["total_cost_usd"])
        events = [self._tally.event()]
        text = str(obj.get("result") or "")
        if not obj.get("is_error"):
            self._verdict.succeed(text)
            return [*events, s.result_event(text)]
        errors = [str(e) for e in obj.get("errors") or []]
        error = obj.get("error")
        if isinstance(error, dict) and error.get("message"):
            errors.append(str(error["message"]))
        status = obj.get("api_error_status")
        detail = "; ".join(dict.fromkeys(p for p in [text, *errors] if p)) or str(
            obj.get("subtype")
        )
        model_failed = status is not None or "API Error" in detail or bool(self._api_error)
        if status is not None and str(status) not in detail:
            detail = f"HTTP {status}: {detail}"
        if model_failed:
            self._verdict.model_failed(f"{detail}")
        else:
            self._verdict.fail(FailureKind.ENGINE_ERROR, f"{self._verdict.cli} failed: {detail}")
        return [*events, s.error_event(detail, fatal=True)]

    def finish(self, exit_code: int | None) -> EngineOutcome:
        if not self._verdict.decided and self._api_error:
            self._verdict.model_failed(f"{self._api_error}")
        usage = self._tally.usage() if self._tally.seen else None
        return self._verdict.outcome(exit_code, session_id=self._session_id, usage=usage)
