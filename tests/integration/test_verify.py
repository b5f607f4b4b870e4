"""Verify and revise: a repository's .telecoder.yml checks run in the worktree after the agent.

The shell engine (no model) covers the checks themselves through the real Worker, Pipeline,
LocalRuntime and git: reports, what checks may change, their environment, timeouts, the
repository's engine choice. The shell engine cannot be resumed, so real agents (against the fake
model server) cover revisions: every engine, through `telecoder run`, resumes its own
session once to fix the work; Pi shows checks that never pass.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from telecoder.assemble import build_worker
from telecoder.domain import EngineSource, EventKind, FailureKind, NewSession, SessionStatus
from telecoder.recorder import StopReason
from telecoder.settings import Settings
from telecoder.store import Store, open_store
from tests.cli import events_json, telecoder
from tests.conftest import GitRepo, make_repo
from tests.engine_cases import E2E, E2E_BY_ID, E2E_CASES, agent_env
from tests.fakes.model_server import FakeModelServer, Reply
from tests.integration.test_engine_shell import all_events, execute, tuned

REPORT_KEYS = {"command", "kind", "ok", "exit_code", "duration_ms", "output_tail", "revision"}


def repo_with(tmp_path: Path, config: str, **files: str) -> GitRepo:
    return make_repo(tmp_path, files={"README.md": "hello\n", ".telecoder.yml": config, **files})


def shell(repo: GitRepo, prompt: str, **kw: Any) -> NewSession:
    return NewSession(repo=str(repo.path), prompt=prompt, engine="shell", **kw)


def branch_files(repo: GitRepo, branch: str) -> list[str]:
    return repo.remote_git("diff", "--name-only", "main", branch).splitlines()


async def verify_reports(store: Store, session_id: str) -> list[dict[str, Any]]:
    return [e.data for e in await all_events(store, session_id) if e.kind == EventKind.VERIFY]


async def test_passing_checks_push_only_the_agents_work(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    repo = repo_with(
        tmp_path,
        """
verify:
  - test "$(cat out.txt)" = hello
  - mkdir -p build && echo junk > build/artifact.txt && echo rewritten > README.md
checks:
  - file_exists: out.txt
  - command_succeeds: grep -q hello out.txt && echo found it
""",
    )
    worker = build_worker(tuned(settings), store)
    done = await execute(worker, store, shell(repo, "echo hello > out.txt"))
    assert done.status == SessionStatus.SUCCEEDED, done.error
    reports = await verify_reports(store, done.id)
    assert [(r["kind"], r["ok"]) for r in reports] == [
        ("verify", True),
        ("verify", True),
        ("file_exists", True),
        ("command_succeeds", True),
    ]
    assert all(set(r) >= REPORT_KEYS for r in reports)
    assert reports[3]["output_tail"] == "found it"
    assert reports[0]["exit_code"] == 0
    # What the checks wrote (build output, a rewritten file) is not part of the branch.
    assert branch_files(repo, done.branch) == ["out.txt"]
    assert repo.remote_git("show", f"{done.branch}:README.md") == "hello"


async def test_failing_checks_fail_the_session_with_the_report_and_push_nothing(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    repo = repo_with(
        tmp_path,
        """
verify:
  - echo "3 tests failed" >&2; exit 3
checks:
  - file_exists: missing.txt
  - file_exists: ../outside.txt
  - command_succeeds: "true"
