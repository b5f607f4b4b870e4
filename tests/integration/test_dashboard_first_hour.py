"""The dashboard's first-hour defects (issue 17, item 9) over HTTP, on the real store: the list's
branch / PR column; tool calls as one line; progress as words; a session's error once, on the
page and in its live stream; the message box of a chat and the follow-up box of an ended session.
"""

from __future__ import annotations

import asyncio
import re

import httpx

from telecoder.domain import (
    EventKind,
    FailureKind,
    Mode,
    NewEvent,
    NewSession,
    Result,
    ResultType,
    SessionStatus,
)
from telecoder.server import create_app
from telecoder.store import Outcome
from tests.integration.test_dashboard import HTML, app, csrf_of  # noqa: F401
from tests.server import FakeRun, client, serving, sse, until

ERROR = "the agent exited with code 3: pytest found 2 failures"


async def ended(store, prompt: str, outcome: Outcome, events: list[NewEvent] = ()) -> str:
    """A session run to its end through the real queue, with ``events`` on its way."""
    session = await store.sessions.create(
        NewSession(repo="/srv/repo", prompt=prompt, engine="shell")
    )
    run = await FakeRun.start(store)
    assert run.session_id == session.id
    if events:
        await store.events.append(session.id, list(events), run.claimed.lease)
    await store.queue.finish(run.claimed.lease, outcome)
    return session.id


def failed() -> Outcome:
    return Outcome(
        status=SessionStatus.FAILED,
        failure_kind=FailureKind.ENGINE_ERROR,
        error=ERROR,
        retryable=False,
    )


def error_event() -> NewEvent:
    data = {"failure_kind": FailureKind.ENGINE_ERROR.value, "message": ERROR}
    return NewEvent(kind=EventKind.ERROR, data=data)


async def test_the_list_shows_the_pr_else_the_branch(app, store):  # noqa: F811
    pr = "https://github.com/acme/app/pull/42"
    with_pr = await ended(
        store,
        "open a PR",
        Outcome(
            status=SessionStatus.SUCCEEDED,
            result=Result(type=ResultType.BRANCH, branch="telecoder/a", commit="a" * 40,
                          pr_url=pr, pr_number=42),
        ),
    )  # fmt: skip
    branch_only = await ended(
        store,
        "push a branch",
        Outcome(
            status=SessionStatus.SUCCEEDED,
            result=Result(type=ResultType.BRANCH, branch="telecoder/pushed", commit="b" * 40),
        ),
    )
    answered = await ended(
        store,
        "what does it do?",
        Outcome(
            status=SessionStatus.SUCCEEDED,
            result=Result(type=ResultType.TEXT, text="it sorts"),
        ),
    )
    waiting = await store.sessions.create(
        NewSession(repo="/srv/repo", prompt="not yet", engine="shell")
    )
    async with client(app) as c:
        listing = await c.get("/", headers=HTML)
    text = listing.text
    assert "<th>Branch / PR</th>" in text
    row = re.search(rf'<tr id="row-{with_pr}".*?</tr>', text, re.S)
    assert row
    assert f'<a href="{pr}" rel="noopener" class="pr">PR #42</a>' in row.group(0)
    row = re.search(rf'<tr id="row-{branch_only}".*?</tr>', text, re.S)
    assert row
    assert "<code>telecoder/pushed</code>" in row.group(0)
    row = re.search(rf'<tr id="row-{answered}".*?</tr>', text, re.S)
    assert row
    assert '<td class="branch"><span class="muted">answer</span></td>' in row.group(0)
    row = re.search(rf'<tr id="row-{waiting.id}".*?</tr>', text, re.S)
    assert row
    assert f'<code class="muted">{waiting.branch}</code>' in row.group(0)


