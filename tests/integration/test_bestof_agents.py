"""Best of 3 with three real agent CLIs (Claude Code, Codex, OpenCode) through `telecoder run
--attempts 3 --engines …` as a user runs it: the fake model server plays the agents (OpenCode's
candidate writes a file the repository's check refuses) and the judge (JSON naming Codex's
candidate); the fake GitHub gets ONE pull request, for the judge's passing choice, its body
naming the judge's reasons and the other branches."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.cli import telecoder
from tests.conftest import make_repo
from tests.engine_cases import WRITTEN, agent_env
from tests.fakes.github import TOKEN, FakeGitHub
from tests.fakes.model_protocols import Turn
from tests.fakes.model_server import DEFAULT_SCRIPT, FakeModelServer, Reply

pytestmark = pytest.mark.usefixtures("agent_tools")

CONFIG = "verify:\n  - test ! -e bad.txt\nmax_revisions: 0\n"
BAD = (
    Reply(text="Creating the files.", command=f"echo hello > {WRITTEN} && echo oops > bad.txt"),
    Reply(text="Done."),
)
ENGINES = "claude-code,codex:gpt-5-mini,opencode:gpt-4.1-mini"  # (a model each, or its own)
REASONS = "Codex's change is the clearest: one file, exactly as asked."


class Agents(FakeModelServer):
    """OpenCode (the only CLI offering a tool named ``bash``) writes what fails the check; the
    judge's request (it lists candidates) is answered with Codex's candidate."""

    def choose(self, turn: Turn) -> Reply:
        users = [text for kind, text in turn.messages if kind == "user"]
        if users and "Candidate {" in users[-1]:
            found = re.findall(r"Candidate (\{[^\n]*\}):", users[-1])
            metas = [json.loads(m) for m in found]
            self.judged.append(metas)
            codex = next(m["id"] for m in metas if m["engine"] == "codex")
            return Reply(text=json.dumps({"winner": codex, "reasons": REASONS}))
        if "bash" in turn.tools and "Bash" not in turn.tools:
            done = sum(1 for kind, _ in turn.messages if kind == "tool_result")
            return BAD[min(done, len(BAD) - 1)]
        return super().choose(turn)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.judged: list[list[dict[str, object]]] = []


def test_best_of_three_agents_one_pr_for_the_judges_passing_choice(
    tmp_path: Path, fake_github: FakeGitHub
) -> None:
    repo = make_repo(tmp_path, files={"README.md": "hello\n", ".telecoder.yml": CONFIG})
    fake_github.add_repo("acme", "repo", git_dir=repo.remote)
    home = tmp_path / "home"
    home.mkdir()
    with Agents(default=DEFAULT_SCRIPT, slow_seconds=120) as model:
        env = agent_env(
            home,
            model.url,
            TELECODER_FORGE="github",
            TELECODER_GITHUB_TOKEN=TOKEN,
            TELECODER_GITHUB_API_URL=fake_github.url,
            TELECODER_JUDGE_MODEL="judge-model",
            TELECODER_JUDGE_BASE_URL=f"{model.url}/v1",
            TELECODER_JUDGE_API_KEY="sk-judge",
        )
        done = telecoder(
            "run", "create fake.txt containing hello-from-fake",
            "--repo", fake_github.git_url("acme", "repo"),
            "--attempts", "3", "--engines", ENGINES, "--json",
            env=env, timeout=400,
        )  # fmt: skip
        judged = model.judged
    assert done.returncode == 0, done.stderr + done.stdout
    data = json.loads(done.stdout)
    by_engine = {c["session"]["engine"]: c for c in data["candidates"]}
    assert set(by_engine) == {"claude-code", "codex", "opencode"}
    assert by_engine["opencode"]["passed"] is False
    assert by_engine["opencode"]["session"]["failure_kind"] == "verify_failed", by_engine[
        "opencode"
    ]["session"]["error"]
    for engine in ("claude-code", "codex"):
        assert by_engine[engine]["passed"], by_engine[engine]
    # The judge saw the two passing candidates only, once.
    (shown,) = judged
    assert {m["engine"] for m in shown} == {"claude-code", "codex"}

    verdict = data["verdict"]
    codex = by_engine["codex"]["session"]
    assert (verdict["winner"], verdict["reasons"]) == (codex["id"], REASONS)
    assert data["run"]["status"] == "succeeded"
    (pull,) = fake_github.pulls("acme", "repo")
    assert pull.head == codex["branch"]
    assert REASONS in (pull.body or "")
    for engine in ("claude-code", "opencode"):
        assert by_engine[engine]["session"]["branch"] in (pull.body or "")
    assert repo.remote_git("show", f"{codex['branch']}:{WRITTEN}").strip() == "hello-from-fake"
