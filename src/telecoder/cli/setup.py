"""``telecoder setup``: a wizard (questionary) or, with ``--non-interactive``, flags for every
answer; both write ``$TELECODER_HOME/config.env`` (mode 0600) through ``configfile``.

It checks what it can before writing: the GitHub token with ``GET /user`` (on
``--github-api-url``, else ``TELECODER_GITHUB_API_URL``), the model key's vendor from its prefix
(the variable it is kept under follows), the engine's CLI on the agents' path, the channels'
tokens, and whether the sandbox (bubblewrap) can start here. Secrets are read without echo and
never printed: the summary shows them masked.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from telecoder.cli import configfile
from telecoder.cli.exits import Exit, print_json
from telecoder.errors import BadInput, Conflict, ServerUnavailable, Unauthorized

# A model key's prefix -> the variable engines read it from (the longest prefix wins).
PROVIDERS: dict[str, tuple[str, str]] = {
    "sk-ant-": ("Anthropic", "ANTHROPIC_API_KEY"),
    "sk-proj-": ("OpenAI", "OPENAI_API_KEY"),
    "sk-": ("OpenAI", "OPENAI_API_KEY"),
    "AIza": ("Gemini", "GEMINI_API_KEY"),
}
# Each channel: the secret settings it needs ("" -> generated when not given).
CHANNELS: dict[str, tuple[str, ...]] = {
    "github": ("TELECODER_GITHUB_WEBHOOK_SECRET",),
    "telegram": ("TELECODER_TELEGRAM_BOT_TOKEN",),
    "slack": ("TELECODER_SLACK_BOT_TOKEN", "TELECODER_SLACK_APP_TOKEN"),
}
GENERATED = {"TELECODER_GITHUB_WEBHOOK_SECRET"}
LOOPBACK = ("127.0.0.1", "localhost", "::1")
ALWAYS_INSTALLED = ("shell", "builtin")


def detect_provider(key: str) -> tuple[str, str] | None:
    """(vendor, variable) for a model key, from its prefix; None when unknown."""
    for prefix in sorted(PROVIDERS, key=len, reverse=True):
        if key.startswith(prefix):
            return PROVIDERS[prefix]
    return None


def check_github_token(token: str, api_url: str, timeout: float = 10.0) -> str:
    """The login the token belongs to (``GET /user``); Unauthorized or ServerUnavailable."""
    import httpx

    url = f"{api_url.rstrip('/')}/user"
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json"}
    try:
        answer = httpx.get(url, headers=headers, timeout=timeout)
    except httpx.HTTPError as e:
        raise ServerUnavailable(f"cannot reach GitHub at {api_url}: {type(e).__name__}") from None
    if answer.status_code in (401, 403):
        raise Unauthorized(f"GitHub refused the token ({answer.status_code} from GET {url})")
    if answer.status_code != 200:
        raise ServerUnavailable(f"GET {url} answered {answer.status_code}")
    return str(answer.json().get("login") or "?")


@dataclass(frozen=True, slots=True)
class EngineRow:
    name: str
    binary: str
    path: str | None


def engine_rows(env: dict[str, str]) -> list[EngineRow]:
    """Each engine and where its CLI is (None: not installed); no CLI is started."""
    from telecoder import registry
    from telecoder.engines._support import find_binary

    rows = []
    for name in registry.names("engines"):
        engine = registry.create("engines", name)
        agents = getattr(engine, "agents", None)
        binaries = [b for b, _ in agents.values()] if agents else [getattr(engine, "binary", name)]
        found = [p for p in (find_binary(b, env) for b in binaries) if os.path.isabs(p)]
        rows.append(EngineRow(name, binaries[0], found[0] if found else None))
    return rows


def install_script() -> Path | None:
    """scripts/install-agents.sh of a source checkout (pip installs do not ship it)."""
    script = Path(__file__).resolve().parents[3] / "scripts" / "install-agents.sh"
    return script if script.is_file() else None


@dataclass
class Plan:
    """What setup will write, and what it found on the way."""

    changes: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    github_login: str | None = None
    provider: str | None = None
    sandbox: str | None = None  # the problem, None when the sandbox starts
    engines: dict[str, bool] = field(default_factory=dict)  # engine -> its CLI is installed

    def summary(self) -> dict[str, Any]:
        keys = configfile.known()
        return {
            "config": str(configfile.path()),
            "written": {n: configfile.masked(keys.get(n), v) for n, v in self.changes.items()},
            "github_login": self.github_login,
            "model_provider": self.provider,
            "engines_installed": [name for name, found in self.engines.items() if found],
            "sandbox": "ok" if self.sandbox is None else "unavailable",
            "sandbox_problem": self.sandbox,
            "notes": self.notes,
        }


def setup(
    non_interactive: Annotated[
        bool, typer.Option("--non-interactive", help="Ask nothing: take every answer from flags.")
    ] = False,
    github_token: Annotated[
        str | None, typer.Option(help="GitHub token (checked with GET /user).")
    ] = None,
    github_api_url: Annotated[
        str | None, typer.Option(help="GitHub API base (Enterprise, or a test server).")
    ] = None,
    skip_github: Annotated[
        bool, typer.Option("--skip-github", help="No GitHub token (local repositories only).")
    ] = False,
    model_key: Annotated[
        str | None,
        typer.Option(
            help="A model API key; its vendor is told by its prefix (sk-ant-, sk-, AIza)."
        ),
    ] = None,
    model_key_var: Annotated[
        str | None,
        typer.Option(help="The variable to keep --model-key under when its prefix is unknown."),
    ] = None,
    engine: Annotated[
        str | None, typer.Option(help="Default engine (see `telecoder engines`).")
    ] = None,
    channels: Annotated[
        str | None, typer.Option(help="Comma-separated: github, telegram, slack (or none).")
    ] = None,
    telegram_bot_token: Annotated[str | None, typer.Option(help="For --channels telegram.")] = None,
    slack_bot_token: Annotated[str | None, typer.Option(help="For --channels slack.")] = None,
    slack_app_token: Annotated[str | None, typer.Option(help="For --channels slack.")] = None,
    github_webhook_secret: Annotated[
        str | None, typer.Option(help="For --channels github (generated when not given).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address the server binds to.")] = None,
    port: Annotated[int | None, typer.Option(help="Port the server listens on.")] = None,
    api_token: Annotated[
        str | None,
        typer.Option(help="The server's API token (generated when --host is not a loopback)."),
    ] = None,
    install_agents: Annotated[
        bool, typer.Option("--install-agents", help="Install the pinned agent CLIs first.")
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Change an existing config.env without asking.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Set TeleCoder up: GitHub token, model key, engine, channels, port, into config.env."""
    from telecoder.settings import Settings

    given: dict[str, Any] = {
        "github_token": github_token,
        "github_api_url": github_api_url,
        "skip_github": skip_github,
        "model_key": model_key,
        "model_key_var": model_key_var,
        "engine": engine,
        "channels": channels,
        "TELECODER_TELEGRAM_BOT_TOKEN": telegram_bot_token,
        "TELECODER_SLACK_BOT_TOKEN": slack_bot_token,
        "TELECODER_SLACK_APP_TOKEN": slack_app_token,
        "TELECODER_GITHUB_WEBHOOK_SECRET": github_webhook_secret,
        "host": host,
        "port": port,
        "api_token": api_token,
        "install_agents": install_agents,
    }
    settings = Settings.load()
    existing = configfile.read()
    if non_interactive:
        if existing and not yes:
            raise Conflict(f"{configfile.path()} exists: pass --yes to change it")
        plan = _plan(given, settings)
    else:
        if not sys.stdin.isatty():
            raise BadInput("setup asks questions on a terminal: use --non-interactive and flags")
        from telecoder.cli.setup_wizard import ask

        answers = ask(given, settings, existing_config=bool(existing) and not yes)
        if answers is None:
            typer.echo("nothing written", err=True)
            raise typer.Exit(Exit.INTERRUPTED)
        plan = _plan(answers, settings)
    for name, value in plan.changes.items():
        configfile.check(configfile.resolve(name), value)
    configfile.update(dict(plan.changes))
    _report(plan, as_json)