""",
    )
    (tmp_path / "outside.txt").write_text("not the repository's\n")
    worker = build_worker(tuned(settings), store)
    done = await execute(worker, store, shell(repo, "echo hello > out.txt"))
    assert done.status == SessionStatus.FAILED
    assert done.failure_kind == FailureKind.VERIFY_FAILED
    assert done.attempt == 1  # permanent: not tried again
    assert done.error is not None
    assert done.error.startswith("verification failed: 3 checks failed (the engine cannot be")
    assert "exited with status 3: 3 tests failed" in done.error
    assert "file_exists: missing.txt: no such file" in done.error
    assert "the path is outside the repository" in done.error
    reports = await verify_reports(store, done.id)
    assert [(r["kind"], r["ok"], r["exit_code"]) for r in reports] == [
        ("verify", False, 3),
        ("file_exists", False, 1),
        ("file_exists", False, 1),
        ("command_succeeds", True, 0),
    ]
    assert reports[0]["output_tail"] == "3 tests failed"
    assert repo.remote_git("branch", "--list", "telecoder/*") == ""


async def test_work_that_fails_the_checks_is_pushed_to_a_failed_ref_when_asked(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    repo = repo_with(tmp_path, 'verify:\n  - echo "1 test failed" >&2; exit 1\n')
    worker = build_worker(tuned(settings, push_failed=True), store)
    done = await execute(worker, store, shell(repo, "echo tried > out.txt"))
    assert (done.status, done.failure_kind) == (SessionStatus.FAILED, FailureKind.VERIFY_FAILED)
    ref = f"telecoder/{done.id}-failed"
    assert done.result is not None
    assert done.result.failed_ref == ref
    assert done.result.to_dict()["failed_ref"] == ref
    assert repo.remote_git("branch", "--list", "telecoder/*").split() == [ref]  # no PR branch
    assert branch_files(repo, ref) == ["out.txt"]
    assert repo.remote_git("show", f"{ref}:out.txt") == "tried"
    message = repo.remote_git("log", "-1", "--format=%B", ref)
    assert f"TeleCoder-Session: {done.id}" in message
    assert "TeleCoder-Partial: verify_failed" in message
    pushed = [
        e.data
        for e in await all_events(store, done.id)
        if e.kind == EventKind.PROGRESS and e.data["step"] == "failed_pushed"
    ]
    assert pushed == [
        {"step": "failed_pushed", "branch": ref, "commit": repo.remote_git("rev-parse", ref)}
    ]


async def test_the_repository_decides_whether_failed_work_is_pushed(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    off = repo_with(tmp_path / "off", "push_failed: false\nverify:\n  - exit 1\n")
    on = repo_with(tmp_path / "on", "push_failed: true\nverify:\n  - exit 1\n")
    kept = await execute(
        build_worker(tuned(settings, push_failed=True), store), store, shell(off, "echo a > a")
    )
    assert kept.failure_kind == FailureKind.VERIFY_FAILED
    assert kept.result is None
    assert off.remote_git("branch", "--list", "telecoder/*") == ""
    pushed = await execute(build_worker(tuned(settings), store), store, shell(on, "echo b > b"))
    assert pushed.failure_kind == FailureKind.VERIFY_FAILED
    assert pushed.result is not None
    assert pushed.result.failed_ref == f"telecoder/{pushed.id}-failed"
    assert branch_files(on, f"telecoder/{pushed.id}-failed") == ["b"]


async def test_failed_work_with_a_secret_is_not_pushed(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    repo = repo_with(tmp_path, "verify:\n  - exit 1\n")
    worker = build_worker(tuned(settings, push_failed=True), store)
    part = "Zq8x" * 3  # a GitHub token's shape, spelled out only when the shell runs
    leak = f"P={part}; echo \"token = 'ghp_$P$P$P'\" > leak.py"
    done = await execute(worker, store, shell(repo, leak))
    assert done.failure_kind == FailureKind.VERIFY_FAILED
    assert done.result is None
    assert repo.remote_git("branch", "--list", "telecoder/*") == ""
    steps = [e.data for e in await all_events(store, done.id) if e.kind == EventKind.PROGRESS]
    assert {"step": "failed_not_pushed", "branch": f"telecoder/{done.id}-failed",
            "reason": "secret_detected"} in steps  # fmt: skip


async def test_git_clean_fails_when_a_check_changes_a_file(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    repo = repo_with(
        tmp_path,
        "verify: [echo formatted > out.txt, touch new.txt]\nchecks: [{git_clean: true}]\n",
    )
    worker = build_worker(tuned(settings), store)
    done = await execute(worker, store, shell(repo, "echo hello > out.txt"))
    assert done.failure_kind == FailureKind.VERIFY_FAILED, done.error
    [*_, clean] = await verify_reports(store, done.id)
    assert (clean["kind"], clean["ok"]) == ("git_clean", False)
    assert clean["output_tail"].splitlines() == ["new.txt", "out.txt"]
    assert "git_clean: true: the checks changed files" in (done.error or "")


async def test_a_check_cannot_make_host_git_run_its_commands(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    # A check (the repository's code) writes a clean filter into the mirror's config through
    # the worktree: the host's own git (snapshot, git_clean, restore, commit) must not run it.
    ran = tmp_path / "filter-ran"
    repo = repo_with(
        tmp_path,
        f"""
