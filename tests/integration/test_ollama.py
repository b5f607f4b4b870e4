"""Running fully local: an Ollama server registered with the gateway, with no key and no vendor
variable anywhere, checked and its models listed; agents on it through the gateway.

The fake model server plays Ollama: it answers ``/api/tags``, the native ``/api/chat`` and the
OpenAI-compatible ``/v1/chat/completions`` Ollama also serves. An Ollama endpoint carries both
APIs (``routing.KINDS_OF_API``), so a CLI that speaks only OpenAI's (Pi and OpenCode here, the
real CLIs, in the sandbox) runs on it by ``telecoder run --model local:MODEL``, and a tier routes
either API to it. What it answers is metered under the model's name and costs nothing unless priced.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from telecoder.gateway import Gateway, Ticket
from telecoder.settings import Settings
from telecoder.store import EndpointRow
from tests.cli import cli_env, telecoder
from tests.conftest import make_repo
from tests.engine_cases import PROMPT, WRITTEN
from tests.engine_driver import TOOLS_BIN
from tests.fakes.model_server import FakeModelServer, Reply

MODEL = "qwen2.5-coder:7b"
VENDOR_PREFIXES = ("ANTHROPIC_", "OPENAI_", "GEMINI_", "GOOGLE_", "OLLAMA_")


@pytest.fixture
def ollama() -> Iterator[FakeModelServer]:
    with FakeModelServer(models=(MODEL,)) as fake:
        yield fake


def local_env(home: Path, **extra: str) -> dict[str, str]:
    """A `telecoder` environment with no model vendor's variable: nothing but the registered
    endpoint to reach. The agent CLIs are found through ``TELECODER_AGENT_PATH`` only."""
    path = os.pathsep.join(
        p for p in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep) if p != str(TOOLS_BIN)
    )
    env = cli_env(
        home,
        PATH=path,
        TELECODER_AGENT_PATH=str(TOOLS_BIN),
        TELECODER_MODEL_RETRIES="1",
        TELECODER_RUNTIME="sandbox",  # the agent reaches nothing but the gateway
        **extra,
    )
    return {k: v for k, v in env.items() if not k.startswith(VENDOR_PREFIXES)}


def cli_json(*args: str, env: dict[str, str], timeout: float = 60) -> Any:
    done = telecoder(*args, "--json", env=env, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def register(ollama: FakeModelServer, env: dict[str, str]) -> None:
    """``endpoints add local URL --kind ollama`` (no key), checked: healthy, its models listed."""
    added = cli_json("endpoints", "add", "local", ollama.url, "--kind", "ollama", env=env)
    assert (added["kind"], added["key_env"], added["url"]) == ("ollama", None, ollama.url)
    checked = cli_json("endpoints", "check", "local", env=env)
    local = next(e for e in checked if e["name"] == "local")
    assert local["healthy"] is True, local
    assert local["models"] == [MODEL]
    assert [r.path for r in ollama.requests] == ["/api/tags"]


@pytest.mark.usefixtures("agent_tools")
@pytest.mark.parametrize("engine", ["pi", "opencode"])
def test_an_openai_cli_runs_on_a_registered_ollama_through_the_gateway(
    engine: str, ollama: FakeModelServer, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path)
    env = local_env(tmp_path / "home")
    register(ollama, env)
    session = cli_json(
        "run", PROMPT, "--repo", str(repo.path), "--engine", engine, "--model", f"local:{MODEL}",
        env=env, timeout=240,
    )  # fmt: skip
    assert session["status"] == "succeeded", session["error"]
    assert repo.remote_git("show", f"{session['branch']}:{WRITTEN}") == "hello-from-fake"
    # Ollama's OpenAI-compatible API, asked for the model without the endpoint's name, with no
    # key: the session's stayed at the gateway.
    requests = ollama.model_requests()
    assert len(requests) >= 2  # the tool call, then the answer
    assert {r.path for r in requests} == {"/v1/chat/completions"}
    assert {r.body["model"] for r in requests} == {MODEL}
    assert all("authorization" not in r.headers for r in requests)
    assert not any("tc-" in v for r in requests for v in r.headers.values())
    # Metered: the tokens Ollama reported, under its endpoint and the model's name, free.
    reported = ollama.reported
    assert session["input_tokens"] == sum(r.input for r in reported) > 0
    assert session["output_tokens"] == sum(r.output for r in reported) > 0
    assert session["cost_usd"] == 0
    by_endpoint = cli_json("costs", "--by", "endpoint", env=env)
    assert [g["key"] for g in by_endpoint["groups"]] == ["local"]
    by_model = cli_json("costs", "--by", "model", env=env)
    assert [g["key"] for g in by_model["groups"]] == [MODEL]
    assert by_model["groups"][0]["requests"] == len(requests)
    assert by_model["groups"][0]["cost_usd"] == 0


# The builtin agent's turns: a native tool call (its own ``write_file``), then the answer.
BUILTIN_SCRIPT = (
    Reply(text="Writing it.", tool="write_file", args={"path": WRITTEN, "content": "hello-local"}),
    Reply(text="Done: wrote fake.txt."),
)


def test_the_builtin_agent_runs_on_a_registered_ollama_through_its_native_api(
    tmp_path: Path,
) -> None:
    """``--engine builtin --model ollama/local:MODEL``: the agent speaks Ollama's native API to
    the gateway (its ``OLLAMA_HOST``), which sends it to the registered endpoint ``local``."""
    repo = make_repo(tmp_path)
    env = local_env(tmp_path / "home")
    with FakeModelServer(default=BUILTIN_SCRIPT, models=(MODEL,)) as ollama:
        register(ollama, env)
        session = cli_json(
            "run", PROMPT, "--repo", str(repo.path), "--engine", "builtin",
            "--model", f"ollama/local:{MODEL}", env=env, timeout=240,
        )  # fmt: skip
        requests = ollama.model_requests()
        reported = list(ollama.reported)
    assert session["status"] == "succeeded", session["error"]
    assert repo.remote_git("show", f"{session['branch']}:{WRITTEN}") == "hello-local"
    assert [r.path for r in requests] == ["/api/chat"] * len(BUILTIN_SCRIPT)
    assert {r.body["model"] for r in requests} == {MODEL}
    assert not any("tc-" in v for r in requests for v in r.headers.values())
    assert session["input_tokens"] == sum(r.input for r in reported) > 0
    assert session["output_tokens"] == sum(r.output for r in reported) > 0
    assert session["cost_usd"] == 0
    by_model = cli_json("costs", "--by", "model", env=env)
    assert [(g["key"], g["requests"]) for g in by_model["groups"]] == [(MODEL, len(requests))]
    by_endpoint = cli_json("costs", "--by", "endpoint", env=env)
    assert [g["key"] for g in by_endpoint["groups"]] == ["local"]


def make_gateway(
    settings: Settings, store: Any, environ: dict[str, str] | None = None, **changes: Any
) -> Gateway:
    return Gateway.from_settings(settings.model_copy(update=changes), store, environ=environ or {})


async def ask_both(client: httpx.AsyncClient, gateway: Gateway, ticket: Ticket, model: str) -> None:
    """One request on Ollama's native API, one on OpenAI's, as the ticket's agent sends them."""
    env = gateway.env(ticket)
    messages = [{"role": "user", "content": "hi"}]
    native = await client.post(
        f"{env['OLLAMA_HOST']}/api/chat",
        json={"model": model, "messages": messages, "stream": False},
    )
    assert native.status_code == 200, native.text
    assert native.json()["message"]["role"] == "assistant"
    chat = await client.post(
        f"{env['OPENAI_BASE_URL']}/chat/completions",
        headers={"authorization": f"Bearer {env['OPENAI_API_KEY']}"},
        json={"model": model, "messages": messages},
    )
    assert chat.status_code == 200, chat.text
    assert chat.json()["choices"][0]["message"]["role"] == "assistant"


