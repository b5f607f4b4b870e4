"""The HTTP API against ``create_app(settings, store)``: every route and every error code,
on SQLite and PostgreSQL, through httpx speaking ASGI."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from pydantic import SecretStr

from telecoder.domain import EventKind, NewEvent, SessionStatus
from telecoder.server import create_app
from telecoder.server.auth import InsecureBind
from telecoder.store import open_store
from tests.conftest import PG_ADMIN_URL, GitRepo
from tests.server import FakeRun, client, sse, until

TOKEN = "s3cret-token-for-tests-0001"


@pytest.fixture
def app(settings, store):
    return create_app(settings, store)


async def submit(c, repo: GitRepo, **extra):
    body = {"repo": str(repo.path), "prompt": "echo hi", "engine": "shell", **extra}
    response = await c.post("/api/sessions", json=body)
    assert response.status_code == 201, response.text
    return response.json()


# --- meta --------------------------------------------------------------------------------------


async def test_health_and_version(app):
    async with client(app) as c:
        health = await c.get("/api/health")
        version = await c.get("/api/version")
    assert health.status_code == 200
    assert health.json() == {
        "status": "ok",
        "database": "ok",
        "workers": {"embedded": 0, "alive": 0},
        "watchers": 0,
        "runtime": "sandbox",
        "sandbox": "ok",
        "sandbox_problem": None,
        "endpoints": [],
        "paused": False,
        "paused_since": None,
        "paused_by": None,
    }
    assert version.json()["api"] == 1
    assert version.json()["version"]


async def test_health_and_the_dashboard_flag_the_local_runtime_as_unsafe(settings, store):
    app = create_app(settings.model_copy(update={"runtime": "local"}), store)
    async with client(app) as c:
        health = (await c.get("/api/health")).json()
        page = await c.get("/")
    assert (health["runtime"], health["sandbox"], health["status"]) == ("local", "unsafe", "ok")
    assert "Unsafe: agents run without a sandbox" in page.text
    async with client(create_app(settings, store)) as c:
        assert "Unsafe" not in (await c.get("/")).text


@pytest.mark.postgres
async def test_health_is_degraded_when_the_database_is_gone(settings, pg_url):
    store = await open_store(pg_url)
    try:
        async with client(create_app(settings, store)) as c:
            before = await c.get("/api/health")
            name = store.db.engine.url.database
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            after = await c.get("/api/health")
    finally:
        await store.close()
    assert before.status_code == 200
    assert after.status_code == 503
    assert after.json()["database"] == "unreachable"
    assert after.json()["status"] == "degraded"


async def test_health_is_degraded_when_the_embedded_workers_die(settings, store):
    started = asyncio.Event()
    crash = asyncio.Event()

    async def workers(stop: asyncio.Event) -> None:
        started.set()
        await crash.wait()  # not a sleep: a slow health check must still see them alive
        raise RuntimeError("the worker crashed")

    app = create_app(settings, store, start_workers=workers)
    async with client(app) as c:
        await started.wait()
        alive = (await c.get("/api/health")).json()
        crash.set()
        await until(lambda: app.state.telecoder.workers.alive == 0)
        dead = await c.get("/api/health")
    assert alive["workers"] == {"embedded": 1, "alive": 1}
    assert alive["status"] == "ok"
    assert dead.status_code == 503
    assert dead.json()["workers"] == {"embedded": 1, "alive": 0}


async def test_openapi_and_docs(app):
    async with client(app) as c:
        spec = (await c.get("/openapi.json")).json()
        docs = await c.get("/docs")
    assert docs.status_code == 200
    paths = spec["paths"]
    for path in (
        "/api/sessions",
        "/api/sessions/{session_id}",
        "/api/sessions/{session_id}/cancel",
        "/api/sessions/{session_id}/retry",
        "/api/sessions/{session_id}/messages",
        "/api/sessions/{session_id}/diff",
        "/api/sessions/{session_id}/events",
        "/api/health",
        "/api/version",
    ):
        assert path in paths, path
    assert not any(p.startswith(("/sessions", "/login", "/new")) for p in paths)  # no pages
    assert "bearer" in str(spec["components"]["securitySchemes"]).lower()


# --- submit ------------------------------------------------------------------------------------


async def test_submit_returns_the_queued_session(app, store, git_repo):
    async with client(app) as c:
        response = await c.post(
            "/api/sessions",
            json={"repo": str(git_repo.path), "prompt": "echo hi", "engine": "shell"},
        )
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "queued"
    assert body["engine"] == "shell"
    assert body["repo"] == str(git_repo.path)
    assert body["branch"] == f"telecoder/{body['id']}"
    assert body["origin"] == {"channel": "api", "principal": "anonymous"}
    assert body["warnings"] == []
    stored = await store.sessions.get(body["id"])
    assert stored.prompt == "echo hi"
    # The shape is the CLI's --json shape.
    assert {k: v for k, v in body.items() if k != "warnings"} == stored.to_dict()


async def test_agent_is_an_alias_of_engine(app, git_repo):
    async with client(app) as c:
        body = await submit(c, git_repo, engine=None, agent="shell")
        clash = await c.post(
            "/api/sessions",
            json={"repo": str(git_repo.path), "prompt": "x", "engine": "shell", "agent": "codex"},
        )
    assert body["engine"] == "shell"
    assert clash.status_code == 422
    assert "engine and agent" in clash.json()["detail"]


async def test_submit_defaults_the_engine_from_settings(app, git_repo):
    async with client(app) as c:
        response = await c.post("/api/sessions", json={"repo": str(git_repo.path), "prompt": "x"})
    assert response.status_code == 201
    assert response.json()["engine"] == "shell"


async def test_submit_takes_a_forge_and_a_timeout(app, git_repo):
    body = {"repo": str(git_repo.path), "prompt": "x", "forge": "local", "timeout_seconds": 5}
    async with client(app) as c:
        response = await c.post("/api/sessions", json=body)
        unknown = await c.post("/api/sessions", json={**body, "forge": "nowhere"})
        negative = await c.post("/api/sessions", json={**body, "timeout_seconds": 0})
    assert response.status_code == 201, response.text
    assert (response.json()["forge"], response.json()["timeout_seconds"]) == ("local", 5)
    assert unknown.status_code == 422
    assert "nowhere" in unknown.json()["detail"]
    assert negative.status_code == 422
    assert [f["field"] for f in negative.json()["fields"]] == ["timeout_seconds"]


async def test_submit_warns_about_uncommitted_changes(app, git_repo):
    (git_repo.path / "README.md").write_text("changed but not committed\n")
    async with client(app) as c:
        body = await submit(c, git_repo)
    assert any("uncommitted" in w for w in body["warnings"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "x"}, "repo"),
        ({"repo": "/tmp"}, "prompt"),
        ({"repo": "/tmp", "prompt": "   "}, "prompt"),
        ({"repo": "/tmp", "prompt": "a\x00b"}, "prompt"),
        ({"repo": "/tmp", "prompt": "x", "priority": 10**9}, "priority"),
        ({"repo": "/tmp", "prompt": "x", "mode": "forever"}, "mode"),
        ({"repo": "/tmp", "prompt": "x", "engine": "no spaces allowed"}, "engine"),
        ({"repo": "/tmp", "prompt": "x", "colour": "red"}, "colour"),
        ({"repo": "/tmp", "prompt": "x", "model": "m" * 201}, "model"),
    ],
)
async def test_submit_rejects_bad_fields_with_their_names(app, body, field):
    async with client(app) as c:
        response = await c.post("/api/sessions", json=body)
    assert response.status_code == 422
    error = response.json()
    assert error["error"] == "bad_input"
    assert field in [f["field"] for f in error["fields"]], error


async def test_submit_rejects_what_the_intake_refuses(app, git_repo, tmp_path):
    async with client(app) as c:
        unknown_engine = await c.post(
            "/api/sessions", json={"repo": str(git_repo.path), "prompt": "x", "engine": "nope"}
        )
        missing_repo = await c.post(
            "/api/sessions", json={"repo": str(tmp_path / "absent"), "prompt": "x"}
        )
        (tmp_path / "plain").mkdir()
        not_git = await c.post(
            "/api/sessions", json={"repo": str(tmp_path / "plain"), "prompt": "x"}
        )
        (tmp_path / "file.txt").write_text("not a repository\n")
        a_file = await c.post(
            "/api/sessions", json={"repo": str(tmp_path / "file.txt"), "prompt": "x"}
        )
        dashed = await c.post(
            "/api/sessions", json={"repo": "--upload-pack=touch@x:y", "prompt": "x"}
        )
        dashed_base = await c.post(
            "/api/sessions", json={"repo": str(git_repo.path), "prompt": "x", "base": "-x"}
        )
        bad_base = await c.post(
            "/api/sessions", json={"repo": str(git_repo.path), "prompt": "x", "base": "nope"}
        )
        not_json = await c.post(
            "/api/sessions", content=b"{", headers={"content-type": "application/json"}
        )
    for response, words in [
        (unknown_engine, "unknown engine 'nope'"),
        (missing_repo, "does not exist"),
        (not_git, "not a git repository"),
        (a_file, "not a git repository"),
        (dashed, "starts with '-'"),
        (dashed_base, "starts with '-'"),
        (bad_base, "base ref 'nope'"),
        (not_json, "JSON"),
    ]:
        assert response.status_code == 422, response.text
        assert words in response.json()["detail"], response.json()


# --- list and show -----------------------------------------------------------------------------


async def test_list_filters_and_pages(app, store, git_repo):
    async with client(app) as c:
        ids = [(await submit(c, git_repo, prompt=f"echo {i}"))["id"] for i in range(5)]
        await c.post(f"/api/sessions/{ids[0]}/cancel")
        everything = (await c.get("/api/sessions")).json()
        cancelled = (await c.get("/api/sessions", params={"status": "cancelled"})).json()
        by_repo = (await c.get("/api/sessions", params={"repo": str(git_repo.path)})).json()
        other_repo = (await c.get("/api/sessions", params={"repo": "/elsewhere"})).json()
        by_engine = (await c.get("/api/sessions", params={"engine": "codex"})).json()
        pages, cursor = [], None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await c.get("/api/sessions", params=params)).json()
            pages.append([s["id"] for s in page["sessions"]])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        bad_status = await c.get("/api/sessions", params={"status": "sleeping"})
        bad_limit = await c.get("/api/sessions", params={"limit": 0})
        bad_cursor = await c.get("/api/sessions", params={"cursor": "yesterday"})
    assert [s["id"] for s in everything["sessions"]] == ids[::-1]
    assert [s["id"] for s in cancelled["sessions"]] == [ids[0]]
    assert len(by_repo["sessions"]) == 5
    assert other_repo["sessions"] == []
    assert by_engine["sessions"] == []
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [i for p in pages for i in p] == ids[::-1]
    assert bad_status.status_code == bad_limit.status_code == bad_cursor.status_code == 422
    assert "cursor" in bad_cursor.json()["detail"]


async def test_show_by_id_and_prefix(app, git_repo):
    async with client(app) as c:
        created = await submit(c, git_repo)
        full = await c.get(f"/api/sessions/{created['id']}")
        prefix = await c.get(f"/api/sessions/{created['id'][:6]}")
        missing = await c.get("/api/sessions/zzzzzzzzzz")
        malformed = await c.get("/api/sessions/not$an-id")
    assert full.json()["id"] == prefix.json()["id"] == created["id"]
    assert missing.status_code == 404
    assert missing.json() == {
        "error": "not_found",
        "detail": "no session 'zzzzzzzzzz'",
        "fields": [],
    }
    assert malformed.status_code == 422


async def test_unknown_route_and_method(app):
    async with client(app) as c:
        nowhere = await c.get("/api/nowhere")
        wrong_method = await c.delete("/api/sessions")
    assert nowhere.status_code == 404
    assert nowhere.json()["error"] == "not_found"
    assert wrong_method.status_code == 405


# --- cancel, retry, messages -------------------------------------------------------------------


async def test_cancel_then_conflict_then_retry(app, store, git_repo):
    async with client(app) as c:
        created = await submit(c, git_repo)
        sid = created["id"]
        early_retry = await c.post(f"/api/sessions/{sid}/retry")
        cancelled = await c.post(f"/api/sessions/{sid}/cancel")
        again = await c.post(f"/api/sessions/{sid}/cancel")
        retried = await c.post(f"/api/sessions/{sid}/retry")
        missing = await c.post("/api/sessions/zzzzzzzzzz/cancel")
    assert early_retry.status_code == 409
    assert early_retry.json()["error"] == "conflict"
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert again.status_code == 409
    assert "already cancelled" in again.json()["detail"]
    assert retried.status_code == 201
    assert retried.json()["parent_id"] == sid
    assert retried.json()["branch"] == created["branch"]
    assert retried.json()["status"] == "queued"
    assert missing.status_code == 404


async def test_cancel_a_running_session_asks_its_worker(app, store, git_repo):
    async with client(app) as c:
        created = await submit(c, git_repo)
        run = await FakeRun.start(store)
        response = await c.post(f"/api/sessions/{created['id']}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "running"
    assert response.json()["cancel_requested"] is True
    beat = await store.queue.heartbeat(run.claimed.lease)
    assert beat.cancel_requested


async def test_messages_go_to_chat_sessions_only(app, store, git_repo):
    async with client(app) as c:
        task = await submit(c, git_repo)
        chat = await submit(c, git_repo, mode="chat")
        to_task = await c.post(f"/api/sessions/{task['id']}/messages", json={"text": "more"})
        to_chat = await c.post(f"/api/sessions/{chat['id']}/messages", json={"text": "more"})
        blank = await c.post(f"/api/sessions/{chat['id']}/messages", json={"text": " "})
        await c.post(f"/api/sessions/{chat['id']}/cancel")
        to_ended = await c.post(f"/api/sessions/{chat['id']}/messages", json={"text": "more"})
        to_nobody = await c.post("/api/sessions/zzzzzzzzzz/messages", json={"text": "more"})
    assert to_task.status_code == 409
    assert to_chat.status_code == 202
    assert to_chat.json() == {"session_id": chat["id"], "seq": 2}
    events = await store.events.list(chat["id"])
    assert events[1].kind == EventKind.MESSAGE
    assert events[1].data == {"role": "user", "text": "more", "from": "anonymous"}
    assert blank.status_code == 422
    assert to_ended.status_code == 409
    assert to_nobody.status_code == 404


# --- events: JSON pages and SSE replay ---------------------------------------------------------


async def test_events_as_json_pages(app, store, git_repo):
    async with client(app) as c:
        sid = (await submit(c, git_repo))["id"]
        run = await FakeRun.start(store)
        await run.say(*[f"line {i}" for i in range(7)])  # seq 3..9 after queued, running
        first = await c.get(
            f"/api/sessions/{sid}/events",
            params={"limit": 4},
            headers={"accept": "application/json"},
        )
        rest = await c.get(
            f"/api/sessions/{sid}/events",
            params={"after": first.json()["next_after"], "limit": 100},
            headers={"accept": "application/json"},
        )
        resumed = await c.get(
            f"/api/sessions/{sid}/events",
            headers={"accept": "application/json", "last-event-id": "8"},
        )
        bad_after = await c.get(
            f"/api/sessions/{sid}/events",
            params={"after": -1},
            headers={"accept": "application/json"},
        )
        bad_id = await c.get(
            f"/api/sessions/{sid}/events",
            headers={"accept": "application/json", "last-event-id": "yesterday"},
        )
        missing = await c.get("/api/sessions/zzzzzzzzzz/events")
    page = first.json()
    assert [e["seq"] for e in page["events"]] == [1, 2, 3, 4]
    assert page["more"] is True
    assert page["next_after"] == 4
    assert page["status"] == "running"
    assert [e["seq"] for e in rest.json()["events"]] == [5, 6, 7, 8, 9]
    assert rest.json()["more"] is False
    assert [e["seq"] for e in resumed.json()["events"]] == [9]
    assert page["events"][0]["kind"] == "status"
    assert page["events"][2]["data"] == {"stream": "stdout", "text": "line 0"}
    assert bad_after.status_code == 422
    assert bad_id.status_code == 422
    assert missing.status_code == 404


async def test_sse_replays_a_finished_session_then_ends(app, store, git_repo):
    async with client(app) as c:
        sid = (await submit(c, git_repo))["id"]
        run = await FakeRun.start(store)
        await run.say("one", "two")
        await run.finish()
        async with c.stream("GET", f"/api/sessions/{sid}/events") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            frames = [f async for f in sse(response)]
    kinds = [f.event for f in frames]
    assert kinds == ["status", "status", "output", "output", "status", "end"]
    assert [f.id for f in frames] == ["1", "2", "3", "4", "5", "5"]
    assert frames[2].json()["data"]["text"] == "one"
    assert frames[-1].json() == {"status": "succeeded"}


async def test_last_event_id_resume_returns_exactly_the_missed_events(app, store, git_repo):
    async with client(app) as c:
        sid = (await submit(c, git_repo))["id"]
        run = await FakeRun.start(store)
        await run.say(*[f"line {i}" for i in range(10)])
        await run.finish(SessionStatus.CANCELLED)
        async with c.stream("GET", f"/api/sessions/{sid}/events") as response:
            seen = [f async for f in sse(response)]
        cut = 6
        async with c.stream(
            "GET", f"/api/sessions/{sid}/events", headers={"Last-Event-ID": str(cut)}
        ) as response:
            resumed = [f async for f in sse(response) if f.event != "end"]
        async with c.stream("GET", f"/api/sessions/{sid}/events?after=3") as response:
            by_query = [f async for f in sse(response) if f.event != "end"]
    everything = [f for f in seen if f.event != "end"]
    assert [f.id for f in resumed] == [f.id for f in everything if int(f.id or 0) > cut]
    assert [f.data for f in resumed] == [f.data for f in everything[cut:]]
    assert [int(f.id or 0) for f in by_query] == list(range(4, len(everything) + 1))


# --- diff --------------------------------------------------------------------------------------


async def test_diff_needs_a_workspace(app, store, git_repo):
    async with client(app) as c:
        sid = (await submit(c, git_repo))["id"]
        queued = await c.get(f"/api/sessions/{sid}/diff")
        await c.post(f"/api/sessions/{sid}/cancel")
        cancelled = await c.get(f"/api/sessions/{sid}/diff")
        missing = await c.get("/api/sessions/zzzzzzzzzz/diff")
    assert queued.status_code == 409
    assert "no workspace yet" in queued.json()["detail"]
    assert cancelled.status_code == 404
    assert cancelled.json()["error"] == "no_diff"
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"


async def test_diff_of_a_commit_and_of_a_work_tree(app, store, git_repo):
    base = git_repo.git("rev-parse", "HEAD")
    async with client(app) as c:
        sid = (await submit(c, git_repo))["id"]
        run = await FakeRun.start(store)
        # The work tree changes before anything is committed: the diff is of the work tree.
        (git_repo.path / "README.md").write_text("The colour of magic.\nThe light fantastic.\n")
        await store.queue.record(
            run.claimed.lease, workspace_path=str(git_repo.path), base_sha=base
        )
        uncommitted = (await c.get(f"/api/sessions/{sid}/diff")).json()
        git_repo.git("commit", "-qam", "more")
        head = git_repo.git("rev-parse", "HEAD")
        await store.queue.record(run.claimed.lease, commit_sha=head, pushed_sha=head)
        (git_repo.path / "README.md").write_text("later edits are not part of the diff\n")
        committed = (await c.get(f"/api/sessions/{sid}/diff")).json()
        # The worktree is gone: the commit is still in the repository.
        await store.queue.record(run.claimed.lease, workspace_path="/nonexistent/worktree")
        from_repo = (await c.get(f"/api/sessions/{sid}/diff")).json()
    assert uncommitted["head_sha"] is None
    assert "+The light fantastic." in uncommitted["diff"]
    assert committed["head_sha"] == head
    assert committed["base_sha"] == base
    assert (committed["files_changed"], committed["insertions"], committed["deletions"]) == (
        1,
        1,
        0,
    )
    assert "later edits" not in committed["diff"]
    assert from_repo["diff"] == committed["diff"]


# --- limits ------------------------------------------------------------------------------------


async def test_oversized_bodies_get_413(settings, store, git_repo):
    app = create_app(settings.model_copy(update={"max_body_bytes": 2048}), store)
    body = {"repo": str(git_repo.path), "prompt": "x" * 4096, "engine": "shell"}

    async def chunks():
        yield b'{"repo": "' + str(git_repo.path).encode() + b'", "prompt": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    async with client(app) as c:
        declared = await c.post("/api/sessions", json=body)
        streamed = await c.post(
            "/api/sessions", content=chunks(), headers={"content-type": "application/json"}
        )
        small = await c.post("/api/sessions", json={**body, "prompt": "echo ok"})
    assert declared.status_code == 413
    assert declared.json()["error"] == "too_large"
    assert streamed.status_code == 413
    assert small.status_code == 201


async def test_writes_are_rate_limited_per_token(settings, store, git_repo):
    tokens = f"alice:{TOKEN}-a,bob:{TOKEN}-b"
    limited = settings.model_copy(
        update={"api_token": SecretStr(tokens), "rate_limit_per_minute": 3}
    )
    app = create_app(limited, store)
    alice = {"authorization": f"Bearer {TOKEN}-a"}
    bob = {"authorization": f"Bearer {TOKEN}-b"}
    body = {"repo": str(git_repo.path), "prompt": "echo hi"}
    async with client(app) as c:
        codes = [
            (await c.post("/api/sessions", json=body, headers=alice)).status_code for _ in range(3)
        ]
        refused = await c.post("/api/sessions", json=body, headers=alice)
        reads = [(await c.get("/api/sessions", headers=alice)).status_code for _ in range(5)]
        other = await c.post("/api/sessions", json=body, headers=bob)
    assert codes == [201, 201, 201]
    assert refused.status_code == 429
    assert refused.json()["error"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 20
    assert reads == [200] * 5
    assert other.status_code == 201


# --- auth --------------------------------------------------------------------------------------


@pytest.fixture
def secured(settings, store):
    return create_app(settings.model_copy(update={"api_token": SecretStr(f"ci:{TOKEN}")}), store)


async def test_tokens_are_required_when_configured(secured, git_repo):
    async with client(secured) as c:
        anonymous = await c.get("/api/sessions")
        wrong = await c.get("/api/sessions", headers={"authorization": "Bearer nope"})
        basic = await c.get("/api/sessions", headers={"authorization": "Basic Zm9vOmJhcg=="})
        good = await c.get("/api/sessions", headers={"authorization": f"Bearer {TOKEN}"})
        created = await c.post(
            "/api/sessions",
            json={"repo": str(git_repo.path), "prompt": "echo"},
            headers={"authorization": f"Bearer {TOKEN}"},
        )
        health = await c.get("/api/health")
        stream = await c.get(f"/api/sessions/{created.json()['id']}/events")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert anonymous.json()["error"] == "unauthorized"
    assert wrong.status_code == basic.status_code == 401
    assert good.status_code == 200
    assert created.json()["origin"] == {"channel": "api", "principal": "ci"}
    assert health.status_code == 200
    assert stream.status_code == 401


async def test_open_server_guards_against_other_hosts_and_origins(app, git_repo):
    body = {"repo": str(git_repo.path), "prompt": "echo"}
    async with client(app) as c:
        rebound = await c.get("/api/sessions", headers={"host": "evil.example:7080"})
        localhost = await c.get("/api/sessions", headers={"host": "localhost:7080"})
        cross = await c.post("/api/sessions", json=body, headers={"origin": "http://evil.example"})
        fetch_meta = await c.post(
            "/api/sessions", json=body, headers={"sec-fetch-site": "cross-site"}
        )
        same = await c.post("/api/sessions", json=body, headers={"origin": "http://127.0.0.1"})
        cli = await c.post("/api/sessions", json=body)
    assert rebound.status_code == 403
    assert "loopback" in rebound.json()["detail"]
    assert localhost.status_code == 200
    assert cross.status_code == 403
    assert fetch_meta.status_code == 403
    assert same.status_code == 201
    assert cli.status_code == 201


async def test_a_token_server_answers_any_host(secured):
    async with client(secured) as c:
        response = await c.get(
            "/api/sessions",
            headers={"host": "telecoder.example.com", "authorization": f"Bearer {TOKEN}"},
        )
    assert response.status_code == 200


def test_exposed_bind_needs_a_token(settings, store):
    exposed = settings.model_copy(update={"host": "0.0.0.0"})
    with pytest.raises(InsecureBind, match="without an API token"):
        create_app(exposed, store)
    create_app(exposed.model_copy(update={"api_token": SecretStr(TOKEN)}), store)
    create_app(settings.model_copy(update={"host": "::1"}), store)


async def test_events_of_other_kinds_are_served_too(app, store, git_repo):
    async with client(app) as c:
        sid = (await submit(c, git_repo))["id"]
        await store.events.append(
            sid, [NewEvent(kind=EventKind.MESSAGE, data={"role": "user", "text": "hi"})]
        )
        page = await c.get(f"/api/sessions/{sid}/events", headers={"accept": "application/json"})
    assert [e["kind"] for e in page.json()["events"]] == ["status", "message"]


async def test_stream_cursors_must_be_plain_bounded_numbers(app, store, git_repo):
    """A Last-Event-ID or ``after`` that is not an ASCII seq in range is bad input, on both the
    API's stream and the dashboard's: ``'²'.isdigit()`` holds but ``int('²')`` fails, and int()
    refuses strings of more than 4,300 digits."""
    huge = "9" * 5000
    async with client(app) as c:
        sid = (await submit(c, git_repo))["id"]
        answers = []
        for path in (f"/api/sessions/{sid}/events", f"/sessions/{sid}/stream"):
            for raw in (b"\xb2", "\u0661".encode(), huge.encode(), b"2147483648", b"-1"):
                answers.append(await c.get(path, headers={"last-event-id": raw}))
            answers.append(await c.get(path, params={"after": huge}))
            answers.append(await c.get(path, params={"after": "\u0661"}))
    for response in answers:
        assert response.status_code == 422, (response.request.url, response.text[:300])
        detail = response.json()["detail"]
        assert "last-event-id" in detail.lower() or "after" in detail, detail
        assert len(detail) < 400, detail  # a 5,000-digit value is not echoed back whole
