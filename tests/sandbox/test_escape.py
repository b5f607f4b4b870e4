"""The escape suite: from inside a session, everything an attacker would try fails, and each test
says how. The agent is the ``shell`` engine (its prompt is the attack, run as the agent would
run it), through the real worker, pipeline, runtime and git, as in production.

Run against every confining runtime (``RUNTIMES``): bubblewrap, and docker against podman's
Docker-compatible service (``tests/docker_support.py``).
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from telecoder.assemble import build_worker
from telecoder.domain import EventKind, FailureKind, MessageKind, Session, SessionStatus
from telecoder.server import create_app
from telecoder.settings import Settings
from telecoder.store import Store
from tests.cli import cli_env, telecoder
from tests.conftest import GitRepo, git
from tests.docker_support import PodmanService
from tests.fakes.model_server import FakeModelServer
from tests.integration.test_engine_shell import all_events, execute, outputs, request, tuned
from tests.processes import with_marker
from tests.server import client

RUNTIMES = ["sandbox", "docker"]
CANARY_VAR = "TELECODER_TEST_CANARY"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'escape.db'}"


@pytest.fixture(params=RUNTIMES)
def confined(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    if request.param == "docker":  # containers of podman's Docker-compatible service
        podman: PodmanService = request.getfixturevalue("podman")
        return podman.settings(tuned(settings))
    return tuned(settings, runtime=request.param)


@pytest.fixture
def canary(monkeypatch: pytest.MonkeyPatch) -> str:
    """A value only the worker's own environment holds (not a secret by name, so no masking
    could hide a leak of it)."""
    value = f"canary-{uuid.uuid4().hex}"
    monkeypatch.setenv(CANARY_VAR, value)
    return value


async def attack(settings: Settings, store: Store, repo: GitRepo, script: str) -> Session:
    worker = build_worker(settings, store)
    return await execute(worker, store, request(repo, script), within=60)


async def said(store: Store, session: Session) -> str:
    events = await all_events(store, session.id)
    return "\n".join(outputs(events) + outputs(events, "stderr"))


async def test_the_workers_environment_is_out_of_reach(
    confined: Settings, store: Store, git_repo: GitRepo, canary: str
) -> None:
    pid = os.getpid()
    done = await attack(
        confined,
        store,
        git_repo,
        f"cat /proc/{pid}/environ; cat /proc/$PPID/environ; cat /proc/*/environ; "
        f"env; ls /proc | tr '\\n' ' '",
    )
    text = await said(store, done)
    assert canary not in text
    # Only the sandbox's own few processes are there to see.
    pids = [int(p) for p in text.split() if p.isdigit()]
    assert pids
    assert max(pids) < 100


async def test_telecoders_home_database_and_config_are_invisible(
    confined: Settings, store: Store, git_repo: GitRepo, db_url: str
) -> None:
    (confined.home / "config.env").write_text("TELECODER_API_TOKEN=very-secret-token-value\n")
    database = db_url.removeprefix("sqlite:///")
    done = await attack(
        confined,
        store,
        git_repo,
        f"cat {confined.home}/config.env; cat {database} | head -c 100; "
        f"cat $HOME/../../config.env; echo home: $(ls -A {confined.home}); "
        f"echo mirror: $(ls -A {confined.home}/mirrors/*.git); ls {confined.home}/logs",
    )
    text = await said(store, done)
    assert "very-secret" not in text
    assert "SQLite format" not in text
    # What there is of the home: the mount points of this session's own worktree, engine
    # home and git dir, the agents' tools (read-only: ``telecoder-inbox``), and of the mirror
    # only its objects (read-only).
    lines = text.splitlines()
    assert "home: engines mirrors tools worktrees" in lines
    assert "mirror: objects worktrees" in lines
    assert "home/logs': No such file or directory" in text


async def test_another_sessions_worktree_and_engine_home_are_invisible(
    confined: Settings, store: Store, git_repo: GitRepo
) -> None:
    kept = confined.model_copy(update={"worktree_retention_seconds": 3600})
    first = await attack(kept, store, git_repo, "echo victim-secret > notes.txt; sleep 0.2")
    victim = Path((await store.sessions.attempts(first.id))[-1].workspace_path or "")
    assert (victim / "notes.txt").is_file()
    (confined.engine_homes / "other-session").mkdir(parents=True)
    (confined.engine_homes / "other-session" / "state").write_text("other-home-secret")
    done = await attack(
        confined,
        store,
        git_repo,
        f"cat {victim}/notes.txt; echo injected >> {victim}/README.md; "
        f"cat {confined.engine_homes}/other-session/state; ls ..; echo tried",
    )
    text = await said(store, done)
    assert "tried" in text
    assert "victim-secret" not in text
    assert "other-home-secret" not in text
    assert "injected" not in (victim / "README.md").read_text()


async def test_the_operators_home_is_invisible(
    confined: Settings, store: Store, git_repo: GitRepo, tmp_path: Path, monkeypatch: Any
) -> None:
    operator = tmp_path / "operator"
    (operator / ".ssh").mkdir(parents=True)
    (operator / ".ssh" / "id_ed25519").write_text("PRIVATE-KEY-MATERIAL")
    monkeypatch.setenv("HOME", str(operator))
    done = await attack(
        confined,
        store,
        git_repo,
        f"cat {operator}/.ssh/id_ed25519; cat ~/.ssh/id_ed25519; ls /root /home; echo tried",
    )
    text = await said(store, done)
    assert "tried" in text
    assert "PRIVATE-KEY-MATERIAL" not in text


async def test_nothing_outside_the_worktree_can_be_written(
    confined: Settings, store: Store, git_repo: GitRepo
) -> None:
    marker = f"escape-{uuid.uuid4().hex}"
    targets = [Path("/tmp") / marker, git_repo.path / marker, confined.home / marker]
    script = "; ".join(f"touch {t}" for t in targets)
    script += f"; touch /usr/{marker}; touch /etc/{marker}; echo tried"
    done = await attack(confined, store, git_repo, script)
    text = await said(store, done)
    assert "tried" in text
    for target in [*targets, Path("/usr") / marker, Path("/etc") / marker]:
        assert not target.exists(), target
    assert "Read-only file system" in text or "Permission denied" in text


async def test_git_config_hooks_filters_and_a_redirected_dot_git_never_run_on_the_host(
    confined: Settings, store: Store, git_repo: GitRepo
) -> None:
    marker = Path("/tmp") / f"planted-{uuid.uuid4().hex}"
    evil = f"touch {marker}"
    done = await attack(
        confined,
        store,
        git_repo,
        # Everything a worktree's git could be made to run: hooks, fsmonitor, a clean filter
        # named by .gitattributes, a textconv, an external diff, a redirected .git file.
        f"git config core.fsmonitor '{evil}'; git config filter.x.clean '{evil}'; "
        f"git config diff.x.textconv '{evil}'; git config diff.external '{evil}'; "
        f"printf '#!/bin/sh\\n{evil}\\n' > .git-hook; chmod +x .git-hook; "
        f"mkdir -p $(git rev-parse --git-path hooks); "
        f"cp .git-hook $(git rev-parse --git-path hooks)/pre-commit; "
        f"git config core.hooksPath .githooks; mkdir .githooks; cp .git-hook .githooks/pre-commit; "
        f"echo '* filter=x diff=x' > .gitattributes; echo change >> README.md; "
        f"mkdir own; cp -r $(git rev-parse --git-dir)/. own/ 2>/dev/null; "
        f"git --git-dir=own config core.fsmonitor '{evil}'; "
        f"echo 'gitdir: own' > .git; echo planted",
    )
    assert done.status == SessionStatus.SUCCEEDED, done.error
    assert "planted" in await said(store, done)
    assert not marker.exists(), "agent-written git configuration ran on the host"
    # The work was still committed and pushed, by the host's own git.
    assert done.result is not None
    assert done.result.commit is not None
    assert "change" in git_repo.remote_git("show", f"{done.result.commit}:README.md")
    # And the mirror's config is TeleCoder's, whatever the agent wrote.
    mirrors = list((confined.home / "mirrors").glob("*.git"))
    assert mirrors
    for mirror in mirrors:
        assert "fsmonitor" not in (mirror / "config").read_text()


async def test_the_agents_own_git_works_inside(
    confined: Settings, store: Store, git_repo: GitRepo
) -> None:
    # TeleCoder keeps its files private (umask 077): the sandbox's uid must still read the
    # objects it reaches through alternates.
    private = os.umask(0o077)
    try:
        done = await run_git_commands(confined, store, git_repo)
    finally:
        os.umask(private)
    assert done.status == SessionStatus.SUCCEEDED, done.error
    text = await said(store, done)
    assert "M README.md" in text
    assert "agent commit" in text
    assert done.result is not None
    assert done.result.commit is not None
    assert "more" in git_repo.remote_git("show", f"{done.result.commit}:README.md")


async def run_git_commands(confined: Settings, store: Store, git_repo: GitRepo) -> Session:
    return await attack(
        confined,
        store,
        git_repo,
        "echo more >> README.md && git status --short && git add -A && "
        "git commit -qm 'agent commit' && git log --oneline | head -3 && "
        "git diff origin/main --stat",
    )


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP service on the host's loopback (as the database and the API are)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(conn)
            conn.sendall(b"HOST SERVICE\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    # Wake the accept before closing: a thread still in accept() after close() would take
    # connections meant for whatever socket gets the descriptor next (a later test's server).
    server.shutdown(socket.SHUT_RDWR)
    thread.join(5)
    server.close()
    for conn in accepted:
        conn.close()


PROBE = """python3 - 5432 7080 {port} <<'EOF'
import socket, sys
for port in sys.argv[1:]:
    try:
        s = socket.create_connection(("127.0.0.1", int(port)), timeout=3)
        print("CONNECTED", port, s.recv(20))
    except OSError as e:
        print("REFUSED", port, e.errno)
