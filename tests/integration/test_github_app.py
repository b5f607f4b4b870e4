"""GitHub App authentication against the fake GitHub: a JWT signed with the App's key,
exchanged for installation tokens that are cached until shortly before they expire, and used
for the API and for git over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from telecoder import registry
from telecoder.engines.shell import ShellEngine
from telecoder.errors import ForgeError
from telecoder.forges.github import GitHubForge
from telecoder.forges.github_app import GitHubApp
from telecoder.protocols import EngineCommand, EngineTask
from telecoder.server import create_app
from telecoder.settings import Settings
from telecoder.store import Store
from tests.fakes.github import WEBHOOK_SECRET, FakeGitHub
from tests.integration import test_github_webhooks as base
from tests.server import client, until

# The webhook tests' fixtures and helpers, shared.
fix_engine = base.fix_engine
hub = base.hub
run_one = base.run_one

APP_ID = "123456"


def keypair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return keypair()


@pytest.fixture
def app_hub(hub: FakeGitHub, keys: tuple[str, str]) -> FakeGitHub:
    hub.enable_app(APP_ID, keys[1], installation_id=777)
    return hub


async def test_installation_tokens_are_cached_until_near_their_end(app_hub, keys):
    app = GitHubApp(APP_ID, keys[0], app_hub.url)
    first = await app.token_for_repo("acme/repo")
    assert await app.token_for_repo("acme/repo") == first
    assert await app.token(777) == first
    assert list(app_hub.issued) == [first]
    assert app.cached("acme/repo") == first
    exchanges = [r for r in app_hub.requests if r.path.endswith("/access_tokens")]
    assert [r.path for r in exchanges] == ["/app/installations/777/access_tokens"]
    assert exchanges[0].headers["authorization"].startswith("Bearer ey")  # a JWT

    app_hub.token_ttl = 120  # less than the renewal margin: every ask gets a new one
    short = GitHubApp(APP_ID, keys[0], app_hub.url)
    one = await short.token(777)
    two = await short.token(777)
    assert one != two
    assert short.cached("acme/repo") is None


async def test_a_wrong_key_is_refused_with_a_hint_and_no_secret(app_hub):
    other_private, _ = keypair()
    app = GitHubApp(APP_ID, other_private, app_hub.url)
    with pytest.raises(ForgeError) as caught:
        await app.token(777)
    assert caught.value.status == 401
    assert "TELECODER_GITHUB_APP_ID" in caught.value.message
    assert "PRIVATE KEY" not in caught.value.message
    assert app_hub.issued == {}


def test_the_key_comes_from_the_settings_or_a_file(tmp_path, keys, settings: Settings):
    path = tmp_path / "app.pem"
    path.write_text(keys[0])
    from_file = settings.model_copy(
        update={"github_app_id": APP_ID, "github_app_private_key_file": path}
    )
    assert GitHubApp.from_settings(from_file) is not None
    one_line = settings.model_copy(
        update={
            "github_app_id": APP_ID,
            "github_app_private_key": SecretStr(keys[0].replace("\n", "\\n")),
        }
    )
    assert GitHubApp.from_settings(one_line) is not None
    missing = settings.model_copy(update={"github_app_id": APP_ID})
    with pytest.raises(ForgeError, match="TELECODER_GITHUB_APP_PRIVATE_KEY"):
        GitHubApp.from_settings(missing)
    assert GitHubApp.from_settings(settings) is None
    forge = GitHubForge.from_settings(from_file)
    assert forge.app is not None


async def test_a_webhook_session_runs_as_the_app(
    app_hub,
    keys,
    settings: Settings,
    store: Store,
    fix_engine: str,
):
    app_settings = settings.model_copy(
        update={
            "github_app_id": APP_ID,
            "github_app_private_key": SecretStr(keys[0]),
            "github_api_url": app_hub.url,
            "github_webhook_secret": SecretStr(WEBHOOK_SECRET),
            "engine": fix_engine,
            "notify_poll_seconds": 0.05,
        }
    )
    assert app_settings.github_token is None
    issue = app_hub.add_issue("acme", "repo", title="Fix the colour", login="maintainer")
    payload = app_hub.labeled_payload(
        "acme", "repo", issue.number, "telecoder", sender="maintainer"
    )
    payload["installation"] = {"id": 777}
    body = json.dumps(payload).encode()
    async with client(create_app(app_settings, store)) as c:
        response = await c.post(
            "/api/webhooks/github", content=body, headers=app_hub.webhook_headers("issues", body)
        )
        assert response.json()["action"] == "queued", response.text
        await run_one(app_settings, store)
        session = await store.sessions.get(response.json()["session_id"])
        assert session.status.value == "succeeded", session.error
        await until(lambda: "succeeded" in app_hub.comments("acme", "repo")[0].body, seconds=5)
    (pull,) = app_hub.pulls("acme", "repo")
    assert pull.body is not None
    assert f"Fixes #{issue.number}" in pull.body
    assert app_hub.issued  # every call and the push used installation tokens
    for request in app_hub.api_requests():
        if not request.path.endswith("/installation"):
            assert request.headers["authorization"].removeprefix("Bearer ") in app_hub.issued
    pushes = [r for r in app_hub.requests if r.path.endswith("/git-receive-pack")]
    assert pushes


class LeakEngine(ShellEngine):
    """An agent that prints the installation token it was never given (as if it had read it
    from git's config or the environment), then makes a change."""

    name = "test-github-leak"
    leak = ""

    def command(self, task: EngineTask) -> EngineCommand:
        script = f"echo 'I am not sure the token is {self.leak}'\necho 'fixed' >> README.md\n"
        return EngineCommand(
            argv=["/bin/sh", str(task.home / "leak.sh")], files={"leak.sh": script}
        )


@pytest.fixture
def leak_engine() -> Iterator[type[LeakEngine]]:
    remove = registry.register("engines", LeakEngine.name, LeakEngine)
    yield LeakEngine
    remove()


async def test_an_installation_token_printed_by_the_agent_is_masked(
    app_hub, keys, settings: Settings, store: Store, leak_engine: type[LeakEngine]
):
    app_settings = settings.model_copy(
        update={
            "github_app_id": APP_ID,
            "github_app_private_key": SecretStr(keys[0]),
            "github_api_url": app_hub.url,
            "github_webhook_secret": SecretStr(WEBHOOK_SECRET),
            "engine": leak_engine.name,
            "notify_poll_seconds": 0.05,
        }
    )
    forge = GitHubForge.from_settings(app_settings)
    assert forge.app is not None
    # The process's App mints the token the session will use (it is cached), so the agent can
    # print it; the pipeline must mask it although it is not a configured secret.
    leak_engine.leak = await forge.app.token_for_repo("acme/repo")
    issue = app_hub.add_issue("acme", "repo", title="Fix the colour", login="maintainer")
    payload = app_hub.labeled_payload(
        "acme", "repo", issue.number, "telecoder", sender="maintainer"
    )
    payload["installation"] = {"id": 777}
    body = json.dumps(payload).encode()
    async with client(create_app(app_settings, store)) as c:
        response = await c.post(
            "/api/webhooks/github", content=body, headers=app_hub.webhook_headers("issues", body)
        )
        assert response.json()["action"] == "queued", response.text
        await run_one(app_settings, store)
    session_id = response.json()["session_id"]
    session = await store.sessions.get(session_id)
    assert session.status.value == "succeeded", session.error
    assert list(app_hub.issued) == [leak_engine.leak]  # the session used that very token
    events = json.dumps([e.data for e in await store.events.list(session_id)])
    assert leak_engine.leak not in events
    assert "the token is ***" in events
    shown = json.dumps(session.to_dict())  # the outcome quotes the agent's doubts, masked
    assert leak_engine.leak not in shown
    assert "I am not sure the token is ***" in session.to_dict()["outcome"]["uncertain"]
