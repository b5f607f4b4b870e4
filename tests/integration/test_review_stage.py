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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from telecoder import registry
from telecoder.assemble import build_worker
from telecoder.domain import EventKind, FailureKind, NewSession, Session, SessionStatus
from telecoder.engines.shell import ShellEngine
from telecoder.protocols import EngineCommand, EngineTask
from telecoder.settings import Settings
from telecoder.store import Store
from tests.cli import events_json, telecoder
from tests.conftest import GitRepo, make_repo
from tests.engine_cases import WRITTEN, agent_env
from tests.fakes.github import TOKEN, FakeGitHub
from tests.fakes.model_protocols import Turn
from tests.fakes.model_server import FakeModelServer, Reply
from tests.integration.test_ask_for_help import resumable
from tests.integration.test_engine_shell import all_events, execute, tuned

CONFIG = f"verify:\n  - test -s {WRITTEN}\nreview: council\nreview_severity: high\n"
REVIEWERS = "claude-code:rev-a,claude-code:rev-b,claude-code:rev-c"
TASK = "greet-the-reviewers: write a greeting into fake.txt"
UNSAFE = "Unsafe eval of the greeting input"
MINOR = "Greeting file name could be clearer"
TAMPER = f"echo tampered >> {WRITTEN}; echo here > reviewer-was-here.txt"
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
            tried = any(kind == "tool_result" for kind, _ in turn.messages)
            if turn.model == "rev-b" and first and not tried:
                return Reply(text="Let me fix it myself.", command=TAMPER)  # read-only: fails
            found = [(UNSAFE, "high")] if first else []
            if turn.model == "rev-a":
                found.append((MINOR, "low"))  # the minority remark, in both rounds
            return _answer(*found)
        if users:
            self.agent_prompts.append(users[-1])
        return super().choose(turn)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.reviews: list[tuple[str, str]] = []
        self.agent_prompts: list[str] = []


@pytest.mark.usefixtures("agent_tools")
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
    seen = sorted({(model, "first-unsafe-eval" in text) for model, text in reviews})
    assert seen == [(m, r) for m in ("rev-a", "rev-b", "rev-c") for r in (False, True)], seen
    assert all(
        ("second-safe-parse" in text) != ("first-unsafe-eval" in text) for _, text in reviews
    )
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
    # The reviewer who tried to write could not: the branch holds the agent's work only.
    assert repo.remote_git("show", f"{pull.head}:{WRITTEN}").strip() == "second-safe-parse"
    assert repo.remote_git("diff", "--name-only", "main", pull.head).split() == [WRITTEN]
    tampering = [
        e["data"] for e in events
        if e["kind"] == "tool_result" and e["data"].get("reviewer") == "claude-code:rev-b"
    ]  # fmt: skip
    assert len(tampering) == 1
    assert "read-only" in json.dumps(tampering[0]).lower(), tampering

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


# --- the stage's edges, with scripted reviewers (no model) through the real worker -----------


class ScriptedReviewer(ShellEngine):
    """A reviewer that prints a fixed answer (what the prompt says does not matter)."""

    name = "test-reviewer"
    instructed = True
    script = "echo '{\"recommendations\": []}'\n"

    def command(self, task: EngineTask) -> EngineCommand:
        return EngineCommand(argv=["/bin/sh", str(task.home / "r.sh")], files={"r.sh": self.script})


def reviewer(name: str, script: str) -> type[ScriptedReviewer]:
    return type(name, (ScriptedReviewer,), {"name": name, "script": script})


BLOCKS = json.dumps(
    {"recommendations": [{"title": "Drop the debug print", "severity": "critical"}]}
)
REVIEWERS_FOR_TESTS = {
    "test-review-blocks": f"echo '{BLOCKS}'\n",
    "test-review-minor": 'echo \'[{"title": "A nit", "severity": "low"}]\'\n',
    "test-review-broken": "echo 'I have no opinion'\n",
    "test-review-crashes": "echo boom >&2; exit 3\n",
    "test-review-tampers": "echo tampered >> README.md; echo '[]'\n",
}


@pytest.fixture
def scripted_reviewers() -> Iterator[None]:
    removes = [
        registry.register("engines", name, reviewer(name, script))
        for name, script in REVIEWERS_FOR_TESTS.items()
    ]
    yield
    for remove in removes:
        remove()


async def run_shell(
    settings: Settings, store: Store, tmp_path: Path, config: str, **changes: Any
) -> tuple[GitRepo, Session]:
    repo = make_repo(tmp_path, files={"README.md": "hello\n", ".telecoder.yml": config})
    worker = build_worker(tuned(settings, **changes), store)
    new = NewSession(repo=str(repo.path), prompt="echo change >> README.md", engine="shell")
    return repo, await execute(worker, store, new)


def branches(repo: GitRepo) -> list[str]:
    return repo.remote_git("for-each-ref", "--format=%(refname:short)", "refs/heads").split()


resumable = resumable  # the fixture: the shell engine with an agent session id


def steps_of(events: list[Any], step: str) -> list[dict[str, Any]]:
    return [e.data for e in events if e.data.get("step") == step]


