"""Making runs: fan-out over repositories, plans with dependencies and ``--after`` — the CLI as
a subprocess (with ``telecoder worker`` processes), and ``POST /api/runs`` against the app."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from telecoder.server import create_app
from tests.cli import cli_env, session_json, telecoder, wait_for
from tests.conftest import GitRepo, make_repo
from tests.integration.test_worker_process import fast_env, start_worker, workers  # noqa: F401
from tests.server import client, serving

APPEND = "echo x >> README.md"


def repos(root: Path, n: int) -> list[GitRepo]:
    return [make_repo(root, f"repo{i}") for i in range(n)]


def branches(repo: GitRepo) -> list[str]:
    out = repo.remote_git("for-each-ref", "--format=%(refname:short)", "refs/heads/telecoder/")
    return out.splitlines()


def listed(env: dict[str, str]) -> list[dict[str, Any]]:
    done = telecoder("list", "--json", env=env)
    assert done.returncode == 0, done.stderr
    found: list[dict[str, Any]] = json.loads(done.stdout)["sessions"]
    return found


def ended(ids: list[str], env: dict[str, str]) -> list[dict[str, Any]] | None:
    sessions = [session_json(i, env) for i in ids]
    terminal = {"succeeded", "failed", "dead", "cancelled", "skipped"}
    return sessions if all(s["status"] in terminal for s in sessions) else None


# --- fan-out -----------------------------------------------------------------------------------


@pytest.mark.postgres
def test_a_run_over_10_repos_with_two_workers_gives_each_repo_one_branch(
    tmp_path: Path,
    home: Path,
    pg_url: str,
    workers: list[subprocess.Popen[str]],  # noqa: F811
):
    env = {**fast_env(home), "TELECODER_DATABASE_URL": pg_url}
    ten = repos(tmp_path, 10)
    args = [x for r in ten for x in ("--repo", str(r.path))]
    made = telecoder("run", APPEND, *args, "--engine", "shell", "--detach", "--json", env=env)
    assert made.returncode == 0, made.stderr
    run = json.loads(made.stdout)
    # The shape of `runs show --json`: the run, then its sessions, one per repo, in order.
    assert run["id"].startswith("run_")
    assert (run["kind"], run["status"]) == ("fanout", "running")
    assert run["counts"] == {"queued": 10}
    assert run["totals"]["sessions"] == 10
    assert [s["task_key"] for s in run["sessions"]] == [str(r.path) for r in ten]
    for s in run["sessions"]:
        assert s["run_id"] == run["id"]
        assert s["status"] == "queued"
        assert s["branch"] == f"telecoder/{s['id']}"
        assert s["depends_on"] == []
        assert s["engine"] == "shell"
    for name in ("w1", "w2"):
        start_worker(env, name, workers)
    ids = [s["id"] for s in run["sessions"]]
    done = wait_for(lambda: ended(ids, env), timeout=120, what="the run's sessions")
    assert [s["status"] for s in done] == ["succeeded"] * 10
    # One attempt each, by the two workers (however they shared the work).
    assert all(len(s["attempts"]) == 1 for s in done)
    assert {s["attempts"][0]["worker_id"] for s in done} <= {"w1", "w2"}
    for repo, session in zip(ten, done, strict=True):
        assert branches(repo) == [session["branch"]]  # exactly one branch …
        commits = repo.remote_git("rev-list", f"main..{session['branch']}").splitlines()
        assert len(commits) == 1  # … with exactly one commit


def test_a_refused_repo_refuses_the_whole_run(tmp_path: Path, home: Path):
    env = cli_env(home)
    good = repos(tmp_path, 3)
    (tmp_path / "plain").mkdir()
    args = [x for r in good for x in ("--repo", str(r.path))]
    made = telecoder(
        "run", APPEND, *args, "--repo", str(tmp_path / "plain"), "--engine", "shell", "--detach",
        env=env,
    )  # fmt: skip
    assert made.returncode == 2
    assert f"{tmp_path / 'plain'}: " in made.stderr
    assert "not a git repository" in made.stderr
    assert listed(env) == []  # nothing queued


def test_repos_file_runs_here_and_exits_1_when_one_failed(tmp_path: Path, home: Path):
    env = cli_env(home, TELECODER_POLL_SECONDS="0.05")
    ok = make_repo(tmp_path, "ok", {"README.md": "hi\n", "go": "yes\n"})
    no = make_repo(tmp_path, "no")
    listing = tmp_path / "repos.txt"
    listing.write_text(f"# the estate\n{ok.path}\n\n{no.path}  # this one fails\n")
    done = telecoder(
        "run", f"test -f go && {APPEND}", "--repos-file", str(listing), "--engine", "shell",
        "--json", env=env,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # the failure's exit code
    run = json.loads(done.stdout)
    assert run["status"] == "failed"
    assert {s["task_key"]: s["status"] for s in run["sessions"]} == {
        str(ok.path): "succeeded",
        str(no.path): "failed",
    }
    assert len(branches(ok)) == 1
    assert branches(no) == []


def test_fan_out_runs_here_and_shows_progress(tmp_path: Path, home: Path):
    env = cli_env(home, TELECODER_POLL_SECONDS="0.05")
    two = repos(tmp_path, 2)
    done = telecoder(
        "run", APPEND, "-r", str(two[0].path), "-r", str(two[1].path), "--engine", "shell",
        env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "succeeded" in done.stderr  # a line per change (stderr is no terminal)
    assert "2/2 ended" in done.stdout
    assert ": succeeded" in done.stdout
    assert all(len(branches(r)) == 1 for r in two)


def test_an_empty_repos_file_is_bad_input(tmp_path: Path, home: Path):
    listing = tmp_path / "none.txt"
    listing.write_text("# nothing yet\n")
    done = telecoder("run", APPEND, "--repos-file", str(listing), env=cli_env(home))
    assert done.returncode == 2
    assert "names no repository" in done.stderr


# --- plans -------------------------------------------------------------------------------------


def test_a_plan_runs_b_only_after_a_ended_with_workers(
    tmp_path: Path,
    home: Path,
    workers: list[subprocess.Popen[str]],  # noqa: F811
):
    env = fast_env(home)
    a, b = make_repo(tmp_path, "a"), make_repo(tmp_path, "b")
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        f"name: two steps\nengine: shell\ntasks:\n"
        f"  - id: first\n    prompt: sleep 1 && {APPEND}\n    repo: {a.path}\n"
        f"  - id: second\n    prompt: {APPEND}\n    repo: {b.path}\n    depends_on: [first]\n"
    )
    made = telecoder("run", "-f", str(plan), "--detach", "--json", env=env)
    assert made.returncode == 0, made.stderr
    run = json.loads(made.stdout)
    assert (run["kind"], run["name"]) == ("plan", "two steps")
    first, second = run["sessions"]
    assert (first["task_key"], first["status"]) == ("first", "queued")
    assert (second["task_key"], second["status"]) == ("second", "waiting")
    assert second["depends_on"] == [first["id"]]
    assert run["deps"] == [
        {"session_id": second["id"], "depends_on": first["id"], "after": "after"}
    ]
    for name in ("w1", "w2"):
        start_worker(env, name, workers)
    done = wait_for(lambda: ended([first["id"], second["id"]], env), timeout=60, what="the plan")
    assert [s["status"] for s in done] == ["succeeded", "succeeded"]
    assert done[1]["started_at"] >= done[0]["finished_at"]  # b started only after a ended
    assert len(branches(a)) == 1
    assert len(branches(b)) == 1


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        (
            "  - {id: a, prompt: x, depends_on: [b]}\n  - {id: b, prompt: y, depends_on: [a]}\n",
            "the tasks' dependencies form a cycle: a → b → a",
        ),
        ("  - {id: a, prompt: x, depends_on: [nope]}\n", "depends_on names an unknown task 'nope'"),
        ("  - {id: a, prompt: x}\n  - {id: a, prompt: y}\n", "task 'a' appears twice"),
        ("  - {id: a, prompt: x, after_any: [a]}\n", "task 'a': after_any names the task itself"),
        ("  - {id: a}\n", "task 'a': prompt is required"),
        ("  - {id: a, prompt: x, colour: red}\n", "task 'a': colour is not a known field"),
    ],
)  # fmt: skip
def test_a_bad_plan_is_refused_whole(
    git_repo: GitRepo, home: Path, tmp_path: Path, tasks: str, message: str
):
    env = cli_env(home)
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"repo: {git_repo.path}\nengine: shell\ntasks:\n{tasks}")
    done = telecoder("run", "-f", str(plan), "--detach", env=env)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert listed(env) == []


# --- --after -----------------------------------------------------------------------------------


def test_after_joins_the_sessions_run_and_waits_for_it(tmp_path: Path, home: Path):
    env = cli_env(home, TELECODER_POLL_SECONDS="0.05")
    repo = make_repo(tmp_path, "r")
    first = telecoder("run", APPEND, "-r", str(repo.path), "-e", "shell", "--detach", env=env)
    anchor = first.stdout.strip()
    made = telecoder(
        "run", APPEND, "-r", str(repo.path), "-e", "shell", "--after", anchor[:6], "--detach",
        "--json", env=env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    run = json.loads(made.stdout)
    assert run["kind"] == "single"
    old, new = run["sessions"]
    assert (old["id"], old["status"], old["run_id"]) == (anchor, "queued", run["id"])
    assert new["status"] == "waiting"
    assert new["depends_on"] == [anchor]
    assert run["deps"] == [{"session_id": new["id"], "depends_on": anchor, "after": "after"}]
    # Following it here runs what it waits for too, then it.
    third = telecoder(
        "run", APPEND, "-r", str(repo.path), "-e", "shell", "--after", new["id"], "--json",
        env=env,
    )  # fmt: skip
    assert third.returncode == 0, third.stderr
    final = json.loads(third.stdout)
    assert final["id"] == run["id"]
    assert final["status"] == "succeeded"
    chain = [session_json(s["id"], env) for s in final["sessions"]]
    assert [s["status"] for s in chain] == ["succeeded"] * 3
    assert chain[0]["finished_at"] <= chain[1]["started_at"]
    assert chain[1]["finished_at"] <= chain[2]["started_at"]


def test_after_a_failed_session_is_skipped_at_once(git_repo: GitRepo, home: Path):
    env = cli_env(home)
    failed = telecoder("run", "false", "-r", str(git_repo.path), "-e", "shell", "--json", env=env)
    anchor = json.loads(failed.stdout)["id"]
    made = telecoder(
        "run", APPEND, "-r", str(git_repo.path), "-e", "shell", "--after", anchor, "--detach",
        "--json", env=env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    run = json.loads(made.stdout)
    assert [s["status"] for s in run["sessions"]] == ["failed", "skipped"]
    assert run["status"] == "failed"


def test_after_an_unknown_session_is_not_found(git_repo: GitRepo, home: Path):
    done = telecoder(
        "run", APPEND, "-r", str(git_repo.path), "-e", "shell", "--after", "nosuchsession",
        env=cli_env(home),
    )  # fmt: skip
    assert done.returncode == 3


# --- the API -----------------------------------------------------------------------------------


@pytest.fixture
def app(settings, store):
    return create_app(settings, store)


async def test_post_runs_fans_out_in_one_call(app, store, tmp_path: Path):
    three = repos(tmp_path, 3)
    body = {"prompt": APPEND, "engine": "shell", "repos": [str(r.path) for r in three]}
    async with client(app) as c:
        response = await c.post("/api/runs", json=body)
    assert response.status_code == 201, response.text
    run = response.json()
    assert (run["kind"], run["status"], run["warnings"]) == ("fanout", "running", [])
    assert [s["repo"] for s in run["sessions"]] == [str(r.path) for r in three]
    assert all(s["origin"]["channel"] == "api" for s in run["sessions"])
    assert len(await store.runs.sessions(run["id"])) == 3


async def test_post_runs_takes_a_plan_and_after(app, store, git_repo: GitRepo):
    tasks = [
        {"id": "a", "prompt": "echo a"},
        {"id": "b", "prompt": "echo b", "after_any": ["a"]},
    ]
    async with client(app) as c:
        plan = await c.post(
            "/api/runs", json={"tasks": tasks, "repo": str(git_repo.path), "engine": "shell"}
        )
        assert plan.status_code == 201, plan.text
        a, b = plan.json()["sessions"]
        assert b["depends_on"] == [a["id"]]
        assert plan.json()["deps"][0]["after"] == "after_any"
        after = await c.post(
            "/api/runs",
            json={
                "prompt": "echo c",
                "repo": str(git_repo.path),
                "engine": "shell",
                "after": b["id"],
            },
        )
    assert after.status_code == 201, after.text
    joined = after.json()
    assert joined["id"] == plan.json()["id"]
    assert [s["task_key"] for s in joined["sessions"]][:2] == ["a", "b"]
    assert joined["sessions"][2]["depends_on"] == [b["id"]]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"prompt": "x"}, 422, "give exactly one of repos"),
        ({"prompt": "x", "repos": ["{repo}"], "tasks": [{"id": "a"}]}, 422, "exactly one"),
        ({"repos": ["{repo}"]}, 422, "prompt is required"),
        ({"prompt": "x", "repos": ["{repo}", "/nonexistent/r"]}, 422, "/nonexistent/r: "),
        ({"tasks": [{"id": "a", "prompt": "x", "depends_on": ["z"]}], "repo": "{repo}"}, 422,
         "unknown task 'z'"),
        ({"prompt": "x", "repo": "{repo}", "after": "nosuchsession"}, 404, "nosuchsession"),
    ],
)  # fmt: skip
async def test_post_runs_refuses_precisely_and_queues_nothing(
    app, store, git_repo: GitRepo, body: dict[str, Any], status: int, message: str
):
    raw = json.dumps(body).replace("{repo}", str(git_repo.path))
    async with client(app) as c:
        response = await c.post(
            "/api/runs", content=raw, headers={"content-type": "application/json"}
        )
    assert response.status_code == status, response.text
    assert message in response.text
    assert await store.runs.list() == []


async def test_post_sessions_with_repos_points_to_runs(app, git_repo: GitRepo):
    body = {"prompt": "x", "repos": [str(git_repo.path)]}
    async with client(app) as c:
        response = await c.post("/api/sessions", json=body)
    assert response.status_code == 422
    assert "POST /api/runs" in response.text


async def test_run_with_server_makes_the_run_there_and_follows_it(
    settings, store, db_url: str, tmp_path: Path, home: Path,
    workers: list[subprocess.Popen[str]],  # noqa: F811
):  # fmt: skip
    two = repos(tmp_path, 2)
    env = {**fast_env(home), "TELECODER_DATABASE_URL": db_url}
    start_worker(env, "w1", workers)
    args = ["-r", str(two[0].path), "-r", str(two[1].path), "-e", "shell", "--json"]
    async with serving(create_app(settings, store)) as url:
        detached = await asyncio.to_thread(
            telecoder, "run", APPEND, *args, "--detach", "--server", url, env=env
        )
        followed = await asyncio.to_thread(
            telecoder, "run", APPEND, *args, "--server", url, env=env
        )
    assert detached.returncode == 0, detached.stderr
    made = json.loads(detached.stdout)
    assert (made["kind"], len(made["sessions"])) == ("fanout", 2)
    assert followed.returncode == 0, followed.stderr
    run = json.loads(followed.stdout)
    assert run["status"] == "succeeded"
    assert [s["status"] for s in run["sessions"]] == ["succeeded", "succeeded"]
    assert [s["repo"] for s in run["sessions"]] == [str(r.path) for r in two]
