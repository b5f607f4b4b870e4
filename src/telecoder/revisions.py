"""The agent's work in an attempt: the repository's setup commands (or their result, from the
setup cache: ``setupcache``), then the agent run; while
the repository's checks fail, its session resumed with the report, up to ``max_revisions``
times.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from telecoder import repoconfig, setupcache, tracing
from telecoder.agentrun import AgentRunner
from telecoder.confine import Confiner
from telecoder.domain import EventKind, FailureKind, Lease
from telecoder.endings import check
from telecoder.errors import WorkspaceError
from telecoder.gateway import Gateway
from telecoder.gitcmd import scrub
from telecoder.protocols import Engine, EngineTask, Usage
from telecoder.recorder import AttemptControl, EventRecorder
from telecoder.store import Store
from telecoder.verify import (
    CheckReport,
    Verifier,
    failure_summary,
    revision_prompt,
    setup_failure,
)
from telecoder.workspace import Workspace, Worktree

log = logging.getLogger(__name__)

# Of a failed attempt's patch kept on its error event; past it, the patch is cut (and says so).
FAILED_PATCH_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class Work:
    """What the agent did, revisions included."""

    text: str | None
    usage: Usage
    failure: tuple[FailureKind, str] | None = None
    resumable: bool = False  # the agent's session can be resumed (to answer a question)
    session_id: str | None = None  # the agent's own session, to resume it (``steps``)
    checkpoint: str | None = None  # a multi-step task: the last step's commit, pushed


class AgentWork:
    def __init__(
        self,
        *,
        store: Store,
        workspace: Workspace,
        verifier: Verifier,
        runner: AgentRunner,
        gateway: Gateway | None,
        cache: setupcache.SetupCache | None = None,
        runtime_name: str = "",
    ) -> None:
        self.store = store
        self.workspace = workspace
        self.verifier = verifier
        self.runner = runner
        self.gateway = gateway
        self.cache = cache  # None: every session runs its setup
        self.runtime_name = runtime_name  # part of the setup cache's key

    async def work(
        self,
        engine: Engine,
        task: EngineTask,
        config: repoconfig.RepoConfig,
        wt: Worktree,
        lease: Lease,
        recorder: EventRecorder,
        control: AttemptControl,
        confiner: Confiner | None = None,
    ) -> Work:
        """Run the agent; while the repository's checks fail, resume its session with the
        report, up to ``max_revisions`` times."""
        usage = Usage()
        revision = 0
        while True:
            recorder.progress(
                "engine_started" if revision == 0 else "revision_started",
                engine=engine.name,
                model=task.model,
                revision=revision,
                resumed=task.resume_id is not None,
            )
            raw_log = self.runner.raw_log(lease, revision, recorder.masker)
            try:
                result = await self.runner.run(
                    engine,
                    task,
                    recorder,
                    control,
                    raw_log,
                    confiner.for_role("agent") if confiner else None,
                )
            finally:
                if raw_log is not None:
                    raw_log.close()
            if self.gateway is None:  # else the gateway metered every request already
                usage = add_usage(usage, result.usage)
            if result.session_id:  # before a stop is acted on: a budget's may resume it
                await self.store.queue.record(lease, engine_session_id=result.session_id)
            check(control)
            if not result.ok:
                failure = result.failure_kind or FailureKind.ENGINE_ERROR
                error = result.error or f"{engine.name} failed"
                return Work(result.text, usage, (failure, error), session_id=result.session_id)
            if not config.has_checks:
                return Work(result.text, usage, session_id=result.session_id)
            failed = await self.verify(config, wt, task.home, revision, recorder, control, confiner)
            if not failed:
                recorder.progress("verified", revision=revision)
                return Work(result.text, usage, session_id=result.session_id)
            resumable = result.session_id is not None
            if revision >= config.max_revisions or not resumable:
                summary = failure_summary(failed, revision, resumable=resumable)
                kind = FailureKind.VERIFY_FAILED
                kept = await self._failed_patch(wt)
                recorder.add(
                    EventKind.ERROR, {"failure_kind": kind.value, "message": summary, **kept}
                )
                return Work(
                    result.text,
                    usage,
                    (kind, summary),
                    resumable=resumable,
                    session_id=result.session_id,
                )
            revision += 1
            task = replace(task, prompt=revision_prompt(failed), resume_id=result.session_id)

    async def _failed_patch(self, wt: Worktree) -> dict[str, object]:
        """The agent's work that failed the checks, kept as a patch on the error event (the
        branch is not pushed): ``GET /api/sessions/{id}/diff?attempt=failed``, the dashboard."""
        try:
            patch = await self.workspace.uncommitted_diff(wt)
        except (WorkspaceError, OSError):  # the checks' failure is reported either way
            log.warning("could not keep the failed attempt's diff", exc_info=True)
            return {}
        if not patch:
            return {}
        data = patch.encode("utf-8", "surrogateescape")
        if len(data) <= FAILED_PATCH_BYTES:
            return {"patch": patch}
        cut = data[:FAILED_PATCH_BYTES].decode("utf-8", "ignore")
        return {"patch": cut, "patch_truncated": True}

    async def setup(
        self,
        config: repoconfig.RepoConfig,
        wt: Worktree,
        home: Path,
        recorder: EventRecorder,
        control: AttemptControl,
        confiner: Confiner | None = None,
    ) -> str | None:
        """Run the repository's setup commands, or restore their result from the setup cache;
        the session's error when one fails."""
        recorder.progress("setting_up", commands=len(config.setup))
        await self.workspace.sanitize(wt)
        cache = self.cache
        if cache is None or not cache.enabled or not config.setup_cache:
            return await self._setup(config, wt, home, recorder, control, confiner)
        files = await setupcache.dependency_files(wt, config.setup_cache_key)
        key = setupcache.cache_key(
            repo=wt.remote_url, commands=config.setup, runtime=self.runtime_name, files=files
        )

        def waiting() -> None:
            recorder.progress("setup_waiting", key=key)

        def stopped() -> bool:
            return control.reason is not None

        try:
            held = await cache.hold(key, stopped=stopped, waiting=waiting)
        except WorkspaceError:
            check(control)  # stopped while waiting for another session's build
            raise
        try:
            return await self._cached_setup(
                cache, key, files, config, wt, home, recorder, control, confiner
            )
        finally:
            held.release()

    async def _cached_setup(
        self,
        cache: setupcache.SetupCache,
        key: str,
        files: dict[str, str],
        config: repoconfig.RepoConfig,
        wt: Worktree,
        home: Path,
        recorder: EventRecorder,
        control: AttemptControl,
        confiner: Confiner | None,
    ) -> str | None:
        """Restore the key's entry, else run the setup and keep its result; the key is held."""
        check(control)
        if await self._restore(cache, key, wt, recorder):
            return None
        before = await setupcache.ignored(wt)
        failed = await self._setup(config, wt, home, recorder, control, confiner)
        if failed is not None:  # a failure is never cached
            return failed
        try:
            paths = await setupcache.ignored(wt) - before
            info = {"repo": scrub(wt.remote_url), "commands": config.setup, "files": files}
            entry = await cache.store(key, wt.path, paths, info=info)
        except (OSError, WorkspaceError) as e:  # the session goes on without
            log.warning("setup cache: cannot keep %s: %s", key, e)
            return None
        if entry is not None:
            recorder.progress("setup_cached", key=key, size=entry.files_size, paths=entry.paths)
        return None

    async def _restore(
        self, cache: setupcache.SetupCache, key: str, wt: Worktree, recorder: EventRecorder
    ) -> bool:
        """Whether the setup's result was restored from the cache into ``wt``."""
        try:
            restored = await cache.restore(key, wt.path)
        except (OSError, WorkspaceError) as e:  # run the setup instead
            log.warning("setup cache: cannot restore %s: %s", key, e)
            return False
        if restored is None:
            return False
        recorder.add(
            EventKind.SETUP,
            {
                "command": "restored from the setup cache",
                "kind": "setup",
                "ok": True,
                "exit_code": 0,
                "duration_ms": restored.duration_ms,
                "output_tail": "\n".join(restored.paths),
                "timed_out": False,
                "cached": True,
                "key": key,
                "restore_ms": restored.duration_ms,
            },
        )
        recorder.progress(
            "setup_restored", key=key, restore_ms=restored.duration_ms, paths=restored.paths
        )
        return True

    async def _setup(
        self,
        config: repoconfig.RepoConfig,
        wt: Worktree,
        home: Path,
        recorder: EventRecorder,
        control: AttemptControl,
        confiner: Confiner | None = None,
    ) -> str | None:
        """Run the setup commands, each line they print an ``output`` event as it comes."""

        def report(check: CheckReport) -> None:
            recorder.add(EventKind.SETUP, check.to_dict())

        def output(stream: str, line: str) -> None:
            recorder.add(EventKind.OUTPUT, {"stream": stream, "text": line, "phase": "setup"})

        failed = await self.verifier.setup(
            config,
            wt,
            env=self.verify_env(home),
            stopped=control.wait,
            report=report,
            confinement=confiner.for_role("setup") if confiner else None,
            output=output,
        )
        check(control)
        if failed is None:
            return None
        message = setup_failure(failed)
        kind = FailureKind.SETUP_FAILED
        recorder.add(EventKind.ERROR, {"failure_kind": kind.value, "message": message})
        return message

    async def verify(
        self,
        config: repoconfig.RepoConfig,
        wt: Worktree,
        home: Path,
        revision: int,
        recorder: EventRecorder,
        control: AttemptControl,
        confiner: Confiner | None = None,
    ) -> list[CheckReport]:
        """Run the checks; the failed ones."""
        recorder.progress("verifying", revision=revision)
        await self.workspace.sanitize(wt)  # host git snapshots the worktree: nothing may run

        def report(check: CheckReport) -> None:
            recorder.add(EventKind.VERIFY, {**check.to_dict(), "revision": revision})

        with tracing.span("verify", revision=revision):
            reports = await self.verifier.run(
                config,
                wt,
                env=self.verify_env(home),
                stopped=control.wait,
                report=report,
                confinement=confiner.for_role("verify") if confiner else None,
            )
        check(control)
        return [r for r in reports if not r.ok]

    def verify_env(self, home: Path) -> dict[str, str]:
        """The allow-listed environment the agent gets too, without any model key."""
        (home / "verify").mkdir(parents=True, exist_ok=True)
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        return {
            **self.runner.allowed_env(),
            "HOME": str(home / "verify"),
            "TMPDIR": str(home / "tmp"),
        }


def add_usage(total: Usage, more: Usage | None) -> Usage:
    """Usage of several agent runs (a revision is a run of its own, its cost its own)."""
    if more is None:
        return total
    cost = None
    if total.cost_usd is not None or more.cost_usd is not None:
        cost = (total.cost_usd or 0.0) + (more.cost_usd or 0.0)
    return Usage(
        input_tokens=total.input_tokens + more.input_tokens,
        output_tokens=total.output_tokens + more.output_tokens,
        cached_tokens=total.cached_tokens + more.cached_tokens,
        cost_usd=cost,
    )
