"""Linear as a channel: ``POST /api/channels/linear/webhook`` on the real app on a real port,
against the fake Linear (GraphQL, webhooks signed as Linear signs them). Sessions run for real
(embedded worker, sandbox, a commit pushed to a real git remote)."""

from __future__ import annotations

import hmac
import json
import time

import pytest
from pydantic import SecretStr

from telecoder.assemble import build_worker
from telecoder.channels.linear import LinearChannel
from telecoder.server import create_app
from telecoder.settings import Settings
from telecoder.store import Store
from tests.conftest import GitRepo
from tests.fakes.linear import API_KEY, WEBHOOK_SECRET, FakeLinear, fake_linear_fixture  # noqa: F401
from tests.integration.ticket_helpers import (
    PUBLIC,
    all_sessions,
    fix_engine_fixture,  # noqa: F401
    post,
    served,
    session_when,
)
from tests.server import until


@pytest.fixture
def linear_settings(settings: Settings, fake_linear: FakeLinear, fix_engine: str) -> Settings:
    return settings.model_copy(
        update={
            "linear_webhook_secret": SecretStr(WEBHOOK_SECRET),
            "linear_api_key": SecretStr(API_KEY),
            "linear_api_url": fake_linear.api_url,
            "public_url": PUBLIC,
            "engine": fix_engine,
            "notify_poll_seconds": 0.05,
        }
    )


@pytest.fixture
async def routed(store: Store, git_repo: GitRepo) -> Store:
    await store.repos.add("app", str(git_repo.path), engine=None, priority=0)
    await store.repos.route("linear", "ENG", "app")
    return store


def status_comments(fake: FakeLinear, issue, session_id: str):
    return [c for c in fake.comments_on(issue) if f"session={session_id} " in c.body]


async def test_an_issue_moved_to_the_state_is_worked_on_and_reported_on_the_issue(
    linear_settings, routed, fake_linear, git_repo
):
    store = routed
    issue = fake_linear.add_issue("Add a --json flag", "`list` should print JSON.", state="Todo")
    app = create_app(linear_settings, store, start_workers=build_worker(linear_settings, store).run)
    async with served(app) as http:
        moved = fake_linear.update(issue, state="Ready for Dev")
        response = await post(http, "linear", fake_linear.signed(moved))
        assert response.status_code == 202, response.text
        assert response.json()["action"] == "queued"
        session_id = response.json()["session_id"]

        # The session link is on the issue at once, then the turn's branch and outcome.
        await until(lambda: len(status_comments(fake_linear, issue, session_id)) == 1)
        assert f"{PUBLIC}/sessions/{session_id}" in fake_linear.comments_on(issue)[0].body
        session = await session_when(store, session_id, "blocked")
        await until(
            lambda: "**Changed:**" in status_comments(fake_linear, issue, session_id)[0].body,
            seconds=30,
        )
        (comment,) = status_comments(fake_linear, issue, session_id)
        assert comment.body.startswith(f"<!-- telecoder session={session_id} at=")
        assert f"**Branch:** `{session.branch}`" in comment.body
        assert "Appended a line to README.md." in comment.body
        assert "Comment on this issue to go on" in comment.body
        assert "fixed by telecoder" in git_repo.remote_git("show", f"{session.branch}:README.md")

        # The link between them: thread and origin, and on the session's page.
        assert session.thread == f"linear:{issue.id}"
        assert session.origin is not None
        assert session.origin["url"] == issue.url
        assert session.origin["identifier"] == issue.identifier
        assert session.origin["repo_name"] == "app"
        assert session.repo == str(git_repo.path)
        page = await http.get(f"/sessions/{session_id}")
        assert f'href="{issue.url}"' in page.text
        assert issue.identifier in page.text

        # TeleCoder's own comment comes back as a webhook: it is not a message.
        own = await post(http, "linear", fake_linear.signed(fake_linear.comment_created(comment)))
        assert own.json() == {"action": "ignored", "reason": "TeleCoder's own comment"}

        # A comment on the issue is the next turn of the same session, on the same branch.
        said = fake_linear.comment(issue, "Please also mention it in the changelog.")
        again = await post(http, "linear", fake_linear.signed(said))
        assert again.status_code == 202, again.text
        assert again.json() == {"action": "continued", "session_id": session_id}
        second = await session_when(store, session_id, "blocked", attempt=2)
        assert second.branch == session.branch
        log = git_repo.remote_git("log", "--format=%s", f"main..{session.branch}").splitlines()
        assert len(log) == 2
        await until(lambda: status_comments(fake_linear, issue, session_id)[0].edits >= 3)
    assert len(await all_sessions(store)) == 1
    assert len(status_comments(fake_linear, issue, session_id)) == 1  # edited, never a second
    assert len(fake_linear.comments_on(issue)) == 2  # the status and Alice's


