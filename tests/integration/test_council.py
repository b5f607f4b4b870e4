"""A council of reviewers as a user runs it (issue 14's acceptance): ``telecoder council start``
queues three read-only reviewers — Claude Code with three models, in the sandbox, against the
fake model server, which answers each model with its own scripted recommendations — a real
``telecoder worker`` runs them, ``council wait`` blocks until they ended, ``council tally``
groups the recommendations (exactly the scripted consensus, majority and minority) and
``council report`` writes the markdown naming them. Then a council where one reviewer's model
answers 500 and another's answer holds no JSON: the tally is made from the other two and says so.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli import TELECODER, telecoder
from tests.conftest import GitRepo, make_repo
from tests.engine_cases import agent_env
from tests.fakes.model_protocols import Turn
from tests.fakes.model_server import FakeModelServer, Reply
from tests.procs import WorkerProcs, worker_processes

pytestmark = pytest.mark.usefixtures("agent_tools")

FILES = {
    "README.md": "A small service.\n",
    "app/db.py": "".join(f"line {n}\n" for n in range(1, 60)),
    "app/auth.py": "".join(f"line {n}\n" for n in range(1, 60)),
}

SQL = {
    "title": "SQL injection in the user query",
    "rationale": "The query is built with string formatting.",
    "severity": "high",
    "location": "app/db.py:42",
}
TOKEN = {
    "title": "Token compared without constant time",
    "rationale": "== on secrets leaks timing.",
    "severity": "medium",
    "location": "app/auth.py:10",
}
DOCS = {
    "title": "Document the retry policy",
    "rationale": "Nobody knows why it retries three times.",
    "severity": "low",
}


def answer(*items: dict[str, Any], **changes: Any) -> str:
    recs = [{**item, **changes.get(item["title"], {})} for item in items]
    block = json.dumps({"recommendations": recs}, indent=1)
    return f"I read the code.\n\n```json\n{block}\n```"


# The same problems in other words and at nearby lines: the tally groups them.
SQL_B = {"SQL injection in the user query": {"title": "SQL injection in user query",
                                              "location": "app/db.py:43"}}  # fmt: skip
TOKEN_C = {"Token compared without constant time": {"severity": "high"}}

ANSWERS = {
    "reviewer-a": answer(SQL, TOKEN, DOCS),  # all three
    "reviewer-b": answer(SQL, **SQL_B),  # the consensus only
    "reviewer-c": answer(SQL, TOKEN, **TOKEN_C),  # consensus and majority
    "reviewer-vague": "Looks fine to me, nothing to add.",  # no JSON: unreadable
}
FAILING = "reviewer-broken"  # answered 500
WRITER = "reviewer-a"  # tries to write first: its worktree is read-only
WRITE = "echo changed >> README.md; touch new.txt; echo wrote=$?"


class Reviewers(FakeModelServer):
    """Each reviewer's model gets its own answer; side queries (no tools) get it too."""

    def choose(self, turn: Turn) -> Reply:
        self.seen.add(turn.model)
        if turn.model == FAILING:
            return Reply(error=500)
        results = [text for kind, text in turn.messages if kind == "tool_result"]
        if turn.model == WRITER and not results and "Bash" in turn.tools:
            return Reply(text="Let me try something.", command=WRITE)
        self.results += results
        if turn.model in ANSWERS:
            return Reply(text=ANSWERS[turn.model])
        return Reply(text="Fake title")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.seen: set[str] = set()
        self.results: list[str] = []  # the tool results the models were shown


@pytest.fixture
def worker_procs() -> Iterator[WorkerProcs]:
    yield from worker_processes()


def _json(done: Any) -> Any:
    assert done.returncode == 0, done.stderr + done.stdout
    return json.loads(done.stdout)


def _council(
    repo: GitRepo, env: dict[str, str], reviewers: str, workers: WorkerProcs
) -> tuple[str, dict[str, Any]]:
    question = "Review the data access and authentication code."
    args = ("--repo", str(repo.path), "--reviewers", reviewers, "--json")
    started = _json(telecoder("council", "start", question, *args, env=env))
    run_id = started["run"]["id"]
    assert started["run"]["kind"] == "council"
    assert {r["session"]["read_only"] for r in started["reviewers"]} == {True}
    assert {r["status"] for r in started["reviewers"]} == {"pending"}
    workers.start({**env, "TELECODER_WORKER_CONCURRENCY": "4"}, "w1")
    waiting = ("council", "wait", run_id, "--timeout", "400", "--json")
    waited = _json(telecoder(*waiting, env=env, timeout=420))
    tallied = _json(telecoder("council", "tally", run_id, "--json", env=env))
    assert tallied["reviewers"] == [
        {k: v for k, v in r.items() if k != "session"} for r in waited["reviewers"]
    ]
    return run_id, tallied


