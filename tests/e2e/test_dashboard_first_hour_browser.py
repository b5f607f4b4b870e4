"""The dashboard's first-hour defects (issue 17, item 9) in a real browser (Debian's Chromium via
Playwright), against ``telecoder serve`` as a process with its embedded worker: the list's branch
/ PR column, a session page with tool calls as one line, progress as words and its error once,
the follow-up box starting a session in the chain, a failure watched live showing its error once,
a waiting chat's message box,
the engines of the form with what each lacks, the paused banner, /workers and /audit.

Each page is checked in its DOM (text present or absent), then kept as a screenshot under
``test-artifacts/dashboard-*.png``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.async_api import Page, expect

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
from telecoder.store import Outcome, open_store
from tests.cli import cli_env, telecoder
from tests.e2e.test_dashboard_browser import ARTIFACTS, TOKEN, browser, server  # noqa: F401

PR = "https://github.com/acme/app/pull/42"
ERROR = "the agent exited with code 3: pytest found 2 failures"


@pytest.fixture
async def seeded(home: Path, git_repo) -> dict[str, str]:
    """Two ended sessions in the server's database, written before it starts (through the real
    queue, as a worker writes them): one with a pull request, one that failed after tool calls."""
    store = await open_store(f"sqlite:///{home / 'telecoder.db'}")
    ids: dict[str, str] = {}
    try:

        async def run(key: str, new: NewSession, events: list[NewEvent], outcome: Outcome) -> None:
            session = await store.sessions.create(new)
            claimed = await store.queue.claim("seed-worker")
            assert claimed is not None
            assert claimed.session.id == session.id
            if events:
                await store.events.append(session.id, events, claimed.lease)
            await store.queue.finish(claimed.lease, outcome)
            ids[key] = session.id

        result = Result(type=ResultType.BRANCH, branch="telecoder/pr", commit="a" * 40,
                        pr_url=PR, pr_number=42)  # fmt: skip
        await run(
            "pr",
            NewSession(repo="/srv/app", prompt="open a pull request", engine="shell"),
            [],
            Outcome(status=SessionStatus.SUCCEEDED, result=result),
        )
        calls = [
            ("Bash", {"command": "pytest -q tests/unit", "description": "run the unit tests"}),
            ("Edit", {"file_path": "src/app/models.py", "old_string": "a", "new_string": "b"}),
        ]
        await run(
            "tools",
            NewSession(repo=str(git_repo.path), prompt="make the tests pass", engine="shell"),
            [
                NewEvent(kind=EventKind.PROGRESS, data={"step": "workspace_ready",
                                                        "base": "main", "cached": True}),
                *[NewEvent(kind=EventKind.TOOL_CALL, data={"name": n, "input": i})
                  for n, i in calls],
                NewEvent(kind=EventKind.TOOL_RESULT, data={"output": "2 failed", "ok": False}),
                NewEvent(kind=EventKind.ERROR, data={"failure_kind": "engine_error",
                                                     "message": ERROR}),
            ],
            Outcome(status=SessionStatus.FAILED, failure_kind=FailureKind.ENGINE_ERROR,
                    error=ERROR, retryable=False),
        )  # fmt: skip
        chat = NewSession(repo="/srv/app", prompt="let us talk", engine="shell", mode=Mode.CHAT)
        await run("chat", chat, [], Outcome(status=SessionStatus.BLOCKED))  # waits for a message
        return ids
    finally:
        await store.close()


async def times_shown(page: Page, text: str) -> int:
    """How often ``text`` is in the page's text, hidden parts (closed details) included."""
    body = await page.evaluate("document.body.textContent")
    return int(body.count(text))


async def shot(page: Page, name: str) -> None:
    await page.evaluate("window.scrollTo(0, 0)")
    await page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)


