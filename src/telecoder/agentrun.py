"""One run of an agent: its command spawned with the allowed environment, its output pumped
into parsed events (and the raw log), its stdin answered, and a watchdog that stops it when it
falls silent past ``stall_seconds`` or its worktree grows past ``worktree_max_bytes``.

With the gateway's inbox on (``TELECODER_INBOX_*`` in the task's environment), the agent also
gets its ``telecoder-inbox`` tool on ``PATH`` (``$TELECODER_HOME/tools``, bound read-only into a
sandbox at the same path), the inbox's variables, and them again in
``$HOME/.telecoder-inbox.json`` (``inboxtool``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path

from telecoder import disk, inboxtool, rawlog
from telecoder.domain import EventKind, Lease
from telecoder.gateway import Gateway, Ticket, vendor_replaced
from telecoder.gateway.proxy import INBOX_TOKEN, INBOX_URL
from telecoder.masking import Masker
from telecoder.protocols import Confinement, Engine, EngineOutcome, EngineTask, Mount, Runtime
from telecoder.recorder import AttemptControl, EventRecorder, StopReason, decode
from telecoder.settings import Settings

log = logging.getLogger(__name__)

WORKTREE_CHECK_SECONDS = 5.0  # how often a running agent's worktree is measured, at most
WORKTREE_CHECK_MAX_SECONDS = 120.0  # ... and at least
WORKTREE_CHECK_SHARE = 0.05  # of one core, for the measures of a full worker's worktrees


def next_measure(took: float, sessions: int) -> float:
    """Seconds until a worktree is measured again, the last measure having taken ``took``.

    A large worktree costs: 13,000 files take ~0.1-0.2 s to walk, and a worker of 100 sessions
    measuring each every 5 s would spend several cores on it. The pause grows with the cost
    so that ``sessions`` worktrees like this one take ``WORKTREE_CHECK_SHARE`` of a core, kept
    between ``WORKTREE_CHECK_SECONDS`` and ``WORKTREE_CHECK_MAX_SECONDS``.
    """
    pause = took * max(sessions, 1) / WORKTREE_CHECK_SHARE
    return min(max(pause, WORKTREE_CHECK_SECONDS), WORKTREE_CHECK_MAX_SECONDS)


def measure_worktree(root: Path, cap: int) -> tuple[int, float]:
    """The worktree's size (``disk.size_of``) and the CPU seconds the measure took."""
    start = time.thread_time()
    size = disk.size_of(root, cap)
    return size, time.thread_time() - start