def _groups(tallied: dict[str, Any], label: str) -> list[tuple[str, str, list[str]]]:
    return [(g["title"], g["severity"], g["reviewers"]) for g in tallied[label]]


def test_three_reviewers_tallied_into_the_scripted_groups(
    tmp_path: Path, worker_procs: WorkerProcs
) -> None:
    repo = make_repo(tmp_path, files=FILES)
    home = tmp_path / "home"
    reviewers = "claude-code:reviewer-a,claude-code:reviewer-b,claude-code:reviewer-c"
    a, b, c = reviewers.split(",")
    with Reviewers() as model:
        env = agent_env(home, model.url, TELECODER_POLL_SECONDS="0.1")
        run_id, tallied = _council(repo, env, reviewers, worker_procs)

        assert [r["status"] for r in tallied["reviewers"]] == ["answered"] * 3, model.seen
        assert tallied["panel"] == [a, b, c]
        assert (tallied["answered"], tallied["missing"]) == ([a, b, c], [])
        assert tallied["note"] == "made from all 3 reviewers"
        assert _groups(tallied, "consensus") == [(SQL["title"], "high", [a, b, c])]
        assert _groups(tallied, "majority") == [(TOKEN["title"], "medium", [a, c])]
        assert _groups(tallied, "minority") == [(DOCS["title"], "low", [a])]
        (sql,) = tallied["consensus"]
        assert sql["location"] == {"file": "app/db.py", "line": 42}

        # Nothing was written: the worktree is mounted read-only; nothing was pushed.
        assert any("Read-only file system" in r and "wrote=1" in r for r in model.results), (
            model.results
        )
        refs = repo.remote_git("for-each-ref", "--format=%(refname)", "refs/heads")
        assert refs.split() == ["refs/heads/main"]

        written = _json(telecoder("council", "report", run_id, "--json", env=env))
        path = Path(written["path"])
        assert path == home / "runs" / run_id / "council-report.md"
        text = path.read_text()
        shown = telecoder("council", "show", run_id, env=env)
        listed = _json(telecoder("council", "list", "--json", env=env))
    sections = {part.split("\n", 1)[0]: part for part in text.split("\n## ")[1:]}
    assert SQL["title"] in sections["Consensus (1)"]
    assert "`app/db.py:42`" in sections["Consensus (1)"]
    assert f"reviewers: {a}, {b}, {c}" in sections["Consensus (1)"]
    assert TOKEN["title"] in sections["Majority (1)"]
    assert "severity: **medium**" in sections["Majority (1)"]
    assert DOCS["title"] in sections["Minority (1)"]
    assert f"reviewers: {a}" in sections["Minority (1)"]
    assert "None: every reviewer answered." in sections["Missing reviewers (0)"]
    assert shown.returncode == 0, shown.stderr
    assert run_id in shown.stdout
    assert [r["id"] for r in listed] == [run_id]


def test_a_failed_and_an_unreadable_reviewer_leave_a_tally_of_two(
    tmp_path: Path, worker_procs: WorkerProcs
) -> None:
    repo = make_repo(tmp_path, files=FILES)
    home = tmp_path / "home"
    reviewers = (
        "claude-code:reviewer-a,claude-code:reviewer-c,"
        f"claude-code:{FAILING},claude-code:reviewer-vague"
    )
    a, c, broken, vague = reviewers.split(",")
    with Reviewers() as model:
        env = agent_env(home, model.url, TELECODER_POLL_SECONDS="0.1")
        run_id, tallied = _council(repo, env, reviewers, worker_procs)
        written = telecoder("council", "report", run_id, "--output", "-", env=env)
    status = {r["reviewer"]: r["status"] for r in tallied["reviewers"]}
    assert status == {a: "answered", c: "answered", broken: "failed", vague: "unreadable"}
    assert (tallied["answered"], tallied["missing"]) == ([a, c], [broken, vague])
    assert tallied["note"].startswith("made from 2 of 4 reviewers")
    # Out of the two who answered: both made the consensus and the majority, one the rest.
    assert _groups(tallied, "consensus") == [
        (SQL["title"], "high", [a, c]),
        (TOKEN["title"], "medium", [a, c]),
    ]
    assert _groups(tallied, "majority") == []
    assert _groups(tallied, "minority") == [(DOCS["title"], "low", [a])]
    why = {r["reviewer"]: r["why"] for r in tallied["reviewers"]}
    assert why[broken].startswith("failed")
    assert "no JSON" in why[vague]
    assert written.returncode == 0, written.stderr
    assert "## Missing reviewers (2)" in written.stdout
    assert f"**{broken}**: failed" in written.stdout
    assert f"**{vague}**: unreadable" in written.stdout


