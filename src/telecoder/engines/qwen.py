"""The ``qwen`` engine: Qwen Code, ``qwen --auth-type openai -o stream-json --yolo``.

Qwen Code needs Node >= 22 (``scripts/install-agents.sh`` installs one for it). Endpoint and
key: ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` (OpenAI Chat Completions). The prompt goes on
stdin. ``HOME`` is the engine home; ``~/.qwen/settings.json`` turns usage statistics and
telemetry off. Resume with ``--resume ID``.

Its output is Claude Code's stream-json (``system/init``, ``assistant``, ``user``, ``result``),
parsed by the same ``StreamJsonParser``; Qwen reports tokens but no cost, so cost comes from
``prices``.
"""

from __future__ import annotations

import json

from telecoder.engines import _support as s
from telecoder.engines.claude_code import StreamJsonParser
from telecoder.protocols import EngineCommand, EngineTask

SETTINGS: dict[str, object] = {
    "privacy": {"usageStatisticsEnabled": False},
    "telemetry": {"enabled": False},
    "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
}


class QwenEngine:
    name = "qwen"
    binary = "qwen"
    variables = s.OPENAI_VARS

    def command(self, task: EngineTask) -> EngineCommand:
        argv = [
            s.find_binary(self.binary, task.env),
            "--auth-type",
            "openai",
            "--output-format",
            "stream-json",
            "--yolo",
        ]
        if task.model:
            argv += ["--model", task.model]
        if task.resume_id:
            argv += ["--resume", task.resume_id]
        env = {
            **s.pick(task.env, s.OPENAI_VARS),
            "HOME": str(task.home),
            "QWEN_CODE_SUPPRESS_YOLO_WARNING": "1",
            "NO_COLOR": "1",
        }
        settings = {
            **SETTINGS,
            "model": {"generationConfig": {"maxRetries": s.model_retries(task.env)}},
        }
        files = {".qwen/settings.json": json.dumps(settings, indent=2)}
        return EngineCommand(argv=argv, env=env, files=files, stdin=task.prompt.encode())

    def parser(self, task: EngineTask) -> StreamJsonParser:
        return StreamJsonParser("qwen", task.model, session_id=task.resume_id)
