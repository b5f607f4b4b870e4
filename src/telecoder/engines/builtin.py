"""The ``builtin`` engine: TeleCoder's own agent (``python -m telecoder.agent``).

It runs as any agent CLI does, inside the session's runtime (the sandbox by default), with this
Python (``sys.executable``). ``--model NAME`` speaks OpenAI Chat Completions at
``OPENAI_BASE_URL`` with ``OPENAI_API_KEY``; ``--model ollama/NAME`` speaks Ollama's native API
at ``OLLAMA_HOST``. With the gateway on, those name the gateway and the session's key.

Limits (TeleCoder's settings, passed as ``TELECODER_BUILTIN_*``): model turns by the session's
tier (5/10/20 for trivial/standard/complex, 10 without a tier) unless
``TELECODER_BUILTIN_MAX_ITERATIONS`` says; a token budget and a wall clock when set; the
``run_command`` timeout. A guardrail's stop fails the attempt with ``agent_limit`` (not retried:
the same agent would stop the same way); the pipeline pushes what it wrote as a partial result.

Output: one JSON event a line (``telecoder.agent.__main__``); the conversation id (``session``)
is what ``--resume`` continues.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping

from telecoder.domain import FailureKind
from telecoder.engines import _support as s
from telecoder.protocols import EngineCommand, EngineOutcome, EngineTask, Feed, Stream

DEFAULT_MODEL = "gpt-4.1-mini"
ITERATIONS = {"trivial": 5, "standard": 10, "complex": 20}
VARIABLES = (*s.OPENAI_VARS, "OLLAMA_HOST")
LIMITS = {  # setting variable -> the agent's flag
    "TELECODER_BUILTIN_TOKEN_BUDGET": "--token-budget",
    "TELECODER_BUILTIN_WALL_SECONDS": "--wall-seconds",
    "TELECODER_BUILTIN_COMMAND_TIMEOUT": "--command-timeout",
}
BODIES = ("content", "output", "entries", "matches")  # an observation's text, shown below it
ADVICE = {
    "iteration_cap": "raise TELECODER_BUILTIN_MAX_ITERATIONS, give the session a higher --tier, "
    "or split the task",
    "token_budget": "raise TELECODER_BUILTIN_TOKEN_BUDGET or split the task",
    "wall_clock": "raise TELECODER_BUILTIN_WALL_SECONDS or split the task",
    "repeated_call": "the model was stuck repeating a call: rephrase the task or use a "
    "stronger model",
    "format_errors": "the model cannot write tool calls this agent reads: use a stronger model",
}


def max_iterations(task: EngineTask) -> int:
    """The setting when given, else the tier's number of turns."""
    given = task.env.get("TELECODER_BUILTIN_MAX_ITERATIONS")
    if given and given.isdigit() and int(given) > 0:
        return int(given)
    return ITERATIONS.get(task.tier or "", ITERATIONS["standard"])


class BuiltinEngine:
    name = "builtin"
    binary = sys.executable  # what `telecoder engines` looks up and asks for --version
    variables = VARIABLES

    def command(self, task: EngineTask) -> EngineCommand:
        # -I: the repository (the working directory) and PYTHON* variables cannot put other
        # code in place of the agent's; its package comes from this Python's site-packages.
        argv = [sys.executable, "-I", "-m", "telecoder.agent"]
        argv += ["--model", task.model or DEFAULT_MODEL]
        argv += ["--workdir", str(task.workdir), "--max-iterations", str(max_iterations(task))]
        argv += ["--retries", str(s.model_retries(task.env))]
        for variable, flag in LIMITS.items():
            if value := task.env.get(variable):
                argv += [flag, value]
        if task.resume_id:
            argv += ["--resume", task.resume_id]
        env = {**s.pick(task.env, VARIABLES), "HOME": str(task.home)}
        return EngineCommand(argv=argv, env=env, stdin=task.prompt.encode())

    def parser(self, task: EngineTask) -> BuiltinParser:
        return BuiltinParser(task.model or DEFAULT_MODEL, session_id=task.resume_id)


class BuiltinParser:
    def __init__(self, model: str, session_id: str | None = None) -> None:
        self._tally = s.Tally(model.removeprefix("ollama/"))
        self._verdict = s.Verdict("the builtin agent")
        self._session_id = session_id
        self._last_text: str | None = None

    def feed(self, stream: Stream, line: str) -> Feed:
        if stream == "stderr":
            return s.stderr_feed(self._verdict, line)
        obj = s.loads(line)
        if obj is None:
            return s.stdout_text_feed(line)
        kind = obj.get("type")
        if kind == "session":
            self._session_id = str(obj.get("id") or self._session_id)
        elif kind == "assistant":
            self._last_text = str(obj.get("text") or "")
            return Feed(events=[s.message(self._last_text)])
        elif kind == "thought":
            return Feed(events=[s.thinking(str(obj.get("text") or ""))])
        elif kind == "tool_call":
            call = s.tool_call(str(obj.get("id")), str(obj.get("name")), obj.get("arguments"))
            return Feed(events=[call])
        elif kind == "tool_result":
            output = _observation_text(obj.get("observation"))
            return Feed(events=[s.tool_result(str(obj.get("id")), bool(obj.get("ok")), output)])
        elif kind == "usage":
            self._tally.set(s.as_int(obj.get("input_tokens")), s.as_int(obj.get("output_tokens")))
            return Feed(events=[self._tally.event()])
        elif kind == "format_error":
            return Feed(events=[s.error_event(str(obj.get("message")), fatal=False)])
        elif kind == "notice":
            return Feed(events=[s.output_event("stdout", str(obj.get("text")), raw=True)])
        elif kind == "end":
            return self._end(str(obj.get("reason")), str(obj.get("text") or ""))
        return s.NOTHING

    def _end(self, reason: str, text: str) -> Feed:
        if reason == "done":
            self._verdict.succeed(text or self._last_text)
            return Feed(events=[s.result_event(text)])
        if reason == "model_error":
            self._verdict.model_failed(text)
        else:
            advice = ADVICE.get(reason, "see the session's events")
            self._verdict.fail(FailureKind.AGENT_LIMIT, f"the builtin agent {text} ({advice})")
        self._verdict.text = self._last_text
        return Feed(events=[s.error_event(text, fatal=True, reason=reason)])

    def finish(self, exit_code: int | None) -> EngineOutcome:
        usage = self._tally.usage() if self._tally.seen else None
        return self._verdict.outcome(exit_code, session_id=self._session_id, usage=usage)


def _observation_text(observation: object) -> str:
    """A tool's observation for the ``tool_result`` event: its fields as one line of JSON, then
    its text (a file's content, a command's output, entries and matches one a line)."""
    if not isinstance(observation, Mapping):
        return str(observation)
    fields = {k: v for k, v in observation.items() if k not in BODIES}
    lines = [json.dumps(fields, ensure_ascii=False)]
    for key in BODIES:
        body = observation.get(key)
        if isinstance(body, str):
            lines.append(body)
        elif isinstance(body, list):
            lines += [v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for v in body]
    return "\n".join(lines)
