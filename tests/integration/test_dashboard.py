"""The dashboard over HTTP: login and cookies, CSRF, the pages and their fragments."""

from __future__ import annotations

import re

import pytest
from pydantic import SecretStr

from telecoder.domain import EventKind, NewEvent, NewSession
from telecoder.server import create_app
from telecoder.server.auth import COOKIE
from tests.server import FakeRun, client

TOKEN = "dashboard-token-0123456789"
HTML = {"accept": "text/html"}


@pytest.fixture
def secured(settings, store):
    return create_app(settings.model_copy(update={"api_token": SecretStr(f"ops:{TOKEN}")}), store)


@pytest.fixture
def app(settings, store):
    return create_app(settings, store)


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page)
    assert match, "no CSRF token in the page"
    return match.group(1)


async def login(c) -> None:
    response = await c.post("/login", data={"token": TOKEN, "next": "/new"})
    assert response.status_code == 303
    assert response.headers["location"] == "/new"


async def test_pages_redirect_to_login_and_login_sets_a_safe_cookie(secured):
    async with client(secured) as c:
        page = await c.get("/sessions/abcd", headers=HTML)
        fragment = await c.get("/partials/sessions", headers={"hx-request": "true"})
        form = await c.get("/login")
        wrong = await c.post("/login", data={"token": "guess", "next": "/"})
        right = await c.post("/login", data={"token": TOKEN, "next": "//evil.example/x"})
        home = await c.get("/", headers=HTML)
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=/sessions/abcd"
    assert fragment.status_code == 401
    assert fragment.headers["hx-redirect"] == "/login"
    assert 'type="password"' in form.text
    assert wrong.status_code == 401
    assert "not valid" in wrong.text
    assert right.status_code == 303
    assert right.headers["location"] == "/"  # never off-site
    cookie = right.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=ops.")
    assert "HttpOnly" in cookie
    assert "samesite=lax" in cookie.lower()
    assert TOKEN not in cookie
    assert home.status_code == 200
    assert "Sign out" in home.text


async def test_a_tampered_or_foreign_cookie_is_no_login(secured, settings, store):
    async with client(secured) as c:
        await login(c)
        value = c.cookies[COOKIE]
    name, expires, signature = value.split(".")
    forged = [
        f"{name}.{int(expires) + 1000}.{signature}",  # longer life
        f"root.{expires}.{signature}",  # another name
        f"{name}.{expires}.{'0' * 64}",
        "garbage",
    ]
    for bad in forged:
        async with client(secured) as c:
            c.cookies.set(COOKIE, bad)
            response = await c.get("/api/sessions")
        assert response.status_code == 401, bad
    # The same name with another token (the token was rotated): the old cookie is dead.
    rotated = create_app(
        settings.model_copy(update={"api_token": SecretStr("ops:another-token-987654321")}), store
    )
    async with client(rotated) as c:
        c.cookies.set(COOKIE, value)
        assert (await c.get("/api/sessions")).status_code == 401


async def test_cookie_writes_need_the_csrf_token(secured, git_repo):
    body = {"repo": str(git_repo.path), "prompt": "echo hi"}
    async with client(secured) as c:
        await login(c)
        page = (await c.get("/new", headers=HTML)).text
        token = csrf_of(page)
        reads = await c.get("/api/sessions")
        no_csrf = await c.post("/api/sessions", json=body)
        bad_csrf = await c.post("/api/sessions", json=body, headers={"x-csrf-token": "0" * 40})
        good = await c.post("/api/sessions", json=body, headers={"x-csrf-token": token})
        form_without = await c.post("/new", data=body)
        form_with = await c.post("/new", data={**body, "csrf_token": token})
        logout = await c.post("/logout", data={"csrf_token": token})
        after = await c.get("/api/sessions")
    assert reads.status_code == 200
    assert no_csrf.status_code == bad_csrf.status_code == 403
    assert "CSRF" in no_csrf.json()["detail"]
    assert good.status_code == 201
    assert good.json()["origin"] == {"channel": "api", "principal": "ops"}
    assert form_without.status_code == 403
    assert form_with.status_code == 303
    assert form_with.headers["location"].startswith("/sessions/")
    assert logout.status_code == 303
    assert after.status_code == 401


async def test_new_task_form_submits_and_shows_errors(app, store, git_repo):
    async with client(app) as c:
        form = await c.get("/new", headers=HTML)
        token = csrf_of(form.text)
        assert 'option value="shell"' in form.text
        missing = await c.post(
            "/new", data={"repo": str(git_repo.path), "prompt": "", "csrf_token": token}
        )
        bad_repo = await c.post(
            "/new", data={"repo": "/no/such/repo", "prompt": "echo", "csrf_token": token}
        )
        made = await c.post(
            "/new",
            data={
                "repo": str(git_repo.path),
                "prompt": "echo from the form",
                "engine": "shell",
                "priority": "5",
                "csrf_token": token,
            },
        )
        listing = await c.get("/", headers=HTML)
    assert missing.status_code == 422
    assert "Field required" in missing.text or "must not be blank" in missing.text
    assert bad_repo.status_code == 422
    assert "does not exist" in bad_repo.text
    assert 'value="/no/such/repo"' in bad_repo.text  # what was typed is kept
    assert made.status_code == 303
    sid = made.headers["location"].rsplit("/", 1)[1]
    session = await store.sessions.get(sid)
    assert session.prompt == "echo from the form"
    assert session.priority == 5
    assert session.origin == {"channel": "dashboard", "principal": "anonymous"}
    assert f'id="row-{sid}"' in listing.text
    assert "echo from the form" in listing.text


