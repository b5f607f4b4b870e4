"""The ``aider`` engine: ``aider --message-file … --yes-always --no-auto-commits``.

Aider prints plain text only, no event stream, so this engine reads what it can from its lines:
``Applied edit to PATH`` (an edit: a tool call and its result), ``Tokens: N sent, M received.
Cost: $X message, $Y session.`` (usage and cost; a reply from the model), litellm's error lines
(model failures). The rest of stdout is the assistant's text, recorded as one message per reply.

Success needs a reply from the model (a ``Tokens:`` line) and no model error; the exit status
alone proves nothing. Endpoint and key: ``OPENAI_BASE_URL`` (passed as ``--openai-api-base``) and
``OPENAI_API_KEY``; a model without a provider prefix is asked for as ``openai/<model>``.
TeleCoder owns commits and ``.gitignore``: auto-commits, dirty commits and gitignore edits are
off, and aider's history files live in the engine home. Aider has no session ids; a resume
replays the chat history kept in the home (``--restore-chat-history``).
"""

from __future__ import annotations

import re

from telecoder.domain import FailureKind
from telecoder.engines import _support as s
from telecoder.protocols import AgentEvent, EngineCommand, EngineOutcome, EngineTask, Feed, Stream

SESSION_ID = "aider-chat-history"
_TOKENS = re.compile(
    r"^Tokens: (?P<sent>[\d.,]+)(?P<sk>k?) sent(?:, (?P<cached>[\d.,]+)(?P<ck>k?) cache[^,]*)*"
    r", (?P<recv>[\d.,]+)(?P<rk>k?) received\.(?: Cost: \$(?P<cost>[\d.]+) message)?"
)
_APPLIED = re.compile(r"^Applied edit to (?P<path>.+)$")
_MODEL_ERROR = re.compile(
    r"^(litellm\.\w+(Error|Exception)\b|The API provider's servers are down|"
    r"The API provider is not able to authenticate|Error: .*(API|api|model))"
)
_NOISE = re.compile(
    r"^(Warning: Input is not a terminal|Aider v\d|Model: |Git repo: |Repo-map: |"
    r"Added .* to the chat|Creating empty file|Retrying in [\d.]+ seconds|─+$|https?://)"
)


def _number(digits: str, kilo: str) -> int:
    value = float(digits.replace(",", ""))
    return int(value * 1000) if kilo else int(value)


class AiderEngine:
    name = "aider"
    binary = "aider"
    variables = s.OPENAI_VARS

    def command(self, task: EngineTask) -> EngineCommand:
        model = task.model or "gpt-4.1"
        if "/" not in model:
            model = f"openai/{model}"
        home = task.home
        argv = [
            s.find_binary(self.binary, task.env),
            "--message-file",
            str(home / "prompt.md"),
            "--model",
            model,
            "--yes-always",
            "--no-pretty",
            "--no-fancy-input",
            "--no-stream",
            "--no-auto-commits",
            "--no-dirty-commits",
            "--no-gitignore",
            "--no-check-update",
            "--no-analytics",
            "--no-show-model-warnings",
            "--no-show-release-notes",
            "--no-suggest-shell-commands",
            "--no-detect-urls",
            "--map-tokens",  # no repo map: it would leave .aider.tags.cache.v4/ in the worktree
            "0",
            "--chat-history-file",
            str(home / "chat-history.md"),
            "--input-history-file",
            str(home / "input-history"),
        ]
        if task.resume_id:
            argv.append("--restore-chat-history")
        env = {
            **s.pick(task.env, (*s.OPENAI_VARS, *s.ANTHROPIC_VARS, *s.GEMINI_VARS)),
            "HOME": str(home),
            "TMPDIR": str(home / "tmp"),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "AIDER_CHECK_UPDATE": "false",
            "NO_COLOR": "1",
        }
        if task.env.get("OPENAI_BASE_URL"):
            env["OPENAI_API_BASE"] = task.env["OPENAI_BASE_URL"]
        files = {"prompt.md": task.prompt, "tmp/.keep": ""}
        return EngineCommand(argv=argv, env=env, files=files)

    def parser(self, task: EngineTask) -> AiderParser:
        return AiderParser(task.model)


class AiderParser:
    """Aider's text: a banner, then each reply followed by its ``Tokens:`` line and remarks.

    Lines before the reply (banner, warnings) and after it are ``output``; the reply becomes a
    ``message`` and, as aider has no final event, a ``result`` too (the last one is the answer).
    """

    def __init__(self, model: str | None) -> None:
        self._tally = s.Tally(model)
        self._verdict = s.Verdict("aider")
        self._banner = False
        self._reply: list[str] = []
        self._last_text: str | None = None
        self._model_error: str | None = None
        self._edits = 0

    def feed(self, stream: Stream, line: str) -> Feed:
        text = line.rstrip()
        if stream == "stderr":
            if _MODEL_ERROR.match(text.strip()):
                self._model_error = text.strip()
            return s.stderr_feed(self._verdict, line)
        if m := _TOKENS.match(text):
            return Feed(events=self._tokens(m))
        if m := _APPLIED.match(text):
            self._edits += 1
            call_id = f"edit-{self._edits}"
            path = m.group("path").strip()
            return Feed(
                events=[
                    s.tool_call(call_id, "edit", {"path": path}),
                    s.tool_result(call_id, True, text),
                ]
            )
        if _MODEL_ERROR.match(text):
            self._model_error = text
            return Feed(events=[s.error_event(text)])
        if text.startswith("Aider v"):
            self._banner = True
        if not self._banner or _NOISE.match(text):
            return s.stdout_text_feed(line)
        self._reply.append(text)
        # After a reply, aider's remarks look like text too: keep them visible as output,
        # and as the next reply's text should a ``Tokens:`` line follow.
        return s.stdout_text_feed(line) if self._last_text is not None else s.NOTHING

    def _tokens(self, m: re.Match[str]) -> list[AgentEvent]:
        events: list[AgentEvent] = []
        text = re.sub(r"\n{3,}", "\n\n", "\n".join(self._reply).strip())
        self._reply.clear()
        if text:
            self._last_text = text
            events.append(s.message(text))
        cached = _number(m.group("cached"), m.group("ck")) if m.group("cached") else 0
        self._tally.add(
            _number(m.group("sent"), m.group("sk")),
            _number(m.group("recv"), m.group("rk")),
            cached,
        )
        if m.group("cost"):
            self._tally.add_cost(float(m.group("cost")))
        self._model_error = None  # the model answered
        events.append(self._tally.event())
        events.append(s.result_event(self._last_text or ""))
        return events

    def finish(self, exit_code: int | None) -> EngineOutcome:
        if self._model_error is not None:
            self._verdict.model_failed(self._model_error)
        elif not self._tally.seen:
            self._verdict.fail(
                FailureKind.ENGINE_ERROR,
                f"aider exited with status {exit_code} and no reply from the model",
            )
        elif exit_code not in (0, None):
            self._verdict.fail(FailureKind.ENGINE_ERROR, f"aider exited with status {exit_code}")
        else:
            self._verdict.succeed(self._last_text)
        usage = self._tally.usage() if self._tally.seen else None
        return self._verdict.outcome(exit_code, session_id=SESSION_ID, usage=usage)
