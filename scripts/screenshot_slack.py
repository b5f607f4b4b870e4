"""Render a Slack thread as TeleCoder writes it into docs/images/slack-thread.png.

The thread is written by the real Slack channel (``SlackChannel.report``: the status message,
edited in place, and the outcome message) into the fake Slack of the tests, which serves it as
HTML at ``/_thread/{channel}/{ts}``; Debian's Chromium renders it through playwright.

    .venv/bin/python scripts/screenshot_slack.py [OUT.png]
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.async_api import async_playwright  # noqa: E402

from telecoder import outcome  # noqa: E402
from telecoder.channels.slack import SlackChannel  # noqa: E402
from tests.fakes.slack import BOT_TOKEN, FakeSlack  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHANNEL = "C0DEV"


async def write_thread(fake: FakeSlack) -> str:
    fake.names["U0ALICE"] = "Alice"
    parent, _ = fake.message(CHANNEL, "app: the README says colour, make it color")
    slack = SlackChannel(
        bot_token=BOT_TOKEN, api_url=fake.api_url, public_url="https://telecoder.example"
    )
    origin = {
        "channel": "slack",
        "channel_id": CHANNEL,
        "thread_ts": parent.ts,
        "repo_name": "app",
    }
    session = {"id": "a1b2c3d4", "repo": "git@example.com:acme/app.git", "origin": origin}
    await slack.report({**session, "status": "queued", "updated_at": "2026-11-28T12:00:00Z"})
    running = {**session, "status": "running", "updated_at": "2026-11-28T12:00:01Z"}
    await slack.report({**running, "activity": "edit README.md"})
    result = {
        "type": "pull_request",
        "pr_url": "https://github.com/acme/app/pull/42",
        "commit": "4f1c2a9",
        "branch": "telecoder/a1b2c3d4",
        "files_changed": 1,
        "insertions": 1,
        "deletions": 1,
        "text": "I changed 'colour' to 'color' in the README. The tests pass.",
    }
    checks = [{"command": "make test", "ok": True, "exit_code": 0}]
    done = {
        **session,
        "status": "succeeded",
        "updated_at": "2026-11-28T12:03:10Z",
        "result": result,
        "outcome": outcome.summarize(status="succeeded", result=result, checks=checks),
    }
    await slack.report(done)
    return parent.ts


async def main(out: Path) -> None:
    with FakeSlack() as fake:
        ts = await write_thread(fake)
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True)
            page = await browser.new_page(viewport={"width": 900, "height": 600})
            await page.goto(f"{fake.url}/_thread/{CHANNEL}/{ts}")
            out.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(out), full_page=True)
            await browser.close()
    print(f"wrote {out}")  # noqa: T201


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs/images/slack-thread.png"))