def _plan(given: dict[str, Any], settings: Any) -> Plan:
    """Check every answer and turn it into config.env lines (BadInput, Unauthorized, …)."""
    plan = Plan()
    changes = plan.changes
    if given.get("install_agents"):
        _install_agents(plan)
    api_url = given.get("github_api_url")
    if api_url:
        changes["TELECODER_GITHUB_API_URL"] = api_url
    token = given.get("github_token")
    if token:
        plan.github_login = check_github_token(token, api_url or settings.github_api_url)
        changes["GITHUB_TOKEN"] = token
    elif not given.get("skip_github"):
        raise BadInput(
            "a GitHub token is needed to open pull requests: --github-token, or --skip-github"
        )
    key = given.get("model_key")
    if key:
        variable = given.get("model_key_var")
        found = detect_provider(key)
        if variable is None and found is None:
            raise BadInput(
                "the model key's vendor is not known by its prefix: name its variable with "
                "--model-key-var (e.g. OPENAI_API_KEY)"
            )
        plan.provider = found[0] if found and variable is None else "given"
        changes[variable or found[1]] = key  # type: ignore[index]
        plan.notes.append(
            "telecoder puts config.env's model keys into its environment when it starts "
            "(serve, worker, run); the gateway uses them, the agents get a per-session key"
        )
    rows = {r.name: r for r in engine_rows(dict(os.environ) | settings.engine_control_env())}
    plan.engines = {n: r.path is not None or n in ALWAYS_INSTALLED for n, r in rows.items()}
    name = given.get("engine")
    if name:
        if name not in rows:
            raise BadInput(f"unknown engine {name!r}; the engines: {', '.join(rows)}")
        if rows[name].path is None and name not in ALWAYS_INSTALLED:
            plan.notes.append(
                f"the {name} engine's CLI ({rows[name].binary}) is not installed: "
                "setup --install-agents, or put it on TELECODER_AGENT_PATH"
            )
        changes["TELECODER_ENGINE"] = name
    for channel in _channels(given.get("channels")):
        for variable in CHANNELS[channel]:
            value = given.get(variable)
            if not value and variable in GENERATED:
                value = secrets.token_urlsafe(32)
                plan.notes.append(
                    f"{variable} generated: give the same secret to the {channel} webhook"
                )
            if not value:
                flag = "--" + variable.removeprefix("TELECODER_").lower().replace("_", "-")
                raise BadInput(f"the {channel} channel needs {variable}: {flag}")
            changes[variable] = value
    bind = given.get("host")
    if bind:
        changes["TELECODER_HOST"] = bind
    if given.get("port") is not None:
        changes["TELECODER_PORT"] = str(given["port"])
    secret = given.get("api_token")
    if not secret and bind and bind not in LOOPBACK and settings.api_token is None:
        secret = secrets.token_urlsafe(32)
        plan.notes.append(
            f"TELECODER_API_TOKEN generated (the server listens on {bind}): it is in config.env"
        )
    if secret:
        changes["TELECODER_API_TOKEN"] = secret
    from telecoder.runtimes.sandbox import unavailable

    plan.sandbox = unavailable(settings.sandbox_bwrap)
    return plan


