"""The builtin agent end to end: `telecoder run --engine builtin` as a user runs it, the agent
process in the sandbox, its model requests through the gateway to the fake model server, the
branch pushed to a bare remote.

Scripts are the model's turns (``Reply(tool=..., args=...)`` for native tool calls, text for calls
written in the content); the agent's tools really read, search, write and run in the worktree.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from telecoder.agent.parse import TEXT_FORMAT_HELP
from telecoder.confine import PACKAGE
from tests.cli import events_json, telecoder
from tests.conftest import GitRepo, make_repo
from tests.engine_cases import agent_env
from tests.fakes.model_server import FakeModelServer, Reply, Usage

MODEL = "gpt-4.1-mini"
BUGGY = "def add(a, b):\n    return a - b\n"
FIXED = "def add(a, b):\n    return a + b\n"
TEST_SCRIPT = (
    'python3 -B -c "import calc; assert calc.add(2, 3) == 5, calc.add(2, 3)" && echo PASS\n'
)
FILES = {
    "README.md": "A calculator.\n",
    "calc.py": BUGGY,
    "test_calc.sh": TEST_SCRIPT,
    # A package of the repository's own by the agent's name does not replace the agent.
    "telecoder/__init__.py": "raise SystemExit('the repository shadowed the agent')\n",
}
PROMPT = "fix add in calc.py so that test_calc.sh passes"
TOOL_NAMES = ["list_directory", "read_file", "search_files", "write_file", "run_command"]

# The task, as native tool calls: look, read, search, write, run the tests, answer.
NATIVE = (
    Reply(text="Looking around.", tool="list_directory", args={"path": "."}),
    Reply(tool="read_file", args={"path": "calc.py"}),
    Reply(tool="search_files", args={"pattern": "def add"}),
    Reply(text="The sign is wrong.", tool="write_file", args={"path": "calc.py", "content": FIXED}),
    Reply(tool="run_command", args={"command": "sh test_calc.sh"}),
    Reply(text="Fixed add: test_calc.sh passes."),
)


@dataclass(frozen=True)
class Run:
    session: dict[str, Any]
    events: list[dict[str, Any]]
    repo: GitRepo
    env: dict[str, str]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [e["data"] for e in self.events if e["kind"] == kind]

    def branch_files(self) -> list[str]:
        return self.repo.remote_git("diff", "--name-only", "main", self.session["branch"]).split()

    def pushed(self, path: str) -> str:
        return self.repo.remote_git("show", f"{self.session['branch']}:{path}")


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    return make_repo(tmp_path, files=FILES)


def fake(script: Sequence[Reply], **options: Any) -> FakeModelServer:
    return FakeModelServer(default=script, **options)


def run(
    server: FakeModelServer,
    repo: GitRepo,
    tmp_path: Path,
    *,
    prompt: str = PROMPT,
    model: str = MODEL,
    tier: str | None = None,
    **settings: str,
) -> Run:
    env = agent_env(tmp_path / "home", server.url, **settings)
    tiered = ["--tier", tier] if tier else []
    done = telecoder(
        "run", prompt, "--repo", str(repo.path), "--engine", "builtin", "--model", model,
        *tiered, "--json", env=env, timeout=120,
    )  # fmt: skip
    session: dict[str, Any] = json.loads(done.stdout)
    assert done.returncode == (0 if session["status"] == "succeeded" else 1), done.stderr
    return Run(session, events_json(session["id"], env), repo, env)


def bodies(server: FakeModelServer) -> list[dict[str, Any]]:
    return [r.body for r in server.model_requests()]


def assert_task_done(done: Run) -> None:
    assert done.session["status"] == "succeeded", done.session["error"]
    assert done.session["result"]["type"] == "branch"
    assert done.branch_files() == ["calc.py"]
    assert done.pushed("calc.py") == FIXED.rstrip("\n")
    results = done.of_kind("tool_result")
    assert all(r["ok"] for r in results), results
    assert "PASS" in results[-1]["output"]


# --- 1. the task, native tool calls -------------------------------------------------------------


@pytest.mark.parametrize("api", ["openai", "ollama"])
def test_a_multi_turn_task_reads_searches_writes_tests_and_is_pushed(
    api: str, repo: GitRepo, tmp_path: Path
) -> None:
    with fake(NATIVE) as server:
        if api == "ollama":
            done = run(server, repo, tmp_path, model="ollama/qwen3", OLLAMA_HOST=server.url)
        else:
            done = run(server, repo, tmp_path)
        requests = server.model_requests()
    assert_task_done(done)
    assert [c["name"] for c in done.of_kind("tool_call")] == TOOL_NAMES
    assert done.of_kind("tool_call")[1]["input"] == {"path": "calc.py"}
    read = done.of_kind("tool_result")[1]["output"]
    assert "a - b" in read  # the observation, as the model got it
    assert done.of_kind("result")[-1]["text"] == "Fixed add: test_calc.sh passes."
    assert [m["text"] for m in done.of_kind("message")][:2] == [
        "Looking around.",
        "The sign is wrong.",
    ]
    # One request a turn, through the gateway, each with the five tools; observations went back
    # as tool messages (answering the calls' ids on Chat Completions).
    assert len(requests) == len(NATIVE)
    path = "/api/chat" if api == "ollama" else "/v1/chat/completions"
    assert all(r.path == path for r in requests)
    for request in requests:
        offered = sorted(t["function"]["name"] for t in request.body["tools"])
        assert offered == sorted(TOOL_NAMES)
        assert request.body["stream"] is False
    last = requests[-1].body["messages"]
    tools = [m for m in last if m["role"] == "tool"]
    assert len(tools) == 5
    assert json.loads(tools[-1]["content"])["ok"] is True
    if api == "openai":
        called = [
            c["id"] for m in last if m["role"] == "assistant" for c in m.get("tool_calls", [])
        ]
        assert [m["tool_call_id"] for m in tools] == called
    # Usage: the gateway metered every answer.
    usage = done.of_kind("usage")[-1]
    assert done.session["input_tokens"] == usage["input_tokens"] == 120 * len(NATIVE)


# --- 2. calls written as text ---------------------------------------------------------------


def as_json(name: str, **args: str) -> str:
    return "I'll call a tool.\n```json\n" + json.dumps({"name": name, "arguments": args}) + "\n```"


def as_hermes(name: str, **args: str) -> str:
    return "<tool_call>" + json.dumps({"name": name, "arguments": args}) + "</tool_call>"


def as_function(name: str, **args: str) -> str:
    params = "".join(f"<parameter={k}>{v}</parameter>" for k, v in args.items())
    return f"<function={name}>{params}</function>"


def text_script(write: Any) -> tuple[Reply, ...]:
    return (
        Reply(text=write("read_file", path="calc.py")),
        Reply(text=write("search_files", pattern="def add")),
        Reply(text=write("write_file", path="calc.py", content=FIXED)),
        Reply(text=write("run_command", command="sh test_calc.sh")),
        Reply(text="Fixed add: test_calc.sh passes."),
    )


TEXT_CASES = {
    # A server with tools whose model writes JSON in its content anyway.
    "json-in-content": (as_json, False),
    # Servers without tool calls (400 on `tools`): the agent switches to text mode.
    "xml-tool-call": (as_hermes, True),
    "xml-function": (as_function, True),
}


@pytest.mark.parametrize("case", list(TEXT_CASES))
def test_the_same_task_with_calls_written_as_text(case: str, repo: GitRepo, tmp_path: Path) -> None:
    write, rejects = TEXT_CASES[case]
    with fake(text_script(write), reject_tools=rejects, count_replies=True) as server:
        done = run(server, repo, tmp_path)
        sent = bodies(server)
    assert_task_done(done)
    assert [c["name"] for c in done.of_kind("tool_call")] == TOOL_NAMES[1:]
    last = sent[-1]["messages"]
    # Observations of calls read from text go back as user messages (no tool id to answer).
    observed = [m["content"] for m in last if m["role"] == "user" and '"ok"' in m["content"]]
    assert len(observed) == 4
    assert not any(m["role"] == "tool" for m in last)
    if rejects:
        assert "tools" in sent[0]
        assert "tools" not in sent[1]
        assert TEXT_FORMAT_HELP
        assert TEXT_FORMAT_HELP in last[0]["content"]
    else:
        assert all("tools" in body for body in sent)


# --- 3. guardrails ------------------------------------------------------------------------------

WRITE_PARTIAL = Reply(tool="write_file", args={"path": "partial.txt", "content": "half done\n"})
GUARDRAILS = {
    "iteration_cap": (
        (
            WRITE_PARTIAL,
            *(Reply(tool="run_command", args={"command": f"echo {n}"}) for n in range(9)),
        ),
        {"TELECODER_BUILTIN_MAX_ITERATIONS": "3"},
        {},
    ),
    "repeated_call": (
        (WRITE_PARTIAL, Reply(tool="read_file", args={"path": "README.md"})),
        {},
        {},
    ),
    "token_budget": (
        (
            WRITE_PARTIAL,
            *(Reply(tool="run_command", args={"command": f"echo {n}"}) for n in range(9)),
        ),
        {"TELECODER_BUILTIN_TOKEN_BUDGET": "1500"},
        {"usage": Usage(input=800, output=100)},
    ),
    "wall_clock": (
        (
            WRITE_PARTIAL,
            Reply(delay=30, tool="list_directory", args={"path": "."}),
            Reply(text="x"),
        ),
        {"TELECODER_BUILTIN_WALL_SECONDS": "2"},
        {},
    ),
    "format_errors": (
        (
            WRITE_PARTIAL,
            Reply(text='<tool_call>{"name": "read_file", "arguments": {"path": }}</tool_call>'),
        ),
        {},
        {},
    ),
}
TURNS = {
    "iteration_cap": 3,
    "repeated_call": 4,
    "token_budget": 2,
    "wall_clock": 2,
    "format_errors": 4,
}


@pytest.mark.parametrize("reason", list(GUARDRAILS))
def test_each_guardrail_ends_the_run_with_its_reason_and_keeps_the_work(
    reason: str, repo: GitRepo, tmp_path: Path
) -> None:
    script, settings, options = GUARDRAILS[reason]
    started = time.monotonic()
    with fake(script, **options) as server:
        done = run(server, repo, tmp_path, **settings)
        asked = len(server.model_requests())
    took = time.monotonic() - started
    session = done.session
    assert session["status"] == "failed"
    assert session["failure_kind"] == "agent_limit"
    assert session["attempt"] == 1  # not retried: the same agent would stop the same way
    assert f"stopped ({reason})" in session["error"]
    assert "pushed as a partial result" in session["error"]
    assert asked == TURNS[reason]
    if reason == "wall_clock":  # it stopped waiting for the slow answer (30 s) on time
        assert took < 20
    [end] = [e for e in done.of_kind("error") if e.get("reason")]
    assert end["reason"] == reason
    assert end["fatal"] is True
    assert "files written: partial.txt" in end["message"]
    # What the agent wrote is kept: pushed as a partial result (a draft).
    assert session["result"]["partial"] is True
    assert done.branch_files() == ["partial.txt"]
    assert done.pushed("partial.txt") == "half done"


def test_the_sessions_tier_sets_the_turns_the_agent_may_take(repo: GitRepo, tmp_path: Path) -> None:
    endless = GUARDRAILS["iteration_cap"][0]
    with fake(endless) as server:
        done = run(server, repo, tmp_path, tier="trivial")
        asked = len(server.model_requests())
    assert done.session["tier"] == "trivial"
    assert done.session["failure_kind"] == "agent_limit"
    assert "5 model turns were allowed" in done.session["error"]
    assert asked == 5


def test_a_model_that_keeps_failing_fails_the_session_with_its_error(
    repo: GitRepo, tmp_path: Path
) -> None:
    with fake((Reply(error=500),)) as server:
        done = run(server, repo, tmp_path)
    assert done.session["status"] == "failed"
    assert done.session["failure_kind"] == "model_error"
    assert "HTTP 500" in done.session["error"]
    assert "fake error 500" in done.session["error"]


# --- 4. path escapes ---------------------------------------------------------------------------


def test_paths_out_of_the_worktree_are_refused_as_observations(
    repo: GitRepo, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("a secret outside the worktree\n")
    os.symlink(outside, repo.path / "link")
    subprocess.run(["git", "add", "link"], cwd=repo.path, check=True)
    subprocess.run(["git", "commit", "-qm", "a link out"], cwd=repo.path, check=True)
    subprocess.run(["git", "push", "-q", "origin", "main"], cwd=repo.path, check=True)
    script = (
        Reply(tool="read_file", args={"path": "../outside.txt"}),
        Reply(tool="read_file", args={"path": "/etc/passwd"}),
        Reply(tool="read_file", args={"path": "link"}),
        Reply(tool="write_file", args={"path": "../escaped.txt", "content": "out\n"}),
        Reply(tool="write_file", args={"path": "link", "content": "overwritten\n"}),
        # run_command's wall is the sandbox: nothing outside the worktree to read, TeleCoder's
        # own package (mounted for the agent to run) read-only.
        Reply(tool="run_command", args={"command": f"cat {outside}"}),
        Reply(tool="run_command", args={"command": f"touch {PACKAGE}/written-by-the-agent"}),
        Reply(tool="write_file", args={"path": "inside.txt", "content": "in\n"}),
        Reply(text="Done, inside only."),
    )
    with fake(script) as server:
        done = run(server, repo, tmp_path)
    assert done.session["status"] == "succeeded", done.session["error"]
    results = done.of_kind("tool_result")
    assert [r["ok"] for r in results] == [False] * 7 + [True]
    for refused in results[:5]:
        assert json.loads(refused["output"])["error"]
    assert not (PACKAGE / "written-by-the-agent").exists()
    shown = json.dumps(done.events)
    assert "a secret outside" not in shown
    assert "root:x:0" not in shown
    assert outside.read_text() == "a secret outside the worktree\n"
    assert not (tmp_path / "escaped.txt").exists()
    assert done.branch_files() == ["inside.txt"]


# --- 5. a revision resumes the conversation ------------------------------------------------------

CASE = "(builtin verify case)"
REVISION_MARK = "do not pass this repository's checks"  # in every revision prompt


def write(content: str) -> Reply:
    return Reply(tool="write_file", args={"path": "fake.txt", "content": content})


def test_a_revision_resumes_the_stored_conversation(tmp_path: Path) -> None:
    repo = make_repo(
        tmp_path,
        files={"README.md": "hi\n", ".telecoder.yml": "verify:\n  - grep -qx fixed fake.txt\n"},
    )
    scripts = {
        CASE: (write("wrong\n"), Reply(text="Created.")),
        REVISION_MARK: (write("fixed\n"), Reply(text="Fixed.")),
    }
    with FakeModelServer(scripts=scripts) as server:
        done = run(server, repo, tmp_path, prompt=f"create fake.txt {CASE}")
        requests = server.model_requests()
    assert done.session["status"] == "succeeded", done.session["error"]
    assert done.pushed("fake.txt") == "fixed"
    revision = next(e for e in done.of_kind("progress") if e.get("step") == "revision_started")
    assert revision["resumed"] is True
    first_run = [r for r in requests if REVISION_MARK not in json.dumps(r.body)]
    revising = [r for r in requests if REVISION_MARK in json.dumps(r.body)]
    assert len(first_run) == 2
    assert len(revising) == 2
    # The revision's first request holds the first conversation, then the revision's prompt.
    before = first_run[-1].body["messages"] + [{"role": "assistant", "content": "Created."}]
    resumed = revising[0].body["messages"]
    assert messages_of(resumed[: len(before)]) == messages_of(before)
    assert REVISION_MARK in resumed[len(before)]["content"]
    assert resumed[len(before)]["role"] == "user"


def messages_of(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["role"], str(m.get("content") or "")) for m in messages]
