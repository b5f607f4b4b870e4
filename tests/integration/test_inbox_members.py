"""A member reads only the inbox messages of their own sessions' and runs' agents — over the API
and over ``telecoder inbox … --server`` — and someone else's message is 404; an admin and a
viewer read every message; the inbox's writes stay an admin's. Real tokens of two members, a
viewer and an admin, on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import httpx

from telecoder.domain import MessageKind
from telecoder.store import Store
from tests.cli import cli_env, telecoder
from tests.conftest import GitRepo
from tests.integration.test_cli_inbox import error_of
from tests.integration.test_members import ADMIN, People, app, fan_out, ok, people
from tests.server import client, serving

__all__ = ["app", "people"]  # fixtures, used by name


async def ids(c: httpx.AsyncClient, who: dict[str, str], query: str = "") -> list[int]:
    return [m["id"] for m in ok(await c.get(f"/api/inbox/messages{query}", headers=who))]


async def test_a_member_reads_only_the_messages_of_their_own_agents(
    app: Any, people: People, store: Store, git_repo: GitRepo, tmp_path: Path
) -> None:
    async with client(app) as c:
        mine = await fan_out(c, git_repo, people.alice)
        theirs = await fan_out(c, git_repo, people.bob)
    agent = f"session:{mine['sessions'][0]['id']}"
    other = f"session:{theirs['sessions'][0]['id']}"
    run = mine["id"]
    inbox = store.inbox
    asked = await inbox.send(
        sender=agent,
        recipient="leader",
        thread=f"orch:{run}:a",
        body="which base?",
        kind=MessageKind.QUESTION,
    )
    answered = await inbox.reply(asked.id, sender="leader", body="main", kind=MessageKind.ANSWER)
    in_run = await inbox.send(sender="leader", thread=f"orch:{run}:b", body="task b starts")
    to_session = await inbox.send(sender="ops", thread=agent, body="a note in its thread")
    bobs = await inbox.send(
        sender=other, recipient="leader", body="bob's plan", artifacts=[("plan.txt", b"secret")]
    )
    look_alike = await inbox.send(sender="leader", thread=f"orch:{run}0:a", body="not alice's")
    nobodys = await inbox.send(sender="lead", recipient="w1", body="between two agents")
    alices = [asked.id, answered.id, in_run.id, to_session.id]
    every = [*alices, bobs.id, look_alike.id, nobodys.id]

    async with client(app) as c:
        assert await ids(c, people.alice) == alices
        assert await ids(c, people.bob) == [bobs.id]
        assert await ids(c, people.ops) == every
        assert await ids(c, people.val) == every  # a viewer reads everything, as elsewhere
        # The filters narrow what is theirs; they never widen it.
        assert await ids(c, people.alice, "?agent=leader") == alices[:3]
        assert await ids(c, people.alice, f"?thread=orch:{run}0:a") == []
        assert await ids(c, people.alice, f"?after={in_run.id}") == [to_session.id]
        assert await ids(c, people.bob, "?agent=leader&wait=0.3") == [bobs.id]
        assert await ids(c, people.alice, f"?after={to_session.id}&wait=0.3") == []

        latest = {
            who: ok(await c.get("/api/inbox/latest", headers=h))["id"]
            for who, h in (("alice", people.alice), ("bob", people.bob), ("ops", people.ops))
        }
        assert latest == {"alice": to_session.id, "bob": bobs.id, "ops": nobodys.id}

        for message in (bobs, look_alike, nobodys):  # someone else's: not confirmed to exist
            found = await c.get(f"/api/inbox/messages/{message.id}", headers=people.alice)
            assert found.status_code == 404, found.text
        artifact = f"/api/inbox/messages/{bobs.id}/artifacts/plan.txt"
        assert (await c.get(artifact, headers=people.alice)).status_code == 404
        got = ok(await c.get(artifact, headers=people.bob))
        assert base64.b64decode(got["content_base64"]) == b"secret"
        assert ok(await c.get(f"/api/inbox/messages/{asked.id}", headers=people.alice))["to"] == (
            "leader"
        )
        assert ok(await c.get(f"/api/inbox/messages/{bobs.id}", headers=people.val))["id"] == (
            bobs.id
        )

        # Writing to the inbox is still an admin's.
        body = {"agent": agent, "to": "leader", "body": "hi"}
        for who in (people.alice, people.val):
            refused = await c.post("/api/inbox/messages", json=body, headers=who)
            assert refused.status_code == 403, refused.text
        refused = await c.post("/api/inbox/fetch", json={"agent": other}, headers=people.alice)
        assert refused.status_code == 403

    # The CLI over the server, with each member's own token.
    async with serving(app) as url:
        home = tmp_path / "cli"
        home.mkdir()
        cli = {
            name: cli_env(home, TELECODER_DATABASE_URL="sqlite:////nonexistent/x.db", **token)
            for name, token in (
                ("alice", {"TELECODER_TOKEN": people.alice_token}),
                ("ops", {"TELECODER_TOKEN": ADMIN}),
            )
        }

        def run(who: str, *args: str) -> Any:
            return telecoder("inbox", *args, "--server", url, "--json", env=cli[who])

        listed = await asyncio.to_thread(run, "alice", "list", "--all")
        assert listed.returncode == 0, listed.stderr
        assert [m["id"] for m in json.loads(listed.stdout)] == alices
        listed = await asyncio.to_thread(run, "ops", "list", "--all")
        assert [m["id"] for m in json.loads(listed.stdout)] == every
        shown = await asyncio.to_thread(run, "alice", "show", str(bobs.id))
        assert "no message" in error_of(shown, "not_found")
        out = tmp_path / "plan.txt"
        saved = await asyncio.to_thread(
            run, "alice", "show", str(bobs.id), "--artifact", "plan.txt", "--output", str(out)
        )
        error_of(saved, "not_found")
        assert not out.exists()