async def test_session_page_renders_events_for_people(app, store):
    session = await store.sessions.create(
        NewSession(repo="/srv/repo", prompt="fix it", engine="shell")
    )
    run = await FakeRun.start(store)
    await store.events.append(
        session.id,
        [
            NewEvent(kind=EventKind.MESSAGE, data={"text": "I **changed** `x`. <b>raw</b>"}),
            NewEvent(kind=EventKind.TOOL_CALL, data={"name": "bash", "input": {"cmd": "ls"}}),
            NewEvent(kind=EventKind.TOOL_RESULT, data={"output": "a.txt", "is_error": True}),
            NewEvent(kind=EventKind.SETUP, data={"command": "npm ci", "ok": True}),
            NewEvent(
                kind=EventKind.VERIFY,
                data={"command": "pytest", "ok": False, "output_tail": "2 failed, 9 passed"},
            ),
            NewEvent(kind=EventKind.ERROR, data={"message": "it broke"}),
            NewEvent(kind=EventKind.USAGE, data={"input_tokens": 10, "cost_usd": 0.5}),
        ],
        run.claimed.lease,
    )
    async with client(app) as c:
        page = await c.get(f"/sessions/{session.id[:5]}", headers=HTML)
        head = await c.get(f"/sessions/{session.id}/head")
        diff = await c.get(f"/sessions/{session.id}/diff")
        missing = await c.get("/sessions/zzzzzzzzzz", headers=HTML)
    text = page.text
    assert page.status_code == 200
    assert f'sse-connect="/sessions/{session.id}/stream?after=9"' in text
    assert "<strong>changed</strong>" in text  # Markdown
    assert "&lt;b&gt;raw&lt;/b&gt;" in text  # but no raw HTML
    assert '<summary>→ bash <code class="preview">$ ls</code></summary>' in text  # one line
    assert "← result (error)" in text
    assert "setup passed: npm ci" in text
    assert "verify failed: pytest" in text
    assert "2 failed, 9 passed" in text  # what the check printed last
    assert 'class="ev error bad"' in text
    assert 'id="cancel"' in text
    assert "running" in head.text
    assert "no workspace yet" in diff.text
    assert missing.status_code == 404
    assert "no session" in missing.text
    assert missing.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"


async def test_cancel_and_retry_buttons(app, store):
    session = await store.sessions.create(
        NewSession(repo="/srv/repo", prompt="sleep 100", engine="shell")
    )
    async with client(app) as c:
        token = csrf_of((await c.get(f"/sessions/{session.id}", headers=HTML)).text)
        cancel = await c.post(f"/sessions/{session.id}/cancel", data={"csrf_token": token})
        again = await c.post(f"/sessions/{session.id}/cancel", data={"csrf_token": token})
        page = await c.get(f"/sessions/{session.id}", headers=HTML)
        retry = await c.post(f"/sessions/{session.id}/retry", data={"csrf_token": token})
        forged = await c.post(f"/sessions/{session.id}/retry", data={"csrf_token": "nope"})
    assert cancel.status_code == again.status_code == 303
    assert (await store.sessions.get(session.id)).status.value == "cancelled"
    assert 'id="retry"' in page.text
    assert "sse-connect" not in page.text  # finished: nothing to follow
    assert retry.status_code == 303
    new_id = retry.headers["location"].rsplit("/", 1)[1]
    assert (await store.sessions.get(new_id)).parent_id == session.id
    assert forged.status_code == 403


async def test_session_list_filters_and_the_workers_panel(app, store):
    first = await store.sessions.create(NewSession(repo="/srv/a", prompt="one", engine="shell"))
    await store.sessions.create(NewSession(repo="/srv/b", prompt="two", engine="shell"))
    await FakeRun.start(store, worker="host-7:123")
    async with client(app) as c:
        everything = await c.get("/", headers=HTML)
        running = await c.get("/partials/sessions?status=running")
        bad = await c.get("/?status=nope", headers=HTML)
    assert everything.text.count('id="row-') == 2
    assert "host-7:123" in everything.text  # the worker holding a session
    assert running.text.count('id="row-') == 1
    assert f'id="row-{first.id}"' in running.text  # the first queued was claimed
    assert bad.status_code == 422


async def test_static_assets_are_served(app):
    async with client(app) as c:
        htmx = await c.get("/static/vendor/htmx-2.0.11.min.js")
        ext = await c.get("/static/vendor/htmx-ext-sse-2.2.4.min.js")
        css = await c.get("/static/app.css")
    assert htmx.status_code == ext.status_code == css.status_code == 200
    assert "htmx" in htmx.text
    assert "sse" in ext.text


async def test_guessing_tokens_at_the_login_form_is_slowed_down(secured):
    async with client(secured) as c:
        codes = [
            (await c.post("/login", data={"token": f"guess-{i}"})).status_code for i in range(12)
        ]
        right = await c.post("/login", data={"token": TOKEN})
    assert codes[:10] == [401] * 10
    assert codes[10:] == [429, 429]
    assert right.status_code == 429  # even the right token waits: the address is spent
    assert int(right.headers["retry-after"]) >= 1