def test_bad_input_and_unknown_runs_exit_with_their_codes(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, files=FILES)
    env = agent_env(tmp_path / "home", "http://127.0.0.1:9")
    question = "Is the code fine?"

    def start(*args: str) -> Any:
        return telecoder("council", "start", question, "--repo", str(repo.path), *args, env=env)

    one = start("--reviewers", "claude-code", "--json")
    eight = start("--reviewers", ",".join(["codex"] * 8), "--json")
    unknown = start("--reviewers", "claude-code,nosuchengine")
    for done, words in ((one, "2 to 7"), (eight, "2 to 7")):
        assert done.returncode == 2, done.stderr
        error = json.loads(done.stdout)["error"]
        assert error["code"] == "bad_input"
        assert words in error["message"]
    assert unknown.returncode == 2
    assert "nosuchengine" in unknown.stderr
    missing_diff = start("--reviewers", "codex,pi", "--json")
    assert missing_diff.returncode == 0, missing_diff.stderr  # a question: queued
    for command in (("wait", "--timeout", "1"), ("tally",), ("report",), ("show",)):
        done = telecoder("council", command[0], "run_nosuchrun1", *command[1:], "--json", env=env)
        assert done.returncode == 3, (command, done.stderr)
        assert json.loads(done.stdout)["error"]["code"] == "not_found"
    # No --reviewers, no setting: three different installed engines.
    chosen = _json(start("--json"))["run"]["spec"]
    assert len(set(chosen["engines"])) == 3, chosen
    assert chosen["reviewers"] == chosen["engines"]
    assert "shell" not in chosen["engines"]
    queued = json.loads(missing_diff.stdout)["run"]["id"]
    timed = telecoder("council", "wait", queued, "--timeout", "0.5", "--json", env=env)
    assert timed.returncode == 10, timed.stderr
    assert json.loads(timed.stdout)["error"]["code"] == "timed_out"
    nofile = telecoder("council", "start", "nosuch.diff", "--repo", str(repo.path), env=env)
    assert nofile.returncode == 2
    assert "no diff file" in nofile.stderr


def test_a_branch_and_a_diff_from_stdin_as_targets(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, files=FILES)
    main = repo.git("rev-parse", "main")
    repo.git("checkout", "-q", "-b", "feature")
    (repo.path / "app" / "db.py").write_text("changed\n")
    repo.git("commit", "-qam", "change the db")
    repo.git("push", "-q", "origin", "feature")
    env = agent_env(tmp_path / "home", "http://127.0.0.1:9")
    args = ("--repo", str(repo.path), "--reviewers", "codex:a,codex:b", "--json")

    branch = _json(telecoder("council", "start", "feature", *args, env=env))
    diff = "--- a/app/db.py\n+++ b/app/db.py\n@@ -1 +1 @@\n-line 1\n+```evil\n"
    piped = subprocess.run(
        [TELECODER, "council", "start", "-", *args, "--base", "feature"],
        input=diff, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    target = branch["run"]["spec"]["target"]
    assert target == {"kind": "branch", "ref": "feature", "base": "main", "base_sha": main}
    sessions = [r["session"] for r in branch["reviewers"]]
    assert [s["task_key"] for s in sessions] == ["codex:a", "codex:b"]
    assert [(s["engine"], s["model"]) for s in sessions] == [("codex", "a"), ("codex", "b")]
    assert {s["base"] for s in sessions} == {"feature"}
    assert f"`git diff {main}...HEAD`" in sessions[0]["prompt"]
    assert sessions[0]["prompt"].startswith("You are a code reviewer.")
    data = _json(piped)
    assert data["run"]["spec"]["target"] == {
        "kind": "diff", "diff_bytes": len(diff), "ref": "feature", "base": None, "base_sha": None
    }  # fmt: skip
    prompt = data["reviewers"][0]["session"]["prompt"]
    assert "````diff\n" + diff.rstrip() + "\n````" in prompt
    assert {r["session"]["base"] for r in data["reviewers"]} == {"feature"}
