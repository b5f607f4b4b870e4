"""A ``telecoder serve`` with no embedded worker, its sessions run by ``telecoder worker
--server`` processes, does what a local worker's side tasks do: it judges a best-of run when
its last candidate ends through ``/finish``, and it ends chats idle past
``chat_idle_seconds``; a chat's next turn, and a task's answer, run where its workspace is
kept. Real processes; the judge is the fake model server."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from telecoder.warmpool import WARM
from tests.cli import wait_for
from tests.conftest import GitRepo
from tests.fakes.model_server import FakeModelServer, Reply
from tests.integration.test_remote_worker import Server, far_env, log_of, servers, worker_procs
from tests.procs import WorkerProcs

__all__ = ["servers", "worker_procs"]  # the fixtures, used by name

JUDGE_MARK = "Candidate {"  # only the judge's message holds it


def test_a_best_of_run_of_remote_candidates_is_judged_by_the_server(
    tmp_path: Path, git_repo: GitRepo, worker_procs: WorkerProcs, servers: list[Server]
) -> None:
    with FakeModelServer() as model:
        server = Server(
            tmp_path,
            None,
            TELECODER_JUDGE_MODEL="judge-model",
            TELECODER_JUDGE_BASE_URL=f"{model.url}/v1",
            TELECODER_JUDGE_API_KEY="sk-judge",
        )
        servers.append(server)
        body = {
            "repo": str(git_repo.path),
            "prompt": "echo best > best.txt",
            "engine": "shell",
            "attempts": 2,
        }
        made = httpx.post(f"{server.url}/api/runs/best-of", json=body, headers=server.admin)
        assert made.status_code == 201, made.text
        run_id = made.json()["run"]["id"]
        first, second = (s["id"] for s in made.json()["sessions"])
        reasons = "The second one, by the judge's word."
        model.scripts[JUDGE_MARK] = [Reply(text=json.dumps({"winner": second, "reasons": reasons}))]
        env = far_env(tmp_path, "far-b", server, server.worker_token())
        worker_procs.start(env, "far-b")
        for sid in (first, second):
            done = server.until(sid, "succeeded", "failed", "dead")
            assert done["status"] == "succeeded", log_of(env, "far-b")
            assert [a["worker_id"] for a in done["attempts"]] == ["far-b"]

        def judged() -> dict[str, object] | None:
            got = httpx.get(f"{server.url}/api/runs/{run_id}/compare", headers=server.admin)
            verdict: dict[str, object] | None = got.json()["verdict"]
            return verdict if verdict and verdict.get("state") == "decided" else None

        verdict = wait_for(judged, timeout=30, interval=0.2, what="the verdict")
        asked = [r for r in model.model_requests() if JUDGE_MARK in json.dumps(r.body)]
    assert (verdict["winner"], verdict["reasons"], verdict["by"]) == (second, reasons, "judge")
    assert len(asked) == 1  # judged once
    run = httpx.get(f"{server.url}/api/runs/{run_id}", headers=server.admin).json()
    assert run["status"] == "succeeded", run
    chosen = [e for e in server.events(second) if e["data"].get("step") == "chosen"]
    assert len(chosen) == 1, chosen


def test_a_remote_chat_waiting_past_its_idle_time_is_ended_by_the_server(
    tmp_path: Path, git_repo: GitRepo, worker_procs: WorkerProcs, servers: list[Server]
) -> None:
    server = Server(tmp_path, None, TELECODER_CHAT_IDLE_SECONDS="2")
    servers.append(server)
    body = {
        "repo": str(git_repo.path),
        "prompt": "echo hello > chat.txt",
        "engine": "shell",
        "mode": "chat",
    }
    made = httpx.post(f"{server.url}/api/sessions", json=body, headers=server.admin)
    assert made.status_code in (200, 201), made.text
    sid = str(made.json()["id"])
    env = far_env(tmp_path, "far-c", server, server.worker_token())
    env["TELECODER_CHAT_IDLE_SECONDS"] = "2"  # the host asks about what it keeps every 0.5 s
    worker_procs.start(env, "far-c")
    waiting = server.until(sid, "blocked", "failed", "dead", "succeeded")
    assert waiting["status"] == "blocked", (waiting["error"], log_of(env, "far-c"))
    home = Path(env["TELECODER_HOME"])
    assert (home / "worktrees" / f"{sid}-1").is_dir()  # kept for the next turn
    ended = server.until(sid, "succeeded", "failed", "dead", timeout=30)
    assert ended["status"] == "succeeded"
    assert ended["result"] == waiting["result"]  # its last turn's result stays
    reasons = [e["data"].get("reason", "") for e in server.events(sid) if e["kind"] == "status"]
    assert "no message for 2 s: the chat ended" in reasons
    # The host hears of it and removes what it kept: the worktree and the agent's home.
    wait_for(
        lambda: (
            not list((home / "worktrees").glob(f"{sid}-*"))
            and not (home / "engines" / sid).exists()
        ),
        timeout=30,
        interval=0.2,
        what="the kept worktree removed",
    )


def test_a_remote_chats_next_turn_runs_where_its_workspace_is_kept(
    tmp_path: Path, git_repo: GitRepo, worker_procs: WorkerProcs, servers: list[Server]
) -> None:
    server = Server(tmp_path, None)
    servers.append(server)
    body = {
        "repo": str(git_repo.path),
        "prompt": "echo one > one.txt",
        "engine": "shell",
        "mode": "chat",
    }
    made = httpx.post(f"{server.url}/api/sessions", json=body, headers=server.admin)
    assert made.status_code in (200, 201), made.text
    sid = str(made.json()["id"])
    token = server.worker_token()
    env = far_env(tmp_path, "far-1", server, token)
    holder = worker_procs.start(env, "far-1")
    first = server.until(sid, "blocked", "failed", "dead", "succeeded")
    assert first["status"] == "blocked", (first["error"], log_of(env, "far-1"))
    # Another worker, idle, signs in: the chat's next turn is still far-1's.
    start_idle(tmp_path, server, worker_procs, "far-2")
    # The second turn sees what the first wrote (uncommitted or not, in the kept worktree).
    said = {"text": "test -f one.txt && cat one.txt > two.txt"}
    sent = httpx.post(f"{server.url}/api/sessions/{sid}/messages", json=said, headers=server.admin)
    assert sent.status_code == 202, sent.text
    second = wait_for(
        lambda: (
            (s := server.session(sid))["status"] in ("blocked", "failed", "dead")
            and len(s["attempts"]) == 2
            and s
        ),
        timeout=90,
        interval=0.2,
        what="the second turn",
    )
    assert second["status"] == "blocked", (second["error"], log_of(env, "far-1"))
    assert [a["worker_id"] for a in second["attempts"]] == ["far-1", "far-1"]
    assert git_repo.remote_git("show", f"{second['branch']}:two.txt").strip() == "one"
    kinds = [e["data"].get("step") for e in server.events(sid) if e["kind"] == "progress"]
    assert "reopening_workspace" in kinds
    # far-1 dies: once its heartbeat is stale far-2 takes the next turn, and says it cannot go on.
    worker_procs.kill(holder)
    said = {"text": "echo three > three.txt"}
    sent = httpx.post(f"{server.url}/api/sessions/{sid}/messages", json=said, headers=server.admin)
    assert sent.status_code == 202, sent.text
    third = server.until(sid, "failed", "dead", "succeeded", timeout=60)
    assert third["status"] == "failed"
    assert [a["worker_id"] for a in third["attempts"]] == ["far-1", "far-1", "far-2"]
    assert "not on this host" in third["error"]


def test_a_remote_tasks_answer_runs_where_it_asked(
    tmp_path: Path, git_repo: GitRepo, worker_procs: WorkerProcs, servers: list[Server]
) -> None:
    server = Server(tmp_path, None)
    servers.append(server)
    ask = 'echo draft > draft.txt; echo "QUESTION: which name for the file?"'
    body = {"repo": str(git_repo.path), "prompt": ask, "engine": "shell"}
    made = httpx.post(f"{server.url}/api/sessions", json=body, headers=server.admin)
    assert made.status_code in (200, 201), made.text
    sid = str(made.json()["id"])
    env = far_env(tmp_path, "far-1", server, server.worker_token())
    worker_procs.start(env, "far-1")
    asked = server.until(sid, "blocked", "failed", "dead", "succeeded")
    assert asked["status"] == "blocked", (asked["error"], log_of(env, "far-1"))
    assert asked["question"] == "which name for the file?"
    start_idle(tmp_path, server, worker_procs, "far-2")
    said = {"text": "git mv draft.txt final.txt && echo renamed"}
    sent = httpx.post(f"{server.url}/api/sessions/{sid}/answer", json=said, headers=server.admin)
    assert sent.status_code == 202, sent.text
    done = server.until(sid, "succeeded", "failed", "dead")
    assert done["status"] == "succeeded", (done["error"], log_of(env, "far-1"))
    assert [a["worker_id"] for a in done["attempts"]] == ["far-1", "far-1"]
    files = git_repo.remote_git("ls-tree", "--name-only", done["branch"]).splitlines()
    assert "final.txt" in files
    assert "draft.txt" not in files
    kinds = [e["data"].get("step") for e in server.events(sid) if e["kind"] == "progress"]
    assert "reopening_workspace" in kinds


def test_a_remote_worker_refills_the_warm_pool_of_the_repos_it_served(
    tmp_path: Path, git_repo: GitRepo, worker_procs: WorkerProcs, servers: list[Server]
) -> None:
    server = Server(tmp_path, None)
    servers.append(server)
    env = far_env(tmp_path, "far-w", server, server.worker_token())
    env["TELECODER_WORKTREE_POOL"] = "2"
    sid = server.submit(git_repo, "echo warm > warm.txt")
    worker_procs.start(env, "far-w")
    done = server.until(sid, "succeeded", "failed", "dead")
    assert done["status"] == "succeeded", log_of(env, "far-w")
    pool = Path(env["TELECODER_HOME"]) / "worktrees" / "pool"
    # Made in the background at the default branch's head (a finished session's keeps its name).
    warm = wait_for(
        lambda: list(pool.glob(f"*/{WARM}*")), timeout=60, interval=0.2, what="a warm worktree"
    )
    assert (warm[0] / "README.md").is_file()
    assert not (warm[0] / "warm.txt").exists()


def start_idle(tmp_path: Path, server: Server, worker_procs: WorkerProcs, name: str) -> None:
    """Another worker host signs in, and waits idle."""
    worker_procs.start(far_env(tmp_path, name, server, server.worker_token()), name)
    wait_for(
        lambda: any(
            w["id"] == name and w["state"] == "idle"
            for w in httpx.get(f"{server.url}/api/workers", headers=server.admin).json()
        ),
        timeout=30,
        interval=0.2,
        what=f"{name} idle",
    )