async def test_the_first_hour_defects_are_gone(seeded, server, browser, home, git_repo):  # noqa: F811
    ARTIFACTS.mkdir(exist_ok=True)
    page = await browser.new_page()
    await page.goto(f"{server}/login?next={quote('/')}")
    await page.fill("#token", TOKEN)
    await page.click("#login button[type=submit]")
    await expect(page).to_have_url(f"{server}/")

    # The list: a pull request's link, else the branch.
    await expect(page.locator("table.sessions thead")).to_contain_text("Branch / PR")
    link = page.locator(f"#row-{seeded['pr']} td.branch a.pr")
    await expect(link).to_have_text("PR #42")
    assert await link.get_attribute("href") == PR
    await expect(page.locator(f"#row-{seeded['tools']} td.branch")).to_have_text(
        f"telecoder/{seeded['tools']}"
    )
    await shot(page, "list-branch-pr")

    # A session page: each tool call one line, progress in words, the error once.
    await page.goto(f"{server}/sessions/{seeded['tools']}")
    previews = page.locator("#events .ev.tool summary .preview")
    await expect(previews).to_have_text(["$ pytest -q tests/unit", "src/app/models.py"])
    events = page.locator("#events")
    await expect(events).not_to_contain_text('{"command"')
    progress = page.locator("#events .ev.progress")
    await expect(progress).to_contain_text("workspace ready")
    await expect(progress).to_contain_text("base main, cached")
    await expect(progress).not_to_contain_text("{")
    await expect(page.locator("#error")).to_have_text(ERROR)
    assert await times_shown(page, ERROR) == 1
    await expect(events).to_contain_text("error (engine_error): shown above")
    box = page.locator("#followup-form")
    await expect(box).to_be_visible()
    await expect(page.locator("#message-form")).to_have_count(0)  # a task, not a chat
    await shot(page, "session-tools-followup")

    # The follow-up box starts a session in the chain; the embedded worker runs it.
    await page.fill("#followup-text", "echo followed > followed.txt")
    await page.click("#followup")
    await expect(page).not_to_have_url(f"{server}/sessions/{seeded['tools']}")
    await expect(page.locator("#follows")).to_have_text(seeded["tools"])
    await expect(page.locator("#status")).to_have_text("succeeded", timeout=30_000)
    await expect(page.locator("#diff")).to_contain_text("+followed", timeout=10_000)
    await expect(page.locator("#chain")).to_contain_text("2 sessions")

    # A failure watched live: the repository's check fails, its error shows once, without
    # reloading (the error event that said it first is swapped for one pointing at the head).
    (git_repo.path / ".telecoder.yml").write_text('verify:\n  - "echo the check says no; exit 1"\n')
    git_repo.git("add", "-A")
    git_repo.git("commit", "-q", "-m", "a check that fails")
    git_repo.git("push", "-q", "origin", "main")
    await page.goto(f"{server}/new")
    await page.fill("#repo", str(git_repo.path))
    await page.fill("#prompt", "echo change > change.txt")
    await page.select_option("#engine", "shell")
    await page.click("#new-task button[type=submit]")
    await page.wait_for_url(f"{server}/sessions/*")
    await page.evaluate("window.__still_here = true")
    await expect(page.locator("#status")).to_have_text("failed", timeout=30_000)
    error = page.locator("#error")
    await expect(error).to_contain_text("the check says no", timeout=10_000)
    said = await error.inner_text()
    await expect(page.locator("#events .ev.error")).to_contain_text("shown above")
    await expect(page.locator("#events .ev.error")).not_to_contain_text("the check says no")
    assert await times_shown(page, said) == 1, said
    assert await page.evaluate("window.__still_here") is True  # live, not reloaded
    await shot(page, "failed-live-error-once")

    # The form: each engine with what it lacks here.
    await page.goto(f"{server}/new")
    options = page.locator("#engine option")
    await expect(options.filter(has_text="shell")).to_have_text(
        "shell (runs the prompt as a shell command)"
    )
    await expect(options.filter(has_text="acp")).to_contain_text("an ACP agent: name it as")
    labels = [
        t for t in await options.all_inner_texts() if not t.startswith(("shell", "acp", "the "))
    ]
    assert len(labels) >= 8  # claude-code, codex, opencode, … each with a label
    for label in labels:
        known = ("(not installed)", "(installed, key set)")
        assert label.endswith(known) or "(no key: set " in label, label
    await shot(page, "new-engine-labels")

    # Paused: every page says so; resumed, it does not.
    env = cli_env(home)
    done = telecoder("pause", "--by", "ops@browser", env=env)
    assert done.returncode == 0, done.stderr
    banner = page.locator("#paused")
    for _ in range(50):
        await page.goto(f"{server}/")
        if await banner.count():
            break
        await asyncio.sleep(0.2)
    await expect(banner).to_have_text("Paused by ops@browser: no new sessions start")
    await shot(page, "paused-banner")
    done = telecoder("resume", env=env)
    assert done.returncode == 0, done.stderr
    for _ in range(50):
        await page.goto(f"{server}/")
        if not await banner.count():
            break
        await asyncio.sleep(0.2)
    await expect(banner).to_have_count(0)

    # Workers: the embedded one, alive.
    await page.goto(f"{server}/workers")
    await expect(page.locator("h1")).to_have_text("Workers")
    await expect(page.locator("main")).not_to_contain_text("no worker")
    await shot(page, "workers")

    # A chat waiting for a message takes one from its page.
    await page.goto(f"{server}/sessions/{seeded['chat']}")
    await expect(page.locator("#message-form")).to_be_visible()
    await expect(page.locator("#followup-form")).to_have_count(0)
    await expect(page.locator("#send")).to_be_enabled()
    await shot(page, "chat-message-box")
    await page.fill("#message-text", "echo second turn")
    await page.click("#send")
    await expect(page).to_have_url(f"{server}/sessions/{seeded['chat']}")
    sent = page.locator("#events .ev.message.you")
    await expect(sent).to_contain_text("echo second turn")

    # Audit: the follow-up and the message posted from the pages, by whom.
    await page.goto(f"{server}/audit")
    rows = page.locator("table.audit tbody")
    await expect(rows).to_contain_text("POST /sessions/{session_id}/followup")
    await expect(rows).to_contain_text(f"/sessions/{seeded['tools']}/followup")
    await expect(rows).to_contain_text(f"/sessions/{seeded['chat']}/message")
    await expect(rows).to_contain_text("e2e")
    await shot(page, "audit")
