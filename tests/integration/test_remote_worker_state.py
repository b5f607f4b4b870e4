"""A remotely run session reads and writes the server's state as a local one would: the memories
of its repository are in its agent's prompt, what it taught is stored on the server once, and a
second attempt's budget counts what the first spent. Real ``telecoder serve`` and ``telecoder
worker --server`` processes, the builtin agent through the worker host's gateway to the fake
model server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli import wait_for
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
# Three requests: two files, then the answer.
WRITE_TWICE = (
    Reply(text="Writing.", tool="write_file", args={"path": "agent.txt", "content": "hi\n"}),
    Reply(text="And more.", tool="write_file", args={"path": "more.txt", "content": "more\n"}),
    Reply(text="Wrote agent.txt and more.txt."),
)
CONFIG = f"engine: builtin\nmodel: {MODEL}\n"
ENDS = ("blocked", "succeeded", "failed", "dead")
NOTE = "agent.txt must end with a newline; remembered-on-the-server-7f3a"


def submit(server: Server, repo: GitRepo, prompt: str, **more: Any) -> str:
    """Queued with the server's engine; the repository then chooses the builtin agent (the
    server has no model key: its worker host has)."""
    body = {"repo": str(repo.path), "prompt": prompt, **more}
    made = httpx.post(f"{server.url}/api/sessions", json=body, headers=server.admin)
    assert made.status_code in (200, 201), made.text
    (repo.path / ".telecoder.yml").write_text(CONFIG)
    repo.git("add", ".telecoder.yml")
    repo.git("commit", "-q", "-m", "the builtin agent")
    repo.git("push", "-q", "origin", "main")
    return str(made.json()["id"])


def memories(server: Server, repo: Path) -> list[dict[str, Any]]:
    got = httpx.get(f"{server.url}/api/memories", params={"repo": str(repo)}, headers=server.admin)
    assert got.status_code == 200, got.text
    found: list[dict[str, Any]] = got.json()
    return found


def model_env(tmp_path: Path, name: str, server: Server, models: FakeModelServer) -> dict[str, str]:
    env = far_env(tmp_path, name, server, server.worker_token())
    env.update(
        OPENAI_BASE_URL=f"{models.url}/v1",
        OPENAI_API_KEY="sk-fake",
        TELECODER_MODEL_RETRIES="1",
    )
    return env


def test_a_remote_session_is_given_the_servers_memories_and_leaves_its_own_there_once(
    tmp_path: Path, worker_procs: WorkerProcs, servers: list[Server]
) -> None:
    repo = make_repo(tmp_path, files={"README.md": "remote memory\n"})
    server = Server(tmp_path, None)
    servers.append(server)
    added = httpx.post(
        f"{server.url}/api/memories",
        json={"repo": str(repo.path), "text": NOTE},
        headers=server.admin,
        timeout=60,  # the server loads its embedder
    )
    assert added.status_code == 201, added.text
    note_id = added.json()["id"]
    sid = submit(server, repo, "write agent.txt")
    with FakeModelServer(default=WRITE) as models:
        env = model_env(tmp_path, "far-mem", server, models)
        worker_procs.start(env, "far-mem")
        done = server.until(sid, "succeeded", "failed", "dead", timeout=120)
        assert done["status"] == "succeeded", (done["error"], log_of(env, "far-mem"))
        asked = [json.dumps(r.body) for r in models.model_requests()]
    # The server's memory was in the agent's first prompt, and the event names it.
    assert "remembered-on-the-server-7f3a" in asked[0]
    recalled = [
        e["data"]
        for e in server.events(sid)
        if e["kind"] == "progress" and e["data"].get("step") == "memory_recalled"
    ]
    assert [[m["id"] for m in r["memories"]] for r in recalled] == [[note_id]]
    # What the session taught is on the server, once, under the repository its sessions name.
    ours = [m for m in memories(server, repo.path) if m["session_id"] == sid]
    assert len(ours) == 1, ours
    assert ours[0]["kind"] == "session"
    assert ours[0]["text"].startswith("Task: write agent.txt\nOutcome: succeeded")
    assert ours[0]["files"] == ["agent.txt"]
    assert ours[0]["repo"] == done["repo"]


def test_a_second_remote_attempt_stops_at_the_budget_counting_the_first(
    tmp_path: Path, worker_procs: WorkerProcs, servers: list[Server]
) -> None:
    repo = make_repo(tmp_path, files={"README.md": "remote budget\n"})
    server = Server(tmp_path, None)
    servers.append(server)
    # $1000 per million tokens: the fake's 120 in / 15 out cost $0.135 a request.
    sid = submit(server, repo, "write agent.txt", budget_usd=0.1)
    with FakeModelServer(default=WRITE_TWICE) as models:
        env = model_env(tmp_path, "far-b", server, models)
        env["TELECODER_PRICES"] = f"{MODEL}=1000/1000"
        worker_procs.start(env, "far-b")
        first = server.until(sid, *ENDS, timeout=120)
        assert (first["status"], first["failure_kind"]) == ("blocked", "budget_reached"), (
            first["error"],
            log_of(env, "far-b"),
        )
        assert len(models.model_requests()) == 1  # the second request was held
        assert first["cost_usd"] == pytest.approx(0.135)
        # Raised to $0.20: the second attempt (the agent resumed where it stopped, on the host
        # that keeps it) may spend $0.065 more, not $0.20 afresh. Its first request takes the
        # session to $0.27; the next is held (from zero it would be let through, and the agent
        # would finish).
        raised = httpx.post(
            f"{server.url}/api/sessions/{sid}/budget", json={"usd": 0.2}, headers=server.admin
        )
        assert raised.status_code == 200, raised.text
        second = wait_for(
            lambda: (s := server.session(sid))["status"] in ENDS and len(s["attempts"]) == 2 and s,
            timeout=120,
            interval=0.2,
            what="the second attempt's end",
        )
        requests = len(models.model_requests())
    assert (second["status"], second["failure_kind"]) == ("blocked", "budget_reached"), (
        second["error"],
        log_of(env, "far-b"),
    )
    assert requests == 2
    assert [a["worker_id"] for a in second["attempts"]] == ["far-b", "far-b"]
    started = [e["data"] for e in server.events(sid) if e["data"].get("step") == "engine_started"]
    assert [s["resumed"] for s in started] == [False, True]
    quiet = log_of(env, "far-b")  # an attempt that ended lost no lease; no error was logged
    assert "lease lost" not in quiet
    assert "ERROR" not in quiet
    assert second["cost_usd"] == pytest.approx(0.27)
    assert second["error"] == "budget reached: $0.27 of $0.20 — raise it or stop"