# --- what starts nothing -------------------------------------------------------------------------


@pytest.mark.parametrize("tamper", ["wrong-secret", "other-body", "missing", "stale"])
async def test_a_bad_signature_or_a_stale_delivery_is_401_and_starts_nothing(
    linear_settings, routed, fake_linear, tamper
):
    issue = fake_linear.add_issue("Add a --json flag", state="Todo")
    payload = fake_linear.update(issue, state="Ready for Dev")
    if tamper == "stale":
        payload["webhookTimestamp"] = int((time.time() - 61) * 1000)
    secret = "not-the-secret" if tamper == "wrong-secret" else WEBHOOK_SECRET
    body, headers = fake_linear.signed(payload, secret=secret)
    if tamper == "other-body":
        body = body.replace(b"Add a", b"Drop a")
    if tamper == "missing":
        del headers["Linear-Signature"]
    async with served(create_app(linear_settings, routed)) as http:
        response = await post(http, "linear", (body, headers))
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "unauthorized"
    if tamper == "stale":
        assert "stale" in response.json()["detail"]
    assert WEBHOOK_SECRET not in response.text
    assert await all_sessions(routed) == []
    assert fake_linear.api_calls() == []


async def test_the_same_delivery_twice_makes_one_session(linear_settings, routed, fake_linear):
    issue = fake_linear.add_issue("Add a --json flag", state="Todo")
    signed = fake_linear.signed(fake_linear.update(issue, state="Ready for Dev"), delivery="d-1")
    async with served(create_app(linear_settings, routed)) as http:
        first = await post(http, "linear", signed)
        second = await post(http, "linear", signed)
        await until(lambda: len(fake_linear.comments_on(issue)) == 1)
    assert first.json()["action"] == "queued"
    assert second.json()["action"] == "duplicate"
    assert second.json()["session_id"] == first.json()["session_id"]
    assert len(await all_sessions(routed)) == 1
    assert len(fake_linear.comments_on(issue)) == 1


async def test_updates_that_are_not_a_transition_into_the_state_start_nothing(
    linear_settings, routed, fake_linear
):
    issue = fake_linear.add_issue("Add a --json flag", state="Todo")
    ready = fake_linear.add_issue("Already there", state="Ready for Dev")
    updates = [
        fake_linear.update(issue, title="Add a --json flag to list"),  # a title
        fake_linear.update(issue, state="Done"),  # another state
        fake_linear.update(issue, labels=["bug"]),  # another label
        fake_linear.update(ready, description="More words."),  # in the state, not entering it
        fake_linear.comment(issue, "Looks good to me"),  # a comment: no session, no mention
    ]
    async with served(create_app(linear_settings, routed)) as http:
        answers = [await post(http, "linear", fake_linear.signed(p)) for p in updates]
        labelled = await post(
            http,
            "linear",
            fake_linear.signed(fake_linear.update(issue, labels=["bug", "telecoder"])),
        )
    assert [a.status_code for a in answers] == [202] * 5
    assert [a.json()["action"] for a in answers] == ["ignored"] * 5
    assert "did not enter 'Ready for Dev'" in answers[0].json()["reason"]
    assert answers[4].json()["reason"] == "not addressed to TeleCoder"
    assert labelled.json()["action"] == "queued"  # the label is a trigger too
    (session,) = await all_sessions(routed)
    assert session.id == labelled.json()["session_id"]