async def test_tool_calls_read_as_one_line_and_progress_as_words(app, store):  # noqa: F811
    calls = [
        ("Bash", {"command": "pytest -q tests/unit", "description": "run the tests"}),
        ("Edit", {"file_path": "src/app/models.py", "old_string": "a\nb", "new_string": "c"}),
        ("shell", {"command": ["bash", "-lc", "git status --short"]}),
        ("bash", "echo one\necho two"),
    ]
    sid = await ended(
        store,
        "fix the tests",
        Outcome(status=SessionStatus.SUCCEEDED),
        [
            NewEvent(kind=EventKind.PROGRESS, data={"step": "workspace_ready", "base": "main",
                                                    "cached": True, "fresh": False}),
            *[NewEvent(kind=EventKind.TOOL_CALL, data={"name": n, "input": i}) for n, i in calls],
        ],
    )  # fmt: skip
    async with client(app) as c:
        text = (await c.get(f"/sessions/{sid}", headers=HTML)).text
    previews = re.findall(r'<code class="preview">(.*?)</code>', text)
    assert previews == [
        "$ pytest -q tests/unit",
        "src/app/models.py",
        "$ bash -lc &#39;git status --short&#39;",
        "$ echo one…",
    ]
    assert "{&#34;command&#34;" not in text.split("<details>")[0]  # no dict as a title
    progress = re.search(r'<li class="ev progress".*?</li>', text, re.S)
    assert progress is not None
    assert '<span class="title">workspace ready</span>' in progress.group(0)
    assert '<div class="body">base main, cached</div>' in progress.group(0)
    assert "{" not in progress.group(0)  # not JSON


async def test_a_sessions_error_is_shown_once(app, store):  # noqa: F811
    sid = await ended(store, "make the tests pass", failed(), [error_event()])
    async with client(app) as c:
        page = (await c.get(f"/sessions/{sid}", headers=HTML)).text
        head = (await c.get(f"/sessions/{sid}/head")).text
    assert page.count(ERROR) == 1
    assert f'<p class="error" id="error">{ERROR}</p>' in page  # in the head, by the status
    assert "error (engine_error): shown above" in page  # the event says where
    assert head.count(ERROR) == 1
    assert "the error above" in head  # the attempt's row and the outcome's Uncertain


async def test_the_live_stream_does_not_repeat_the_error(settings, store):
    session = await store.sessions.create(
        NewSession(repo="/srv/repo", prompt="fail live", engine="shell")
    )
    live = create_app(settings, store)
    run = await FakeRun.start(store)
    frames: list = []

    async def read(url: str) -> None:
        async with httpx.AsyncClient(timeout=20) as c, c.stream("GET", url) as response:
            async for frame in sse(response):
                frames.append(frame)

    async with serving(live) as base:
        reader = asyncio.create_task(read(f"{base}/sessions/{session.id}/stream?after=2"))
        await until(lambda: live.state.telecoder.bus.watcher_count >= 1)
        await store.events.append(session.id, [error_event()], run.claimed.lease)
        await until(lambda: len(frames) >= 1)  # shown while it runs, before it ends
        await store.queue.finish(run.claimed.lease, failed())
        await asyncio.wait_for(reader, 10)
    events = [f.data for f in frames if f.event == "event"]
    assert len(events) == 2  # the error, then the failed status
    assert ERROR in events[0]  # while it runs, the error event says it
    status, again = events[1].split("</li>", 1)
    assert "failed" in status
    assert ERROR not in status
    # With the status, the head shows the error: the error event is swapped for one without.
    assert (
        f'id="ev-{frames[0].id}" data-seq="{frames[0].id}" data-kind="error" hx-swap-oob="true"'
        in again
    )
    assert ERROR not in again
    assert "shown above" in again


