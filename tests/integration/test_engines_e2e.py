"""Every agent engine end to end through TeleCoder: `telecoder run` as a user runs it, the real
agent CLI in a worktree, the fake model server on 127.0.0.1, a bare remote to push to.

`test_engines_live.py` drives each CLI alone (its events, stop, resume, every 400/500); this
proves the whole path for every engine: intake, the pipeline's environment (the CLIs are found
through ``TELECODER_AGENT_PATH``), events in the store, usage and cost on the session, exactly
the agent's file on the pushed branch, a model's 400 and 500 on the session, cancel through a
worker. Revisions through resume are in `test_verify.py`.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from telecoder.gateway.meter import Metered
from telecoder.gateway.prices import Prices
from tests.cli import TELECODER, events_json, session_json, telecoder, wait_for
from tests.conftest import make_repo
from tests.engine_cases import (
    AIDER_DIFF_SCRIPT,
    AIDER_MARK,
    E2E,
    E2E_BY_ID,
    E2E_CASES,
    WRITTEN,
    agent_env,
)
from tests.fakes.model_server import DEFAULT_SCRIPT, FakeModelServer, Reply, Usage
from tests.processes import working_in

pytestmark = pytest.mark.usefixtures("agent_tools")

AGENT_KINDS = {"message", "tool_call", "tool_result", "usage", "result"}
# The operator's keys (``agent_env``): what the fake server must see, and no agent hold.
REAL_KEYS = {"sk-ant-fake", "sk-fake", "fake-gemini-key"}
KEY_HEADERS = ("x-api-key", "authorization", "x-goog-api-key")
VENDOR = re.compile(r"^((?:ANTHROPIC|OPENAI|GOOGLE|GEMINI|OLLAMA)_[A-Z_]+)=(.*)$")
# The agent's shell tool writes the file, then shows its model variables: seen from inside.
PROBE = "env | grep -E '^(ANTHROPIC|OPENAI|GOOGLE|GEMINI|OLLAMA)_' | sort"
PROBE_SCRIPT = (
    Reply(text=DEFAULT_SCRIPT[0].text, command=f"{DEFAULT_SCRIPT[0].command} && {PROBE}"),
    *DEFAULT_SCRIPT[1:],
)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeModelServer]:
    """One fake model server for the module; each test aims at its own path under it."""
    with FakeModelServer(scripts={AIDER_MARK: AIDER_DIFF_SCRIPT}, slow_seconds=120) as fake:
        yield fake


def run_case(case: E2E, repo: Path, env: dict[str, str]) -> dict[str, Any]:
    """`telecoder run` of the case's prompt with its engine and model, to a success."""
    done = telecoder(
        "run", case.prompt, "--repo", str(repo), "--engine", case.engine,
        "--model", case.model, "--json", env=env, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    session: dict[str, Any] = json.loads(done.stdout)
    assert session["status"] == "succeeded", session["error"]
    return session


def requests_under(server: FakeModelServer, prefix: str) -> int:
    return sum(1 for r in server.model_requests() if r.path.startswith(prefix))


@pytest.fixture
def own_server() -> Iterator[FakeModelServer]:
    """A fake model server of the test's own: what it reported is the test's alone."""
    with FakeModelServer(
        default=PROBE_SCRIPT,
        scripts={AIDER_MARK: AIDER_DIFF_SCRIPT},
        usage=Usage(input=1200, output=150, cache_read=300, cache_write=40),
    ) as fake:
        yield fake


def assert_charged_what_the_server_reported(
    server: FakeModelServer, session: dict[str, Any]
) -> None:
    """The session's tokens and cost are the sum of what the fake server reported, request by
    request (streamed or not), priced as the gateway prices them."""
    reported = list(server.reported)
    assert reported
    prices = Prices()
    cost = 0.0
    for r in reported:
        used = Metered(r.model, r.input, r.output, r.cache_read, r.cache_write)
        cost += prices.cost(r.model, used, api=r.protocol) or 0.0
    assert session["input_tokens"] == sum(r.input + r.cache_read + r.cache_write for r in reported)
    assert session["output_tokens"] == sum(r.output for r in reported)
    assert session["cost_usd"] == pytest.approx(cost)


# Cases whose shell-tool output shows nothing of the agent's environment.
NO_PROBE = {"aider": "it edits files and runs no command", "acp-gemini": "no output in events"}


def assert_keys_stayed_with_the_gateway(
    case: E2E, server: FakeModelServer, events: list[dict[str, Any]]
) -> None:
    """The fake saw the operator's keys, never a session's; the agent's shell saw only the
    gateway's URL and the session's key (when its CLI passes them to its tools)."""
    requests = server.model_requests()
    assert requests
    for request in requests:
        sent = [request.headers[h] for h in KEY_HEADERS if h in request.headers]
        assert any(value.removeprefix("Bearer ") in REAL_KEYS for value in sent), sent
        assert not any("tc-" in value for value in request.headers.values())
    shown = [
        found.groups()
        for e in events
        if e["kind"] == "tool_result"
        for line in str(e["data"].get("output") or "").splitlines()
        if (found := VENDOR.match(line.strip()))
    ]
    assert shown or case.id in NO_PROBE
    for name, value in shown:
        if name.endswith(("_KEY", "_TOKEN")):
            assert value.startswith("tc-"), (name, value)
        elif name.endswith("_BASE_URL") or name == "OLLAMA_HOST":
            assert value.startswith("http://127.0.0.1:"), (name, value)
            assert server.url not in value, (name, value)


@pytest.mark.parametrize("case", E2E_CASES, ids=[c.id for c in E2E_CASES])
def test_run_pushes_exactly_the_agents_file(
    case: E2E, own_server: FakeModelServer, tmp_path: Path
) -> None:
    server = own_server
    repo = make_repo(tmp_path)
    home = tmp_path / "home"
    env = agent_env(home, server.url)
    session = run_case(case, repo.path, env)
    assert session["attempt"] == 1
    branch = session["branch"]
    assert session["result"]["type"] == "branch"
    # Exactly the file the script made the agent write: no agent state, no config, no cache.
    assert repo.remote_git("diff", "--name-only", "main", branch).splitlines() == [WRITTEN]
    assert repo.remote_git("show", f"{branch}:{WRITTEN}") == "hello-from-fake"
    assert len(repo.remote_git("rev-list", f"main..{branch}").splitlines()) == 1
    events = events_json(session["id"], env)
    kinds = {e["kind"] for e in events}
    assert kinds >= AGENT_KINDS, kinds
    assert_keys_stayed_with_the_gateway(case, server, events)
    assert_charged_what_the_server_reported(server, session)
    # Usage and cost reach the session: the gateway's, as its last usage event said.
    usage = [e["data"] for e in events if e["kind"] == "usage"][-1]
    assert usage["source"] == "gateway"
    assert session["input_tokens"] == usage["input_tokens"] > 0
    assert session["output_tokens"] == usage["output_tokens"] > 0
    assert session["cost_usd"] == pytest.approx(usage["cost_usd"])
    assert session["cost_usd"] > 0
    # Every line the CLI printed is in the raw log: what events show and what they do not.
    raw = telecoder("logs", session["id"], "--raw", "--json", env=env)
    assert raw.returncode == 0, raw.stderr
    records = [json.loads(line) for line in raw.stdout.splitlines()]
    assert records[0] == {"attempt": 1, "t": records[0]["t"], "run": 0}
    lines = [(r["stream"], r["line"]) for r in records[1:]]
    assert any(stream == "stdout" for stream, _ in lines)
    shown = [(e["data"]["stream"], e["data"]["text"]) for e in events if e["kind"] == "output"]
    assert set(shown) <= set(lines)
    # Nothing is left.
    assert not (home / "engines" / session["id"]).exists()
    assert not list((home / "worktrees").glob(f"{session['id']}-*"))


# A 400 and a 500 on every engine: the CLIs report them differently (a result event, a
# turn.failed, a final assistant message, a result after retries with a stack trace on stderr).
MODEL_FAILURES = [(case.id, status) for case in E2E_CASES for status in (400, 500)]
# What a CLI says of a 500 instead of the server's message (after retrying it: Aider and Qwen for
# about a minute, whatever their settings say).
OWN_WORDS = {
    ("codex", 500): "experiencing high demand",
    ("aider", 500): "servers are down or overloaded",
}


# Their 500s take about 80 s each: Qwen Code 0.24.4 retries the main request 7 times (1.5 s
# doubling to 30 s, fixed in its retryWithBackoff; its only knob, QWEN_CODE_UNATTENDED_RETRY,
# makes it retry for ever) and Aider 0.86.2 until its delay passes RETRY_TIMEOUT = 60 s (a
# constant in aider/models.py). No setting shortens either, so they start first (``long``).
SLOW_TO_GIVE_UP = {("qwen", 500), ("aider", 500)}


@pytest.mark.parametrize(
    ("case_id", "status"),
    [
        pytest.param(c, s, marks=[pytest.mark.long] if (c, s) in SLOW_TO_GIVE_UP else [])
        for c, s in MODEL_FAILURES
    ],
    ids=[f"{c}-{s}" for c, s in MODEL_FAILURES],
)
def test_a_model_error_fails_the_session_at_once(
    case_id: str, status: int, server: FakeModelServer, tmp_path: Path
) -> None:
    case = E2E_BY_ID[case_id]
    repo = make_repo(tmp_path)
    prefix = f"/err{status}/{tmp_path.name}"
    env = agent_env(tmp_path / "home", server.url + prefix)

    done = telecoder(
        "run", case.prompt, "--repo", str(repo.path), "--engine", case.engine,
        "--model", case.model, "--json", env=env, timeout=180,
    )  # fmt: skip

    assert done.returncode == 1, done.stderr
    session = json.loads(done.stdout)
    assert session["status"] == "failed"
    assert session["failure_kind"] == "model_error"
    assert session["error"].startswith("the model API failed: ")
    # The server's own words, unless the CLI puts its own in their place.
    assert f"fake error {status}" in session["error"] or (case_id, status) in OWN_WORDS
    assert OWN_WORDS.get((case_id, status), "") in session["error"]
    if case_id == "gemini":  # the one that writes its error to stderr too: its tail is kept
        assert "--- gemini stderr (last lines) ---" in session["error"]
        assert f"status: {status}" in session["error"]
    # Permanent: not tried again (the CLI already retried the model itself).
    assert session["attempt"] == 1
    statuses = [
        e["data"]["status"] for e in events_json(session["id"], env) if e["kind"] == "status"
    ]
    assert statuses == ["queued", "running", "failed"]
    assert repo.remote_git("branch", "--list", "telecoder/*") == ""
    assert requests_under(server, prefix) >= 1


def wait_for_the_model(server: FakeModelServer, prefix: str) -> None:
    wait_for(lambda: requests_under(server, prefix) > 0, timeout=90, what="the agent to ask")


def test_ctrl_c_cancels_run_within_seconds(server: FakeModelServer, tmp_path: Path) -> None:
    case = E2E_BY_ID["claude-code"]
    repo = make_repo(tmp_path)
    home = tmp_path / "home"
    prefix = f"/slow/{tmp_path.name}"
    env = agent_env(home, server.url + prefix)
    proc = subprocess.Popen(
        [TELECODER, "run", case.prompt, "--repo", str(repo.path), "--engine", case.engine,
         "--model", case.model, "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for_the_model(server, prefix)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 5, err
    assert took < 10
    session = json.loads(out)
    assert session["status"] == "cancelled"
    assert session["failure_kind"] == "cancelled"
    assert working_in(home) == []  # the agent and its children are gone
    assert repo.remote_git("branch", "--list", "telecoder/*") == ""


@pytest.fixture
def worker_procs() -> Iterator[list[subprocess.Popen[Any]]]:
    started: list[subprocess.Popen[Any]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


@pytest.mark.parametrize("case", E2E_CASES, ids=[c.id for c in E2E_CASES])
def test_cancel_stops_an_agent_a_worker_runs(
    case: E2E, server: FakeModelServer, tmp_path: Path, worker_procs: list[subprocess.Popen[Any]]
) -> None:
    # Some CLIs ignore SIGINT (Gemini): the runtime's process-group SIGTERM is what stops them.
    repo = make_repo(tmp_path)
    home = tmp_path / "home"
    prefix = f"/slow/{tmp_path.name}"
    env = agent_env(
        home,
        server.url + prefix,
        TELECODER_HEARTBEAT_SECONDS="0.3",
        TELECODER_POLL_SECONDS="0.1",
        TELECODER_LEASE_SECONDS="5",
    )
    queued = telecoder(
        "run", case.prompt, "--repo", str(repo.path), "--engine", case.engine,
        "--model", case.model, "--detach", env=env,
    )  # fmt: skip
    session_id = queued.stdout.strip()
    with (home / "worker.log").open("w") as log:
        worker = subprocess.Popen(
            [TELECODER, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=log, text=True
        )
    worker_procs.append(worker)
    wait_for_the_model(server, prefix)

    started = time.monotonic()
    cancel = telecoder("cancel", session_id, env=env)
    assert cancel.returncode == 0, cancel.stderr
    final = wait_for(
        lambda: (s := session_json(session_id, env))["status"] == "cancelled" and s,
        timeout=20,
        what="the cancel",
    )
    assert time.monotonic() - started < 10
    assert final["failure_kind"] == "cancelled"
    wait_for(lambda: working_in(home) == [], timeout=10, what="the agent to be gone")
    assert worker.poll() is None  # the worker stopped the session, not itself


@pytest.mark.parametrize("case", E2E_CASES, ids=[c.id for c in E2E_CASES])
def test_each_cli_reaches_a_named_model_endpoint_through_the_proxy_variables(
    case: E2E, server: FakeModelServer, tmp_path: Path
) -> None:
    """A model endpoint by name, as api.anthropic.com is: the sandbox resolves no name and has
    no route out, so the CLI reaches it only if it sends its requests to the egress proxy
    (HTTP(S)_PROXY; NODE_USE_ENV_PROXY for Node's fetch), which resolves the name itself.
    With the gateway off: on, agents reach only the gateway, on loopback."""
    repo = make_repo(tmp_path)
    home = tmp_path / "home"
    prefix = f"/{tmp_path.name}"
    port = server.url.rsplit(":", 1)[1]
    env = agent_env(
        home,
        f"http://model.test:{port}{prefix}",
        TELECODER_NETWORK_HOSTS="model.test=127.0.0.1",
        TELECODER_GATEWAY="false",
    )
    session = run_case(case, repo.path, env)
    assert requests_under(server, prefix) >= 1
    assert repo.remote_git("show", f"{session['branch']}:{WRITTEN}") == "hello-from-fake"
    denied = [e for e in events_json(session["id"], env) if e["kind"] == "network_denied"]
    assert all(e["data"]["host"] != "model.test" for e in denied), denied


async def test_a_codex_warning_is_a_warning_and_the_session_succeeds(
    server: FakeModelServer, tmp_path: Path
) -> None:
    """The real codex CLI on a model it has no metadata for prints a JSON ``error`` item that
    is only a warning: a ``warning`` event, shown as a warning by `telecoder logs` and the
    dashboard; no ``error`` event, and the session succeeds."""
    from telecoder.server import create_app
    from telecoder.settings import Settings
    from telecoder.store import open_store
    from tests.server import client

    repo = make_repo(tmp_path)
    home = tmp_path / "home"
    env = agent_env(home, server.url)
    session = run_case(E2E("codex-unknown-model", "codex", "fake-model"), repo.path, env)
    events = events_json(session["id"], env)
    warnings = [e["data"]["message"] for e in events if e["kind"] == "warning"]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("Model metadata for `fake-model` not found.")
    assert [e for e in events if e["kind"] == "error"] == []
    shown = telecoder("logs", session["id"], env={**env, "COLUMNS": "400"})
    assert shown.returncode == 0, shown.stderr
    assert "warning: Model metadata for `fake-model` not found." in shown.stdout
    assert "error:" not in shown.stdout

    settings = Settings(home=home)
    store = await open_store(f"sqlite:///{home / 'telecoder.db'}")
    try:
        async with client(create_app(settings, store)) as c:
            page = await c.get(f"/sessions/{session['id']}", headers={"accept": "text/html"})
    finally:
        await store.close()
    assert page.status_code == 200
    assert 'class="ev warning"' in page.text
    assert "Model metadata for `fake-model` not found." in page.text
    assert 'class="ev error' not in page.text
