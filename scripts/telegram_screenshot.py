"""The README's Telegram screenshot, from a real conversation.

TeleCoder (the real app, its store and an embedded worker running sessions against a real git
repository) talks to the fake Bot API of tests/fakes/telegram.py, which plays a team's group
chat; the fake's page of the chat (``GET /_chat/{id}``) is then photographed with Debian's
Chromium through Playwright.

    .venv/bin/python scripts/telegram_screenshot.py [docs/images/telegram-chat.png]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from playwright.async_api import async_playwright
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from telecoder import registry  # noqa: E402
from telecoder.assemble import build_worker  # noqa: E402
from telecoder.engines.shell import ShellEngine  # noqa: E402
from telecoder.protocols import EngineCommand, EngineTask  # noqa: E402
from telecoder.server import create_app  # noqa: E402
from telecoder.settings import Settings  # noqa: E402
from telecoder.store import open_store  # noqa: E402
from tests.conftest import make_repo  # noqa: E402
from tests.fakes.telegram import TOKEN, FakeTelegram, User  # noqa: E402
from tests.server import serving, until  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
GROUP = -1001234567890
ANA = User(111, "ana", "Ana")
RAJ = User(222, "raj", "Raj")
FIX = """\
if grep -q -- '--json' cli.py; then
  printf '\\n# --json: one JSON object per line\\n' >> cli.py
  echo 'Documented --json in cli.py.'
else
  printf 'import json\\n\\ndef export(rows, as_json=False):\\n' >> cli.py
  printf '    return [json.dumps(r) for r in rows] if as_json else rows  # --json\\n' >> cli.py
  echo 'Added --json to export in cli.py.'
fi
"""


class DemoEngine(ShellEngine):
    """Stands in for an agent: the same small, real change to the repository."""

    name = "demo"

    def command(self, task: EngineTask) -> EngineCommand:
        return EngineCommand(argv=["/bin/sh", str(task.home / "fix.sh")], files={"fix.sh": FIX})


async def converse(home: Path, fake: FakeTelegram) -> None:
    repo = make_repo(home, "backend", {"cli.py": "def main():\n    pass\n"})
    settings = Settings(
        home=home / "telecoder",
        poll_seconds=0.05,
        notify_poll_seconds=0.05,
        engine=DemoEngine.name,
        telegram_bot_token=SecretStr(TOKEN),
        telegram_api_url=fake.url,
        telegram_allowed_users=(str(ANA.id), str(RAJ.id)),
        telegram_allowed_chats=(str(GROUP),),
    )
    settings.home.mkdir()
    store = await open_store(f"sqlite:///{settings.home / 'telecoder.db'}")
    await store.repos.add("backend", str(repo.path), engine=None, priority=0)
    await store.repos.route("telegram", str(GROUP), "backend")
    app = create_app(settings, store, start_workers=build_worker(settings, store).run)

    def turns(count: int) -> bool:
        return sum("Your turn" in m.text for m in fake.bot_messages(GROUP)) >= count

    async with serving(app):
        fake.group(GROUP, RAJ, "the export is still CSV-only, right?")
        fake.group(GROUP, ANA, "yes — let's fix that")
        fake.group(GROUP, ANA, "add a --json flag to export", mention=True)
        await until(lambda: turns(1), seconds=120)
        final = fake.bot_messages(GROUP)[-1]
        fake.group(GROUP, RAJ, "and document it in the help text, please", reply_to=final)
        await until(lambda: turns(2), seconds=120)
    await store.close()


async def main(out: Path) -> None:
    registry.register("engines", DemoEngine.name, DemoEngine)
    with tempfile.TemporaryDirectory() as tmp, FakeTelegram() as fake:
        await converse(Path(tmp), fake)
        async with async_playwright() as p:
            browser = await p.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
            )
            page = await browser.new_page(viewport={"width": 760, "height": 400})
            await page.goto(f"{fake.url}/_chat/{GROUP}")
            out.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(out), full_page=True)
            await browser.close()
    print(out)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs/images/telegram-chat.png"
    asyncio.run(main(target))