async def test_a_tier_or_a_model_naming_the_endpoint_routes_both_apis_to_ollama(
    settings: Settings, store: Any, ollama: FakeModelServer
) -> None:
    await store.endpoints.add(EndpointRow(name="local", url=ollama.url, kind="ollama"))
    gateway = make_gateway(
        settings, store, tier_standard=(f"local:{MODEL}",), prices={"qwen2.5-coder": (1.0, 2.0)}
    )
    tiered = await gateway.issue(Ticket(session_id="tiered", attempt=1, tier="standard"))
    named = await gateway.issue(Ticket(session_id="named", attempt=1, model=f"local:{MODEL}"))
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            await ask_both(client, gateway, tiered, "llama3")  # the tier picks the model
            await ask_both(client, gateway, named, f"local:{MODEL}")
    finally:
        await gateway.revoke(tiered)
        await gateway.revoke(named)
    seen = ollama.model_requests()
    assert [r.path for r in seen] == ["/api/chat", "/v1/chat/completions"] * 2
    assert {r.body["model"] for r in seen} == {MODEL}
    rows = [*await store.usage.of_session("tiered"), *await store.usage.of_session("named")]
    assert sorted((r.session_id, r.api) for r in rows) == [
        ("named", "ollama"),
        ("named", "openai-chat"),
        ("tiered", "ollama"),
        ("tiered", "openai-chat"),
    ]
    assert {(r.endpoint, r.model, r.status) for r in rows} == {("local", MODEL, 200)}
    # Priced by the operator's override alone, whichever API it came through: 1 and 2 USD per
    # million input and output tokens.
    for r in rows:
        assert r.cost_usd == pytest.approx((r.input_tokens * 1.0 + r.output_tokens * 2.0) / 1e6)


