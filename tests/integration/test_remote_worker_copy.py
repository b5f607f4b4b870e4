"""A remotely run session's copy on the server is what a local worker's would be: the engine and
model the repository chose, the base commit, the follow-up rules (its chain starts on the
server), the gateway's usage rows (``telecoder costs`` counts it); a run's dependant starts when
a remote worker ends its dependency; ``telecoder tokens list`` names a token's worker. Real
``telecoder serve`` and ``telecoder worker --server`` processes, the builtin agent through the
worker host's gateway to the fake model server."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.cli import telecoder
from tests.conftest import GitRepo, make_repo
from tests.fakes.model_server import FakeModelServer, Reply
from tests.integration.test_remote_worker import Server, far_env, log_of, servers, worker_procs
from tests.procs import WorkerProcs

__all__ = ["servers", "worker_procs"]  # the fixtures, used by name

MODEL = "gpt-4.1-mini"
WRITE = (
    Reply(text="Writing.", tool="write_file", args={"path": "agent.txt", "content": "hi\n"}),
    Reply(text="Wrote agent.txt."),
)
CONFIG = (
    f"engine: builtin\nmodel: {MODEL}\n"
    "on_success:\n  - prompt: echo chained >> chained.txt\n    engine: shell\n"
)


def test_a_remote_session_has_the_engine_model_base_chain_and_costs_of_a_local_one(
    tmp_path: Path, worker_procs: WorkerProcs, servers: list[Server]
) -> None:
    repo = make_repo(tmp_path, files={"README.md": "remote copy\n"})
    server = Server(tmp_path, None)
    servers.append(server)
    # No engine named: the server's default (the shell), until the repository says otherwise.
    body = {"repo": str(repo.path), "prompt": "write agent.txt"}
    made = httpx.post(f"{server.url}/api/sessions", json=body, headers=server.admin)
    assert made.status_code in (200, 201), made.text
    sid = str(made.json()["id"])
    queued = server.session(sid)
    assert (queued["engine"], queued["engine_source"], queued["model"]) == (
        "shell",
        "settings",
        None,
    )
    # The repository chooses its engine and model after the session was queued: read when it
    # runs, on the worker's host.
    (repo.path / ".telecoder.yml").write_text(CONFIG)
    repo.git("add", ".telecoder.yml")
    repo.git("commit", "-q", "-m", "engine and chain")
    repo.git("push", "-q", "origin", "main")
    base = repo.git("rev-parse", "HEAD").strip()
    with FakeModelServer(default=WRITE) as models:
        env = far_env(tmp_path, "far-m", server, server.worker_token())
        env.update(
            OPENAI_BASE_URL=f"{models.url}/v1",
            OPENAI_API_KEY="sk-fake",
            TELECODER_MODEL_RETRIES="1",
        )
        worker_procs.start(env, "far-m")
        done = server.until(sid, "succeeded", "failed", "dead", timeout=120)
        assert done["status"] == "succeeded", (done["error"], log_of(env, "far-m"))
        requests = len(models.model_requests())
    assert requests == len(WRITE)
    assert (done["engine"], done["engine_source"], done["model"]) == ("builtin", "repo", MODEL)
    assert done["attempts"][0]["base_sha"] == base
    assert done["attempts"][0]["worker_id"] == "far-m"
    # The gateway's rows reached the server: the session's totals and `telecoder costs`.
    assert done["input_tokens"] == 120 * len(WRITE)
    assert done["output_tokens"] == 15 * len(WRITE)
    costs = telecoder("costs", "--since", "1h", "--by", "session", "--json", env=server.env)
    assert costs.returncode == 0, costs.stderr
    report = json.loads(costs.stdout)
    [group] = [g for g in report["groups"] if g["key"] == sid]
    assert group["requests"] == len(WRITE)
    assert report["total"]["requests"] == len(WRITE)
    # The chain started on the server, and the remote worker ran its follow-up.
    children = [
        s
        for s in httpx.get(
            f"{server.url}/api/sessions", params={"limit": 50}, headers=server.admin
        ).json()["sessions"]
        if s["parent_id"] == sid
    ]
    assert len(children) == 1, children
    child = server.until(children[0]["id"], "succeeded", "failed", "dead")
    assert child["status"] == "succeeded", log_of(env, "far-m")
    assert (child["chain_id"], child["depth"], child["engine"]) == (sid, 1, "shell")
    assert child["attempts"][0]["worker_id"] == "far-m"
    assert repo.remote_git("show", f"{child['branch']}:chained.txt") == "chained"


def test_a_run_with_a_dependency_runs_on_a_remote_worker(
    tmp_path: Path, git_repo: GitRepo, worker_procs: WorkerProcs, servers: list[Server]
) -> None:
    server = Server(tmp_path, None)
    servers.append(server)
    tasks = [
        {"id": "a", "prompt": "echo first > first.txt"},
        {"id": "b", "prompt": "echo second > second.txt", "depends_on": ["a"]},
    ]
    body = {"tasks": tasks, "repo": str(git_repo.path), "engine": "shell"}
    made = httpx.post(f"{server.url}/api/runs", json=body, headers=server.admin)
    assert made.status_code == 201, made.text
    run_id = made.json()["id"]
    a, b = made.json()["sessions"]
    assert b["depends_on"] == [a["id"]]
    env = far_env(tmp_path, "far-d", server, server.worker_token())
    worker_procs.start(env, "far-d")
    for sid in (a["id"], b["id"]):
        done = server.until(sid, "succeeded", "failed", "dead", "skipped")
        assert done["status"] == "succeeded", log_of(env, "far-d")
        assert done["run_id"] == run_id  # kept on the server, whatever the scratch store has
        assert [x["worker_id"] for x in done["attempts"]] == ["far-d"]
    run = httpx.get(f"{server.url}/api/runs/{run_id}", headers=server.admin).json()
    assert run["status"] == "succeeded", run
    assert run["counts"] == {"succeeded": 2}
    first, second = (server.session(s["id"]) for s in (a, b))
    assert first["finished_at"] <= second["started_at"]  # b started once a ended
    # `telecoder tokens list` names the worker its token is bound to.
    listed = json.loads(telecoder("tokens", "list", "--json", env=server.env).stdout)
    assert [(t["role"], t["worker_id"]) for t in listed] == [("worker", "far-d")]
    table = telecoder("tokens", "list", env=server.env).stdout.splitlines()
    assert table[0].split()[:5] == ["ID", "USER", "ROLE", "LABEL", "WORKER"]
    assert "far-d" in table[1].split()
