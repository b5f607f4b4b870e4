"""The review stage (``.telecoder.yml`` ``review: council``) with real agent CLIs: `telecoder run`
as a user runs it, Claude Code as the agent and as each of a council of three reviewers (in the
sandbox, through the gateway, against the fake model server), and the fake GitHub for the pull
request.

The first review finds one consensus problem at high severity (it blocks) and one minority
remark at low severity; the agent gets exactly one revision prompt naming the consensus
finding; the second review has only the minority remark; the pull request's body lists it
under "Review" and not the fixed one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli import events_json, telecoder
from tests.conftest import make_repo
from tests.engine_cases import WRITTEN, agent_env
from tests.fakes.github import TOKEN, FakeGitHub
from tests.fakes.model_protocols import Turn
from tests.fakes.model_server import FakeModelServer, Reply

pytestmark = pytest.mark.usefixtures("agent_tools")

CONFIG = f"verify:\n  - test -s {WRITTEN}\nreview: council\nreview_severity: high\n"
REVIEWERS = "claude-code:rev-a,claude-code:rev-b,claude-code:rev-c"
TASK = "greet-the-reviewers: write a greeting into fake.txt"
UNSAFE = "Unsafe eval of the greeting input"
MINOR = "Greeting file name could be clearer"
AGENT = {
    "greet-the-reviewers": (
        Reply(text="Writing it.", command=f"echo first-unsafe-eval > {WRITTEN}"),
        Reply(text="Wrote the greeting."),
    ),
    UNSAFE: (
        Reply(text="Fixing the review finding.", command=f"echo second-safe-parse > {WRITTEN}"),
        Reply(text="Replaced the eval."),
    ),
}


def _answer(*items: tuple[str, str]) -> Reply:
    recs = [
        {"title": title, "rationale": f"{title}.", "severity": severity, "location": "fake.txt:1"}
        for title, severity in items
    ]
    return Reply(text="My review.\n```json\n" + json.dumps({"recommendations": recs}) + "\n```")


class Council(FakeModelServer):
    """Reviewers are told apart by their model; the review round by the diff they are shown."""

    def choose(self, turn: Turn) -> Reply:
        users = [text for kind, text in turn.messages if kind == "user"]
        asked = next((text for text in users if "You are a code reviewer" in text), None)
        if asked is not None:
            self.reviews.append((turn.model, asked))
            first = "first-unsafe-eval" in asked
            if turn.model == "rev-a":
                return _answer((UNSAFE, "high"), (MINOR, "low")) if first else _answer((MINOR, "low"))
            return _answer((UNSAFE, "high")) if first else _answer()
        if users:
            self.agent_prompts.append(users[-1])
        return super().choose(turn)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.reviews: list[tuple[str, str]] = []
        self.agent_prompts: list[str] = []


def test_a_blocking_consensus_finding_gets_one_revision_and_the_rest_go_into_the_pr(
    tmp_path: Path, fake_github: FakeGitHub
) -> None:
    repo = make_repo(tmp_path, files={"README.md": "hello\n", ".telecoder.yml": CONFIG})
    fake_github.add_repo("acme", "repo", git_dir=repo.remote)
    home = tmp_path / "home"
    home.mkdir()
    with Council(scripts=AGENT, slow_seconds=120) as model:
        env = agent_env(
            home,
            model.url,
            TELECODER_FORGE="github",
            TELECODER_GITHUB_TOKEN=TOKEN,
            TELECODER_GITHUB_API_URL=fake_github.url,
            TELECODER_COUNCIL_REVIEWERS=REVIEWERS,
        )
        done = telecoder(
            "run", TASK, "--repo", fake_github.git_url("acme", "repo"),
            "--engine", "claude-code", "--json",
            env=env, timeout=400,
        )  # fmt: skip
        reviews, prompts = list(model.reviews), list(model.agent_prompts)
    session = json.loads(done.stdout)
    events = events_json(session["id"], env)
    failed = [e["data"] for e in events if e["data"].get("step") == "reviewer_failed"]
    assert done.returncode == 0, (session["error"], failed)
    assert session["status"] == "succeeded", session["error"]

    # Two reviews by the three reviewers, each seeing the diff of its round.
    by_model = sorted(model for model, _ in reviews)
    assert by_model == ["rev-a", "rev-a", "rev-b", "rev-b", "rev-c", "rev-c"], by_model
    assert sum("first-unsafe-eval" in text for _, text in reviews) == 3
    assert sum("second-safe-parse" in text for _, text in reviews) == 3
    # Exactly one revision prompt, naming the consensus finding (and not the minority one).
    revisions = sorted({p for p in prompts if "Reviewers of your change" in p})
    assert len(revisions) == 1, prompts
    assert UNSAFE in revisions[0]
    assert MINOR not in revisions[0]

    (pull,) = fake_github.pulls("acme", "repo")
    body = pull.body or ""
    assert "## Review" in body
    assert MINOR in body
    assert UNSAFE not in body
    assert repo.remote_git("show", f"{pull.head}:{WRITTEN}").strip() == "second-safe-parse"

    review = session["result"]["review"]
    assert review["round"] == 1
    assert review["answered"] == ["claude-code:rev-a", "claude-code:rev-b", "claude-code:rev-c"]
    assert [g["title"] for g in review["minority"]] == [MINOR]
    assert review["consensus"] == review["majority"] == []

    steps = [e["data"] for e in events if e["kind"] == "progress"]
    messages = [s.get("message") for s in steps if s["step"].startswith("review")]
    assert messages.count("reviewing (council of 3)…") == 2
    assert "revision asked for 1 finding" in messages
    runs = [(s["step"], s["resumed"]) for s in steps if s["step"] == "engine_started"]
    assert runs == [("engine_started", False), ("engine_started", True)]  # the one revision
    reviewed = [s for s in steps if s["step"] == "reviewed"]
    assert [(s["consensus"], s["minority"]) for s in reviewed] == [(1, 1), (0, 1)]