verify:
  - git config filter.evil.clean "touch {ran}; cat" && echo '* filter=evil' > .gitattributes
checks:
  - git_clean: true
""",
    )
    worker = build_worker(tuned(settings), store)
    done = await execute(worker, store, shell(repo, "echo hello > out.txt"))
    assert done.failure_kind == FailureKind.VERIFY_FAILED, done.error
    [_, clean] = await verify_reports(store, done.id)
    assert clean["output_tail"] == ".gitattributes"
    assert not ran.exists()


async def test_checks_see_no_secret_and_run_alone(
    settings: Settings, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, f"secret-{name.lower()}")
    repo = repo_with(
        tmp_path,
        """
verify:
  - env
  - cat; echo "stdin-done $$ $(cut -d' ' -f5 /proc/$$/stat)"
""",
    )
    worker = build_worker(tuned(settings), store)
    done = await execute(worker, store, shell(repo, "echo hello > out.txt"))
    assert done.status == SessionStatus.SUCCEEDED, done.error
    env_report, stdin_report = await verify_reports(store, done.id)
    env = env_report["output_tail"]
    assert "secret-" not in env
    assert "tc-" not in env  # nor the attempt's key to the gateway, nor the gateway
    assert "_BASE_URL" not in env
    assert f"PATH={os.environ['PATH']}" in env.splitlines()
    assert f"HOME={settings.engine_homes / done.id / 'verify'}" in env.splitlines()
    # stdin is /dev/null: no hang; the check runs in a process group of the sandbox's own
    # (led by the sandbox's first process), none of the worker's.
    marker, pid, group = stdin_report["output_tail"].split()
    assert marker == "stdin-done"
    assert int(group) <= int(pid)
    assert int(group) != os.getpgrp()


async def test_a_check_past_its_timeout_is_stopped(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    repo = repo_with(tmp_path, "verify: [sleep 60]\nverify_timeout: 0.5\n")
    worker = build_worker(tuned(settings), store)
    started = time.monotonic()
    done = await execute(worker, store, shell(repo, "echo hello > out.txt"))
    assert time.monotonic() - started < 15
    assert done.failure_kind == FailureKind.VERIFY_FAILED
    [report] = await verify_reports(store, done.id)
    assert report["timed_out"] is True
    assert "[stopped after 0.5 s]" in report["output_tail"]
    assert "`sleep 60` did not finish in time" in (done.error or "")


@pytest.mark.parametrize(("key", "step"), [("setup", "setting_up"), ("verify", "verifying")])
async def test_cancel_stops_a_running_setup_or_check(
    key: str, step: str, settings: Settings, store: Store, tmp_path: Path
) -> None:
    marker = tmp_path / "finished"
    repo = repo_with(tmp_path, f"{key}: ['sleep 30; touch {marker}']\n")
    worker = build_worker(tuned(settings), store)
    new = shell(repo, "echo hello > out.txt")
    running = asyncio.create_task(execute(worker, store, new))
    deadline = time.monotonic() + 15
    while not any(e.data.get("step") == step for e in await all_events(store, new.id)):
        assert time.monotonic() < deadline, f"{key} never started"
        await asyncio.sleep(0.05)
    started = time.monotonic()
    assert worker.stop_session(new.id, StopReason.CANCELLED)
    done = await running
    assert time.monotonic() - started < 5
    assert done.status == SessionStatus.CANCELLED
    assert not marker.exists()
    assert repo.remote_git("branch", "--list", "telecoder/*") == ""


async def test_a_malformed_config_is_bad_input(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    repo = repo_with(tmp_path, "max_revisions: lots\n")
    worker = build_worker(tuned(settings), store)
    done = await execute(worker, store, shell(repo, "echo hello > out.txt"))
    assert done.failure_kind == FailureKind.BAD_INPUT
    assert done.error is not None
    assert ".telecoder.yml is invalid: max_revisions:" in done.error
    assert done.attempt == 1


@pytest.mark.parametrize(
    ("engine", "source", "config", "ran"),
    [
        # TELECODER_ENGINE's choice gives way to the repository's (and its model).
        ("claude-code", EngineSource.SETTINGS, "engine: shell\nmodel: m-1\n", ("shell", "m-1")),
        # The task's choice stands; so does the task's engine when the repository names none.
        ("shell", EngineSource.REQUEST, "engine: claude-code\nmodel: m-1\n", ("shell", None)),
        ("shell", EngineSource.SETTINGS, "model: m-2\n", ("shell", "m-2")),
    ],
)
async def test_the_repository_chooses_the_engine_unless_the_task_did(
    settings: Settings,
    store: Store,
    tmp_path: Path,
    engine: str,
    source: EngineSource,
    config: str,
    ran: tuple[str, str | None],
) -> None:
    repo = repo_with(tmp_path, config)
    worker = build_worker(tuned(settings), store)
    new = NewSession(
        repo=str(repo.path), prompt="echo hi > x.txt", engine=engine, engine_source=source
    )
    done = await execute(worker, store, new)
    assert done.status == SessionStatus.SUCCEEDED, done.error
    started = [
        e.data for e in await all_events(store, new.id) if e.data.get("step") == "engine_started"
    ]
    assert [(s["engine"], s["model"]) for s in started] == [ran]
    assert done.engine == ran[0]
    moved = source == EngineSource.SETTINGS and "engine:" in config
    assert done.engine_source == (EngineSource.REPO if moved else source)


async def test_an_unknown_engine_in_the_repository_is_bad_input(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    repo = repo_with(tmp_path, "engine: nope\n")
    worker = build_worker(tuned(settings), store)
    new = NewSession(
        repo=str(repo.path), prompt="true", engine="shell", engine_source=EngineSource.SETTINGS
    )
    done = await execute(worker, store, new)
    assert done.failure_kind == FailureKind.BAD_INPUT
    assert "unknown engine 'nope'" in (done.error or "")


# --- setup ------------------------------------------------------------------------------------


def setup_reports(events: list[Any]) -> list[dict[str, Any]]:
    return [e.data for e in events if e.kind == EventKind.SETUP]


async def test_setup_prepares_what_the_agent_and_checks_use_and_is_not_committed(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    repo = repo_with(
        tmp_path,
        """
