"""Run one engine for real: its command through the real ``LocalRuntime``, its lines through its
parser — what the pipeline does for one attempt, without the store.

Used by the integration tests and by ``tests/fixtures/engines/record.py``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from telecoder.domain import EventKind
from telecoder.protocols import AgentEvent, Engine, EngineOutcome, EngineTask
from telecoder.runtimes.local import LocalProcess, LocalRuntime

ROOT = Path(__file__).resolve().parents[1]
TOOLS_BIN = ROOT / ".tools" / "bin"


@dataclass
class Run:
    argv: list[str]
    events: list[AgentEvent] = field(default_factory=list)
    lines: list[tuple[str, str]] = field(default_factory=list)  # (stream, line) as read
    outcome: EngineOutcome | None = None
    exit_code: int | None = None
    seconds: float = 0.0

    def kinds(self) -> set[EventKind]:
        return {e.kind for e in self.events}

    def of(self, kind: EventKind) -> list[AgentEvent]:
        return [e for e in self.events if e.kind == kind]


def operator_env(**extra: str) -> dict[str, str]:
    """What the pipeline passes through: PATH (with the project's agent tools first), LANG."""
    path = os.pathsep.join([str(TOOLS_BIN), os.environ.get("PATH", "/usr/bin:/bin")])
    return {"PATH": path, "LANG": "C.UTF-8", **extra}


async def drive(
    engine: Engine,
    task: EngineTask,
    *,
    limit: float = 120.0,
    grace: float = 3.0,
    during: Callable[[LocalProcess, Run], Awaitable[None]] | None = None,
) -> Run:
    """Start the engine, feed every line to its parser, answer interactive engines, finish."""
    command = engine.command(task)
    for rel, content in command.files.items():
        path = task.home / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    env = {**task.env, **command.env}
    run = Run(argv=list(command.argv))
    started = time.monotonic()
    process = await LocalRuntime().spawn(
        command.argv,
        cwd=task.workdir,
        env=env,
        stdin=command.stdin,
        interactive=command.interactive,
    )
    parser = engine.parser(task)
    side = asyncio.create_task(during(process, run)) if during is not None else None

    async def pump() -> None:
        async for stream, raw in process.lines():
            line = raw.decode(errors="replace")
            run.lines.append((stream, line))
            feed = parser.feed(stream, line)
            run.events.extend(feed.events)
            if feed.reply:
                await process.send(feed.reply)
            if feed.done:
                await process.close_stdin()
                try:
                    await asyncio.wait_for(process.wait(), grace)
                except TimeoutError:
                    await process.stop(grace)

    try:
        await asyncio.wait_for(pump(), limit)
    except TimeoutError:
        await process.stop(grace)
    finally:
        if side is not None:
            await side
    run.exit_code = await process.wait()
    run.outcome = parser.finish(run.exit_code)
    run.seconds = time.monotonic() - started
    return run
