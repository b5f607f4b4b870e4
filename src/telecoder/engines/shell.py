"""The ``shell`` engine: the prompt is a shell command, run in the worktree.

The command is written to a file in the engine home and run as ``/bin/sh FILE``: as an argument
(``sh -c``) it could be no longer than 128 KiB (Linux's limit on one argument), and on stdin it
would be read by the commands it runs. Its stdin is /dev/null.

For mechanical changes and codemods that need no model. Every output line is recorded; the
exit status decides success; the last lines of stdout are the answer when nothing changed.
"""

from __future__ import annotations

from collections import deque

from telecoder.domain import EventKind, FailureKind
from telecoder.protocols import AgentEvent, EngineCommand, EngineOutcome, EngineTask, Feed, Stream

_TAIL_LINES = 20
_SCRIPT = "command.sh"


class ShellEngine:
    name = "shell"
    binary = "sh"
    variables: tuple[str, ...] = ()
    instructed = False  # the prompt is a command: TeleCoder adds no instructions to it

    def command(self, task: EngineTask) -> EngineCommand:
        return EngineCommand(
            argv=["/bin/sh", str(task.home / _SCRIPT)], files={_SCRIPT: task.prompt}
        )

    def parser(self, task: EngineTask) -> ShellParser:
        return ShellParser()


class ShellParser:
    def __init__(self) -> None:
        self._stdout: deque[str] = deque(maxlen=_TAIL_LINES)
        self._stderr: deque[str] = deque(maxlen=_TAIL_LINES)

    def feed(self, stream: Stream, line: str) -> Feed:
        (self._stdout if stream == "stdout" else self._stderr).append(line)
        return Feed(
            events=[AgentEvent(kind=EventKind.OUTPUT, data={"stream": stream, "text": line})]
        )

    def finish(self, exit_code: int | None) -> EngineOutcome:
        text = "\n".join(self._stdout)
        if exit_code == 0:
            return EngineOutcome(ok=True, text=text)
        detail = "\n".join(self._stderr) or text
        error = f"command exited with status {exit_code}"
        if detail:
            error += f": {detail[-2000:]}"
        return EngineOutcome(
            ok=False, text=text, failure_kind=FailureKind.ENGINE_ERROR, error=error
        )
