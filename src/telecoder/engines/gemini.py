"""The ``gemini`` engine: ``gemini -o stream-json --yolo --prompt=``, resumed with ``--resume``.

The prompt goes on stdin (Gemini reads piped stdin as the prompt, an empty ``--prompt`` adding
nothing): an argument could be no longer than 128 KiB (Linux's limit on one argument).

Endpoint and key: ``GOOGLE_GEMINI_BASE_URL`` / ``GEMINI_API_KEY``. The engine writes
``~/.gemini/settings.json`` (``HOME`` is the engine home) pinning the ``gemini-api-key`` auth
type — with a base URL alone Gemini CLI picks an auth type it then rejects — with folder trust
off (an untrusted folder silently turns ``--yolo`` off), and usage statistics, telemetry and
update checks off. ``TMPDIR`` is in the home: Gemini writes error reports there.

Output (one JSON event a line): ``init`` (the session id), ``message`` (assistant text arrives
as ``delta`` chunks, joined here into whole messages), ``tool_use``, ``tool_result``, ``error``
(warnings), ``result`` with ``status`` and token ``stats``. Gemini reports no cost. Exit codes are
not reliable (144 on an HTTP 400): the ``result`` status decides.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from telecoder.domain import FailureKind
from telecoder.engines import _support as s
from telecoder.protocols import AgentEvent, EngineCommand, EngineOutcome, EngineTask, Feed, Stream

SETTINGS: dict[str, dict[str, Any]] = {
    "security": {"auth": {"selectedType": "gemini-api-key"}, "folderTrust": {"enabled": False}},
    "privacy": {"usageStatisticsEnabled": False},
    "telemetry": {"enabled": False},
    "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
}


# A conversation file as Gemini names it: the minute it was made and the session id's first 8.
_SESSION_FILE = re.compile(r"session-\d{4}-\d\d-\d\dT\d\d-\d\d-([0-9a-f]{8})\.jsonl")


def keep_conversation(home: Path, session_id: str) -> list[Path]:
    """Move a conversation out of the way of Gemini's ACP ``session/load`` (0.61).

    Loading a session first starts a new file named after the current minute and the session
    id; in the minute the conversation was made, that is the conversation's own name, and the
    load truncates it, then finds nothing to resume. Under another name (still ``session-*``
    ending in the id, which is how Gemini finds it) the conversation survives, and the load
    goes on writing to it. Returns the new names.
    """
    kept = []
    for file in sorted(
        (home / ".gemini" / "tmp").glob(f"*/chats/session-*-{session_id[:8]}.jsonl")
    ):
        if not _SESSION_FILE.fullmatch(file.name):
            continue  # kept already
        target = file.with_name(
            file.name.replace(f"-{session_id[:8]}.", f"-kept-{session_id[:8]}.")
        )
        if not target.exists():  # else this is the empty start of an earlier load
            file.rename(target)
            kept.append(target)
    return kept


def gemini_files_env(task: EngineTask) -> tuple[dict[str, str], dict[str, str]]:
    settings = {
        **SETTINGS,
        "general": {**SETTINGS["general"], "maxAttempts": s.model_retries(task.env) + 1},
    }
    files = {".gemini/settings.json": json.dumps(settings, indent=2), "tmp/.keep": ""}
    env = {
        **s.pick(task.env, s.GEMINI_VARS),
        "HOME": str(task.home),
        "TMPDIR": str(task.home / "tmp"),
        "GEMINI_CLI_TRUST_WORKSPACE": "true",
        "NO_COLOR": "1",
    }
    return files, env


class GeminiEngine:
    name = "gemini"
    binary = "gemini"
    variables = s.GEMINI_VARS

    def command(self, task: EngineTask) -> EngineCommand:
        argv = [s.find_binary(self.binary, task.env), "--output-format", "stream-json", "--yolo"]
        if task.model:
            argv += ["--model", task.model]
        if task.resume_id:
            argv += ["--resume", task.resume_id]
        argv += ["--prompt="]  # headless; the prompt itself comes on stdin
        files, env = gemini_files_env(task)
        return EngineCommand(argv=argv, env=env, files=files, stdin=task.prompt.encode())

    def parser(self, task: EngineTask) -> GeminiParser:
        return GeminiParser(task.model, session_id=task.resume_id)


class GeminiParser:
    def __init__(self, model: str | None, session_id: str | None = None) -> None:
        self._tally = s.Tally(model)
        self._verdict = s.Verdict("gemini")
        self._session_id = session_id
        self._chunks: list[str] = []
        self._last_text: str | None = None

    def feed(self, stream: Stream, line: str) -> Feed:
        if stream == "stderr":
            return s.stderr_feed(self._verdict, line)
        obj = s.loads(line)
        if obj is None:
            return s.stdout_text_feed(line)
        kind = obj.get("type")
        if kind == "message" and obj.get("role") == "assistant":
            self._chunks.append(str(obj.get("content") or ""))
            if obj.get("delta"):
                return s.NOTHING
            return Feed(events=self._flush())
        events = self._flush()
        if kind == "init":
            self._session_id = str(obj.get("session_id") or self._session_id)
            self._tally.model = self._tally.model or obj.get("model")
        elif kind == "tool_use":
            tool_id = str(obj.get("tool_id"))
            events.append(s.tool_call(tool_id, str(obj.get("tool_name")), obj.get("parameters")))
        elif kind == "tool_result":
            ok = obj.get("status") == "success"
            output = obj.get("output") if ok else (obj.get("error") or {}).get("message")
            events.append(s.tool_result(str(obj.get("tool_id")), ok, s.text_of(output)))
        elif kind == "error" and obj.get("severity") == "warning":  # e.g. a loop detected
            events.append(s.warning_event(str(obj.get("message"))))
        elif kind == "error":
            events.append(s.error_event(str(obj.get("message")), severity=obj.get("severity")))
        elif kind == "result":
            events += self._result(obj)
        return Feed(events=events)

    def _flush(self) -> list[AgentEvent]:
        if not self._chunks:
            return []
        text = "".join(self._chunks)
        self._chunks.clear()
        if not text.strip():
            return []
        self._last_text = text
        return [s.message(text)]

    def _result(self, obj: dict[str, Any]) -> list[AgentEvent]:
        stats = obj.get("stats") or {}
        self._tally.set(
            s.as_int(stats.get("input_tokens")),
            s.as_int(stats.get("output_tokens")),
            s.as_int(stats.get("cached")),
        )
        events = [self._tally.event()]
        if obj.get("status") == "success":
            self._verdict.succeed(self._last_text)
            return [*events, s.result_event(self._last_text or "")]
        error = obj.get("error") or {}
        text = str(error.get("message") or obj.get("status"))
        if "API Error" in text or error.get("type") in ("api_error", "unknown"):
            self._verdict.model_failed(f"{text}")
        else:
            self._verdict.fail(FailureKind.ENGINE_ERROR, f"gemini failed: {text}")
        return [*events, s.error_event(text, fatal=True)]

    def finish(self, exit_code: int | None) -> EngineOutcome:
        usage = self._tally.usage() if self._tally.seen else None
        return self._verdict.outcome(exit_code, session_id=self._session_id, usage=usage)
