"""The dashboard's ``/memories`` page: repositories and users with counts, a repository's (or a
user's) memories with their untrusted text escaped, and forgetting one (htmx DELETE, or a plain
form) with CSRF."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from pydantic import SecretStr

from telecoder.domain import MemoryKind
from telecoder.server import create_app
from telecoder.store import Store
from tests.integration.test_dashboard import HTML, TOKEN, csrf_of, login
from tests.server import client

A, B = "/repos/a", "https://github.com/acme/b.git"
ATTACK = "<script>alert('memory')</script>"


@pytest.fixture
def secured(settings, store):
    return create_app(settings.model_copy(update={"api_token": SecretStr(f"ops:{TOKEN}")}), store)


async def test_the_page_lists_repositories_and_escapes_what_memories_say(secured, store: Store):
    summary = await store.memories.add(
        repo=A, kind=MemoryKind.SESSION, text=f"Fixed it {ATTACK}", prompt="fix <b>login</b>",
        outcome="succeeded", files=["src/login.py"], session_id="s-mem-1",
    )  # fmt: skip
    await store.memories.add(repo=A, text="second")
    await store.memories.add(repo=B, text="other repository")
    fact = await store.memories.add(user="telegram:42", kind=MemoryKind.FACT, text="likes <tabs>")
    async with client(secured) as c:
        await login(c)
        index = await c.get("/memories", headers=HTML)
        page = await c.get("/memories", params={"repo": A}, headers=HTML)
        empty = await c.get("/memories", params={"repo": "/nothing/here"}, headers=HTML)
        person = await c.get("/memories", params={"user": "telegram:42"}, headers=HTML)
    assert index.status_code == page.status_code == 200
    assert '<a href="/memories">Memories</a>' in index.text  # in the nav
    assert f'href="/memories?repo={quote(A)}"' in index.text
    assert f"<code>{B}</code>" in index.text
    assert "other repository" not in index.text  # no repository chosen: counts only
    assert ATTACK not in page.text
    assert "&lt;script&gt;alert(&#39;memory&#39;)&lt;/script&gt;" in page.text
    assert "fix &lt;b&gt;login&lt;/b&gt;" in page.text
    assert "<code>src/login.py</code>" in page.text
    assert 'href="/sessions/s-mem-1"' in page.text
    assert f'hx-delete="/memories/{summary.id}"' in page.text
    assert "hx-confirm=" in page.text
    assert "other repository" not in page.text  # never another repository's
    assert "No memories of this repository" in empty.text
    assert 'href="/memories?user=telegram%3A42"' in index.text
    assert "likes &lt;tabs&gt;" in person.text
    assert f'hx-delete="/memories/{fact.id}"' in person.text
    assert "second" not in person.text


async def test_forget_needs_the_csrf_token_and_removes_the_memory(secured, store: Store):
    first = await store.memories.add(repo=A, text="stale advice")
    second = await store.memories.add(repo=A, text="wrong advice")
    async with client(secured) as c:
        anonymous = await c.delete(f"/memories/{first.id}", headers={"hx-request": "true"})
        await login(c)
        token = csrf_of((await c.get("/memories", params={"repo": A}, headers=HTML)).text)
        forged = await c.delete(f"/memories/{first.id}", headers={"x-csrf-token": "0" * 40})
        row = await c.delete(
            f"/memories/{first.id}", headers={"x-csrf-token": token, "hx-request": "true"}
        )
        missing = await c.delete(f"/memories/{first.id}", headers={"x-csrf-token": token})
        form = await c.post(f"/memories/{second.id}/forget", data={"csrf_token": token})
        after = await c.get("/memories", params={"repo": A}, headers=HTML)
    assert anonymous.status_code == 401
    assert anonymous.headers["hx-redirect"] == "/login"
    assert forged.status_code == 403
    assert row.status_code == 200
    assert row.text == ""  # htmx swaps the row for nothing
    assert missing.status_code == 404
    assert form.status_code == 303
    assert form.headers["location"] == f"/memories?repo={quote(A, safe='')}"
    assert await store.memories.list(repo=A) == []
    assert "stale advice" not in after.text
    assert "wrong advice" not in after.text
