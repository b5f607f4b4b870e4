"""A whole GitHub conversation with a real agent CLI (Claude Code, in the sandbox, against the
fake model server, through the gateway): a labelled issue gets a pull request; a review comment
on it gets a commit on the same branch and a reply in its thread; a failed check on it gets a fix
commit. Through the real app, store, worker and fake GitHub."""

from __future__ import annotations

from tests.engine_cases import WRITTEN
from tests.fakes.model_server import FakeModelServer, Reply
from tests.integration import test_github_webhooks as base
from tests.server import client, until

# The webhook tests' fixtures and helpers, shared.
fix_engine = base.fix_engine
gh_settings = base.gh_settings
hub = base.hub
post = base.post
run_one = base.run_one

# What the fake model does, by the marker the session's prompt carries (else: write fake.txt).
SCRIPTS = {
    "rename-the-greeting": (
        Reply(text="Renaming it.", command=f"echo renamed-by-review >> {WRITTEN}"),
        Reply(text="Renamed the greeting."),
    ),
    "FAILED test_greeting": (
        Reply(text="Fixing the test.", command=f"echo fixed-for-ci >> {WRITTEN}"),
        Reply(text="The test passes now."),
    ),
}


async def test_a_real_agent_follows_the_conversation_on_its_pull_request(
    gh_settings, hub, store, git_repo, agent_tools, monkeypatch
):
    from telecoder.server import create_app

    with FakeModelServer(scripts=SCRIPTS) as model:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", model.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-fake")
        settings = gh_settings.model_copy(
            update={"engine": "claude-code", "agent_path": str(agent_tools)}
        )
        issue = hub.add_issue(
            "acme", "repo", title="create fake.txt containing hello-from-fake", login="maintainer"
        )
        payload = hub.labeled_payload(
            "acme", "repo", issue.number, "telecoder", sender="maintainer"
        )
        async with client(create_app(settings, store)) as c:
            # 1. The labelled issue: a pull request that fixes it.
            first = await post(c, hub, "issues", payload)
            assert first.json()["action"] == "queued", first.text
            await until(lambda: len(hub.reactions("acme", "repo")) == 1, seconds=2)
            await run_one(settings, store)
            done = await store.sessions.get(first.json()["session_id"])
            assert done.status.value == "succeeded", done.error
            (pull,) = hub.pulls("acme", "repo")
            assert f"Fixes #{issue.number}" in (pull.body or "")
            opened = git_repo.remote_git("rev-parse", pull.head)

            # 2. A review comment on it: one more commit on the same branch, a reply in the thread.
            comment = hub.add_comment(
                "acme", "repo", pull.number, "@telecoder rename-the-greeting please",
                login="maintainer", kind="review",
            )  # fmt: skip
            second = await post(c, hub, "pull_request_review_comment", hub.comment_payload(comment))
            assert second.json()["action"] == "queued", second.text
            await run_one(settings, store)
            reviewed = await store.sessions.get(second.json()["session_id"])
            assert reviewed.status.value == "succeeded", reviewed.error
            assert reviewed.branch == pull.head
            after_review = git_repo.remote_git("rev-parse", pull.head)
            assert git_repo.remote_git("rev-parse", f"{after_review}^") == opened

            def replied() -> bool:
                return any(x.in_reply_to == comment.id for x in hub.comments("acme", "repo"))

            await until(replied, seconds=5)

            # 3. A failed check on it: a fix commit on the same branch.
            check = hub.check_run_payload(pull, text="FAILED test_greeting: expected a greeting")
            third = await post(c, hub, "check_run", check)
            assert third.json()["action"] == "queued", third.text
            await run_one(settings, store)
            fixed = await store.sessions.get(third.json()["session_id"])
            assert fixed.status.value == "succeeded", fixed.error
            after_fix = git_repo.remote_git("rev-parse", pull.head)
            assert git_repo.remote_git("rev-parse", f"{after_fix}^") == after_review
    written = git_repo.remote_git("show", f"{pull.head}:{WRITTEN}").splitlines()
    assert written == ["hello-from-fake", "renamed-by-review", "fixed-for-ci"]
    assert len(hub.pulls("acme", "repo")) == 1  # every step on the one pull request
    assert all(session.engine == "claude-code" for session in (done, reviewed, fixed))
