"""The ``acp`` engine: any Agent Client Protocol agent, driven over its stdin and stdout.

**Which agent.** ``--model AGENT`` or ``--model AGENT:MODEL``, where ``AGENT`` is one of
``opencode`` (``opencode acp``), ``gemini`` (``gemini --acp``), ``qwen`` (``qwen --acp``),
``claude`` (the ``claude-agent-acp`` adapter) and ``codex`` (the ``codex-acp`` adapter); no
model means ``opencode``. Each preset configures its agent exactly as the agent's own engine does
(the same config files in the engine home, the same endpoint variables), and passes ``MODEL``.
Any other agent: set ``TELECODER_ACP_COMMAND`` in the operator's environment to its command line
(``"goose acp"``, ``"cursor-agent acp"``); ``--model`` is then not interpreted.

**The conversation** is a state machine over JSON-RPC lines (message types from the
``agent-client-protocol`` package): ``initialize`` → ``session/new`` (or, with a resume id,
``session/resume`` where the agent offers it, else ``session/load``, whose replayed history is not
recorded again) → ``session/prompt``. The answer to the prompt ends the run: its ``stopReason``
(``end_turn`` is success) and ``usage``; the parser then says ``done`` and the pipeline closes
stdin and stops the agent. Meanwhile ``session/update`` notifications become events (message and
thought chunks are joined into whole messages; ``tool_call`` / ``tool_call_update`` become
``tool_call`` / ``tool_result``; ``usage_update`` cost is kept), and the agent's requests are
answered: permissions are granted (``allow_always`` first: a background agent has no one to ask),
file-system and terminal requests are refused (the client advertises neither capability).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, replace
from typing import Any

from acp import PROTOCOL_VERSION
from acp import schema as acp
from pydantic import ValidationError

from telecoder import __version__
from telecoder.domain import FailureKind
from telecoder.engines import _support as s
from telecoder.engines.claude_code import ClaudeCodeEngine
from telecoder.engines.codex import CodexEngine
from telecoder.engines.gemini import gemini_files_env, keep_conversation
from telecoder.engines.opencode import opencode_config, opencode_env
from telecoder.engines.qwen import QwenEngine
from telecoder.errors import BadInput
from telecoder.protocols import AgentEvent, EngineCommand, EngineOutcome, EngineTask, Feed, Stream

COMMAND_VAR = "TELECODER_ACP_COMMAND"
DEFAULT_AGENT = "opencode"
AGENTS = ("opencode", "gemini", "qwen", "claude", "codex")
_INITIALIZE, _SESSION, _PROMPT = 1, 2, 3
# An error answering the prompt is the model's when it reads like one: ACP has no error kinds.
_MODEL_ERROR = re.compile(
    r"\b[45]\d\d\b|api|status|http|fetch failed|econn|connect|network|socket|timed? ?out|"
    r"rate limit|overloaded|model|provider",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Agent:
    name: str
    model: str | None


def agent_of(task: EngineTask) -> Agent:
    if task.env.get(COMMAND_VAR):
        return Agent("custom", task.model)
    spec = task.model or DEFAULT_AGENT
    name, _, model = spec.partition(":")
    if name not in AGENTS:
        known = ", ".join(AGENTS)
        raise BadInput(f"unknown ACP agent {name!r}: use one of {known}, or {COMMAND_VAR}")
    return Agent(name, model or None)


def _preset(agent: Agent, task: EngineTask) -> EngineCommand:
    """The agent's command line, environment and config files."""
    inner = replace(task, model=agent.model, resume_id=None)
    env = task.env
    if agent.name == "custom":
        return EngineCommand(argv=shlex.split(env[COMMAND_VAR]))
    if agent.name == "opencode":
        _, config = opencode_config(inner)
        argv = [s.find_binary("opencode", env), "acp"]
        return EngineCommand(argv=argv, env=opencode_env(inner), files={"opencode.json": config})
    if agent.name == "gemini":
        if task.resume_id:
            keep_conversation(task.home, task.resume_id)
        files, genv = gemini_files_env(inner)
        argv = [s.find_binary("gemini", env), "--acp"]
        argv += ["--model", agent.model] if agent.model else []
        return EngineCommand(argv=argv, env=genv, files=files)
    if agent.name == "qwen":
        native = QwenEngine().command(inner)
        argv = [s.find_binary("qwen", env), "--acp", "--auth-type", "openai"]
        argv += ["--model", agent.model] if agent.model else []
        return EngineCommand(argv=argv, env=native.env, files=native.files)
    if agent.name == "claude":
        native = ClaudeCodeEngine().command(inner)
        cenv = dict(native.env)
        if agent.model:
            cenv["ANTHROPIC_MODEL"] = agent.model
        return EngineCommand(argv=[s.find_binary("claude-agent-acp", env)], env=cenv)
    native = CodexEngine().command(inner)
    # codex-acp starts sessions in its "auto review" mode, Codex's own sandbox on; inside
    # TeleCoder's sandbox that one cannot work (the agent's writes silently never happen):
    # the full-access mode runs without it, and without approvals.
    cenv = {**native.env, "INITIAL_AGENT_MODE": "agent-full-access"}
    return EngineCommand(argv=[s.find_binary("codex-acp", env)], env=cenv, files=native.files)