def _channels(text: str | None) -> list[str]:
    names = [c.strip().lower() for c in (text or "").split(",") if c.strip()]
    names = [c for c in names if c != "none"]
    unknown = [c for c in names if c not in CHANNELS]
    if unknown:
        raise BadInput(f"unknown channel {unknown[0]!r}; the channels: {', '.join(CHANNELS)}")
    return names


def _install_agents(plan: Plan) -> None:
    script = install_script()
    if script is None:
        plan.notes.append(
            "scripts/install-agents.sh is in a source checkout only: agents not installed"
        )
        return
    done = subprocess.run(["bash", str(script)], check=False)
    if done.returncode != 0:
        raise BadInput(f"installing the agents failed (exit {done.returncode}): see above")
    tools = script.parent.parent / ".tools" / "bin"
    plan.changes["TELECODER_AGENT_PATH"] = str(tools)


def _report(plan: Plan, as_json: bool) -> None:
    summary = plan.summary()
    if as_json:
        print_json(summary)
        return
    typer.echo(f"wrote {summary['config']} (mode 0600):")
    for name, value in summary["written"].items():
        typer.echo(f"  {name}={value}")
    if plan.github_login:
        typer.echo(f"GitHub: the token belongs to {plan.github_login}")
    if plan.provider:
        typer.echo(f"model key: {plan.provider}")
    typer.echo("engines installed: " + ", ".join(summary["engines_installed"]))
    typer.echo(f"sandbox: {'ok' if plan.sandbox is None else plan.sandbox}")
    for note in plan.notes:
        typer.echo(f"note: {note}")
    typer.echo("next: `telecoder serve` (or `telecoder service install --user`)")
