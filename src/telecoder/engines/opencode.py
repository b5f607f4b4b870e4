"""The ``opencode`` engine: ``opencode run --format json --auto``, resumed with ``--session ID``.

The prompt goes on stdin, which ``opencode run`` reads as the message when it is not a terminal:
an argument could be no longer than 128 KiB (Linux's limit on one argument).

The engine writes ``opencode.json`` into its home (named by ``OPENCODE_CONFIG``) with one
provider, ``telecoder``: ``@ai-sdk/openai-compatible`` at ``OPENAI_BASE_URL`` (default
``https://api.openai.com/v1``), key from ``OPENAI_API_KEY``. A model without a slash runs on
that provider (``telecoder/<model>``); ``provider/model`` is passed to OpenCode as it is.
``HOME`` is the engine home, so OpenCode's session database lives there too.

Output (one JSON event a line, each with ``sessionID``): ``text`` (a finished text part),
``reasoning``, ``tool_use`` (a finished tool call: input and output together), ``step_finish``
with tokens and cost (summed over steps; ``reason: "tool-calls"`` means another step follows),
``error`` (``APIError`` with ``statusCode`` from the model). Success: a last ``step_finish``
whose reason is not ``tool-calls``, and no ``error``.
"""

from __future__ import annotations

import json
from typing import Any

from telecoder.domain import FailureKind
from telecoder.engines import _support as s
from telecoder.protocols import AgentEvent, EngineCommand, EngineOutcome, EngineTask, Feed, Stream

PROVIDER = "telecoder"


def opencode_config(task: EngineTask) -> tuple[str | None, str]:
    """The model to ask for (``provider/model``) and the content of ``opencode.json``."""
    base_url = task.env.get("OPENAI_BASE_URL") or s.DEFAULT_OPENAI_BASE_URL
    models: dict[str, Any] = {}
    model = task.model
    if model and "/" not in model:
        models[model] = {"name": model, "tool_call": True}
        model = f"{PROVIDER}/{model}"
    config: dict[str, Any] = {
        "$schema": "https://opencode.ai/config.json",
        "autoupdate": False,
        "share": "disabled",
        "provider": {
            PROVIDER: {
                "npm": "@ai-sdk/openai-compatible",
                "name": "TeleCoder",
                "options": {"baseURL": base_url.rstrip("/"), "apiKey": "{env:OPENAI_API_KEY}"},
                "models": models,
            }
        },
    }
    if model:
        config["model"] = model
    return model, json.dumps(config, indent=2)


def opencode_env(task: EngineTask) -> dict[str, str]:
    return {
        **s.pick(task.env, (*s.OPENAI_VARS, *s.ANTHROPIC_VARS, *s.GEMINI_VARS)),
        "HOME": str(task.home),
        "OPENCODE_CONFIG": str(task.home / "opencode.json"),
        "OPENCODE_DISABLE_AUTOUPDATE": "1",
        "OPENCODE_DISABLE_MODELS_FETCH": "1",
        "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
    }


class OpenCodeEngine:
    name = "opencode"
    binary = "opencode"
    variables = s.OPENAI_VARS

    def command(self, task: EngineTask) -> EngineCommand:
        model, config = opencode_config(task)
        argv = [s.find_binary(self.binary, task.env), "run", "--format", "json", "--auto"]
        if model:
            argv += ["--model", model]
        if task.resume_id:
            argv += ["--session", task.resume_id]
        return EngineCommand(
            argv=argv,
            env=opencode_env(task),
            files={"opencode.json": config},
            stdin=task.prompt.encode(),
        )

    def parser(self, task: EngineTask) -> OpenCodeParser:
        return OpenCodeParser(task.model, session_id=task.resume_id)


class OpenCodeParser:
    def __init__(self, model: str | None, session_id: str | None = None) -> None:
        self._tally = s.Tally(model)
        self._verdict = s.Verdict("opencode")
        self._session_id = session_id
        self._last_text: str | None = None
        self._errored = False

    def feed(self, stream: Stream, line: str) -> Feed:
        if stream == "stderr":
            return s.stderr_feed(self._verdict, line)
        obj = s.loads(line)
        if obj is None:
            return s.stdout_text_feed(line)
        if isinstance(obj.get("sessionID"), str):
            self._session_id = obj["sessionID"]
        kind = obj.get("type")
        part = obj.get("part") or {}
        if kind == "text" and part.get("text"):
            self._last_text = str(part["text"])
            return Feed(events=[s.message(self._last_text)])
        if kind == "reasoning" and part.get("text"):
            return Feed(events=[s.thinking(str(part["text"]))])
        if kind == "tool_use":
            return Feed(events=self._tool(part))
        if kind == "step_finish":
            return Feed(events=self._step_finish(part))
        if kind == "error":
            return Feed(events=self._error(obj.get("error") or {}))
        return s.NOTHING

    def _tool(self, part: dict[str, Any]) -> list[AgentEvent]:
        state = part.get("state") or {}
        call_id = str(part.get("callID") or part.get("id"))
        ok = state.get("status") == "completed"
        output = state.get("output") if ok else state.get("error")
        return [
            s.tool_call(call_id, str(part.get("tool")), state.get("input")),
            s.tool_result(call_id, ok, s.text_of(output)),
        ]

    def _step_finish(self, part: dict[str, Any]) -> list[AgentEvent]:
        tokens = part.get("tokens") or {}
        cache = tokens.get("cache") or {}
        read = s.as_int(cache.get("read"))
        self._tally.add(s.as_int(tokens.get("input")) + read, s.as_int(tokens.get("output")), read)
        cost = part.get("cost")
        self._tally.add_cost(float(cost) if isinstance(cost, int | float) else None)
        events = [self._tally.event()]
        if part.get("reason") != "tool-calls" and not self._errored:
            self._verdict.succeed(self._last_text)
            events.append(s.result_event(self._last_text or ""))
        return events

    def _error(self, error: dict[str, Any]) -> list[AgentEvent]:
        self._errored = True
        data = error.get("data") or {}
        text = str(data.get("message") or error.get("name") or "unknown error")
        status = data.get("statusCode")
        if status is not None:
            text = f"HTTP {status}: {text}"
        if error.get("name") == "APIError" or status is not None:
            self._verdict.model_failed(f"{text}")
        else:
            self._verdict.fail(FailureKind.ENGINE_ERROR, f"opencode failed: {text}")
        return [s.error_event(text, fatal=True, name=error.get("name"))]

    def finish(self, exit_code: int | None) -> EngineOutcome:
        usage = self._tally.usage() if self._tally.seen else None
        return self._verdict.outcome(exit_code, session_id=self._session_id, usage=usage)