async def test_not_configured_is_404_and_a_body_that_is_not_json_is_422(
    settings, linear_settings, store
):
    async with served(create_app(settings, store)) as h:
        missing = await h.post("/api/channels/linear/webhook", content=b"{}")
    assert missing.status_code == 404
    assert "TELECODER_LINEAR_WEBHOOK_SECRET" in missing.json()["detail"]
    body = b"not json"
    headers = {"Linear-Signature": hmac.new(WEBHOOK_SECRET.encode(), body, "sha256").hexdigest()}
    app = create_app(linear_settings, store)
    async with served(app) as h:
        bad = await h.post("/api/channels/linear/webhook", content=body, headers=headers)
    assert bad.status_code == 422, bad.text
    assert "not JSON" in bad.json()["detail"]
    assert await all_sessions(store) == []


# --- the status comment -------------------------------------------------------------------------


async def test_the_status_comment_is_found_again_after_a_restart(linear_settings, fake_linear):
    issue = fake_linear.add_issue("Add a --json flag", state="Ready for Dev")
    for n in range(3):  # more than a page of comments before it
        fake_linear.comment(issue, f"note {n}")
    origin = {"channel": "linear", "thread": issue.id, "issue_id": issue.id}
    session = {"id": "ses_1", "status": "queued", "origin": origin,
               "updated_at": "2026-11-28T12:00:00.000Z"}  # fmt: skip
    first = LinearChannel.from_settings(linear_settings)
    assert first is not None
    await first.report(session)
    after = LinearChannel.from_settings(linear_settings)  # a new process knows nothing
    assert after is not None
    blocked = {**session, "status": "blocked", "question": "Which format, JSON Lines or one array?",
               "updated_at": "2026-11-28T12:00:05.000Z"}  # fmt: skip
    await after.report(blocked)
    late = {**session, "status": "running", "updated_at": "2026-11-28T12:00:02.000Z"}
    await LinearChannel.from_settings(linear_settings).report(late)  # type: ignore[union-attr]
    (comment,) = status_comments(fake_linear, issue, "ses_1")
    assert comment.edits == 1
    assert "**blocked**" in comment.body
    assert "**Question:** Which format, JSON Lines or one array?" in comment.body
    assert f"{PUBLIC}/sessions/ses_1" in comment.body
    assert json.dumps(comment.body)  # plain markdown


async def test_an_issue_created_in_the_state_and_a_mention_start_sessions(
    linear_settings, routed, fake_linear
):
    ready = fake_linear.add_issue("Add a --json flag", "Print JSON.", state="Ready for Dev")
    other = fake_linear.add_issue("Rename a flag", state="Backlog")
    mention = fake_linear.comment(other, "@telecoder rename --old to --new, please")
    async with served(create_app(linear_settings, routed)) as http:
        created = await post(http, "linear", fake_linear.signed(fake_linear.created(ready)))
        asked = await post(http, "linear", fake_linear.signed(mention))
        backlog = fake_linear.add_issue("Later", state="Backlog")
        not_yet = await post(http, "linear", fake_linear.signed(fake_linear.created(backlog)))
    assert created.json()["action"] == "queued"
    assert asked.json()["action"] == "queued"
    assert not_yet.json()["action"] == "ignored"
    by_id = {s.id: s for s in await all_sessions(routed)}
    assert set(by_id) == {created.json()["session_id"], asked.json()["session_id"]}
    first, second = by_id[created.json()["session_id"]], by_id[asked.json()["session_id"]]
    assert "Add a --json flag" in first.prompt
    assert "Print JSON." in first.prompt
    assert "rename --old to --new, please" in second.prompt
    assert "@telecoder" not in second.prompt
    assert second.thread == f"linear:{other.id}"
