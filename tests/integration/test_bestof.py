"""Best of N: candidates of one task on their own branches, judged once, one pull request.

Real store (SQLite and PostgreSQL), real git, real sessions run as a worker runs them (test
engines that write different changes; one fails the repository's ``verify`` check), the fake
GitHub as the forge, the fake model server as the judge."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from telecoder import bestof, registry
from telecoder.assemble import build_judging
from telecoder.domain import RunKind, RunStatus, SessionStatus
from telecoder.engines.shell import ShellEngine
from telecoder.errors import BadInput
from telecoder.intake import Request
from telecoder.protocols import EngineCommand, EngineTask
from telecoder.server.state import default_intake
from telecoder.settings import Settings
from telecoder.store import Store
from tests.conftest import GitRepo, make_repo
from tests.fakes.github import TOKEN, FakeGitHub
from tests.fakes.model_server import FakeModelServer, Reply
from tests.integration.test_github_webhooks import run_one

CONFIG = "verify:\n  - test ! -e bad.txt\nmax_revisions: 0\n"
JUDGE_MARK = "Candidate {"  # only the judge's message holds it


def _writer(name: str, script: str) -> type[ShellEngine]:
    class Writer(ShellEngine):
        def command(self, task: EngineTask) -> EngineCommand:
            return EngineCommand(argv=["/bin/sh", str(task.home / "w.sh")], files={"w.sh": script})

    Writer.name = name
    return Writer


ENGINES = {
    "bo-small": _writer("bo-small", "echo one >> README.md\n"),
    "bo-big": _writer("bo-big", "printf 'a\\nb\\nc\\nd\\n' > big.txt\necho two >> README.md\n"),
    "bo-bad": _writer("bo-bad", "echo broken > bad.txt\n"),
}


@pytest.fixture
def writers() -> Iterator[list[str]]:
    removes = [registry.register("engines", name, cls) for name, cls in ENGINES.items()]
    yield list(ENGINES)
    for remove in removes:
        remove()


@pytest.fixture
def git_repo(tmp_path: Path) -> GitRepo:
    return make_repo(tmp_path, files={"README.md": "hello\n", ".telecoder.yml": CONFIG})


@pytest.fixture
def hub(fake_github: FakeGitHub, git_repo: GitRepo) -> FakeGitHub:
    fake_github.add_repo("acme", "repo", git_dir=git_repo.remote)
    return fake_github


@pytest.fixture
def bo_settings(settings: Settings, hub: FakeGitHub, writers: list[str]) -> Settings:
    return settings.model_copy(
        update={"github_token": SecretStr(TOKEN), "github_api_url": hub.url, "forge": "github"}
    )


async def start(
    settings: Settings, store: Store, hub: FakeGitHub, engines: list[str], prompt: str = "Improve"
):
    request = Request(repo=hub.git_url("acme", "repo"), prompt=prompt)
    run, sessions, _ = await bestof.create(
        store, default_intake(settings), request, attempts=None, engines=engines
    )
    return run, {s.engine: s for s in sessions}


async def run_all(settings: Settings, store: Store, n: int) -> None:
    for _ in range(n):
        await run_one(settings, store)


async def test_without_a_judge_model_the_smallest_passing_diff_wins(
    bo_settings, store, hub, git_repo
):
    run, by_engine = await start(bo_settings, store, hub, ["bo-big", "bo-small", "bo-bad"])
    assert run.kind == RunKind.BEST_OF
    assert sorted(s.task_key or "" for s in await store.runs.sessions(run.id)) == [
        "candidate-1", "candidate-2", "candidate-3",
    ]  # fmt: skip
    await run_all(bo_settings, store, 3)

    ended = {s.engine: s for s in await store.runs.sessions(run.id)}
    assert ended["bo-bad"].status == SessionStatus.FAILED
    assert ended["bo-small"].status == ended["bo-big"].status == SessionStatus.SUCCEEDED
    # The candidates pushed their branches and opened nothing themselves: one PR, the winner's.
    for engine in ("bo-small", "bo-big"):
        result = ended[engine].result
        assert result is not None
        assert result.pr_url is None
        assert git_repo.remote_git("rev-parse", ended[engine].branch) == result.commit
    (pull,) = hub.pulls("acme", "repo")
    assert pull.head == by_engine["bo-small"].branch
    assert "smallest passing diff wins" in (pull.body or "")
    assert by_engine["bo-big"].branch in (pull.body or "")
    assert by_engine["bo-bad"].branch in (pull.body or "")

    judged = await store.runs.get(run.id)
    verdict = judged.spec["verdict"]
    assert judged.status == RunStatus.SUCCEEDED
    assert verdict["state"] == "decided"
    assert verdict["winner"] == by_engine["bo-small"].id
    assert verdict["pr_number"] == pull.number
    assert verdict["pr_url"].endswith(f"/pull/{pull.number}")
    assert set(verdict["lost"]) == {by_engine["bo-bad"].id}
    events = await store.events.list(by_engine["bo-small"].id)
    assert any(e.data.get("step") == "chosen" for e in events)


async def test_the_judge_model_picks_and_its_reasons_are_in_the_pr(bo_settings, store, hub):
    with FakeModelServer() as model:
        settings = bo_settings.model_copy(
            update={
                "judge_model": "judge-model",
                "judge_base_url": f"{model.url}/v1",
                "judge_api_key": SecretStr("sk-judge"),
            }
        )
        run, by_engine = await start(settings, store, hub, ["bo-small", "bo-bad", "bo-big"])
        big = by_engine["bo-big"].id
        reasons = "It adds big.txt as well, which the task needs."
        answer = json.dumps({"winner": big, "reasons": reasons})
        model.scripts[JUDGE_MARK] = [Reply(text=answer)]
        await run_all(settings, store, 3)

        asked = [r for r in model.model_requests() if JUDGE_MARK in json.dumps(r.body)]
    (request,) = asked
    assert request.headers.get("authorization") == "Bearer sk-judge"
    shown = json.dumps(request.body)
    assert by_engine["bo-small"].id in shown
    assert big in shown
    assert by_engine["bo-bad"].id not in shown  # a failing candidate is not judged
    (pull,) = hub.pulls("acme", "repo")
    assert pull.head == by_engine["bo-big"].branch
    assert reasons in (pull.body or "")
    verdict = (await store.runs.get(run.id)).spec["verdict"]
    assert (verdict["winner"], verdict["reasons"], verdict["judge"]) == (
        big,
        reasons,
        "judge-model",
    )


async def test_when_all_fail_no_pr_is_opened_and_the_run_says_why(bo_settings, store, hub):
    run, _by_engine = await start(bo_settings, store, hub, ["bo-bad"] * 1 + ["bo-bad"])
    await run_all(bo_settings, store, 2)
    assert hub.pulls("acme", "repo") == []
    judged = await store.runs.get(run.id)
    assert judged.status == RunStatus.FAILED
    verdict = judged.spec["verdict"]
    assert verdict["winner"] is None
    assert verdict["reasons"].startswith("no candidate passed its checks")
    assert "verify" in verdict["reasons"] or "bad.txt" in verdict["reasons"]


async def test_judging_happens_once_however_many_try(bo_settings, store, hub):
    run, _by_engine = await start(bo_settings, store, hub, ["bo-small", "bo-big"])
    judging = build_judging(bo_settings, store)
    assert await judging.judge(run.id) is None  # candidates still queued: not due
    assert await judging.sweep() == []
    await run_all(bo_settings, store, 2)  # the last one's worker judged
    others = [build_judging(bo_settings, store) for _ in range(4)]
    results = await asyncio.gather(*(j.judge(run.id) for j in others), others[0].sweep())
    assert results == [None, None, None, None, []]
    assert len(hub.pulls("acme", "repo")) == 1


async def test_a_person_picks_another_candidate(bo_settings, store, hub):
    run, by_engine = await start(bo_settings, store, hub, ["bo-small", "bo-big", "bo-bad"])
    judging = build_judging(bo_settings, store)
    await run_all(bo_settings, store, 3)
    with pytest.raises(BadInput, match="cannot win"):
        await judging.pick(run.id, by_engine["bo-bad"].id)
    with pytest.raises(BadInput, match="not a candidate"):
        await judging.pick(run.id, "tc_nosuchthing")
    verdict = await judging.pick(run.id, by_engine["bo-big"].id)
    assert verdict["winner"] == by_engine["bo-big"].id
    assert verdict["picked"] is True
    heads = {p.head for p in hub.pulls("acme", "repo")}
    assert by_engine["bo-big"].branch in heads


def test_attempts_and_engines_are_checked():
    assert bestof.engines_for(3, []) == [None, None, None]
    assert bestof.engines_for(None, ["a", "b"]) == ["a", "b"]
    assert bestof.engines_for(3, ["a", "b"]) == ["a", "b", "a"]
    assert bestof.split("codex") == ("codex", None)
    assert bestof.split("opencode:gpt-4.1-mini") == ("opencode", "gpt-4.1-mini")
    assert bestof.split("acp:gemini:gemini-2.5-flash") == ("acp", "gemini:gemini-2.5-flash")
    for bad in ((1, []), (None, ["a"]), (11, [])):
        with pytest.raises(BadInput, match="2 to 10"):
            bestof.engines_for(*bad)


async def test_over_http_start_compare_and_pick(bo_settings, store, hub):
    from telecoder.server import create_app
    from tests.server import client

    body = {"repo": hub.git_url("acme", "repo"), "prompt": "Improve", "attempts": 3,
            "engines": ["bo-small", "bo-big", "bo-bad"]}  # fmt: skip
    async with client(create_app(bo_settings, store)) as c:
        bad = await c.post("/api/runs/best-of", json={**body, "attempts": 1})
        unknown = await c.post("/api/runs/best-of", json={**body, "engines": ["nope"]})
        created = await c.post("/api/runs/best-of", json=body)
        assert created.status_code == 201, created.text
        run_id = created.json()["run"]["id"]
        by_engine = {s["engine"]: s for s in created.json()["sessions"]}
        early = await c.post(f"/api/runs/{run_id}/pick", json={"session_id": "x"})
        running = await c.get(f"/api/runs/{run_id}/compare")

        await run_all(bo_settings, store, 3)
        shown = await c.get(f"/api/runs/{run_id}/compare")
        page = await c.get(f"/runs/{run_id}/compare")
        run_page = await c.get(f"/runs/{run_id}")
        loser = await c.post(
            f"/api/runs/{run_id}/pick", json={"session_id": by_engine["bo-bad"]["id"]}
        )
        picked = await c.post(
            f"/api/runs/{run_id}/pick", json={"session_id": by_engine["bo-big"]["id"]}
        )
        missing = await c.get("/api/runs/run_nosuchrun/compare")
        # The page's button: back to the first choice.
        token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text)
        assert token is not None, "the pick form carries its CSRF token"
        form = await c.post(
            f"/runs/{run_id}/pick",
            data={"session_id": by_engine["bo-small"]["id"], "csrf_token": token.group(1)},
        )
        back = await c.get(f"/api/runs/{run_id}/compare")

    assert bad.status_code == 422
    assert unknown.status_code == 422, unknown.text
    assert early.status_code == 409, early.text
    assert running.json()["verdict"] is None
    verdict = shown.json()["verdict"]
    assert verdict["winner"] == by_engine["bo-small"]["id"]
    passed = {c["session"]["engine"]: c["passed"] for c in shown.json()["candidates"]}
    assert passed == {"bo-small": True, "bo-big": True, "bo-bad": False}
    assert page.status_code == 200
    assert f'href="/runs/{run_id}/compare"' in run_page.text  # the run's page links to it
    assert "smallest passing diff wins" in run_page.text
    for s in by_engine.values():
        assert s["branch"] in page.text
    assert page.text.count("Pick this one") == 1  # the other passing candidate
    assert "+a" in page.text  # bo-big's diff, beside the others
    assert loser.status_code == 422
    assert "cannot win" in loser.json()["detail"]
    assert picked.status_code == 200, picked.text
    assert picked.json()["verdict"]["winner"] == by_engine["bo-big"]["id"]
    assert picked.json()["verdict"]["previous"]["winner"] == by_engine["bo-small"]["id"]
    assert missing.status_code == 404
    heads = {p.head for p in hub.pulls("acme", "repo")}
    assert heads == {by_engine["bo-small"]["branch"], by_engine["bo-big"]["branch"]}
    assert form.status_code == 303, form.text
    assert form.headers["location"] == f"/runs/{run_id}/compare"
    assert back.json()["verdict"]["winner"] == by_engine["bo-small"]["id"]


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        (Reply(error=500), "HTTPStatusError"),
        (Reply(text='{"winner": "tc_not_a_candidate", "reasons": "made up"}'), "not a candidate"),
    ],
)
async def test_a_judge_that_fails_leaves_it_to_the_smallest_diff(
    bo_settings, store, hub, reply, problem
):
    with FakeModelServer(scripts={JUDGE_MARK: [reply]}) as model:
        settings = bo_settings.model_copy(
            update={"judge_model": "judge-model", "judge_base_url": f"{model.url}/v1"}
        )
        run, by_engine = await start(settings, store, hub, ["bo-big", "bo-small"])
        await run_all(settings, store, 2)
    verdict = (await store.runs.get(run.id)).spec["verdict"]
    assert verdict["winner"] == by_engine["bo-small"].id
    assert "the judge model failed" in verdict["reasons"]
    assert problem in verdict["reasons"]
    assert "smallest passing diff wins" in verdict["reasons"]
    (pull,) = hub.pulls("acme", "repo")
    assert pull.head == by_engine["bo-small"].branch
