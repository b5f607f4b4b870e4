"""Jira as a channel: ``POST /api/channels/jira/webhook`` on the real app on a real port,
against the fake Jira Cloud (REST v3 comments in ADF, basic auth, webhooks signed as Jira
signs them). Sessions run for real (embedded worker, sandbox, a commit pushed to a real git
remote)."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from pydantic import SecretStr

from telecoder.assemble import build_worker
from telecoder.channels import adf
from telecoder.channels.jira import JiraChannel
from telecoder.server import create_app
from telecoder.settings import Settings
from telecoder.store import Store
from tests.conftest import GitRepo
from tests.fakes.jira import (
    API_TOKEN,
    EMAIL,
    WEBHOOK_SECRET,
    FakeJira,
    fake_jira_fixture,  # noqa: F401
)
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
def jira_settings(settings: Settings, fake_jira: FakeJira, fix_engine: str) -> Settings:
    return settings.model_copy(
        update={
            "jira_webhook_secret": SecretStr(WEBHOOK_SECRET),
            "jira_url": fake_jira.url,
            "jira_email": EMAIL,
            "jira_api_token": SecretStr(API_TOKEN),
            "public_url": PUBLIC,
            "engine": fix_engine,
            "notify_poll_seconds": 0.05,
        }
    )


@pytest.fixture
async def routed(store: Store, git_repo: GitRepo) -> Store:
    await store.repos.add("app", str(git_repo.path), engine=None, priority=0)
    await store.repos.route("jira", "PROJ", "app")
    return store


def status_comments(fake: FakeJira, issue, session_id: str):
    return [c for c in fake.comments_on(issue) if f"· session {session_id} ·" in c.text]


async def test_an_issue_moved_to_the_status_is_worked_on_and_reported_on_the_issue(
    jira_settings, routed, fake_jira, git_repo
):
    store = routed
    issue = fake_jira.add_issue("Add a --json flag", "The list command should print JSON.")
    settings = jira_settings.model_copy(update={"chat_idle_seconds": 8.0})  # then it ends
    app = create_app(settings, store, start_workers=build_worker(settings, store).run)
    async with served(app) as http:
        moved = fake_jira.update(issue, status="Ready for Dev")
        response = await post(http, "jira", fake_jira.signed(moved))
        assert response.status_code == 202, response.text
        assert response.json()["action"] == "queued"
        session_id = response.json()["session_id"]

        await until(lambda: len(status_comments(fake_jira, issue, session_id)) == 1)
        assert f"{PUBLIC}/sessions/{session_id}" in fake_jira.comments_on(issue)[0].text
        session = await session_when(store, session_id, "blocked")
        await until(
            lambda: "Changed:" in status_comments(fake_jira, issue, session_id)[0].text,
            seconds=30,
        )
        (comment,) = status_comments(fake_jira, issue, session_id)
        assert f"Branch: {session.branch}" in comment.text
        assert "Appended a line to README.md." in comment.text
        assert "fixed by telecoder" in git_repo.remote_git("show", f"{session.branch}:README.md")
        strong = [
            node["text"]
            for paragraph in comment.body["content"]
            for node in paragraph.get("content", [])
            if {"type": "strong"} in node.get("marks", [])
        ]
        assert "Changed:" in strong  # ADF marks, not markdown asterisks
        assert "**" not in comment.text

        assert session.thread == f"jira:{issue.key}"
        assert session.origin is not None
        assert session.origin["url"] == f"{fake_jira.url}/browse/{issue.key}"
        assert session.origin["identifier"] == issue.key
        # The prompt came fenced, with the flattened ADF description.
        assert "The list command should print JSON." in session.prompt
        page = await http.get(f"/sessions/{session_id}")
        assert f'href="{fake_jira.url}/browse/{issue.key}"' in page.text

        own = await post(http, "jira", fake_jira.signed(fake_jira.comment_created(comment)))
        assert own.json() == {"action": "ignored", "reason": "TeleCoder's own comment"}

        said = fake_jira.comment(issue, "Please also mention it in the changelog.")
        again = await post(http, "jira", fake_jira.signed(said))
        assert again.status_code == 202, again.text
        assert again.json() == {"action": "continued", "session_id": session_id}
        second = await session_when(store, session_id, "blocked", attempt=2)
        log = git_repo.remote_git("log", "--format=%s", f"main..{second.branch}").splitlines()
        assert len(log) == 2
        await until(lambda: status_comments(fake_jira, issue, session_id)[0].edits >= 3)

        # Nobody writes: the chat ends, and the comment says so, with the outcome at the end.
        await session_when(store, session_id, "succeeded", attempt=2)
        await until(lambda: "succeeded" in status_comments(fake_jira, issue, session_id)[0].text)
        (comment,) = status_comments(fake_jira, issue, session_id)
        lines = comment.text.splitlines()
        assert lines[0] == f"✅ TeleCoder session {session_id}: succeeded"
        assert f"Branch: {second.branch}" in comment.text
        assert lines[-2].startswith("Next:")
        assert lines[-1].startswith(f"— TeleCoder · session {session_id} · ")
    assert len(await all_sessions(store)) == 1
    assert len(status_comments(fake_jira, issue, session_id)) == 1
    assert len(fake_jira.comments_on(issue)) == 2


@pytest.mark.parametrize("tamper", ["wrong-secret", "other-body", "missing", "sha1"])
async def test_a_bad_signature_is_401_and_starts_nothing(jira_settings, routed, fake_jira, tamper):
    issue = fake_jira.add_issue("Add a --json flag")
    payload = fake_jira.update(issue, status="Ready for Dev")
    secret = "not-the-secret" if tamper == "wrong-secret" else WEBHOOK_SECRET
    body, headers = fake_jira.signed(payload, secret=secret)
    if tamper == "other-body":
        body = body.replace(b"Add a", b"Drop a")
    if tamper == "missing":
        del headers["X-Hub-Signature"]
    if tamper == "sha1":
        headers["X-Hub-Signature"] = "sha1=" + hmac.new(b"x", body, hashlib.sha1).hexdigest()
    async with served(create_app(jira_settings, routed)) as http:
        response = await post(http, "jira", (body, headers))
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "unauthorized"
    assert await all_sessions(routed) == []
    assert fake_jira.calls == []


async def test_a_redelivery_makes_one_session_and_other_updates_none(
    jira_settings, routed, fake_jira
):
    issue = fake_jira.add_issue("Add a --json flag")
    other = fake_jira.add_issue("Rename a flag")
    signed = fake_jira.signed(fake_jira.update(issue, status="Ready for Dev"), identifier="w-1")
    ignored = [
        fake_jira.update(other, status="In Progress"),
        fake_jira.update(other, summary="Rename the --old flag"),
        fake_jira.update(other, labels=["backend"]),
        fake_jira.comment(other, "What is the plan?"),
    ]
    async with served(create_app(jira_settings, routed)) as http:
        first = await post(http, "jira", signed)
        second = await post(http, "jira", signed)
        answers = [await post(http, "jira", fake_jira.signed(p)) for p in ignored]
        labelled = fake_jira.update(other, labels=["backend", "telecoder"])
        third = await post(http, "jira", fake_jira.signed(labelled))
        await until(lambda: len(fake_jira.comments) == 3)  # two status comments and the question
    assert (first.json()["action"], second.json()["action"]) == ("queued", "duplicate")
    assert second.json()["session_id"] == first.json()["session_id"]
    assert [a.json()["action"] for a in answers] == ["ignored"] * 4
    assert "did not move to 'Ready for Dev'" in answers[0].json()["reason"]
    assert third.json()["action"] == "queued"
    assert len(await all_sessions(routed)) == 2


async def test_not_configured_is_404_and_a_body_that_is_not_json_is_422(
    settings, jira_settings, store
):
    async with served(create_app(settings, store)) as http:
        missing = await http.post("/api/channels/jira/webhook", content=b"{}")
    assert missing.status_code == 404
    assert "TELECODER_JIRA_WEBHOOK_SECRET" in missing.json()["detail"]
    body = b"<xml/>"
    digest = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    async with served(create_app(jira_settings, store)) as http:
        bad = await post(http, "jira", (body, {"X-Hub-Signature": f"sha256={digest}"}))
    assert bad.status_code == 422, bad.text
    assert "not JSON" in bad.json()["detail"]


async def test_the_status_comment_is_found_again_after_a_restart(jira_settings, fake_jira):
    issue = fake_jira.add_issue("Add a --json flag", status="Ready for Dev")
    for n in range(3):  # more than a page of comments before it
        fake_jira.comment(issue, f"note {n}")
    origin = {"channel": "jira", "thread": issue.key, "issue_key": issue.key}
    session = {"id": "ses_1", "status": "queued", "origin": origin,
               "updated_at": "2026-11-28T12:00:00.000Z"}  # fmt: skip
    first = JiraChannel.from_settings(jira_settings)
    assert first is not None
    await first.report(session)
    question = "Which format, JSON Lines or one array?"
    blocked = {**session, "status": "blocked", "question": question,
               "updated_at": "2026-11-28T12:00:05.000Z"}  # fmt: skip
    after = JiraChannel.from_settings(jira_settings)  # a new process knows nothing
    assert after is not None
    await after.report(blocked)
    late = {**session, "status": "running", "updated_at": "2026-11-28T12:00:02.000Z"}
    again = JiraChannel.from_settings(jira_settings)
    assert again is not None
    await again.report(late)
    (comment,) = status_comments(fake_jira, issue, "ses_1")
    assert comment.edits == 1
    assert f"Question: {question}" in comment.text
    assert "blocked" in comment.text


def _para(*content):
    return {"type": "paragraph", "content": list(content)}


def _text(value, *marks):
    node = {"type": "text", "text": value}
    return {**node, "marks": [{"type": m} for m in marks]} if marks else node


def test_adf_is_flattened_to_text():
    item = {"type": "listItem", "content": [_para(_text("one"))]}
    doc = {
        "type": "doc",
        "version": 1,
        "content": [
            {"type": "heading", "attrs": {"level": 2}, "content": [_text("Goal")]},
            _para(
                {"type": "mention", "attrs": {"id": "acc-1", "text": "@TeleCoder"}},
                _text(" add "),
                _text("--json", "code"),
                {"type": "hardBreak"},
                {"type": "inlineCard", "attrs": {"url": "https://example.com/spec"}},
            ),
            {"type": "bulletList", "content": [item, {**item, "content": [_para(_text("two"))]}]},
            {"type": "blockquote", "content": [_para(_text("quoted"))]},
        ],
    }
    expected = "Goal\n@TeleCoder add --json\nhttps://example.com/spec\n- one\n- two\nquoted"
    assert adf.text(doc) == expected
    assert adf.text("plain") == "plain"
    assert adf.text(None) == ""
    built = adf.document("**Changed:** one `file`\n\nsee https://x.example/a")
    assert adf.text(built) == "Changed: one file\nsee https://x.example/a"