def _request(request_id: int, method: str, params: Any) -> bytes:
    if not isinstance(params, dict):
        params = params.model_dump(mode="json", by_alias=True, exclude_none=True)
    message = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
    return (json.dumps(message) + "\n").encode()


def _response(request_id: Any, result: Any = None, error: dict[str, Any] | None = None) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id}
    if error is not None:
        message["error"] = error
    elif isinstance(result, dict):
        message["result"] = result
    else:
        message["result"] = result.model_dump(mode="json", by_alias=True, exclude_none=True)
    return (json.dumps(message) + "\n").encode()


@dataclass(slots=True)
class _ToolCall:
    name: str
    title: str = ""
    input: Any = None
    announced: bool = False
    finished: bool = False


class AcpEngine:
    name = "acp"
    # Each preset agent: the binary it runs and the endpoint and key variables it reads.
    agents: dict[str, tuple[str, tuple[str, ...]]] = {  # noqa: RUF012 (read only)
        "opencode": ("opencode", s.OPENAI_VARS),
        "gemini": ("gemini", s.GEMINI_VARS),
        "qwen": ("qwen", s.OPENAI_VARS),
        "claude": ("claude-agent-acp", s.ANTHROPIC_VARS),
        "codex": ("codex-acp", s.OPENAI_VARS),
    }

    def command(self, task: EngineTask) -> EngineCommand:
        agent = agent_of(task)
        preset = _preset(agent, task)
        initialize = acp.InitializeRequest(
            protocol_version=PROTOCOL_VERSION,
            client_capabilities=acp.ClientCapabilities(
                fs=acp.FileSystemCapabilities(read_text_file=False, write_text_file=False),
                terminal=False,
            ),
            client_info=acp.Implementation(name="telecoder", version=__version__),
        )
        return replace(
            preset, stdin=_request(_INITIALIZE, "initialize", initialize), interactive=True
        )

    def parser(self, task: EngineTask) -> AcpParser:
        agent = agent_of(task)
        return AcpParser(task, agent)


