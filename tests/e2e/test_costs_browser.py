"""The costs page in a real browser (Debian's Chromium via Playwright), against ``telecoder serve``
as a process, over usage rows recorded in its database: the totals, a bar per day, the top
sessions leading to their pages, the tables by model, engine and repo; and on a phone.

Screenshots are kept under ``test-artifacts/``.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.async_api import expect

from telecoder.store import open_store
from tests.e2e.test_dashboard_browser import ARTIFACTS, TOKEN, browser, server  # noqa: F401
from tests.usage_rows import seed

RANGE = "since=2026-11-20&until=2026-11-22"


@pytest.fixture
async def seeded(home: Path) -> dict[str, str]:
    """Usage in the server's database, recorded before it starts (so no worker runs them)."""
    store = await open_store(f"sqlite:///{home / 'telecoder.db'}")
    try:
        ids = await seed(store)
        for session_id in ids.values():
            await store.sessions.cancel(session_id)
        return ids
    finally:
        await store.close()


async def test_the_costs_page_shows_what_the_usage_cost(seeded, server, browser):  # noqa: F811
    ARTIFACTS.mkdir(exist_ok=True)
    page = await browser.new_page()
    await page.goto(f"{server}/login?next={quote(f'/costs?{RANGE}')}")
    await page.fill("#token", TOKEN)
    await page.click("#login button[type=submit]")
    await expect(page).to_have_url(f"{server}/costs?{RANGE}")

    await expect(page.locator("#total-cost")).to_have_text("$0.53")
    await expect(page.locator("#total-requests")).to_have_text("5")
    await expect(page.locator("#unpriced")).to_contain_text("local-llm")
    bars = page.locator("#per-day rect.bar")
    await expect(bars).to_have_count(3)
    assert await bars.nth(0).get_attribute("data-day") == "2026-11-20"
    tall = await bars.nth(0).bounding_box()
    empty = await bars.nth(1).bounding_box()
    assert tall is not None
    assert tall["height"] > 100  # the costliest day fills the chart
    assert empty is None or empty["height"] < 1
    await expect(bars.nth(2).locator("title")).to_have_text(
        "2026-11-22: $0.0030, 2 requests (1 unpriced)"
    )
    await expect(page.locator("#by-model tbody tr").first).to_contain_text("gpt-5")
    await expect(page.locator("#by-engine")).to_contain_text("claude-code")
    await expect(page.locator("#by-repo")).to_contain_text("app")
    await page.screenshot(path=str(ARTIFACTS / "dashboard-costs.png"), full_page=True)

    # On a phone it fits the screen.
    await page.set_viewport_size({"width": 390, "height": 844})
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the costs page is wider than a phone ({width}px)"
    await page.screenshot(path=str(ARTIFACTS / "dashboard-costs-phone.png"), full_page=True)
    await page.set_viewport_size({"width": 1200, "height": 900})

    # The costliest session leads to its page; the nav leads back.
    await page.click(f"#top-sessions a[href='/sessions/{seeded['b']}']")
    await expect(page).to_have_url(f"{server}/sessions/{seeded['b']}")
    await expect(page.locator("h1.prompt")).to_have_text("write the docs")
    await page.click("header nav a[href='/costs']")
    await expect(page).to_have_url(re.compile(r"/costs$"))
    await expect(page.locator("nav.chips .chip.on")).to_have_text("30d")
