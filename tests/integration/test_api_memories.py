"""``/api/memories`` against ``create_app(settings, store)`` on SQLite and PostgreSQL: adding
(masked), listing by a repository named as sessions name it, one memory, forgetting, the
repositories and users with counts, and every refusal with its status."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from telecoder.domain import MemoryKind
from telecoder.embedders import WORDLLAMA_NAME
from telecoder.server import create_app
from telecoder.store import Store
from tests.conftest import GitRepo
from tests.server import client

TOKEN = "memories-api-token-0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def app(settings, store):
    return create_app(settings.model_copy(update={"api_token": SecretStr(f"ops:{TOKEN}")}), store)


async def test_add_list_get_forget(app, store: Store, git_repo: GitRepo, settings):
    repo = str(git_repo.path)
    async with client(app, **AUTH) as c:
        await store.repos.add("app", repo, engine=None, priority=0)
        added = await c.post(
            "/api/memories",
            json={"repo": str(git_repo.path / "."), "text": f"deploy with key {TOKEN}"},
        )
        assert added.status_code == 201, added.text
        memory = added.json()
        lesson = await c.post(
            "/api/memories", json={"repo": "app", "text": "tests need TZ=UTC", "kind": "lesson"}
        )
        fact = await c.post(
            "/api/memories", json={"user": "slack:U1", "text": "likes tabs", "kind": "fact"}
        )
        stored = (await store.memories.get(memory["id"])).to_dict()
        by_path = await c.get("/api/memories", params={"repo": repo})
        by_name = await c.get("/api/memories", params={"repo": "app", "kind": "lesson"})
        paged = await c.get("/api/memories", params={"repo": repo, "before": lesson.json()["id"]})
        users = await c.get("/api/memories", params={"user": "slack:U1"})
        repos = await c.get("/api/memories/repos")
        people = await c.get("/api/memories/users")
        one = await c.get(f"/api/memories/{memory['id']}")
        gone = await c.delete(f"/api/memories/{memory['id']}")
        again = await c.get(f"/api/memories/{memory['id']}")
        twice = await c.delete(f"/api/memories/{memory['id']}")
    assert memory == stored  # the JSON of `telecoder memory show ID --json`
    assert memory["repo"] == repo
    assert memory["text"] == "deploy with key ***"  # the API token is a secret: masked
    assert (memory["kind"], memory["files"], memory["session_id"]) == ("note", [], None)
    assert memory["embedder"] == WORDLLAMA_NAME  # embedded, as a session's summary is
    assert lesson.status_code == fact.status_code == 201
    assert lesson.json()["repo"] == repo  # the registered name means its repository
    assert fact.json()["repo"] is None
    assert [m["id"] for m in by_path.json()] == [lesson.json()["id"], memory["id"]]
    assert [m["id"] for m in by_name.json()] == [lesson.json()["id"]]
    assert paged.json() == [memory]
    assert users.json() == [fact.json()]
    assert repos.json() == [{"repo": repo, "memories": 2}]
    assert people.json() == [{"user": "slack:U1", "memories": 1}]
    assert one.json() == memory
    assert gone.status_code == 200
    assert gone.json() == memory
    assert again.status_code == twice.status_code == 404
    assert again.json()["error"] == "not_found"
    assert again.json()["detail"] == f"no memory {memory['id']}"
    assert [m.kind for m in await store.memories.list(repo=repo)] == [MemoryKind.LESSON]


async def test_refusals(app, git_repo: GitRepo, tmp_path):
    repo = str(git_repo.path)
    async with client(app) as c:
        anonymous = await c.get("/api/memories")
        c.headers.update(AUTH)
        bad = {
            "blank": await c.post("/api/memories", json={"repo": repo, "text": "  "}),
            "kind": await c.post(
                "/api/memories", json={"repo": repo, "text": "x", "kind": "session"}
            ),
            "scope": await c.post("/api/memories", json={"text": "whose?"}),
            "blank user": await c.post("/api/memories", json={"user": " ", "text": "x"}),
            "extra": await c.post("/api/memories", json={"repo": repo, "text": "x", "id": 3}),
            "nul": await c.post("/api/memories", json={"repo": repo, "text": "a\x00b"}),
            "nowhere": await c.get("/api/memories", params={"repo": "no-such-name"}),
            "not git": await c.get("/api/memories", params={"repo": str(tmp_path)}),
            "limit": await c.get("/api/memories", params={"limit": 0}),
            "list kind": await c.get("/api/memories", params={"kind": "nope"}),
            "id": await c.get("/api/memories/0"),
        }
        missing = await c.get("/api/memories/424242")
    assert anonymous.status_code == 401
    assert {k: r.status_code for k, r in bad.items()} == dict.fromkeys(bad, 422)
    assert "repository or a user" in bad["scope"].json()["detail"]
    assert "registered" in bad["nowhere"].json()["detail"]
    assert "not a git repository" in bad["not git"].json()["detail"]
    assert missing.status_code == 404


async def test_the_api_documents_the_routes(app):
    async with client(app) as c:
        paths = (await c.get("/openapi.json")).json()["paths"]
    assert set(paths["/api/memories"]) == {"get", "post"}
    assert set(paths["/api/memories/{memory_id}"]) == {"get", "delete"}
    assert "get" in paths["/api/memories/repos"]
    assert "get" in paths["/api/memories/users"]
    assert "/memories" not in paths  # the page is not API