async def test_ollama_models_are_free_unless_priced_whatever_api_asked(
    settings: Settings, store: Any, ollama: FakeModelServer
) -> None:
    """A local model's namesake has a list price elsewhere (``gpt-4.1-mini`` here): a request
    routed to Ollama is not charged it, on either API."""
    await store.endpoints.add(EndpointRow(name="local", url=ollama.url, kind="ollama"))
    gateway = make_gateway(settings, store)
    ticket = await gateway.issue(Ticket(session_id="free", attempt=1, model="local:gpt-4.1-mini"))
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            await ask_both(client, gateway, ticket, "local:gpt-4.1-mini")
    finally:
        await gateway.revoke(ticket)
    rows = await store.usage.of_session("free")
    assert len(rows) == 2
    assert {(r.endpoint, r.model, r.cost_usd) for r in rows} == {("local", "gpt-4.1-mini", None)}
    assert ticket.totals()["cost_usd"] == 0


async def test_without_registering_the_environments_ollama_is_the_endpoint_named_ollama(
    settings: Settings, store: Any, ollama: FakeModelServer
) -> None:
    """``OLLAMA_HOST`` (host:port, as Ollama's own clients take it) is the endpoint ``ollama``:
    ``ollama/MODEL`` on the native API, ``ollama:MODEL`` on OpenAI's."""
    gateway = make_gateway(settings, store, {"OLLAMA_HOST": ollama.url.removeprefix("http://")})
    ticket = await gateway.issue(Ticket(session_id="env", attempt=1, model=f"ollama:{MODEL}"))
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            await ask_both(client, gateway, ticket, f"ollama:{MODEL}")
    finally:
        await gateway.revoke(ticket)
    seen = ollama.model_requests()
    assert [(r.path, r.body["model"]) for r in seen] == [
        ("/api/chat", MODEL),
        ("/v1/chat/completions", MODEL),
    ]
    rows = await store.usage.of_session("env")
    assert {(r.endpoint, r.model) for r in rows} == {("ollama", MODEL)}
