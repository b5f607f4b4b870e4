"""A session's outcome (Changed / Verified / Uncertain / Next): computed once when the attempt
finishes, through the real worker, pipeline, checks and git; shown the same in the session's
JSON, ``telecoder show`` and the GitHub status comment."""

from __future__ import annotations

import json
from pathlib import Path

from telecoder import outcome as outcomes
from telecoder.assemble import build_worker
from telecoder.server import create_app
from telecoder.settings import Settings
from telecoder.store import Store
from tests.cli import cli_env, telecoder
from tests.conftest import make_repo
from tests.fakes.github import FakeGitHub
from tests.integration import test_github_webhooks as base
from tests.integration.test_engine_shell import execute, tuned
from tests.integration.test_verify import repo_with, shell
from tests.server import client, until

fix_engine = base.fix_engine
hub = base.hub
gh_settings = base.gh_settings

CONFIG = (
    "verify:\n  - test -f out.txt\n  - grep -q hello out.txt\nchecks:\n  - file_exists: out.txt\n"
)


async def test_a_session_with_checks_says_what_changed_and_which_checks_passed(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    repo = repo_with(tmp_path, CONFIG)
    worker = build_worker(tuned(settings), store)
    prompt = "echo hello > out.txt && echo 'Done. I am not sure the CRLF case is covered.'"
    done = await execute(worker, store, shell(repo, prompt))
    assert done.status.value == "succeeded", done.error
    assert done.result is not None
    assert done.result.outcome is not None  # stored with the result, not computed per read
    found = done.to_dict()["outcome"]
    assert found == done.result.outcome
    assert found["changed"].startswith("1 file(s), +1 −0, commit ")
    assert done.branch in found["changed"]
    assert [c["command"] for c in found["verified"]] == [
        "test -f out.txt",
        "grep -q hello out.txt",
        "file_exists: out.txt",
    ]
    assert found["uncertain"] == ["Done. I am not sure the CRLF case is covered."]
    assert found["next"] == "review the change and merge it, or comment with what to change"


async def test_an_answer_only_session_changed_nothing(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path)
    worker = build_worker(tuned(settings), store)
    done = await execute(worker, store, shell(repo, "echo 'The colour is set in README.md.'"))
    assert done.status.value == "succeeded", done.error
    found = done.to_dict()["outcome"]
    assert found["changed"].startswith("nothing")
    assert found["verified"] == []
    assert found["uncertain"] == []
    assert found["next"].startswith("nothing was changed")


async def test_a_failed_session_has_an_outcome_with_its_error(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    repo = repo_with(tmp_path, "verify:\n  - exit 3\n")
    worker = build_worker(tuned(settings), store)
    done = await execute(worker, store, shell(repo, "echo hi > x.txt"))
    assert done.status.value == "failed"
    found = done.to_dict()["outcome"]
    assert found["changed"].startswith("nothing")
    assert found["verified"] == []
    assert any(line.startswith("Error: ") and "exit 3" in line for line in found["uncertain"])
    assert found["next"].startswith("see the session's log")


def test_telecoder_show_prints_the_outcome(tmp_path: Path, home: Path) -> None:
    repo = repo_with(tmp_path, CONFIG)
    env = cli_env(home)
    done = telecoder(
        "run", "echo hello > out.txt", "--repo", str(repo.path), "--json", env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    session = json.loads(done.stdout)
    assert session["outcome"]["verified"][0]["command"] == "test -f out.txt"
    shown = telecoder("show", session["id"], env=env)
    assert shown.returncode == 0, shown.stderr
    assert "changed" in shown.stdout
    assert "test -f out.txt, grep -q hello out.txt, file_exists: out.txt" in shown.stdout
    as_json = json.loads(telecoder("show", session["id"], "--json", env=env).stdout)
    assert as_json["outcome"] == session["outcome"]


async def test_the_github_comment_and_the_session_agree(
    gh_settings: Settings, hub: FakeGitHub, store: Store
) -> None:
    issue = hub.add_issue("acme", "repo", title="Fix the colour", login="maintainer")
    payload = hub.labeled_payload("acme", "repo", issue.number, "telecoder", sender="maintainer")
    body = json.dumps(payload).encode()
    async with client(create_app(gh_settings, store)) as c:
        response = await c.post(
            "/api/webhooks/github", content=body, headers=hub.webhook_headers("issues", body)
        )
        session_id = response.json()["session_id"]
        await base.run_one(gh_settings, store)
        await until(lambda: "succeeded" in hub.comments("acme", "repo")[0].body, seconds=5)
        api = (await c.get(f"/api/sessions/{session_id}")).json()
        page = await c.get(f"/sessions/{session_id}")
    session = await store.sessions.get(session_id)
    found = session.to_dict()["outcome"]
    assert found is not None
    assert api["outcome"] == found
    (status,) = hub.comments("acme", "repo")
    assert outcomes.markdown(found) in status.body
    assert 'id="outcome"' in page.text
    assert found["next"] in page.text