EOF
"""


async def test_host_loopback_services_are_unreachable(
    confined: Settings, store: Store, git_repo: GitRepo, listener: int
) -> None:
    done = await attack(confined, store, git_repo, PROBE.format(port=listener))
    text = await said(store, done)
    assert "CONNECTED" not in text
    assert text.count("REFUSED") == 3, text


async def test_a_host_outside_the_policy_is_refused_and_reported(
    confined: Settings, store: Store, git_repo: GitRepo, listener: int
) -> None:
    done = await attack(
        confined,
        store,
        git_repo,
        "curl -sS -m 10 https://example.com/ -o /dev/null -w 'code=%{http_code}\\n'; "
        f"curl -sS -m 10 http://127.0.0.1:{listener}/ ; "
        "curl -sS -m 10 --noproxy '' -x \"$HTTPS_PROXY\" http://localhost:5432/; "
        "echo tried",
    )
    text = await said(store, done)
    assert "HOST SERVICE" not in text
    assert "tried" in text
    denied = [
        e.data for e in await all_events(store, done.id) if e.kind == EventKind.NETWORK_DENIED
    ]
    hosts = {(d["host"], d["port"]) for d in denied}
    assert ("example.com", 443) in hosts
    assert ("localhost", 5432) in hosts
    assert all(d["by"] == "agent" for d in denied)


REAL_KEYS = {
    "ANTHROPIC_API_KEY": "sk-ant-escape-0123456789abcdef",
    "ANTHROPIC_AUTH_TOKEN": "auth-escape-0123456789abcdef",
    "OPENAI_API_KEY": "sk-escape-openai-0123456789abcdef",
    "GEMINI_API_KEY": "gemini-escape-0123456789abcdef",
    "GOOGLE_API_KEY": "google-escape-0123456789abcdef",
}


async def test_the_real_keys_are_out_of_reach_and_the_gateway_is_the_only_model_endpoint(
    confined: Settings,
    store: Store,
    git_repo: GitRepo,
    model_server: FakeModelServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in REAL_KEYS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OPENAI_BASE_URL", f"{model_server.url}/v1")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", model_server.url)
    upstream = model_server.url.rsplit(":", 1)[1]
    # Everything an agent could read is printed reversed: a leak shows despite masking.
    done = await attack(
        confined.model_copy(update={"env_allow": (*confined.env_allow, *REAL_KEYS)}),
        store,
        git_repo,
        "env | rev; tr '\\0' '\\n' < /proc/self/environ | rev; "
        "cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | rev; "
        "echo OPENAI_API_KEY=$OPENAI_API_KEY; echo ANTHROPIC_API_KEY=$ANTHROPIC_API_KEY; "
        'echo "through: $(curl -sS -m 10 -H "authorization: Bearer $OPENAI_API_KEY" '
        '$OPENAI_BASE_URL/models)"; '
        f'echo "direct: $(curl -sS -m 10 --noproxy "*" http://127.0.0.1:{upstream}/v1/models)"; '
        f'echo "proxied: $(curl -sS -m 10 --noproxy "" -x "$HTTP_PROXY" '
        f'http://127.0.0.1:{upstream}/v1/models)"; '
        "curl -sS -m 10 https://api.anthropic.com/ -o /dev/null; echo tried",
    )
    text = await said(store, done)
    assert "tried" in text
    for value in REAL_KEYS.values():
        assert value not in text
        assert value[::-1] not in text
    assert f"OPENAI_BASE_URL={model_server.url}/v1"[::-1] not in text  # nor a real endpoint
    keys = [line for line in text.splitlines() if line.startswith(("OPENAI_API", "ANTHROPIC_API"))]
    assert len(keys) == 2
    assert all(line.split("=", 1)[1].startswith("tc-") for line in keys), keys
    lines = {line.partition(":")[0]: line for line in text.splitlines() if ": " in line}
    assert '"fake-model"' in lines["through"]  # the gateway, with the session's key
    assert "fake-model" not in lines["direct"] + lines["proxied"]
    # The agent's request arrived with the real key; so did the endpoint checks', and nothing
    # reached the fake without one.
    real = {*REAL_KEYS.values(), *(f"Bearer {value}" for value in REAL_KEYS.values())}
    sent = [
        r.headers.get("authorization") or r.headers.get("x-api-key") for r in model_server.requests
    ]
    assert f"Bearer {REAL_KEYS['OPENAI_API_KEY']}" in sent
    assert set(sent) <= real, sent
    denied = {
        (e.data["host"], e.data["port"])
        for e in await all_events(store, done.id)
        if e.kind == EventKind.NETWORK_DENIED
    }
    assert ("api.anthropic.com", 443) in denied
    assert ("127.0.0.1", int(upstream)) in denied


INBOX_ATTACK = """
telecoder-inbox post "from inside" && echo POSTED
echo "token: $TELECODER_INBOX_TOKEN"
auth="authorization: Bearer $TELECODER_INBOX_TOKEN"
curl -sS -m 10 -X POST -H "authorization: Bearer tc-guessed" -d '{{"body":"x"}}' \
  "$TELECODER_INBOX_URL/post"; echo
