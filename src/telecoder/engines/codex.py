"""The ``codex`` engine: ``codex exec --json``, resumed with ``codex exec resume ID``.

Codex speaks only the OpenAI Responses API. The engine writes ``$CODEX_HOME/config.toml`` with
one provider, ``telecoder``, at ``OPENAI_BASE_URL`` (default ``https://api.openai.com/v1``)
whose key is read from ``OPENAI_API_KEY``. The prompt goes on stdin (``-``). Codex runs with
``--dangerously-bypass-approvals-and-sandbox``: the worktree and the runtime are the isolation.
``CODEX_HOME`` is the engine home (Codex only warns that it will not make its sandbox helpers
under the system temp dir, which it does not need without its sandbox).

Output (one JSON event a line): ``thread.started`` (the id to resume), ``item.started`` /
``item.completed`` (agent messages, reasoning, commands, file changes, MCP calls; ``error``
items are warnings: ``warning`` events), ``turn.completed`` with token usage (success),
``turn.failed`` or ``error`` (model API failures). Codex reports no cost: it comes from ``prices``.
"""

from __future__ import annotations

import json
from typing import Any

from telecoder.engines import _support as s
from telecoder.protocols import AgentEvent, EngineCommand, EngineOutcome, EngineTask, Feed, Stream


def _toml(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


class CodexEngine:
    name = "codex"
    binary = "codex"
    variables = s.OPENAI_VARS

    def command(self, task: EngineTask) -> EngineCommand:
        codex_home = task.home / ".codex"
        base_url = task.env.get("OPENAI_BASE_URL") or s.DEFAULT_OPENAI_BASE_URL
        config = [
            'model_provider = "telecoder"',
            'approval_policy = "never"',
            'sandbox_mode = "danger-full-access"',
        ]
        if task.model:
            config.insert(0, f"model = {_toml(task.model)}")
        config += [
            "",
            "[model_providers.telecoder]",
            'name = "TeleCoder"',
            f"base_url = {_toml(base_url.rstrip('/'))}",
            'env_key = "OPENAI_API_KEY"',
            'wire_api = "responses"',
            f"request_max_retries = {s.model_retries(task.env)}",
            f"stream_max_retries = {s.model_retries(task.env)}",
        ]
        argv = [
            s.find_binary(self.binary, task.env),
            "exec",
            "--json",
            "--dangerously-bypass-approvals-and-sandbox",
            "--skip-git-repo-check",
            "--cd",
            str(task.workdir),
        ]
        if task.model:
            argv += ["--model", task.model]
        if task.resume_id:
            argv += ["resume", task.resume_id]
        argv += ["-"]
        env = {
            **s.pick(task.env, s.OPENAI_VARS),
            "HOME": str(task.home),
            "CODEX_HOME": str(codex_home),
        }
        env.setdefault("OPENAI_API_KEY", "")
        return EngineCommand(
            argv=argv,
            env=env,
            files={".codex/config.toml": "\n".join(config) + "\n"},
            stdin=task.prompt.encode(),
        )

    def parser(self, task: EngineTask) -> CodexParser:
        return CodexParser(task.model, session_id=task.resume_id)


class CodexParser:
    def __init__(self, model: str | None, session_id: str | None = None) -> None:
        self._tally = s.Tally(model)
        self._verdict = s.Verdict("codex")
        self._session_id = session_id
        self._last_text: str | None = None
        self._last_error: str | None = None
        self._started: set[str] = set()

    def feed(self, stream: Stream, line: str) -> Feed:
        if stream == "stderr":
            return s.stderr_feed(self._verdict, line)
        obj = s.loads(line)
        if obj is None:
            return s.stdout_text_feed(line)
        kind = obj.get("type")
        if kind == "thread.started":
            self._session_id = str(obj.get("thread_id") or self._session_id)
            return s.NOTHING
        if kind in ("item.started", "item.completed"):
            return Feed(events=self._item(obj.get("item") or {}, kind == "item.completed"))
        if kind == "turn.completed":
            usage = obj.get("usage") or {}
            self._tally.add(
                s.as_int(usage.get("input_tokens")),
                s.as_int(usage.get("output_tokens")),
                s.as_int(usage.get("cached_input_tokens")),
            )
            self._verdict.succeed(self._last_text)
            events = [self._tally.event()]
            if self._last_text is not None:
                events.append(s.result_event(self._last_text))
            return Feed(events=events)
        if kind == "turn.failed":
            text = str((obj.get("error") or {}).get("message") or self._last_error or "turn failed")
            self._verdict.model_failed(f"{text}")
            return Feed(events=[s.error_event(text, fatal=True)])
        if kind == "error":
            self._last_error = str(obj.get("message") or "")
            return Feed(events=[s.error_event(self._last_error)])
        return s.NOTHING

    def _item(self, item: dict[str, Any], completed: bool) -> list[AgentEvent]:
        kind = item.get("type")
        item_id = str(item.get("id"))
        if kind == "agent_message" and completed:
            self._last_text = str(item.get("text") or "")
            return [s.message(self._last_text)]
        if kind == "reasoning" and completed and item.get("text"):
            return [s.thinking(str(item["text"]))]
        if kind == "error" and completed:
            # Codex's own warnings (``Model metadata for `X` not found``): the run goes on.
            return [s.warning_event(str(item.get("message") or ""))]
        if kind == "command_execution":
            return self._tool(
                item_id,
                "shell",
                {"command": item.get("command")},
                completed,
                ok=item.get("status") == "completed" and item.get("exit_code") in (0, None),
                output=str(item.get("aggregated_output") or ""),
            )
        if kind == "file_change":
            changes = item.get("changes") or []
            output = "\n".join(f"{c.get('kind')} {c.get('path')}" for c in changes)
            return self._tool(
                item_id,
                "apply_patch",
                {"changes": changes},
                completed,
                ok=item.get("status") == "completed",
                output=output,
            )
        if kind == "mcp_tool_call":
            error = item.get("error")
            return self._tool(
                item_id,
                f"{item.get('server')}.{item.get('tool')}",
                item.get("arguments"),
                completed,
                ok=not error and item.get("status") != "failed",
                output=s.text_of(error or item.get("result")),
            )
        if kind == "web_search" and not completed:
            return [s.tool_call(item_id, "web_search", {"query": item.get("query")})]
        return []

    def _tool(
        self,
        item_id: str,
        name: str,
        tool_input: Any,
        completed: bool,
        *,
        ok: bool,
        output: str,
    ) -> list[AgentEvent]:
        events: list[AgentEvent] = []
        if item_id not in self._started:
            self._started.add(item_id)
            events.append(s.tool_call(item_id, name, tool_input))
        if completed:
            events.append(s.tool_result(item_id, ok, output))
        return events

    def finish(self, exit_code: int | None) -> EngineOutcome:
        if not self._verdict.decided and self._last_error:
            self._verdict.model_failed(f"{self._last_error}")
        usage = self._tally.usage() if self._tally.seen else None
        return self._verdict.outcome(exit_code, session_id=self._session_id, usage=usage)