async def test_a_waiting_chat_takes_a_message_from_its_page(app, store):  # noqa: F811
    chat = await store.sessions.create(
        NewSession(repo="/srv/repo", prompt="let us talk", engine="shell", mode=Mode.CHAT)
    )
    run = await FakeRun.start(store)
    async with client(app) as c:
        busy = (await c.get(f"/sessions/{chat.id}", headers=HTML)).text
        token = csrf_of(busy)
        refused = await c.post(
            f"/sessions/{chat.id}/message", data={"csrf_token": token, "text": "too soon"}
        )
        await store.queue.finish(run.claimed.lease, Outcome(status=SessionStatus.BLOCKED))
        waiting = (await c.get(f"/sessions/{chat.id}", headers=HTML)).text
        empty = await c.post(f"/sessions/{chat.id}/message", data={"csrf_token": token})
        sent = await c.post(
            f"/sessions/{chat.id}/message", data={"csrf_token": token, "text": "now add tests"}
        )
        forged = await c.post(f"/sessions/{chat.id}/message", data={"text": "no token"})
        nul = await c.post(
            f"/sessions/{chat.id}/message", data={"csrf_token": token, "text": "a\x00b"}
        )
    assert 'id="send" disabled' in busy  # in the middle of a turn
    assert refused.status_code == 409
    assert "in the middle of a turn" in refused.text
    assert ">too soon</textarea>" in refused.text  # kept, to send again
    assert 'id="message-form"' in waiting
    assert 'id="send">' in waiting
    assert 'id="followup-form"' not in waiting
    assert empty.status_code == 422
    assert "the message is empty" in empty.text
    assert sent.status_code == 303
    assert forged.status_code == 403
    assert nul.status_code == 422  # not a 500 from PostgreSQL
    assert (await store.sessions.get(chat.id)).status == SessionStatus.QUEUED
    said = [e.data for e in await store.events.list(chat.id) if e.kind == EventKind.MESSAGE]
    assert said == [{"role": "user", "text": "now add tests", "from": "anonymous"}]


async def test_an_ended_session_takes_a_follow_up_task(app, store, git_repo):  # noqa: F811
    git_repo.git("checkout", "-q", "-b", "telecoder/first")
    (git_repo.path / "first.txt").write_text("done\n")
    git_repo.git("add", "-A")
    git_repo.git("commit", "-q", "-m", "first")
    git_repo.git("push", "-q", "origin", "telecoder/first")
    commit = git_repo.git("rev-parse", "HEAD").strip()
    parent = await store.sessions.create(
        NewSession(repo=str(git_repo.path), prompt="first", engine="shell")
    )
    running = await FakeRun.start(store)
    async with client(app) as c:
        early = await c.post(
            f"/sessions/{parent.id}/followup",
            data={
                "csrf_token": csrf_of((await c.get(f"/sessions/{parent.id}", headers=HTML)).text),
                "prompt": "x",
            },
        )
        result = Result(type=ResultType.BRANCH, branch="telecoder/first", commit=commit)
        outcome = Outcome(status=SessionStatus.SUCCEEDED, result=result)
        await store.queue.finish(running.claimed.lease, outcome)
        page = (await c.get(f"/sessions/{parent.id}", headers=HTML)).text
        token = csrf_of(page)
        empty = await c.post(f"/sessions/{parent.id}/followup", data={"csrf_token": token})
        made = await c.post(
            f"/sessions/{parent.id}/followup",
            data={"csrf_token": token, "prompt": "cat first.txt"},
        )
        nul = await c.post(
            f"/sessions/{parent.id}/followup", data={"csrf_token": token, "prompt": "a\x00b"}
        )
        child_id = made.headers["location"].rsplit("/", 1)[1]
        child_page = (await c.get(f"/sessions/{child_id}", headers=HTML)).text
    assert early.status_code == 409
    assert "follow up once it ended" in early.text
    assert 'id="followup-form"' in page
    assert "from telecoder/first" in page  # where it will start
    assert 'id="message-form"' not in page
    assert empty.status_code == 422
    assert "the follow-up is empty" in empty.text
    assert made.status_code == 303
    assert nul.status_code == 422
    child = await store.sessions.get(child_id)
    assert (child.prompt, child.repo, child.engine) == ("cat first.txt", parent.repo, "shell")
    assert child.base_ref == "telecoder/first"  # on top of what the first one pushed
    assert (child.parent_id, child.chain_id, child.depth) == (parent.id, parent.id, 1)
    assert child.status == SessionStatus.QUEUED
    assert f'<a href="/sessions/{parent.id}" id="follows">' in child_page