curl -sS -m 10 -H "$auth" "$TELECODER_INBOX_URL/answer?id={other}"; echo
curl -sS -m 10 -H "$auth" "$TELECODER_INBOX_URL/messages"; echo
echo x >> "$(command -v telecoder-inbox)" 2>/dev/null || echo READ-ONLY
echo tried
"""


async def test_the_inbox_token_reaches_only_the_sessions_own_thread(
    confined: Settings, store: Store, git_repo: GitRepo
) -> None:
    other = await store.inbox.send(
        sender="session:someone-else",
        thread="session:someone-else",
        kind=MessageKind.QUESTION,
        body="secret plans",
    )
    done = await attack(confined, store, git_repo, INBOX_ATTACK.format(other=other.id))
    assert done.status == SessionStatus.SUCCEEDED, done.error
    text = await said(store, done)
    assert "tried" in text
    assert "POSTED" in text
    [posted] = await store.inbox.list(agent=f"session:{done.id}")
    assert (posted.thread, posted.body) == (f"session:{done.id}", "from inside")
    assert '"code": "unauthorized"' in text  # a guessed key
    assert '"code": "not_found"' in text  # another session's question
    assert "secret plans" not in text
    assert '{"messages": []}' in text
    assert "READ-ONLY" in text  # the tool cannot be changed from inside
    token = next(line for line in text.splitlines() if line.startswith("token: "))
    assert token.removeprefix("token: ").startswith("tc-")


async def test_no_process_outlives_its_session(
    confined: Settings, store: Store, git_repo: GitRepo
) -> None:
    marker = f"77.{time.time_ns() % 10**9:09d}"
    done = await attack(
        confined,
        store,
        git_repo,
        f"setsid sleep {marker} & (sleep {marker} &) ; nohup sleep {marker} >/dev/null 2>&1 & "
        "echo started",
    )
    assert done.status == SessionStatus.SUCCEEDED, done.error
    deadline = time.monotonic() + 3
    while left := with_marker(marker):
        assert time.monotonic() < deadline, f"still running after the session: {left}"
        await asyncio.sleep(0.05)


async def test_the_sandbox_runs_unprivileged(
    confined: Settings, store: Store, git_repo: GitRepo
) -> None:
    done = await attack(
        confined,
        store,
        git_repo,
        "id -u; grep CapEff /proc/self/status; echo written > by-agent.txt; "
        "hostname; cat /proc/self/uid_map",
    )
    assert done.status == SessionStatus.SUCCEEDED, done.error
    text = await said(store, done)
    uid = int(text.split()[0])
    assert uid != 0
    assert "CapEff:\t0000000000000000" in text
    assert "telecoder" in text
    assert done.result is not None
    assert done.result.commit is not None
    shown = git("show", f"{done.result.commit}:by-agent.txt", cwd=git_repo.remote)
    assert shown.strip() == "written"


async def test_without_a_sandbox_sessions_fail_at_once_saying_what_to_do(
    settings: Settings, store: Store, git_repo: GitRepo, tmp_path: Path
) -> None:
    broken = tmp_path / "bwrap"
    broken.write_text(
        "#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n"
    )
    broken.chmod(0o755)
    for program, reason in (
        (str(tmp_path / "missing" / "bwrap"), "is not installed"),
        (str(broken), "No permissions to create new namespace"),
    ):
        done = await attack(
            tuned(settings, sandbox_bwrap=program), store, git_repo, "echo should-not-run"
        )
        assert done.status == SessionStatus.FAILED
        assert done.failure_kind == FailureKind.SANDBOX_UNAVAILABLE
        assert done.error is not None
        assert reason in done.error
        assert "apt-get install bubblewrap" in done.error
        assert "TELECODER_RUNTIME=local" in done.error
        assert [a.number for a in await store.sessions.attempts(done.id)] == [1]  # not retried
        assert "should-not-run" not in await said(store, done)


async def test_memory_processes_and_file_size_are_bounded(
    confined: Settings, store: Store, git_repo: GitRepo
) -> None:
    limited = tuned(confined, sandbox_memory=256 << 20, sandbox_pids=40, sandbox_file_size=1 << 20)
    done = await attack(
        limited,
        store,
        git_repo,
        "head -c 2000000 /dev/zero > big.bin; echo file=$?; wc -c < big.bin; rm -f big.bin; "
        "sleep 0.5; "  # the control group is joined just after the start
        "python3 -c 'b = bytearray(512 << 20); b[::4096] = b\"x\" * len(b[::4096])'; "
        "echo memory=$?; "
        # counted after the bomb: a pipeline's later members could not be forked during it
        "sh -c 'for i in $(seq 1 60); do sleep 3 & done; wait' 2> forks.log; "
        "echo fork-failures=$(grep -ci fork forks.log)",
    )
    text = await said(store, done)
    lines = text.splitlines()
    assert "file=0" not in lines, text
    assert "1048576" in lines, text  # the write stopped at the file size limit
    memory = next(line for line in lines if line.startswith("memory="))
    assert memory != "memory=0", text  # killed (137) or refused (MemoryError: 1)
    failures = next(line for line in lines if line.startswith("fork-failures="))
    assert failures != "fork-failures=0", text


async def test_the_diff_view_never_runs_what_the_agent_wrote(
    confined: Settings, store: Store, git_repo: GitRepo
) -> None:
    """``GET /api/sessions/{id}/diff`` of a running session diffs its work tree, which the agent
    controls: its own git dir (a redirected ``.git``) with an fsmonitor and a textconv."""
    marker = Path("/tmp") / f"diff-view-{uuid.uuid4().hex}"
    evil = f"touch {marker}"
    worker = build_worker(confined, store)
    new = request(
        git_repo,
        f"echo changed >> README.md; echo '* diff=x' > .gitattributes; "
        f"cp -r $(git rev-parse --git-dir) own; "
        f"git --git-dir=own config core.fsmonitor '{evil}'; "
        f"git --git-dir=own config diff.x.textconv '{evil}; cat'; "
        f"echo 'gitdir: own' > .git; echo planted; sleep 30",
    )
    await store.sessions.create(new)
    claimed = await store.queue.claim(worker.id)
    assert claimed is not None
    running = asyncio.create_task(worker.execute(claimed))
    try:
        async with asyncio.timeout(20):
            while "planted" not in await said(store, await store.sessions.get(new.id)):  # noqa: ASYNC110 (polls the store)
                await asyncio.sleep(0.05)
        async with client(create_app(confined, store)) as c:
            diff = await c.get(f"/api/sessions/{new.id}/diff")
    finally:
        await store.sessions.cancel(new.id)
        async with asyncio.timeout(20):
            await running
    assert not marker.exists(), "the diff view ran the agent's git configuration"
    # Shown, from the git dir TeleCoder recorded (not the one the agent's .git file names).
    assert diff.status_code == 200, diff.text
    shown = diff.json()
    assert shown["head_sha"] is None
    assert "+changed" in shown["diff"]
    assert "own/" not in shown["diff"]


async def test_a_worktree_past_its_cap_stops_the_agent_and_pushes_nothing(
    confined: Settings, store: Store, git_repo: GitRepo
) -> None:
    capped = tuned(confined, worktree_max_bytes=1 << 20)
    started = time.monotonic()
    running = await attack(
        capped, store, git_repo, "head -c 3000000 /dev/zero > big.bin; echo filled; sleep 60"
    )
    assert time.monotonic() - started < 15  # measured every 5 s while the agent runs
    quick = await attack(capped, store, git_repo, "head -c 3000000 /dev/zero > big.bin")
    for done in (running, quick):
        assert done.status == SessionStatus.FAILED
        assert done.failure_kind == FailureKind.WORKTREE_TOO_LARGE
        assert "TELECODER_WORKTREE_MAX_BYTES" in (done.error or "")
    assert git_repo.remote_git("branch", "--list", "telecoder/*") == ""


async def test_a_refusal_reads_plainly_in_logs_and_on_the_dashboard(
    confined: Settings, store: Store, git_repo: GitRepo, db_url: str
) -> None:
    done = await attack(confined, store, git_repo, "curl -s -m 10 https://example.com/; true")
    logs = telecoder("logs", done.id, env=cli_env(confined.home, TELECODER_DATABASE_URL=db_url))
    assert logs.returncode == 0, logs.stderr
    assert "network denied example.com:443 (agent): not a model endpoint" in logs.stdout
    async with client(create_app(confined, store)) as c:
        page = await c.get(f"/sessions/{done.id}")
    assert page.status_code == 200
    assert "network denied" in page.text
    assert "example.com:443 refused for the agent" in page.text
