"""The repository registry and its routes, and the channels' events and preferences, on SQLite and
PostgreSQL; ``telecoder repos`` as a user runs it (locally and ``--server``); ``/api/repos``."""

from __future__ import annotations

import asyncio
import json

import pytest

from telecoder.errors import BadInput, RegisteredRepoNotFound
from telecoder.server import create_app
from telecoder.store import Store
from tests.cli import cli_env, telecoder
from tests.server import client, serving

# --- store.repos ----------------------------------------------------------------------------


async def test_add_updates_lists_by_priority_and_removes(store: Store) -> None:
    await store.repos.add("web", "/src/web", engine=None, priority=0)
    await store.repos.add("app", "/src/app", engine="shell", priority=0)
    await store.repos.add("infra", "/src/infra", engine=None, priority=5)
    assert [r.name for r in await store.repos.list()] == ["infra", "app", "web"]
    changed = await store.repos.add("web", "/src/web2", engine="shell", priority=9)
    assert (changed.url, changed.engine, changed.priority) == ("/src/web2", "shell", 9)
    assert [r.name for r in await store.repos.list()] == ["web", "infra", "app"]
    assert (await store.repos.get("app")).to_dict() == {
        "name": "app",
        "url": "/src/app",
        "engine": "shell",
        "priority": 0,
    }
    await store.repos.remove("infra")
    assert [r.name for r in await store.repos.list()] == ["web", "app"]
    with pytest.raises(RegisteredRepoNotFound, match="no repository is registered as 'infra'"):
        await store.repos.remove("infra")
    with pytest.raises(RegisteredRepoNotFound):
        await store.repos.get("infra")
    with pytest.raises(BadInput, match="invalid repository name 'App!'"):
        await store.repos.add("App!", "/x", engine=None, priority=0)


async def test_routes_choose_the_default_and_go_with_their_repository(store: Store) -> None:
    assert await store.repos.default_for("slack", "C1") is None  # nothing registered
    await store.repos.add("app", "/src/app", engine=None, priority=0)
    only = await store.repos.default_for("slack", "C1")
    assert only is not None
    assert only.name == "app"  # the only one registered
    await store.repos.add("web", "/src/web", engine=None, priority=0)
    assert await store.repos.default_for("slack", "C1") is None  # a choice now
    await store.repos.route("slack", "*", "web")
    await store.repos.route("slack", "C1", "app")
    await store.repos.route("telegram", "-100200", "app")

    async def default(channel: str, place: str) -> str | None:
        found = await store.repos.default_for(channel, place)
        return found.name if found else None

    assert await default("slack", "C1") == "app"  # the place's own route
    assert await default("slack", "C2") == "web"  # the channel's *
    assert await default("telegram", "-100200") == "app"
    assert await default("telegram", "-1") is None  # no route on telegram for it, two repos
    assert await default("linear", "ENG") is None
    await store.repos.route("slack", "C1", "web")  # a route is replaced, not added
    assert [r.to_dict() for r in await store.repos.routes()] == [
        {"channel": "slack", "place": "*", "repo": "web"},
        {"channel": "slack", "place": "C1", "repo": "web"},
        {"channel": "telegram", "place": "-100200", "repo": "app"},
    ]
    with pytest.raises(RegisteredRepoNotFound):
        await store.repos.route("jira", "OPS", "nope")
    assert await store.repos.unroute("slack", "C1") is True
    assert await store.repos.unroute("slack", "C1") is False
    await store.repos.remove("web")  # takes its routes along
    assert [r.to_dict() for r in await store.repos.routes()] == [
        {"channel": "telegram", "place": "-100200", "repo": "app"}
    ]
    assert await default("slack", "C2") == "app"  # the only one left


# --- store.channel_events -------------------------------------------------------------------


async def test_channel_events_once_seen_and_preferences(store: Store) -> None:
    events = store.channel_events
    assert await events.seen("slack", "Ev1") is None
    assert await events.once("slack", "Ev1", "ignore") is True
    assert await events.once("slack", "Ev1", "answer") is False  # the first answer stands
    assert await events.seen("slack", "Ev1") == "ignore"
    assert await events.seen("telegram", "Ev1") is None  # keys are per channel
    assert await events.once("telegram", "Ev1", "ask") is True
    results = await asyncio.gather(*(events.once("jira", "K-1", "answer") for _ in range(5)))
    assert sorted(results) == [False, False, False, False, True]
    assert await events.prune(older_than=0) == 0
    assert await events.prune(older_than=2**40) == 3
    assert await events.seen("slack", "Ev1") is None

    assert await events.preference("telegram", "42", "model") is None
    await events.prefer("telegram", "42", "model", "opus")
    await events.prefer("telegram", "42", "model", "sonnet")
    await events.prefer("telegram", "7", "model", "haiku")
    assert await events.preference("telegram", "42", "model") == "sonnet"
    assert await events.preference("slack", "42", "model") is None
    await events.prefer("telegram", "42", "model", None)
    assert await events.preference("telegram", "42", "model") is None
    assert await events.preference("telegram", "7", "model") == "haiku"