@pytest.mark.parametrize(
    ("review", "error"),
    [
        ("nope", ".telecoder.yml review: unknown engine 'nope'"),
        ("shell", ".telecoder.yml review: the shell engine cannot review"),
    ],
)
async def test_a_reviewer_that_cannot_review_is_bad_input_before_the_agent_runs(
    settings: Settings, store: Store, tmp_path: Path, review: str, error: str
) -> None:
    _, done = await run_shell(settings, store, tmp_path, f"review: {review}\n")
    assert done.failure_kind == FailureKind.BAD_INPUT
    assert (done.error or "").startswith(error), done.error
    assert not steps_of(await all_events(store, done.id), "engine_started")


@pytest.mark.usefixtures("scripted_reviewers")
async def test_a_failed_reviewer_is_reported_and_the_tally_made_from_the_others(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    panel = ("test-review-minor", "test-review-broken", "test-review-crashes")
    repo, done = await run_shell(
        settings, store, tmp_path, "review: council\n", council_reviewers=panel
    )
    assert done.status == SessionStatus.SUCCEEDED, done.error
    events = await all_events(store, done.id)
    failed = {s["reviewer"]: s["error"] for s in steps_of(events, "reviewer_failed")}
    assert set(failed) == {"test-review-broken", "test-review-crashes"}
    assert "unreadable answer" in failed["test-review-broken"]
    assert "status 3" in failed["test-review-crashes"]
    assert done.result is not None
    assert done.result.review is not None
    review = done.result.review
    assert (review["answered"], review["missing"]) == (["test-review-minor"], list(panel[1:]))
    # One of one who answered: its finding is the consensus — but low, below `high`: no block.
    assert [g["title"] for g in review["consensus"]] == ["A nit"]
    assert review["blocking"] == 0
    assert repo.remote_git("show", f"{done.branch}:README.md") == "hello\nchange"


@pytest.mark.usefixtures("scripted_reviewers")
@pytest.mark.parametrize(
    ("config", "error"),
    [
        (
            "review: test-review-blocks\n",
            "review blocked: 1 finding block (the engine cannot be resumed to revise its work)",
        ),
        ("review: test-review-broken\n", "review failed: no reviewer answered"),
        ("review: test-review-minor\nreview_severity: medium\n", None),
        ("review: test-review-minor\nreview_severity: low\n", "review blocked: 1 finding"),
    ],
)
async def test_blocking_findings_the_engine_cannot_revise_push_nothing(
    settings: Settings, store: Store, tmp_path: Path, config: str, error: str | None
) -> None:
    repo, done = await run_shell(settings, store, tmp_path, config)
    if error is None:
        assert done.status == SessionStatus.SUCCEEDED, done.error
        return
    assert (done.status, done.failure_kind) == (SessionStatus.FAILED, FailureKind.REVIEW_BLOCKED)
    assert (done.error or "").startswith(error), done.error
    assert "nothing was pushed" in (done.error or "") or "no reviewer" in (done.error or "")
    assert branches(repo) == ["main"]  # nothing pushed


@pytest.mark.usefixtures("scripted_reviewers")
async def test_without_a_sandbox_a_reviewer_that_changes_the_worktree_is_refused(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    repo, done = await run_shell(
        settings, store, tmp_path, "review: test-review-tampers\n", runtime="local"
    )
    assert done.failure_kind == FailureKind.BAD_INPUT
    assert done.error == "review refused: a reviewer changed the worktree (README.md)"
    assert branches(repo) == ["main"]


@pytest.mark.usefixtures("scripted_reviewers")
async def test_in_the_sandbox_a_reviewer_cannot_change_the_worktree(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    repo, done = await run_shell(settings, store, tmp_path, "review: test-review-tampers\n")
    assert done.status == SessionStatus.SUCCEEDED, done.error
    outputs = [
        e.data["text"] for e in await all_events(store, done.id)
        if e.kind == EventKind.OUTPUT and e.data.get("reviewer") == "test-review-tampers"
    ]  # fmt: skip
    assert any("Read-only file system" in line for line in outputs), outputs
    assert repo.remote_git("show", f"{done.branch}:README.md") == "hello\nchange"


@pytest.mark.usefixtures("scripted_reviewers")
async def test_blocking_findings_ask_when_someone_watches(
    settings: Settings, store: Store, tmp_path: Path, resumable: str
) -> None:
    config = "review: test-review-blocks\nmax_revisions: 0\n"
    repo = make_repo(tmp_path, files={"README.md": "hi\n", ".telecoder.yml": config})
    worker = build_worker(tuned(settings), store)
    new = NewSession(
        repo=str(repo.path), prompt="echo start > a.txt", engine=resumable, notify=("slack:U1",)
    )
    watched = await execute(worker, store, new)
    assert (watched.status, watched.failure_kind) == (
        SessionStatus.BLOCKED,
        FailureKind.REVIEW_BLOCKED,
    )
    assert watched.question is not None
    assert watched.question.startswith("review blocked: 1 finding block (max_revisions is 0)")
    assert "- [critical, consensus] Drop the debug print" in watched.question
    assert "How should I go on?" in watched.question
    assert branches(repo) == ["main"]
