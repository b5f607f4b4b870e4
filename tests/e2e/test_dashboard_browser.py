"""The dashboard in a real browser (Debian's Chromium, driven by Playwright) against the server
started as its own process with its embedded worker: sign in, submit a shell task from the form,
watch its events arrive live, see it succeed with its diff, cancel a long-running one.

Screenshots are kept under ``test-artifacts/``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import BrowserContext, Page, async_playwright, expect

from tests.cli import TELECODER
from tests.conftest import GitRepo

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "browser-token-0123456789abcdef"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def server(home: Path) -> Iterator[str]:
    """The server as a process of its own, as ``telecoder serve`` runs it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELECODER_")}
    env.update(
        TELECODER_HOME=str(home),
        TELECODER_API_TOKEN=f"e2e:{TOKEN}",
        TELECODER_POLL_SECONDS="0.1",
        TELECODER_HEARTBEAT_SECONDS="0.3",
        TELECODER_LEASE_SECONDS="5",
        GIT_CONFIG_GLOBAL="/dev/null",
        GIT_CONFIG_NOSYSTEM="1",
    )
    argv = [TELECODER, "serve", "--host", "127.0.0.1", "--port", str(port)]
    log = open(home / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/api/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError((home / "server.log").read_text()[-3000:])
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            code_ = proc.wait(20)
        finally:
            log.close()
        output = (home / "server.log").read_text()
        # uvicorn re-raises the signal it stopped on, once it has shut down gracefully.
        assert code_ in (0, -signal.SIGTERM), output[-3000:]
        assert "Application shutdown complete" in output


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    assert Path(CHROMIUM).exists(), "run `make browser` (Debian's chromium) first"
    async with async_playwright() as p:
        context = await p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh user data dir
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1200, "height": 900},
        )
        try:
            yield context
        finally:
            await context.close()


async def submit_task(page: Page, base: str, repo: GitRepo, prompt: str) -> str:
    await page.goto(f"{base}/new")
    await page.fill("#repo", str(repo.path))
    await page.fill("#prompt", prompt)
    await page.select_option("#engine", "shell")
    await page.click("#new-task button[type=submit]")
    await page.wait_for_url(f"{base}/sessions/*")
    return page.url.rsplit("/", 1)[1]


async def test_sign_in_submit_watch_live_see_diff_and_cancel(server, browser, git_repo):
    ARTIFACTS.mkdir(exist_ok=True)
    page = await browser.new_page()
    page.on("dialog", lambda dialog: dialog.accept())

    # Sign in: any page leads to the login form first.
    await page.goto(f"{server}/")
    await expect(page).to_have_url(f"{server}/login?next=/")
    await page.fill("#token", "wrong")
    await page.click("#login button[type=submit]")
    await expect(page.locator(".error")).to_contain_text("not valid")
    await page.fill("#token", TOKEN)
    await page.click("#login button[type=submit]")
    await expect(page).to_have_url(f"{server}/")

    # A task from the form; its output arrives while we watch, without reloading the page.
    prompt = (
        "for i in 1 2 3; do echo step $i; sleep 0.4; done; "
        "echo 'hello from the browser' > greeting.txt"
    )
    sid = await submit_task(page, server, git_repo, prompt)
    await page.evaluate("window.__still_here = true")
    events = page.locator("#events")
    await expect(events).to_contain_text("step 1", timeout=20_000)
    await expect(events).to_contain_text("step 3", timeout=20_000)
    await expect(page.locator("#status")).to_have_text("succeeded", timeout=30_000)
    assert await page.evaluate("window.__still_here") is True  # live, not reloaded
    diff = page.locator("#diff")
    await expect(diff).to_contain_text("greeting.txt", timeout=10_000)
    await expect(diff).to_contain_text("+hello from the browser")
    await expect(page.locator("#result")).to_contain_text(f"telecoder/{sid}")
    await page.evaluate("window.scrollTo(0, 0)")
    await page.screenshot(path=str(ARTIFACTS / "dashboard-session.png"), full_page=True)
    pushed = git_repo.remote_git("log", "--format=%s", "-1", f"telecoder/{sid}")
    assert pushed  # the branch the page shows is on the remote

    # A long task, cancelled from its page.
    long_id = await submit_task(page, server, git_repo, "echo started; sleep 60")
    await expect(page.locator("#events")).to_contain_text("started", timeout=20_000)
    await page.click("#cancel")
    await expect(page.locator("#status")).to_have_text("cancelled", timeout=20_000)

    # The list shows both, and reads on a phone.
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.goto(f"{server}/")
    await expect(page.locator(f"#row-{sid} .badge")).to_have_text("succeeded")
    await expect(page.locator(f"#row-{long_id} .badge")).to_have_text("cancelled")
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the list is wider than a phone ({width}px)"
    await page.screenshot(path=str(ARTIFACTS / "dashboard-list-phone.png"), full_page=True)
