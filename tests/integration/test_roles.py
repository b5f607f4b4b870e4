"""Users and roles on the server: database tokens (bearer and dashboard login), what each role
may see and do, and the audit log of every change (issue 17, item 5)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from pydantic import SecretStr

from telecoder.server import create_app
from telecoder.server.auth import COOKIE
from telecoder.store import Store
from tests.conftest import GitRepo
from tests.server import client

ADMIN = "ops-admin-token-0123456789"
HTML = {"accept": "text/html"}


@dataclass
class People:
    alice: str  # member
    bob: str  # member
    val: str  # viewer
    worker: str
    alice_id: int


@pytest.fixture
async def people(store: Store) -> People:
    for name, role in (("alice", "member"), ("bob", "member"), ("val", "viewer")):
        await store.users.add(name, role)
    alice_row, alice = await store.users.create_token("alice", label="laptop")
    _, bob = await store.users.create_token("bob")
    _, val = await store.users.create_token("val")
    _, worker = await store.users.create_token(None, role="worker")
    return People(alice=alice, bob=bob, val=val, worker=worker, alice_id=alice_row.id)


@pytest.fixture
def app(settings, store):
    return create_app(settings.model_copy(update={"api_token": SecretStr(f"ops:{ADMIN}")}), store)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def submit(c, repo: GitRepo, token: str) -> str:
    body = {"repo": str(repo.path), "prompt": "echo hi", "engine": "shell"}
    response = await c.post("/api/sessions", json=body, headers=bearer(token))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def ids(response) -> set[str]:
    assert response.status_code == 200, response.text
    return {s["id"] for s in response.json()["sessions"]}


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page)
    assert match, "no CSRF token in the page"
    return match.group(1)


async def test_members_see_and_act_on_their_own_sessions_admins_on_all(app, people, git_repo):
    async with client(app) as c:
        mine = await submit(c, git_repo, people.alice)
        theirs = await submit(c, git_repo, people.bob)
        alice = bearer(people.alice)
        assert ids(await c.get("/api/sessions", headers=alice)) == {mine}
        assert ids(await c.get("/api/sessions", headers=bearer(people.bob))) == {theirs}
        assert ids(await c.get("/api/sessions", headers=bearer(ADMIN))) == {mine, theirs}
        assert ids(await c.get("/api/sessions", headers=bearer(people.val))) == {mine, theirs}
        # Someone else's session: 404 for reads and actions alike (the id is not confirmed).
        for method, path in [
            ("GET", f"/api/sessions/{theirs}"),
            ("GET", f"/api/sessions/{theirs[:8]}"),
            ("GET", f"/api/sessions/{theirs}/events?follow=false"),
            ("POST", f"/api/sessions/{theirs}/cancel"),
            ("POST", f"/api/sessions/{theirs}/retry"),
        ]:
            response = await c.request(method, path, headers=alice)
            assert response.status_code == 404, (method, path, response.text)
        own = await c.get(f"/api/sessions/{mine}", headers=alice)
        cancelled_own = await c.post(f"/api/sessions/{mine}/cancel", headers=alice)
        admin_reads = await c.get(f"/api/sessions/{theirs}", headers=bearer(ADMIN))
        admin_cancels = await c.post(f"/api/sessions/{theirs}/cancel", headers=bearer(ADMIN))
    assert own.status_code == 200
    assert own.json()["origin"] == {"channel": "api", "principal": "alice"}
    assert cancelled_own.status_code == 200
    assert cancelled_own.json()["status"] == "cancelled"
    assert admin_reads.status_code == 200
    assert admin_cancels.status_code == 200
    assert admin_cancels.json()["status"] == "cancelled"


async def test_dashboard_login_with_a_database_token_shows_only_what_the_role_may(
    app, people, git_repo
):
    async with client(app) as c:
        mine = await submit(c, git_repo, people.alice)
        theirs = await submit(c, git_repo, people.bob)
    async with client(app) as c:
        login = await c.post("/login", data={"token": people.alice, "next": "/"})
        assert login.status_code == 303
        cookie = c.cookies[COOKIE]
        assert cookie.startswith(f"~{people.alice_id}.")
        assert people.alice not in cookie
        home = await c.get("/", headers=HTML)
        token = csrf_of(home.text)
        own_page = await c.get(f"/sessions/{mine}", headers=HTML)
        other_page = await c.get(f"/sessions/{theirs}", headers=HTML)
        other_head = await c.get(f"/sessions/{theirs}/head", headers={"hx-request": "true"})
        other_cancel = await c.post(f"/sessions/{theirs}/cancel", data={"csrf_token": token})
        own_cancel = await c.post(f"/sessions/{mine}/cancel", data={"csrf_token": token})
        audit_page = await c.get("/audit", headers=HTML)
        api_with_cookie = await c.get("/api/sessions")
    assert home.status_code == 200
    assert mine in home.text
    assert theirs not in home.text
    assert 'href="/audit"' not in home.text  # not an admin
    assert own_page.status_code == 200
    assert other_page.status_code == other_head.status_code == other_cancel.status_code == 404
    assert own_cancel.status_code == 303
    assert audit_page.status_code == 403
    assert ids(api_with_cookie) == {mine}
    async with client(app) as c:
        await c.post("/login", data={"token": ADMIN, "next": "/"})
        home = await c.get("/", headers=HTML)
        other_page = await c.get(f"/sessions/{theirs}", headers=HTML)
        audit_page = await c.get("/audit", headers=HTML)
    assert mine in home.text
    assert theirs in home.text
    assert 'href="/audit"' in home.text
    assert other_page.status_code == 200
    assert audit_page.status_code == 200
    assert "Audit log" in audit_page.text


async def test_viewer_reads_only_and_worker_tokens_reach_only_worker_endpoints(
    app, people, git_repo
):
    body = {"repo": str(git_repo.path), "prompt": "echo hi", "engine": "shell"}
    async with client(app) as c:
        theirs = await submit(c, git_repo, people.bob)
        viewer = bearer(people.val)
        viewer_submits = await c.post("/api/sessions", json=body, headers=viewer)
        viewer_cancels = await c.post(f"/api/sessions/{theirs}/cancel", headers=viewer)
        viewer_reads = await c.get(f"/api/sessions/{theirs}", headers=viewer)
        repo = {"name": "app", "url": str(git_repo.path)}
        member_adds_repo = await c.post("/api/repos", json=repo, headers=bearer(people.bob))
        worker = bearer(people.worker)
        worker_lists = await c.get("/api/sessions", headers=worker)
        worker_submits = await c.post("/api/sessions", json=body, headers=worker)
        worker_workers = await c.get("/api/workers", headers=worker)
        worker_endpoint = await c.get("/api/workers/none/claims", headers=worker)
        worker_page = await c.get("/", headers={**worker, **HTML})
    assert viewer_submits.status_code == viewer_cancels.status_code == 403
    assert viewer_reads.status_code == 200
    assert member_adds_repo.status_code == 403
    assert worker_lists.status_code == worker_submits.status_code == 403
    assert worker_workers.status_code == 403  # the list is not under /api/workers/
    assert worker_endpoint.status_code == 404  # allowed through: no such route yet
    assert worker_page.status_code == 403


async def test_revoked_tokens_and_disabled_users_are_refused_at_once(app, store, people):
    async with client(app) as c:
        assert (await c.get("/api/sessions", headers=bearer(people.alice))).status_code == 200
        await c.post("/login", data={"token": people.alice, "next": "/"})
        assert (await c.get("/api/sessions")).status_code == 200
        await store.users.revoke(people.alice_id)
        revoked = await c.get("/api/sessions", headers=bearer(people.alice))
        cookie = await c.get("/api/sessions")
        login_again = await c.post("/login", data={"token": people.alice, "next": "/"})
        assert (await c.get("/api/sessions", headers=bearer(people.bob))).status_code == 200
        await store.users.disable("bob")
        disabled = await c.get("/api/sessions", headers=bearer(people.bob))
    assert revoked.status_code == cookie.status_code == 401
    assert login_again.status_code == 401
    assert disabled.status_code == 401
    used = await store.users.token(people.alice_id)
    assert used.last_used_at is not None
    assert used.revoked_at is not None


async def test_every_mutating_call_is_audited_once_and_only_admins_read_the_log(
    app, store, people, git_repo
):
    body = {"repo": str(git_repo.path), "prompt": "echo hi", "engine": "shell"}
    before = len(await store.audit.list(limit=1000))
    async with client(app, **{"user-agent": "audit-test/1"}) as c:
        mine = await submit(c, git_repo, people.alice)  # 1: created
        theirs = await submit(c, git_repo, people.bob)  # 2
        await c.get("/api/sessions", headers=bearer(people.alice))  # a read: none
        await c.get(f"/api/sessions/{theirs}", headers=bearer(people.alice))  # a read: none
        await c.post(f"/api/sessions/{mine}/cancel", headers=bearer(people.alice))  # 3
        await c.post(f"/api/sessions/{theirs}/cancel", headers=bearer(people.alice))  # 4 refused
        await c.post("/api/sessions", json=body, headers=bearer(people.val))  # 5: a 403
        await c.post("/api/sessions", json=body, headers=bearer("wrong-token"))  # 401: none
        await c.post("/api/sessions", json={"repo": "x"}, headers=bearer(ADMIN))  # 422: none
        await c.post(f"/api/sessions/{theirs}/cancel", headers=bearer(ADMIN))  # 6
        member = await c.get("/api/audit", headers=bearer(people.alice))
        viewer = await c.get("/api/audit", headers=bearer(people.val))
        admin = await c.get("/api/audit", params={"limit": 1000}, headers=bearer(ADMIN))
        only_alice = await c.get("/api/audit", params={"actor": "alice"}, headers=bearer(ADMIN))
        nul = await c.get("/api/audit", params={"actor": "al\x00ice"}, headers=bearer(ADMIN))
    assert nul.status_code == 422  # a NUL never reaches PostgreSQL (it answered 500)
    assert member.status_code == viewer.status_code == 403
    assert admin.status_code == 200
    rows = admin.json()[: len(admin.json()) - before]
    assert len(rows) == 6, rows
    newest = rows[0]
    assert newest["actor"] == "ops"
    assert newest["role"] == "admin"
    assert newest["action"] == "POST /api/sessions/{session_id}/cancel"
    assert newest["target"] == f"/api/sessions/{theirs}/cancel"
    assert newest["source"] == "127.0.0.1"
    assert newest["user_agent"] == "audit-test/1"
    assert newest["detail"]["status"] == 200
    refused = [r for r in rows if r["detail"]["status"] in (403, 404)]
    assert [(r["actor"], r["detail"]["status"]) for r in refused] == [("val", 403), ("alice", 404)]
    assert {r["actor"] for r in only_alice.json()} == {"alice"}
    assert len(only_alice.json()) == 3
    async with client(app) as c:
        await c.post("/login", data={"token": people.val, "next": "/"})
    login = (await store.audit.list(limit=1))[0]
    assert (login.actor, login.role, login.action) == ("val", "viewer", "POST /login")
