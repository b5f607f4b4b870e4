"""The ``pi`` engine: ``pi -p --mode json``, resumed with ``--session ID``.

The engine writes ``models.json`` into ``PI_CODING_AGENT_DIR`` (in its home) with one provider,
``telecoder``: the OpenAI Chat Completions API (``openai-completions``) at ``OPENAI_BASE_URL``
(default ``https://api.openai.com/v1``), key read from ``OPENAI_API_KEY``. A model without a
slash runs on that provider; ``provider/model`` is passed to Pi as it is. ``PI_OFFLINE=1``.
Pi has no approval prompts, so nothing needs auto-approving. The prompt goes on stdin.

Output (one JSON event a line): a ``session`` header (the id to resume), then agent events:
``message_end`` (a whole message: assistant text, thinking, usage and cost, ``stopReason``),
``tool_execution_start`` / ``tool_execution_end``, ``auto_retry_start``, ``agent_end``. Pi exits
0 even when the model failed: the failure is ``stopReason: "error"`` with ``errorMessage`` on the
last assistant message. Success: ``agent_end`` and no such message.
"""

from __future__ import annotations

import json
from typing import Any

from telecoder.domain import FailureKind
from telecoder.engines import _support as s
from telecoder.protocols import AgentEvent, EngineCommand, EngineOutcome, EngineTask, Feed, Stream

PROVIDER = "telecoder"


class PiEngine:
    name = "pi"
    binary = "pi"
    variables = s.OPENAI_VARS

    def command(self, task: EngineTask) -> EngineCommand:
        base_url = task.env.get("OPENAI_BASE_URL") or s.DEFAULT_OPENAI_BASE_URL
        provider: dict[str, Any] = {
            "baseUrl": base_url.rstrip("/"),
            "api": "openai-completions",
            "apiKey": "OPENAI_API_KEY",  # the name of the variable that holds the key
            "compat": {"supportsDeveloperRole": False, "supportsReasoningEffort": False},
            "models": [],
        }
        argv = [s.find_binary(self.binary, task.env), "--print", "--mode", "json"]
        if task.model and "/" not in task.model:
            provider["models"].append({"id": task.model})
            argv += ["--provider", PROVIDER, "--model", task.model]
        elif task.model:
            argv += ["--model", task.model]
        if task.resume_id:
            argv += ["--session", task.resume_id]
        argv += ["--no-extensions"]
        agent_dir = ".pi/agent"
        env = {
            **s.pick(task.env, (*s.OPENAI_VARS, *s.ANTHROPIC_VARS, *s.GEMINI_VARS)),
            "HOME": str(task.home),
            "PI_CODING_AGENT_DIR": str(task.home / agent_dir),
            "PI_OFFLINE": "1",
            "PI_TELEMETRY": "0",
        }
        models = {"providers": {PROVIDER: provider}}
        settings = {"retry": {"maxRetries": s.model_retries(task.env)}}
        return EngineCommand(
            argv=argv,
            env=env,
            files={
                f"{agent_dir}/models.json": json.dumps(models, indent=2),
                f"{agent_dir}/settings.json": json.dumps(settings, indent=2),
            },
            stdin=task.prompt.encode(),  # Pi takes piped stdin as the prompt (it has no ``--``)
        )

    def parser(self, task: EngineTask) -> PiParser:
        return PiParser(task.model, session_id=task.resume_id)


class PiParser:
    def __init__(self, model: str | None, session_id: str | None = None) -> None:
        self._tally = s.Tally(model)
        self._verdict = s.Verdict("pi")
        self._session_id = session_id
        self._last_text: str | None = None
        self._model_error: str | None = None

    def feed(self, stream: Stream, line: str) -> Feed:
        if stream == "stderr":
            return s.stderr_feed(self._verdict, line)
        obj = s.loads(line)
        if obj is None:
            return s.stdout_text_feed(line)
        kind = obj.get("type")
        if kind == "session":
            self._session_id = str(obj.get("id") or self._session_id)
            return s.NOTHING
        if kind == "message_end":
            return Feed(events=self._message_end(obj.get("message") or {}))
        if kind == "tool_execution_start":
            call = s.tool_call(
                str(obj.get("toolCallId")), str(obj.get("toolName")), obj.get("args")
            )
            return Feed(events=[call])
        if kind == "tool_execution_end":
            output = s.text_of((obj.get("result") or {}).get("content"))
            result = s.tool_result(str(obj.get("toolCallId")), not obj.get("isError"), output)
            return Feed(events=[result])
        if kind == "auto_retry_start":
            text = (
                f"retrying the model API (attempt {obj.get('attempt')}): {obj.get('errorMessage')}"
            )
            return Feed(events=[s.output_event("stdout", text, raw=True)])
        if kind == "agent_end":
            if self._model_error is not None:
                self._verdict.model_failed(f"{self._model_error}")
                return s.NOTHING
            self._verdict.succeed(self._last_text)
            return Feed(events=[s.result_event(self._last_text or "")])
        return s.NOTHING

    def _message_end(self, msg: dict[str, Any]) -> list[AgentEvent]:
        if msg.get("role") != "assistant":
            return []
        events: list[AgentEvent] = []
        texts: list[str] = []
        for block in msg.get("content") or []:
            if block.get("type") == "text" and block.get("text"):
                texts.append(str(block["text"]))
            elif block.get("type") == "thinking" and block.get("thinking"):
                events.append(s.thinking(str(block["thinking"])))
        if texts:
            self._last_text = "\n".join(texts)
            events.append(s.message(self._last_text))
        usage = msg.get("usage") or {}
        read = s.as_int(usage.get("cacheRead"))
        write = s.as_int(usage.get("cacheWrite"))
        input_tokens = s.as_int(usage.get("input")) + read + write
        if input_tokens or usage.get("output"):
            self._tally.add(input_tokens, s.as_int(usage.get("output")), read)
            self._tally.add_cost((usage.get("cost") or {}).get("total"))
            events.append(self._tally.event())
        if msg.get("stopReason") == "error":
            self._model_error = str(msg.get("errorMessage") or "unknown error")
            events.append(s.error_event(self._model_error, fatal=True))
        elif msg.get("stopReason") == "aborted":
            self._verdict.fail(FailureKind.ENGINE_ERROR, "pi aborted the run")
        else:
            self._model_error = None  # a retry that succeeded
        return events

    def finish(self, exit_code: int | None) -> EngineOutcome:
        if not self._verdict.decided and self._model_error is not None:
            self._verdict.model_failed(f"{self._model_error}")
        usage = self._tally.usage() if self._tally.seen else None
        return self._verdict.outcome(exit_code, session_id=self._session_id, usage=usage)
