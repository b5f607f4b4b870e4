"""The engine a task runs when it names none: never the shell; the repository's, the
operator's default, the first installed agent with its key, else a refusal naming the choices."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from telecoder import engine_choice, registry
from telecoder.assemble import build_forges, build_workspace
from telecoder.domain import EngineSource
from telecoder.errors import EngineNotFound, EngineUnavailable
from telecoder.intake import Request, accept
from telecoder.server import create_app
from telecoder.settings import Settings
from telecoder.store.endpoints import EndpointRow
from tests.cli import cli_env, telecoder
from tests.conftest import GitRepo, git
from tests.server import client

KEYS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "OPENAI_API_KEY", "GEMINI_API_KEY",
        "GOOGLE_API_KEY")  # fmt: skip


def fake_clis(where: Path, *names: str) -> Path:
    """Executables with the agents' names (never run: only found)."""
    where.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = where / name
        path.write_text("#!/bin/sh\necho 1.0.0\n")
        path.chmod(0o755)
    return where


@pytest.fixture
def bare(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No default engine, no key, and no agent CLI but those a test puts in the returned dir."""
    monkeypatch.delenv("TELECODER_DEFAULT_ENGINE", raising=False)
    monkeypatch.delenv("TELECODER_ENGINE", raising=False)
    monkeypatch.delenv("TELECODER_AGENT_PATH", raising=False)
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    agents = tmp_path / "agents"
    agents.mkdir()
    return agents


def no_default(home: Path, agents: Path) -> Settings:
    return Settings(home=home, engine=None, agent_path=str(agents))


ENGINES = registry.names("engines")


def test_the_first_installed_agent_with_its_key_is_chosen(bare, home):
    settings = no_default(home, bare)
    with pytest.raises(EngineNotFound) as nothing:
        engine_choice.choose(None, None, settings=settings, engines=ENGINES)
    assert "--engine" in str(nothing.value)
    assert "claude-code" in str(nothing.value)
    assert "make agents" in str(nothing.value)  # nothing installed: how to install
    fake_clis(bare, "codex", "claude")
    with pytest.raises(EngineNotFound) as no_key:
        engine_choice.choose(None, None, settings=settings, engines=ENGINES)
    assert "codex needs OPENAI_API_KEY" in str(no_key.value)
    env = {**os.environ, "OPENAI_API_KEY": "sk-test"}
    assert engine_choice.choose(None, None, settings=settings, engines=ENGINES, env=env) == (
        "codex",
        EngineSource.SETTINGS,
    )
    env["ANTHROPIC_API_KEY"] = "sk-ant-test"  # both ready: the preferred one
    chosen, _ = engine_choice.choose(None, None, settings=settings, engines=ENGINES, env=env)
    assert chosen == "claude-code"
    # The repository's beats that; the task's beats both; the operator's default beats the CLIs.
    assert engine_choice.choose(None, "gemini", settings=settings, engines=ENGINES) == (
        "gemini",
        EngineSource.REPO,
    )
    assert engine_choice.choose("shell", "gemini", settings=settings, engines=ENGINES) == (
        "shell",
        EngineSource.REQUEST,
    )
    aider = settings.model_copy(update={"engine": "aider"})
    assert engine_choice.choose(None, None, settings=aider, engines=ENGINES, env=env)[0] == "aider"


def test_default_engine_setting_reads_both_names(bare, monkeypatch, home):
    monkeypatch.setenv("TELECODER_DEFAULT_ENGINE", "codex")
    assert Settings(home=home).engine == "codex"
    monkeypatch.delenv("TELECODER_DEFAULT_ENGINE")
    monkeypatch.setenv("TELECODER_ENGINE", "gemini")
    assert Settings(home=home).engine == "gemini"


async def _accept(settings: Settings, repo: Path, **request: str):
    return await accept(
        Request(repo=str(repo), prompt="add a test for naturaldelta", **request),
        settings=settings,
        workspace=build_workspace(settings),
        engines=ENGINES,
        forges=build_forges(settings),
    )


async def test_submit_without_an_engine_is_never_the_shell(
    bare, home, monkeypatch, git_repo: GitRepo
):
    settings = no_default(home, bare)
    with pytest.raises(EngineNotFound, match="no engine named"):
        await _accept(settings, git_repo.path)
    fake_clis(bare, "claude")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    accepted = await _accept(settings, git_repo.path)
    assert (accepted.session.engine, accepted.session.engine_source) == (
        "claude-code",
        EngineSource.SETTINGS,
    )
    # The repository's .telecoder.yml names one: it is the session's engine from the start.
    (git_repo.path / ".telecoder.yml").write_text("engine: codex\n")
    git("add", ".telecoder.yml", cwd=git_repo.path)
    git("commit", "-q", "-m", "engine", cwd=git_repo.path)
    accepted = await _accept(settings, git_repo.path)
    assert (accepted.session.engine, accepted.session.engine_source) == ("codex", EngineSource.REPO)
    accepted = await _accept(settings, git_repo.path, engine="shell")  # asked for by name
    assert (accepted.session.engine, accepted.session.engine_source) == (
        "shell",
        EngineSource.REQUEST,
    )


def test_cli_refuses_with_exit_2_and_the_choices(bare, home, git_repo: GitRepo):
    env = cli_env(home, TELECODER_AGENT_PATH=str(bare), PATH=os.environ["PATH"])
    del env["TELECODER_DEFAULT_ENGINE"]
    done = telecoder("run", "--detach", "add a test", "--repo", str(git_repo.path), env=env)
    assert done.returncode == 2, done.stderr
    assert "no engine named" in done.stderr
    assert "--engine" in done.stderr
    assert done.stdout == ""  # nothing queued


async def test_api_refuses_with_422_and_the_form_preselects_no_engine(bare, home, store, git_repo):
    app = create_app(no_default(home, bare), store)
    async with client(app) as c:
        refused = await c.post(
            "/api/sessions", json={"repo": str(git_repo.path), "prompt": "add a test"}
        )
        form = await c.get("/new", headers={"accept": "text/html"})
    assert refused.status_code == 422
    assert "no engine named" in refused.text
    assert '<option value="" selected>' in form.text
    assert 'value="shell" selected' not in form.text
    assert "claude-code (not installed)" in form.text


# --- an engine that cannot run is refused at submit -------------------------------------------


async def test_an_engine_that_cannot_run_is_refused_unless_a_live_worker_offers_it(
    bare, home, monkeypatch, store, git_repo: GitRepo
):
    settings = no_default(home, bare)

    async def submit(engine: str):
        return await accept(
            Request(repo=str(git_repo.path), prompt="add a test", engine=engine),
            settings=settings,
            workspace=build_workspace(settings),
            engines=ENGINES,
            forges=build_forges(settings),
            fleet=engine_choice.Fleet(store, settings),
        )

    with pytest.raises(EngineUnavailable, match=r"`claude` is not installed.*make agents"):
        await submit("claude-code")
    fake_clis(bare, "claude")
    with pytest.raises(EngineUnavailable, match=r"ANTHROPIC_API_KEY.*config\.env"):
        await submit("claude-code")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    assert (await submit("claude-code")).session.engine == "claude-code"
    # Not here, but a live worker elsewhere runs codex: accepted, for that worker to claim.
    with pytest.raises(EngineUnavailable):
        await submit("codex")
    await store.workers.register("far-away", host="gpu-1", pid=1, capacity=1, engines=["codex"])
    assert (await submit("codex")).session.engine == "codex"
    assert (await submit("shell")).session.engine == "shell"  # nothing to look up
    # No key here, but the gateway has an endpoint that needs none: it hands the agent its key.
    fake_clis(bare, "pi")
    with pytest.raises(EngineUnavailable, match="telecoder endpoints add"):
        await submit("pi")
    await store.endpoints.add(EndpointRow(name="local", url="http://127.0.0.1:9", kind="ollama"))
    assert (await submit("pi")).session.engine == "pi"


async def test_the_api_refuses_an_engine_not_installed_with_422(bare, home, store, git_repo):
    app = create_app(no_default(home, bare), store)
    async with client(app) as c:
        refused = await c.post(
            "/api/sessions",
            json={"repo": str(git_repo.path), "prompt": "add a test", "engine": "codex"},
        )
    assert refused.status_code == 422
    assert "`codex` is not installed" in refused.text


def test_model_keys_in_config_env_reach_the_engines(bare, monkeypatch, tmp_path):
    home = tmp_path / "tc"
    home.mkdir()
    (home / "config.env").write_text(
        "TELECODER_LEASE_SECONDS=9\nOPENAI_API_KEY=sk-from-file\nANTHROPIC_API_KEY=sk-file\n"
        "UNRELATED_SECRET=nope\n"
    )
    monkeypatch.setenv("TELECODER_HOME", str(home))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-from-env")  # the environment wins
    monkeypatch.delenv("UNRELATED_SECRET", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "")  # restored (to unset) after the test
    settings = Settings.load()
    assert settings.lease_seconds == 9
    assert os.environ["OPENAI_API_KEY"] == "sk-from-file"
    assert os.environ["ANTHROPIC_API_KEY"] == "sk-from-env"
    assert "UNRELATED_SECRET" not in os.environ  # only the engines' variables
    fake_clis(bare, "codex")
    env = engine_choice.environment(settings.model_copy(update={"agent_path": str(bare)}))
    assert engine_choice.cannot_run("codex", env) is None
