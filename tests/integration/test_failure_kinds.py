"""Every failure kind, produced by a real attempt where it arises: real git, real processes.

``verify_failed`` belongs to the verify step (engines work) and is covered by the policy tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from telecoder import registry
from telecoder.assemble import build_forges, build_worker, build_workspace
from telecoder.domain import FailureKind, NewSession, Session, SessionStatus
from telecoder.engines.shell import ShellParser
from telecoder.intake import Request, accept
from telecoder.protocols import EngineCommand, EngineOutcome, EngineTask
from telecoder.settings import Settings
from telecoder.store import Store
from tests.conftest import GitRepo
from tests.fakes.github import TOKEN, FakeGitHub


async def queue(settings: Settings, store: Store, repo: str, prompt: str, **request: object):
    accepted = await accept(
        Request(repo=repo, prompt=prompt, **request),  # type: ignore[arg-type]
        settings=settings,
        workspace=build_workspace(settings),
        engines=registry.names("engines"),
        forges=build_forges(settings),
    )
    return await store.sessions.create(accepted.session)


async def attempt(settings: Settings, store: Store) -> Session:
    """Claim the next session and run one attempt of it, as a worker does."""
    worker = build_worker(settings, store)
    claimed = await store.queue.claim(worker.id)
    assert claimed is not None
    await worker.execute(claimed)
    return await store.sessions.get(claimed.session.id)


async def one(settings: Settings, store: Store, repo: str, prompt: str, **request: object):
    await queue(settings, store, repo, prompt, **request)
    return await attempt(settings, store)


async def check(store: Store, session: Session, kind: FailureKind, status: SessionStatus) -> None:
    assert session.failure_kind == kind, session.error
    assert session.status == status
    (tried,) = await store.sessions.attempts(session.id)
    assert tried.failure_kind == kind
    statuses = [e.data for e in await store.events.list(session.id) if e.kind.value == "status"]
    assert statuses[-1]["failure_kind"] == kind.value
    if status == SessionStatus.QUEUED:
        assert statuses[-1]["retry_in"] > 0


# --- engines that report what a model or our own code can do ---------------------------------


class ModelRefusesEngine:
    name = "test-model-refuses"

    def command(self, task: EngineTask) -> EngineCommand:
        return EngineCommand(argv=["/bin/sh", "-c", "echo 'HTTP 401: invalid x-api-key' >&2"])

    def parser(self, task: EngineTask) -> ModelRefusesParser:
        return ModelRefusesParser()


class ModelRefusesParser(ShellParser):
    def finish(self, exit_code: int | None) -> EngineOutcome:
        return EngineOutcome(
            ok=False, failure_kind=FailureKind.MODEL_ERROR, error="the model API refused: 401"
        )


class BrokenEngine:
    name = "test-broken"

    def command(self, task: EngineTask) -> EngineCommand:
        raise RuntimeError("a bug in an engine")

    def parser(self, task: EngineTask) -> ShellParser:
        return ShellParser()


@pytest.fixture
def test_engines() -> Iterator[None]:
    removers = [
        registry.register("engines", ModelRefusesEngine.name, ModelRefusesEngine),
        registry.register("engines", BrokenEngine.name, BrokenEngine),
    ]
    yield
    for remove in removers:
        remove()


async def wait_until(store: Store, session_id: str, step: str) -> None:
    for _ in range(200):
        if any(e.data.get("step") == step for e in await store.events.list(session_id)):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {step} event")


# --- the kinds ---------------------------------------------------------------------------------


async def test_timeout(settings: Settings, store: Store, git_repo: GitRepo):
    started = time.monotonic()
    session = await one(settings, store, str(git_repo.path), "sleep 60", timeout_seconds=1)
    assert time.monotonic() - started < 10
    await check(store, session, FailureKind.TIMEOUT, SessionStatus.FAILED)
    assert "time limit of 1 s" in (session.error or "")


async def test_stalled(settings: Settings, store: Store, git_repo: GitRepo):
    settings = settings.model_copy(update={"stall_seconds": 1.0})
    session = await one(settings, store, str(git_repo.path), "echo thinking; sleep 60")
    await check(store, session, FailureKind.STALLED, SessionStatus.QUEUED)


async def test_worker_lost_then_dead(settings: Settings, store: Store, git_repo: GitRepo):
    new = NewSession(repo=str(git_repo.path), prompt="true", engine="shell", max_attempts=1)
    await store.sessions.create(new)
    claimed = await store.queue.claim("vanishing-worker")
    assert claimed is not None
    # The worker never renews; the lease (5 s in the store fixture) runs out.
    await asyncio.sleep(max(0.0, (claimed.session.lease_until or 0) - time.time()) + 0.05)
    assert await store.queue.recover_expired() == [new.id]
    session = await store.sessions.get(new.id)
    await check(store, session, FailureKind.WORKER_LOST, SessionStatus.DEAD)
    (tried,) = await store.sessions.attempts(new.id)
    assert tried.interrupted == "crashed"


async def test_engine_error(settings: Settings, store: Store, git_repo: GitRepo):
    session = await one(settings, store, str(git_repo.path), "echo broken >&2; exit 3")
    await check(store, session, FailureKind.ENGINE_ERROR, SessionStatus.FAILED)
    assert "status 3" in (session.error or "")


async def test_model_error(settings: Settings, store: Store, git_repo: GitRepo, test_engines: None):
    session = await one(
        settings, store, str(git_repo.path), "anything", engine=ModelRefusesEngine.name
    )
    await check(store, session, FailureKind.MODEL_ERROR, SessionStatus.FAILED)


async def test_cancelled(settings: Settings, store: Store, git_repo: GitRepo, tmp_path: Path):
    marker = tmp_path / "finished"
    new = await queue(settings, store, str(git_repo.path), f"sleep 20; touch {marker}")
    running = asyncio.create_task(attempt(settings, store))
    await wait_until(store, new.id, "engine_started")
    cancelled_at = time.monotonic()
    await store.sessions.cancel(new.id)
    session = await asyncio.wait_for(running, 15)
    assert time.monotonic() - cancelled_at < settings.heartbeat_seconds + 3
    await check(store, session, FailureKind.CANCELLED, SessionStatus.CANCELLED)
    assert not marker.exists()


async def test_bad_input(settings: Settings, store: Store, git_repo: GitRepo):
    # The base branch existed when the task was accepted and is gone when it runs.
    git_repo.git("push", "-q", "origin", "main:release")
    await queue(settings, store, str(git_repo.path), "true", base="release")
    git_repo.git("push", "-q", "origin", ":release")
    session = await attempt(settings, store)
    await check(store, session, FailureKind.BAD_INPUT, SessionStatus.FAILED)


async def test_workspace_error(settings: Settings, store: Store, git_repo: GitRepo):
    hook = git_repo.remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'pushes are frozen' >&2\nexit 1\n")
    hook.chmod(0o755)
    session = await one(settings, store, str(git_repo.path), "echo x > new.txt")
    await check(store, session, FailureKind.WORKSPACE_ERROR, SessionStatus.QUEUED)
    assert "pushes are frozen" in (session.error or "")


@pytest.fixture
def hub(git_repo: GitRepo, fake_github: FakeGitHub, settings: Settings) -> Settings:
    fake_github.add_repo("acme", "repo", git_dir=git_repo.remote)
    git_repo.git("remote", "set-url", "origin", fake_github.git_url("acme", "repo"))
    return settings.model_copy(
        update={"github_token": SecretStr(TOKEN), "github_api_url": fake_github.url}
    )


async def test_publish_error_transient(
    hub: Settings, store: Store, git_repo: GitRepo, fake_github: FakeGitHub
):
    fake_github.fail_next(502, count=20)
    session = await one(hub, store, str(git_repo.path), "echo x > new.txt")
    await check(store, session, FailureKind.PUBLISH_ERROR, SessionStatus.QUEUED)


async def test_publish_error_permanent(
    hub: Settings, store: Store, git_repo: GitRepo, fake_github: FakeGitHub
):
    fake_github.fail_next(404, message="Not Found")
    session = await one(hub, store, str(git_repo.path), "echo x > new.txt")
    await check(store, session, FailureKind.PUBLISH_ERROR, SessionStatus.FAILED)


async def test_internal(settings: Settings, store: Store, git_repo: GitRepo, test_engines: None):
    session = await one(settings, store, str(git_repo.path), "anything", engine=BrokenEngine.name)
    await check(store, session, FailureKind.INTERNAL, SessionStatus.QUEUED)
    assert "a bug in an engine" in (session.error or "")