setup:
  - mkdir -p deps && echo ready > deps/flag
  - echo installed 3 packages
verify: test -f deps/flag
""",
        **{".gitignore": "deps/\n"},
    )
    worker = build_worker(tuned(settings), store)
    done = await execute(worker, store, shell(repo, "cat deps/flag > out.txt"))
    assert done.status == SessionStatus.SUCCEEDED, done.error
    assert branch_files(repo, done.branch) == ["out.txt"]
    assert repo.remote_git("show", f"{done.branch}:out.txt") == "ready"
    events = await all_events(store, done.id)
    reports = setup_reports(events)
    assert [(r["command"], r["ok"]) for r in reports] == [
        ("mkdir -p deps && echo ready > deps/flag", True),
        ("echo installed 3 packages", True),
        ("nothing left to commit", True),
    ]
    assert all(set(r) >= REPORT_KEYS - {"revision"} for r in reports)
    assert reports[1]["output_tail"] == "installed 3 packages"
    steps = [e.data.get("step") for e in events if e.kind == EventKind.PROGRESS]
    assert steps.index("setting_up") < steps.index("engine_started") < steps.index("verifying")


async def test_a_failing_setup_fails_the_session_before_the_agent_runs(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    repo = repo_with(
        tmp_path, "setup:\n  - echo 'npm ERR! network' >&2; exit 1\n  - touch never.txt\n"
    )
    worker = build_worker(tuned(settings), store)
    done = await execute(worker, store, shell(repo, "touch agent-ran.txt"))
    assert done.status == SessionStatus.FAILED
    assert done.failure_kind == FailureKind.SETUP_FAILED
    assert done.attempt == 1  # permanent: `telecoder retry` once the cause is fixed
    assert done.error == (
        "setup failed: `echo 'npm ERR! network' >&2; exit 1` exited with status 1: npm ERR! network"
    )
    events = await all_events(store, done.id)
    assert [(r["ok"], r["exit_code"]) for r in setup_reports(events)] == [(False, 1)]
    steps = [e.data.get("step") for e in events if e.kind == EventKind.PROGRESS]
    assert "engine_started" not in steps
    assert repo.remote_git("branch", "--list", "telecoder/*") == ""


async def test_a_setup_that_leaves_files_to_commit_fails(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    repo = repo_with(tmp_path, "setup: [echo generated > gen.txt, echo changed > README.md]\n")
    worker = build_worker(tuned(settings), store)
    done = await execute(worker, store, shell(repo, "echo hello > out.txt"))
    assert done.failure_kind == FailureKind.SETUP_FAILED, done.error
    assert (done.error or "").startswith(
        "setup failed: it left files that would be committed (README.md, gen.txt)"
    )
    [*_, clean] = setup_reports(await all_events(store, done.id))
    assert (clean["command"], clean["ok"]) == ("nothing left to commit", False)
    assert repo.remote_git("branch", "--list", "telecoder/*") == ""


# --- revisions of real agents, resumed -------------------------------------------------------

VERIFY_CASE = "(verify case)"
REVISION_MARK = "do not pass this repository's checks"  # in every revision prompt
WRONG = (Reply(text="Creating it.", command="echo wrong > fake.txt"), Reply(text="Created."))
FIXED = (Reply(text="Fixing it.", command="echo fixed > fake.txt"), Reply(text="Fixed."))
# Aider edits through SEARCH/REPLACE blocks in its reply, not through a shell tool.


def aider_edit(intro: str, search: str, replace: str) -> Reply:
    block = f"<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE"
    return Reply(text=f"{intro}\n\nfake.txt\n```\n{block}\n```\n")


AIDER_WRONG = (aider_edit("Creating it.", "", "wrong\n"),)
AIDER_FIXED = (aider_edit("Fixing it.", "wrong\n", "fixed\n"),)


def scripts_for(engine: str) -> dict[str, tuple[Reply, ...]]:
    if engine == "aider":
        return {VERIFY_CASE: AIDER_WRONG, REVISION_MARK: AIDER_FIXED}
    return {VERIFY_CASE: WRONG, REVISION_MARK: FIXED}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeModelServer]:
    with FakeModelServer(scripts=scripts_for("pi")) as fake:
        yield fake


def run_agent(repo: GitRepo, env: dict[str, str], case: E2E = E2E_BY_ID["pi"]) -> dict[str, Any]:
    done = telecoder(
        "run", f"create fake.txt {VERIFY_CASE}", "--repo", str(repo.path),
        "--engine", case.engine, "--model", case.model, "--json", env=env, timeout=240,
    )  # fmt: skip
    session: dict[str, Any] = json.loads(done.stdout)
    assert done.returncode == (0 if session["status"] == "succeeded" else 1), done.stderr
    return session


async def engine_session_ids(home: Path, session_id: str) -> list[str | None]:
    store = await open_store(f"sqlite:///{home / 'telecoder.db'}")
    try:
        return [a.engine_session_id for a in await store.sessions.attempts(session_id)]
    finally:
        await store.close()


@pytest.mark.usefixtures("agent_tools")
@pytest.mark.parametrize("case", E2E_CASES, ids=[c.id for c in E2E_CASES])
async def test_a_failing_check_is_fixed_by_one_revision_of_the_same_session(
    case: E2E, tmp_path: Path
) -> None:
    repo = repo_with(tmp_path, "verify:\n  - grep -qx fixed fake.txt\n")
    home = tmp_path / "home"
    with FakeModelServer(scripts=scripts_for(case.engine)) as server:
        env = agent_env(home, server.url)
        session = await asyncio.to_thread(run_agent, repo, env, case)
        asked = server.model_requests()

    assert session["status"] == "succeeded", session["error"]
    assert session["attempt"] == 1
    assert branch_files(repo, session["branch"]) == ["fake.txt"]
    assert repo.remote_git("show", f"{session['branch']}:fake.txt") == "fixed"
    events = events_json(session["id"], env)
    reports = [e["data"] for e in events if e["kind"] == "verify"]
    assert [(r["revision"], r["ok"]) for r in reports] == [(0, False), (1, True)]
    steps = [e["data"]["step"] for e in events if e["kind"] == "progress"]
    assert steps.count("revision_started") == 1
    revision = next(e["data"] for e in events if e["data"].get("step") == "revision_started")
    assert revision["resumed"] is True
    # The revision continued the agent's conversation: the model saw the first prompt again,
    # and the agent's session id is on the attempt.
    revising = [json.dumps(r.body) for r in asked if REVISION_MARK in json.dumps(r.body)]
    assert revising
    assert any(VERIFY_CASE in body for body in revising)
    [agent_session] = await engine_session_ids(home, session["id"])
    assert agent_session
    # Both runs are paid for: the gateway's running totals grow across the revision, and the
    # session's tokens are the sum of what every request of either run reported.
    cut = next(i for i, e in enumerate(events) if e["data"].get("step") == "revision_started")
    first = [e["data"] for e in events[:cut] if e["kind"] == "usage"][-1]
    last = [e["data"] for e in events[cut:] if e["kind"] == "usage"][-1]
    assert 0 < first["input_tokens"] < last["input_tokens"] == session["input_tokens"]
    reported = server.reported
    assert session["input_tokens"] == sum(r.input + r.cache_read + r.cache_write for r in reported)
    assert session["output_tokens"] == sum(r.output for r in reported)
    assert session["cost_usd"] == pytest.approx(last["cost_usd"])
    assert session["cost_usd"] > first["cost_usd"] > 0


@pytest.mark.usefixtures("agent_tools")
async def test_checks_that_never_pass_fail_the_session_after_max_revisions(
    server: FakeModelServer, tmp_path: Path
) -> None:
    repo = repo_with(tmp_path, "verify: [test -f never-there.txt]\nmax_revisions: 1\n")
    env = agent_env(tmp_path / "home", f"{server.url}/{tmp_path.name}")
    session = await asyncio.to_thread(run_agent, repo, env)

    assert session["status"] == "failed"
    assert session["failure_kind"] == "verify_failed"
    assert session["attempt"] == 1
    assert session["error"].startswith(
        "verification failed: 1 check still failing after 1 revision; nothing was pushed"
    )
    assert "`test -f never-there.txt` exited with status 1" in session["error"]
    reports = [e["data"] for e in events_json(session["id"], env) if e["kind"] == "verify"]
    assert [(r["revision"], r["ok"], r["exit_code"]) for r in reports] == [
        (0, False, 1),
        (1, False, 1),
    ]
    assert all(set(r) >= REPORT_KEYS for r in reports)
    assert repo.remote_git("branch", "--list", "telecoder/*") == ""
