"""One run of an agent: its command spawned with the allowed environment, its output pumped
into parsed events (and the raw log), its stdin answered, and a watchdog that stops it when it
falls silent past ``stall_seconds`` or its worktree grows past ``worktree_max_bytes``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping

from telecoder import disk, rawlog
from telecoder.domain import EventKind, Lease
from telecoder.gateway import Gateway, Ticket, vendor_replaced
from telecoder.masking import Masker
from telecoder.protocols import Confinement, Engine, EngineOutcome, EngineTask, Runtime
from telecoder.recorder import AttemptControl, EventRecorder, StopReason, decode
from telecoder.settings import Settings

log = logging.getLogger(__name__)

WORKTREE_CHECK_SECONDS = 5.0  # how often a running agent's worktree is measured


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
            limit = self.settings.stall_seconds
            cap = self.settings.worktree_max_bytes
            measured = time.monotonic()
            while True:
                await asyncio.sleep(min(1.0, limit / 4))
                if time.monotonic() - last_output > limit:
                    control.stop(StopReason.STALLED)
                    return
                if cap and time.monotonic() - measured >= WORKTREE_CHECK_SECONDS:
                    measured = time.monotonic()
                    if await asyncio.to_thread(disk.size_of, task.workdir, cap) > cap:
                        control.stop(StopReason.TOO_LARGE)
                        return

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
        return {**env, **self.settings.engine_control_env()}