class AgentRunner:
    def __init__(self, *, settings: Settings, runtime: Runtime, gateway: Gateway | None) -> None:
        self.settings = settings
        self.runtime = runtime
        self.gateway = gateway

    def raw_log(self, lease: Lease, run: int, masker: Masker) -> rawlog.RawLog | None:
        if not self.settings.raw_log_days:
            return None
        file = rawlog.path(self.settings.raw_logs, lease.session_id, lease.attempt)
        return rawlog.RawLog(file, run=run, masker=masker)

    async def run(
        self,
        engine: Engine,
        task: EngineTask,
        recorder: EventRecorder,
        control: AttemptControl,
        raw_log: rawlog.RawLog | None = None,
        confinement: Confinement | None = None,
    ) -> EngineOutcome:
        command = engine.command(task)
        (task.home / "tmp").mkdir(parents=True, exist_ok=True)
        for rel, content in command.files.items():
            path = task.home / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        env = {
            **self.allowed_env(task.env),
            "HOME": str(task.home),
            "TMPDIR": str(task.home / "tmp"),
            **command.env,
        }
        env, confinement = self._with_inbox(task, env, confinement)
        process = await self.runtime.spawn(
            command.argv,
            cwd=task.workdir,
            env=env,
            stdin=command.stdin,
            interactive=command.interactive,
            confinement=confinement,
        )
        parser = engine.parser(task)
        last_output = time.monotonic()

        async def pump() -> None:
            nonlocal last_output
            async for stream, raw in process.lines():
                last_output = time.monotonic()
                line = decode(raw)
                if raw_log is not None:
                    raw_log.line(stream, line)
                try:
                    feed = parser.feed(stream, line)
                except Exception as e:
                    log.exception("%s parser failed", engine.name)
                    recorder.add(EventKind.OUTPUT, {"stream": stream, "text": line})
                    recorder.add(EventKind.ERROR, {"message": f"{engine.name} parser: {e}"})
                    continue
                for event in feed.events:
                    if event.kind == EventKind.USAGE and self.gateway is not None:
                        continue  # the CLI's own figures (in the raw log): the gateway's count
                    recorder.add(event.kind, event.data)
                if feed.reply:
                    await process.send(feed.reply)
                if feed.done:
                    await process.close_stdin()
                    return

        async def watchdog() -> None:
            """Wakes only when something may be due: the stall deadline (moved on by every
            line, so a printing agent costs one wake-up per ``stall_seconds``) or the next
            worktree measure."""
            limit = self.settings.stall_seconds
            cap = self.settings.worktree_max_bytes
            measure_at = time.monotonic() + WORKTREE_CHECK_SECONDS if cap else math.inf
            while True:
                now = time.monotonic()
                if now - last_output > limit:
                    control.stop(StopReason.STALLED)
                    return
                if cap and now >= measure_at:
                    size, took = await asyncio.to_thread(measure_worktree, task.workdir, cap)
                    if size > cap:
                        control.stop(StopReason.TOO_LARGE)
                        return
                    sessions = self.settings.worker_concurrency
                    measure_at = time.monotonic() + next_measure(took, sessions)
                    continue
                # Just past the deadline: ``> limit`` holds when it wakes.
                await asyncio.sleep(min(last_output + limit + 0.001, measure_at) - now)

        pumping = asyncio.create_task(pump())
        stopping = asyncio.create_task(control.wait())
        watching = asyncio.create_task(watchdog())
        try:
            await asyncio.wait({pumping, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if pumping.done() and control.reason is None:
                pumping.result()
                # Output ended: the engine exits by itself (or, done talking, is asked to).
                try:
                    code: int | None = await asyncio.wait_for(process.wait(), 10)
                except TimeoutError:
                    code = await process.stop(self.settings.kill_grace_seconds)
            else:
                code = await process.stop(self.settings.kill_grace_seconds)
        finally:
            for task_ in (pumping, stopping, watching):
                task_.cancel()
            await asyncio.gather(pumping, stopping, watching, return_exceptions=True)
        cap = self.settings.worktree_max_bytes
        if cap and await asyncio.to_thread(disk.size_of, task.workdir, cap) > cap:
            control.stop(StopReason.TOO_LARGE)
        return parser.finish(code)

    def _with_inbox(
        self, task: EngineTask, env: dict[str, str], confinement: Confinement | None
    ) -> tuple[dict[str, str], Confinement | None]:
        """The agent's environment and confinement with its inbox tool, when it has an inbox."""
        inbox = {k: task.env[k] for k in (INBOX_URL, INBOX_TOKEN) if task.env.get(k)}
        if len(inbox) < 2:
            return env, confinement
        tools = inboxtool.install(self.settings.home / "tools")
        # The agent's HOME may not be the engine home (a CLI's own): the tool reads this one.
        saved = Path(env.get("HOME") or task.home) / inboxtool.CONFIG
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps({"url": inbox[INBOX_URL], "token": inbox[INBOX_TOKEN]}))
        saved.chmod(0o600)
        if confinement is not None:  # seen at the same path inside, read-only
            mounts = (*confinement.mounts, Mount(source=tools, target=tools))
            confinement = dataclasses.replace(confinement, mounts=mounts)
        path = os.pathsep.join(p for p in (str(tools), env.get("PATH", "")) if p)
        return {**env, **inbox, "PATH": path}, confinement

    def allowed_env(self, task_env: Mapping[str, str] | None = None) -> dict[str, str]:
        """What every process may see of the operator's environment; with the gateway on, no
        model endpoint or key of the operator's: an agent's (``task_env``) are the gateway's."""
        env = {k: os.environ[k] for k in self.settings.env_allow if k in os.environ}
        return env if self.gateway is None else vendor_replaced(env, task_env or {})

    def passthrough_env(self, ticket: Ticket | None = None) -> dict[str, str]:
        names = (*self.settings.env_allow, *self.settings.engine_env)
        env = {k: os.environ[k] for k in names if k in os.environ}
        if ticket is not None and self.gateway is not None:
            env = self.gateway.agent_env(env, ticket)  # no real key, no real endpoint
            env.update(self.gateway.inbox_env(ticket))
        return {**env, **self.settings.engine_control_env()}