# --- telecoder repos -------------------------------------------------------------------------


def test_cli_repos_add_route_list_remove(home, git_repo, tmp_path):
    env = cli_env(home)
    added = telecoder("repos", "add", "app", str(git_repo.path / "."), "--json", env=env)
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout) == {
        "name": "app",
        "url": str(git_repo.path.resolve()),
        "engine": None,
        "priority": 0,
    }
    web = telecoder(
        "repos", "add", "web", "https://github.com/acme/web.git", "--engine", "shell",
        "--priority", "3", env=env,
    )  # fmt: skip
    assert web.returncode == 0, web.stderr
    assert "registered web" in web.stdout
    assert telecoder("repos", "add", "gh", "acme/api", env=env).returncode == 0
    # A negative Telegram id comes after ``--`` (else it reads as an option).
    for args in (("slack", "C01", "app"), ("slack", "*", "web"), ("telegram", "--", "-1002", "gh")):
        done = telecoder("repos", "route", *args, env=env)
        assert done.returncode == 0, done.stderr

    listed = telecoder("repos", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    found = json.loads(listed.stdout)
    assert [r["name"] for r in found["repos"]] == ["web", "app", "gh"]
    assert found["repos"][0] == {
        "name": "web",
        "url": "https://github.com/acme/web.git",
        "engine": "shell",
        "priority": 3,
    }
    assert found["routes"] == [
        {"channel": "slack", "place": "*", "repo": "web"},
        {"channel": "slack", "place": "C01", "repo": "app"},
        {"channel": "telegram", "place": "-1002", "repo": "gh"},
    ]
    table = telecoder("repos", "list", env=env)
    assert "slack:C01" in table.stdout
    assert "telegram:-1002" in table.stdout

    plain = tmp_path / "plain"
    plain.mkdir()
    refused = {
        ("App", "x"): "invalid repository name 'App'",
        ("x", str(tmp_path / "missing")): "does not exist",
        ("x", str(plain)): "is not a git repository",
        ("x", "https://bob:hunter2@github.com/a/b.git"): "carries a credential",
        ("x", "--upload-pack=evil"): "starts with '-'",
    }
    for (name, url), message in refused.items():
        bad = telecoder("repos", "add", "--", name, url, env=env)
        assert (bad.returncode, message in bad.stderr) == (2, True), (name, url, bad.stderr)
        assert "hunter2" not in bad.stderr
    engine = telecoder("repos", "add", "x", "acme/x", "--engine", "nope", env=env)
    assert (engine.returncode, "unknown engine 'nope'" in engine.stderr) == (2, True)
    channel = telecoder("repos", "route", "discord", "C1", "app", env=env)
    assert (channel.returncode, "unknown channel 'discord'" in channel.stderr) == (2, True)
    place = telecoder("repos", "route", "slack", "C 1", "app", env=env)
    assert (place.returncode, "invalid place" in place.stderr) == (2, True)
    missing = telecoder("repos", "route", "slack", "C02", "nope", env=env)
    assert (missing.returncode, "no repository is registered as 'nope'" in missing.stderr) == (
        3,
        True,
    )

    assert telecoder("repos", "unroute", "slack", "C01", env=env).returncode == 0
    again = telecoder("repos", "unroute", "slack", "C01", env=env)
    assert (again.returncode, "no route for slack C01" in again.stderr) == (3, True)
    assert telecoder("repos", "remove", "web", env=env).returncode == 0
    assert telecoder("repos", "remove", "web", env=env).returncode == 3
    left = json.loads(telecoder("repos", "list", "--json", env=env).stdout)
    assert [r["name"] for r in left["repos"]] == ["app", "gh"]
    assert left["routes"] == [{"channel": "telegram", "place": "-1002", "repo": "gh"}]


# --- /api/repos ------------------------------------------------------------------------------


async def test_api_repos_and_routes(settings, store, git_repo):
    app = create_app(settings, store)
    async with client(app) as c:
        added = await c.post("/api/repos", json={"name": "app", "url": str(git_repo.path)})
        assert added.status_code == 201, added.text
        assert added.json() == {
            "name": "app",
            "url": str(git_repo.path.resolve()),
            "engine": None,
            "priority": 0,
        }
        bad = await c.post("/api/repos", json={"name": "Bad Name", "url": "acme/x"})
        assert (bad.status_code, bad.json()["fields"][0]["field"]) == (422, "name")
        missing = await c.post("/api/repos", json={"name": "x", "url": "/nowhere/at/all"})
        assert missing.status_code == 422
        assert "does not exist" in missing.json()["detail"]
        engine = await c.post("/api/repos", json={"name": "x", "url": "acme/x", "engine": "nope"})
        assert (engine.status_code, "unknown engine" in engine.json()["detail"]) == (422, True)

        put = await c.put("/api/repos/routes/slack/C01", json={"repo": "app"})
        assert (put.status_code, put.json()) == (
            200,
            {"channel": "slack", "place": "C01", "repo": "app"},
        )
        star = await c.put("/api/repos/routes/linear/*", json={"repo": "app"})
        assert star.status_code == 200, star.text
        got = await c.get("/api/repos/routes/slack/C01")
        assert got.json()["repo"] == "app"
        assert (await c.get("/api/repos/routes/slack/C02")).status_code == 404
        nope = await c.put("/api/repos/routes/slack/C02", json={"repo": "nope"})
        assert (nope.status_code, nope.json()["detail"]) == (
            404,
            "no repository is registered as 'nope'",
        )
        wrong = await c.put("/api/repos/routes/irc/C02", json={"repo": "app"})
        assert (wrong.status_code, "unknown channel 'irc'" in wrong.json()["detail"]) == (422, True)

        listed = (await c.get("/api/repos")).json()
        assert [r["name"] for r in listed["repos"]] == ["app"]
        assert [(r["channel"], r["place"]) for r in listed["routes"]] == [
            ("linear", "*"),
            ("slack", "C01"),
        ]
        page = await c.get("/repos", headers={"accept": "text/html"})
        assert page.status_code == 200
        assert "C01" in page.text
        assert str(git_repo.path.resolve()) in page.text
        assert 'href="/repos"' in page.text

        assert (await c.delete("/api/repos/routes/slack/C01")).status_code == 204
        assert (await c.delete("/api/repos/routes/slack/C01")).status_code == 404
        assert (await c.delete("/api/repos/app")).status_code == 204
        gone = await c.delete("/api/repos/app")
        assert (gone.status_code, gone.json()["detail"]) == (
            404,
            "no repository is registered as 'app'",
        )
        assert (await c.get("/api/repos")).json() == {"repos": [], "routes": []}


async def test_cli_repos_against_a_server(settings, store, git_repo, tmp_path):
    """``--server``: the same commands, the same output and exit codes, over the API."""
    env = cli_env(tmp_path / "client-home")
    async with serving(create_app(settings, store)) as url:

        def run(*args: str):  # type: ignore[no-untyped-def]
            return telecoder("repos", *args, "--server", url, env=env)

        added = await asyncio.to_thread(run, "add", "app", str(git_repo.path), "--json")
        assert added.returncode == 0, added.stderr
        assert json.loads(added.stdout)["url"] == str(git_repo.path.resolve())
        short = await asyncio.to_thread(run, "add", "api", "acme/api", "--priority", "2")
        assert short.returncode == 0, short.stderr
        routed = await asyncio.to_thread(run, "route", "jira", "OPS", "app")
        assert routed.returncode == 0, routed.stderr
        listed = await asyncio.to_thread(run, "list", "--json")
        assert json.loads(listed.stdout) == {
            "repos": [
                {"name": "api", "url": "acme/api", "engine": None, "priority": 2},
                {"name": "app", "url": str(git_repo.path.resolve()), "engine": None, "priority": 0},
            ],
            "routes": [{"channel": "jira", "place": "OPS", "repo": "app"}],
        }
        bad = await asyncio.to_thread(run, "add", "x", str(tmp_path / "missing"))
        assert (bad.returncode, "does not exist" in bad.stderr) == (2, True)
        nope = await asyncio.to_thread(run, "route", "jira", "OPS", "nope")
        assert nope.returncode == 3
        assert (await asyncio.to_thread(run, "unroute", "jira", "OPS")).returncode == 0
        assert (await asyncio.to_thread(run, "unroute", "jira", "OPS")).returncode == 3
        assert (await asyncio.to_thread(run, "remove", "api")).returncode == 0
        assert (await asyncio.to_thread(run, "remove", "api")).returncode == 3
    assert [r.name for r in await store.repos.list()] == ["app"]
