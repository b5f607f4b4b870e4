"""The endpoint registry: the table on both backends, checks against a fake model server, health
from real traffic, and ``telecoder endpoints`` / ``/api/endpoints`` with their errors."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from telecoder.errors import BadInput, Conflict
from telecoder.gateway.backoff import Backoffs
from telecoder.gateway.endpoints import (
    Registry,
    Spec,
    check,
    env_specs,
    listing,
    models_url,
    validate,
)
from telecoder.server import create_app
from telecoder.store import EndpointRow
from tests.cli import cli_env, telecoder
from tests.server import client

KEY = "sk-real-key-for-endpoint-tests-123456"


async def test_the_table_adds_lists_records_and_removes(store):
    await store.endpoints.add(EndpointRow(name="a-2", url="http://x", kind="anthropic"))
    with pytest.raises(Conflict, match="'a-2' exists already"):
        await store.endpoints.add(EndpointRow(name="a-2", url="http://y", kind="openai"))
    await store.endpoints.ensure("anthropic", url="http://env", kind="anthropic", key_env="K")
    await store.endpoints.ensure("anthropic", url="http://env2", kind="anthropic", key_env="K")
    await store.endpoints.record_check(
        "a-2", healthy=True, latency_ms=12.5, error=None, models=["m1", "m2"]
    )
    await store.endpoints.record_check(
        "a-2", healthy=False, latency_ms=None, error="HTTP 500", models=None
    )
    rows = {r.name: r for r in await store.endpoints.list()}
    assert rows["anthropic"].url == "http://env2"
    assert rows["a-2"].models == ("m1", "m2")  # kept from the last check that found them
    assert (rows["a-2"].healthy, rows["a-2"].error) == (False, "HTTP 500")
    now = time.time()
    await store.endpoints.set_backoff("a-2", now + 30)
    await store.endpoints.set_backoff("a-2", now + 10)  # earlier: the later one stays
    await store.endpoints.set_backoff("anthropic", now - 10)
    assert await store.endpoints.backoffs() == {"a-2": pytest.approx(now + 30)}
    assert await store.endpoints.remove("a-2")
    assert not await store.endpoints.remove("a-2")
    assert await store.endpoints.get("a-2") is None


def test_validate_refuses_what_is_wrong():
    assert validate("a-2", "https://h/v1/", "openai", "K_2").url == "https://h/v1"
    for args, message in [
        (("A", "https://h", "openai", None), "lowercase"),
        (("anthropic", "https://h", "anthropic", None), "operator's environment"),
        (("x", "https://h", "bedrock", None), "unknown kind 'bedrock'"),
        (("x", "ftp://h", "openai", None), "http:// or https://"),
        (("x", "https://u:p@h", "openai", None), "no credentials"),
        (("x", "https://h", "openai", "1BAD"), "environment variable"),
        (("x", "http://h:11434/v1/", "ollama", None), r"root URL \(http://h:11434\)"),
    ]:
        with pytest.raises(BadInput, match=message):
            validate(*args)


def test_env_specs_and_model_urls():
    env = {"ANTHROPIC_AUTH_TOKEN": "t", "OPENAI_BASE_URL": "http://o/v1", "OLLAMA_HOST": "h:1"}
    specs = {s.name: s for s in env_specs(env)}
    assert set(specs) == {"anthropic", "openai", "ollama"}
    assert specs["anthropic"].key_env == "ANTHROPIC_AUTH_TOKEN"
    assert specs["ollama"].url == "http://h:1"
    assert {s.source for s in specs.values()} == {"env"}
    assert models_url("openai", "http://o/v1") == "http://o/v1/models"
    assert models_url("anthropic", "http://a") == "http://a/v1/models"
    assert models_url("gemini", "http://g") == "http://g/v1beta/models"
    assert models_url("ollama", "http://l:11434") == "http://l:11434/api/tags"


async def test_check_finds_models_and_never_shows_the_key(model_server):
    spec = Spec(name="a-2", url=model_server.url, kind="anthropic", key_env="TEST_KEY")
    async with httpx.AsyncClient() as c:
        found = await check(spec, client=c, environ={"TEST_KEY": KEY})
        assert (found.healthy, found.models) == (True, ["fake-model"])
        assert model_server.requests[-1].headers["x-api-key"] == KEY
        missing = await check(spec, client=c, environ={})
        assert (missing.healthy, missing.error) == (
            False,
            "TEST_KEY is not set in the gateway's environment",
        )
        down = Spec(name="d", url="http://127.0.0.1:9", kind="openai")
        refused = await check(down, client=c)
        assert not refused.healthy
        assert refused.error.startswith("cannot connect")


async def test_check_reads_gemini_and_ollama_listings():
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/tags":
            return httpx.Response(200, json={"models": [{"name": "qwen3:8b"}]})
        if request.url.path == "/v1beta/models":
            assert request.headers["x-goog-api-key"] == KEY
            return httpx.Response(200, json={"models": [{"name": "models/gemini-2.5-pro"}]})
        return httpx.Response(401, json={"error": {"message": f"bad key {KEY}"}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as c:
        env = {"K": KEY}
        gemini = await check(Spec(name="g", url="http://g", kind="gemini", key_env="K"), client=c,
                             environ=env)  # fmt: skip
        ollama = await check(Spec(name="o", url="http://o", kind="ollama"), client=c)
        refused = await check(Spec(name="x", url="http://x", kind="openai", key_env="K"),
                              client=c, environ=env)  # fmt: skip
    assert gemini.models == ["gemini-2.5-pro"]
    assert ollama.models == ["qwen3:8b"]
    assert refused.error == "HTTP 401: bad key ***"


async def test_registry_marks_an_endpoint_down_after_failures_and_up_after_a_success(store):
    changes: list[tuple[str, bool]] = []
    registry = Registry(
        store,
        [Spec(name="anthropic", url="http://a", kind="anthropic", source="env")],
        unhealthy_after=2,
        on_change=lambda name, healthy, _: changes.append((name, healthy)),
    )
    await registry.start()
    assert registry.usable("anthropic")
    registry.failed("anthropic", "connection refused")
    assert registry.usable("anthropic")
    registry.failed("anthropic", "connection refused")
    assert not registry.usable("anthropic")
    await asyncio.sleep(0.1)
    row = await store.endpoints.get("anthropic")
    assert (row.healthy, row.failures) == (False, 2)
    assert row.error == "2 requests in a row failed: connection refused"
    # Another process of the same database sees it on its next sync.
    other = Registry(store, [], backoffs=Backoffs())
    await other.sync()
    assert not other.usable("anthropic")
    registry.succeeded("anthropic")
    assert registry.usable("anthropic")
    await asyncio.sleep(0.1)
    assert (await store.endpoints.get("anthropic")).healthy is True
    assert changes == [("anthropic", False), ("anthropic", True)]


async def test_registry_shares_backoffs_and_checks_what_is_due(store, model_server):
    await store.endpoints.add(EndpointRow(name="a-2", url=model_server.url, kind="openai"))
    one = Registry(store, [], check_seconds=60)
    two = Registry(store, [], check_seconds=60)
    await one.start()
    one.backing_off("a-2", time.time() + 30)
    await asyncio.sleep(0.1)
    await two.sync()
    assert two.backoffs.of("a-2").closed
    assert not two.usable("a-2")
    await two.check_due(await store.endpoints.list())
    assert (await store.endpoints.get("a-2")).models == ("fake-model",)
    asked = len(model_server.requests)
    await one.check_due(await store.endpoints.list())  # checked a moment ago: not due
    assert len(model_server.requests) == asked


# --- the API ---


async def test_api_adds_lists_checks_and_removes(settings, store, model_server):
    app = create_app(settings, store)
    async with client(app) as c:
        body = {"name": "a-2", "url": model_server.url, "kind": "anthropic"}
        added = await c.post("/api/endpoints", json=body)
        assert added.status_code == 201, added.text
        assert added.json()["source"] == "registered"
        again = await c.post("/api/endpoints", json=body)
        assert again.status_code == 409
        bad = await c.post("/api/endpoints", json={**body, "name": "b", "kind": "bedrock"})
        assert (bad.status_code, bad.json()["fields"][0]["field"]) == (422, "kind")
        checked = await c.post("/api/endpoints/a-2/check")
        assert checked.status_code == 200
        assert (checked.json()["healthy"], checked.json()["models"]) == (True, ["fake-model"])
        listed = await c.get("/api/endpoints")
        assert [e["name"] for e in listed.json() if e["source"] == "registered"] == ["a-2"]
        health = (await c.get("/api/health")).json()
        assert any(e["name"] == "a-2" and e["healthy"] for e in health["endpoints"])
        assert (await c.post("/api/endpoints/nope/check")).status_code == 404
        assert (await c.delete("/api/endpoints/a-2")).status_code == 204
        gone = await c.delete("/api/endpoints/a-2")
        assert (gone.status_code, gone.json()["detail"]) == (404, "no endpoint named 'a-2'")
        assert (await c.delete("/api/endpoints/anthropic")).status_code == 422
        page = await c.get("/endpoints", headers={"accept": "text/html"})
        assert page.status_code == 200
        assert "Model endpoints" in page.text


# --- the CLI, as a user runs it ---


def test_cli_endpoints_add_list_check_remove(home, model_server):
    env = cli_env(home, TEST_KEY=KEY)
    added = telecoder(
        "endpoints", "add", "a-2", model_server.url, "--kind", "openai", "--key-env", "TEST_KEY",
        "--json", env=env,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["key_env"] == "TEST_KEY"
    taken = telecoder("endpoints", "add", "a-2", model_server.url, "--kind", "openai", env=env)
    assert taken.returncode == 4
    assert "exists already" in taken.stderr
    bad = telecoder("endpoints", "add", "b", model_server.url, "--kind", "bedrock", env=env)
    assert bad.returncode == 2
    checked = telecoder("endpoints", "check", "a-2", "--json", env=env)
    assert checked.returncode == 0, checked.stderr
    [found] = json.loads(checked.stdout)
    assert (found["healthy"], found["models"]) == (True, ["fake-model"])
    assert model_server.requests[-1].headers["authorization"] == f"Bearer {KEY}"
    listed = telecoder("endpoints", "list", env=env)
    assert listed.returncode == 0
    assert "a-2" in listed.stdout
    assert "fake-model" in listed.stdout
    assert KEY not in listed.stdout + checked.stdout
    assert telecoder("endpoints", "check", "nope", env=env).returncode == 3
    assert telecoder("endpoints", "remove", "a-2", env=env).returncode == 0
    assert telecoder("endpoints", "remove", "a-2", env=env).returncode == 3
    telecoder("endpoints", "add", "dead", "http://127.0.0.1:9", "--kind", "openai", env=env)
    down = telecoder("endpoints", "check", "--json", env=env)
    assert down.returncode == 6
    assert json.loads(down.stdout)[0]["error"].startswith("cannot connect")


async def test_listing_merges_the_environment_and_the_table(store):
    await store.endpoints.add(EndpointRow(name="a-2", url="http://x", kind="anthropic"))
    env = [Spec(name="anthropic", url="http://a", kind="anthropic", source="env")]
    found = await listing(store, env)
    assert [(e.spec.name, e.spec.source) for e in found] == [
        ("anthropic", "env"),
        ("a-2", "registered"),
    ]


async def test_the_server_checks_endpoints_without_being_asked(settings, store, model_server):
    await store.endpoints.add(EndpointRow(name="a-2", url=model_server.url, kind="anthropic"))
    async with client(create_app(settings, store)):
        for _ in range(100):
            row = await store.endpoints.get("a-2")
            if row is not None and row.checked_at is not None:
                break
            await asyncio.sleep(0.05)
    assert row is not None
    assert (row.healthy, row.models) == (True, ("fake-model",))


async def test_gateways_starting_together_make_one_row_each(store):
    await asyncio.gather(
        *(
            store.endpoints.ensure("openai", url="http://o/v1", kind="openai", key_env="K")
            for _ in range(8)
        )
    )
    assert [r.name for r in await store.endpoints.list()] == ["openai"]