class AcpParser:
    def __init__(self, task: EngineTask, agent: Agent) -> None:
        self._task = task
        self._tally = s.Tally(agent.model)
        self._verdict = s.Verdict(f"ACP agent {agent.name}")
        self._session_id: str | None = None
        self._loading = False  # session/load replays history: not recorded again
        self._message: list[str] = []
        self._thought: list[str] = []
        self._last_text: str | None = None
        self._tools: dict[str, _ToolCall] = {}
        self._system_error = False
        self._error_text: str | None = None

    # --- the conversation ------------------------------------------------------------------

    def feed(self, stream: Stream, line: str) -> Feed:
        if stream == "stderr":
            return s.stderr_feed(self._verdict, line)
        obj = s.loads(line)
        if obj is None or obj.get("jsonrpc") != "2.0":
            return s.stdout_text_feed(line)
        method = obj.get("method")
        if method is not None and "id" in obj:
            return self._answer(obj["id"], str(method), obj.get("params") or {})
        if method == "session/update":
            return Feed(events=[] if self._loading else self._update(obj.get("params") or {}))
        if method is not None:
            return s.NOTHING  # other notifications (extensions such as _auth/status_update)
        if "error" in obj:
            return self._failed(obj.get("id"), obj["error"] or {})
        return self._result(obj.get("id"), obj.get("result") or {})

    def _result(self, request_id: Any, result: dict[str, Any]) -> Feed:
        if request_id == _INITIALIZE:
            info = acp.InitializeResponse.model_validate(result)
            return Feed(reply=self._open_session(info.agent_capabilities))
        if request_id == _SESSION:
            self._loading = False
            self._session_id = str(result.get("sessionId") or self._session_id)
            prompt = acp.PromptRequest(
                session_id=self._session_id,
                prompt=[acp.TextContentBlock(type="text", text=self._task.prompt)],
            )
            return Feed(reply=_request(_PROMPT, "session/prompt", prompt))
        if request_id == _PROMPT:
            return self._prompt_done(acp.PromptResponse.model_validate(result), result)
        return s.NOTHING

    def _open_session(self, caps: acp.AgentCapabilities | None) -> bytes:
        cwd = str(self._task.workdir)
        resume_id = self._task.resume_id
        if resume_id and caps is not None:
            session_caps = caps.session_capabilities
            if session_caps is not None and session_caps.resume is not None:
                self._session_id = resume_id
                params: Any = acp.ResumeSessionRequest(
                    session_id=resume_id, cwd=cwd, mcp_servers=[]
                )
                return _request(_SESSION, "session/resume", params)
            if caps.load_session:
                self._session_id, self._loading = resume_id, True
                params = acp.LoadSessionRequest(session_id=resume_id, cwd=cwd, mcp_servers=[])
                return _request(_SESSION, "session/load", params)
        return _request(_SESSION, "session/new", acp.NewSessionRequest(cwd=cwd, mcp_servers=[]))

    def _prompt_done(self, response: acp.PromptResponse, raw: dict[str, Any]) -> Feed:
        events = self._flush()
        usage = response.usage
        # Gemini reports its tokens in ``_meta.quota.token_count`` instead.
        quota = ((raw.get("_meta") or {}).get("quota") or {}).get("token_count") or {}
        if usage is not None:
            cached = usage.cached_read_tokens or 0
            self._tally.set(usage.input_tokens, usage.output_tokens, cached)
        elif quota:
            self._tally.set(
                s.as_int(quota.get("input_tokens")), s.as_int(quota.get("output_tokens"))
            )
        if self._tally.seen or self._tally.reported_cost is not None:
            events.append(self._tally.event())
        reason = str(response.stop_reason)
        if self._system_error:
            detail = self._error_text or "the agent reported a system error"
            self._verdict.model_failed(detail)
            events.append(s.error_event(detail, fatal=True))
        elif reason == "end_turn":
            self._verdict.succeed(self._last_text)
            events.append(s.result_event(self._last_text or ""))
        else:
            self._verdict.fail(FailureKind.ENGINE_ERROR, f"the agent stopped: {reason}")
            events.append(s.error_event(f"the agent stopped: {reason}", fatal=True))
        return Feed(events=events, done=True)

    def _failed(self, request_id: Any, error: dict[str, Any]) -> Feed:
        data = error.get("data")
        text = str(error.get("message") or "error")
        if data:
            text += f": {data if isinstance(data, str) else json.dumps(data)[:2000]}"
        step = {_INITIALIZE: "initialize", _SESSION: "opening the session", _PROMPT: "the prompt"}
        where = step.get(request_id, f"request {request_id}")
        if request_id == _PROMPT and _MODEL_ERROR.search(text):
            self._verdict.model_failed(text)
        else:
            self._verdict.fail(FailureKind.ENGINE_ERROR, f"the agent failed {where}: {text}")
        return Feed(events=[*self._flush(), s.error_event(text, fatal=True)], done=True)

    def _answer(self, request_id: Any, method: str, params: dict[str, Any]) -> Feed:
        if method == "session/request_permission":
            request = acp.RequestPermissionRequest.model_validate(params)
            order = {"allow_once": 0, "allow_always": 1}
            allowed = sorted(
                (o for o in request.options if o.kind in order), key=lambda o: order[o.kind]
            )
            if allowed:
                outcome: Any = acp.AllowedOutcome(
                    outcome="selected", option_id=allowed[0].option_id
                )
            else:
                outcome = acp.DeniedOutcome(outcome="cancelled")
            reply = _response(request_id, acp.RequestPermissionResponse(outcome=outcome))
            return Feed(reply=reply)
        error = {"code": -32601, "message": f"{method} is not offered by this client"}
        return Feed(reply=_response(request_id, error=error))

    # --- session updates -------------------------------------------------------------------

    def _update(self, params: dict[str, Any]) -> list[AgentEvent]:
        try:
            update = acp.SessionNotification.model_validate(params).update
        except ValidationError:
            return []  # an update kind this schema does not know (unstable extensions)
        if isinstance(update, acp.AgentMessageChunk | acp.AgentThoughtChunk):
            # Qwen reports each model call's tokens on a chunk's ``_meta.usage``.
            meta = (update.field_meta or {}).get("usage") or {}
            if isinstance(meta, dict) and meta.get("inputTokens") is not None:
                cached = s.as_int(meta.get("cachedReadTokens"))
                self._tally.add(
                    s.as_int(meta.get("inputTokens")), s.as_int(meta.get("outputTokens")), cached
                )
        if isinstance(update, acp.AgentMessageChunk):
            events = self._flush_thought()
            self._message.append(_text(update.content))
            return events
        if isinstance(update, acp.AgentThoughtChunk):
            events = self._flush_message()
            self._thought.append(_text(update.content))
            return events
        if isinstance(update, acp.ToolCallStart | acp.ToolCallProgress):
            return [*self._flush(), *self._tool(update)]
        if isinstance(update, acp.UsageUpdate) and update.cost is not None:
            self._tally.reported_cost = update.cost.amount
        if isinstance(update, acp.SessionInfoUpdate):
            # codex-acp reports a failed model call only as a thread status, then a message
            # carrying the error, then an ordinary ``end_turn``.
            codex = (update.field_meta or {}).get("codex") or {}
            status = (codex.get("threadStatus") or {}).get("type")
            if status == "systemError":
                self._system_error = True
            elif status == "active":
                self._system_error = False
        return []

    def _tool(self, update: acp.ToolCallStart | acp.ToolCallProgress) -> list[AgentEvent]:
        """A tool call is recorded once it runs (its input is complete only then), its result
        once it is completed or failed."""
        events: list[AgentEvent] = []
        call_id = update.tool_call_id
        meta_name = (update.field_meta or {}).get("toolName")  # Qwen names its tool here
        name = str(meta_name or update.title or "tool")
        call = self._tools.setdefault(call_id, _ToolCall(name=name))
        if update.raw_input:
            call.input = update.raw_input
        if update.title:
            call.title = update.title
        status = update.status
        if status in ("in_progress", "completed", "failed") and not call.announced:
            call.announced = True
            events.append(s.tool_call(call_id, call.name, call.input or {"title": call.title}))
        if status in ("completed", "failed") and not call.finished:
            call.finished = True
            output = update.raw_output
            text = s.text_of(output) if output is not None else ""
            if not text and update.content:
                text = "\n".join(_tool_content_text(c) for c in update.content)
            events.append(s.tool_result(call_id, status == "completed", text))
        return events

    def _flush_message(self) -> list[AgentEvent]:
        text = "".join(self._message)
        self._message.clear()
        if not text.strip():
            return []
        if self._system_error:
            self._error_text = text.strip()
            return [s.error_event(self._error_text)]
        self._last_text = text
        return [s.message(text)]

    def _flush_thought(self) -> list[AgentEvent]:
        text = "".join(self._thought)
        self._thought.clear()
        return [s.thinking(text)] if text.strip() else []

    def _flush(self) -> list[AgentEvent]:
        return [*self._flush_thought(), *self._flush_message()]

    def finish(self, exit_code: int | None) -> EngineOutcome:
        usage = self._tally.usage() if self._tally.seen else None
        return self._verdict.outcome(exit_code, session_id=self._session_id, usage=usage)


def _text(block: Any) -> str:
    return str(getattr(block, "text", "") or "")


def _tool_content_text(content: Any) -> str:
    if isinstance(content, acp.ContentToolCallContent):
        return _text(content.content)
    if isinstance(content, acp.FileEditToolCallContent):
        return f"edited {content.path}"
    return ""
