"""Settings from the environment (``TELECODER_*``) and ``$TELECODER_HOME/config.env``.

Built once at an edge (``Settings.load()`` in the CLI or the server) and passed down; tests build
their own ``Settings(...)``. The environment wins over the file.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_HOME = Path("~/.telecoder")

# What an engine process may see of the operator's environment, unless more is allowed.
DEFAULT_ENV_ALLOW = (
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TERM",
    "SHELL",
    "USER",
    "LOGNAME",
)


# Credentials and endpoints of the agents' vendors: handed to engines, which pass on what their
# CLI needs. Nothing else of the operator's secrets (GITHUB_TOKEN, …) reaches an agent.
DEFAULT_ENGINE_ENV = (
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "GOOGLE_GEMINI_BASE_URL",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "OLLAMA_HOST",
)


# Package registries of the common ecosystems: where setup commands may reach by default.
DEFAULT_REGISTRIES = (
    "pypi.org",
    "files.pythonhosted.org",
    "registry.npmjs.org",
    "registry.yarnpkg.com",
    "proxy.golang.org",
    "sum.golang.org",
    "crates.io",
    "index.crates.io",
    "static.crates.io",
    "rubygems.org",
    "repo.maven.apache.org",
    "repo1.maven.org",
    "plugins.gradle.org",
    "services.gradle.org",
    "api.nuget.org",
    "repo.packagist.org",
    "deb.debian.org",
    "security.debian.org",
    "archive.ubuntu.com",
    "security.ubuntu.com",
)

NetworkSetting = Literal["none", "model", "allowlist", "open"]


def _bytes(value: Any) -> Any:
    """``512m``, ``4g``, ``1073741824`` -> bytes; empty or ``0``: no limit."""
    if value is None or isinstance(value, int):
        return value or None
    text = str(value).strip().lower()
    if not text or text in ("0", "none", "off"):
        return None
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    factor = units.get(text[-1], 1)
    number = text[:-1] if text[-1] in units else text
    try:
        return int(float(number.removesuffix("i").removesuffix("b")) * factor)
    except ValueError:
        raise ValueError(f"not a size: {value!r} (e.g. 512m, 4g)") from None


def _cache_size(value: Any) -> Any:
    """A size like ``_bytes``, where ``0`` (or empty) turns the cache off."""
    return _bytes(value) or 0


def _default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TELECODER_", extra="ignore", populate_by_name=True
    )

    home: Path = Field(default=DEFAULT_HOME, description="Where TeleCoder keeps its state.")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the store; default SQLite at $TELECODER_HOME/telecoder.db.",
    )
    db_pool_size: int = Field(
        default=8,
        ge=1,
        description="PostgreSQL: connections each process keeps open to the database.",
    )
    db_max_overflow: int = Field(
        default=16,
        ge=0,
        description="PostgreSQL: connections a process may open beyond the pool under load "
        "(a process holds at most pool + overflow, plus one listening connection).",
    )
    workspace_dir: Path | None = Field(
        default=None, description="Where worktrees are made; default $TELECODER_HOME/worktrees."
    )
    engine: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "TELECODER_DEFAULT_ENGINE", "TELECODER_ENGINE", "engine", "default_engine"
        ),
        description="Engine used when neither the task nor the repository's .telecoder.yml names "
        "one (also TELECODER_DEFAULT_ENGINE); none: the first agent CLI installed with its key.",
    )
    forge: str = Field(
        default="auto", description="auto (github for GitHub remotes, else local), local, github."
    )
    push_failed: bool = Field(
        default=False,
        description=(
            "Push the work of a session whose checks kept failing (verify_failed) to branch "
            "telecoder/<id>-failed, no pull request; .telecoder.yml push_failed overrides it."
        ),
    )
    lease_seconds: float = Field(default=30.0, gt=0, description="Length of a worker's lease.")
    heartbeat_seconds: float = Field(default=5.0, gt=0, description="How often leases renew.")
    poll_seconds: float = Field(default=1.0, gt=0, description="Idle worker's poll interval.")
    worker_concurrency: int = Field(default=2, ge=1, description="Sessions a worker runs at once.")
    worker_id: str = Field(default_factory=_default_worker_id, description="This worker's name.")
    worker_engines: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Engines this worker runs (comma-separated); empty: every registered one.",
    )
    max_running: int = Field(
        default=0, ge=0, description="Sessions running at once over all workers (0: no limit)."
    )
    max_running_per_repo: int = Field(
        default=0, ge=0, description="Sessions of one repository running at once (0: no limit)."
    )
    max_attempts: int = Field(default=3, ge=1, description="Attempts before a session is dead.")
    retry_backoff_seconds: float = Field(
        default=2.0,
        gt=0,
        description="Wait before a failed attempt's retry; doubles with each attempt (capped at "
        "300 s, ±25 % jitter).",
    )
    timeout_seconds: float = Field(default=3600.0, gt=0, description="Wall-clock limit a session.")
    budget_usd: float | None = Field(
        default=None,
        ge=0,
        description="A session's budget in dollars when neither the task nor the repository's "
        ".telecoder.yml sets one; reached, the session waits blocked (none: no budget).",
    )
    budget_daily_usd: float | None = Field(
        default=None,
        ge=0,
        description="What all sessions together may cost per UTC day before new ones wait "
        "(`telecoder budgets set` overrides it; none: no limit).",
    )
    budget_monthly_usd: float | None = Field(
        default=None,
        ge=0,
        description="What all sessions together may cost per UTC month before new ones wait "
        "(`telecoder budgets set` overrides it; none: no limit).",
    )
    stall_seconds: float = Field(
        default=600.0, gt=0, description="Stop an agent that prints nothing for this long."
    )
    kill_grace_seconds: float = Field(default=5.0, ge=0, description="SIGTERM to SIGKILL.")
    worktree_retention_seconds: float = Field(
        default=0.0, ge=0, description="Keep finished worktrees this long (0: remove at once)."
    )
    worktree_pool: int = Field(
        default=4,
        ge=0,
        description="Worktrees kept ready per repository: finished ones, and ones a worker "
        "makes in the background at the default branch's head (0: off).",
    )
    git_author_name: str = Field(default="TeleCoder", description="Author of TeleCoder commits.")
    git_author_email: str = Field(default="telecoder@localhost", description="Author's e-mail.")
    # NoDecode: a comma-separated string, not JSON, reaches ``_split``.
    env_allow: Annotated[tuple[str, ...], NoDecode] = Field(
        default=DEFAULT_ENV_ALLOW,
        description="Environment variables passed to engines (comma-separated).",
    )
    engine_env: Annotated[tuple[str, ...], NoDecode] = Field(
        default=DEFAULT_ENGINE_ENV,
        description="Model endpoint and key variables handed to engines (comma-separated).",
    )
    agent_path: str | None = Field(
        default=None,
        description="Directories searched for agent CLIs before PATH (like PATH: colon-separated).",
    )
    model_retries: int = Field(
        default=2, ge=0, description="How often an agent CLI may retry a failed model request."
    )
    builtin_max_iterations: int | None = Field(
        default=None,
        ge=1,
        description="Model turns the builtin agent may take (default by tier: 5/10/20).",
    )
    builtin_token_budget: int | None = Field(
        default=None, ge=1, description="Input+output tokens a builtin agent run may use."
    )
    builtin_wall_seconds: float | None = Field(
        default=None, gt=0, description="Seconds a builtin agent run may take."
    )
    builtin_command_timeout: float | None = Field(
        default=None, gt=0, description="Seconds a builtin agent's run_command may take (120)."
    )
    # NoDecode: ``model=1/5/0.1/1.25,…`` reaches ``_prices``, not a JSON decoder.
    prices: Annotated[dict[str, tuple[float, ...]], NoDecode] = Field(
        default_factory=dict,
        description="Model prices overriding the bundled ones: comma-separated "
        "model=input/output[/cache-read[/cache-write]], USD per million tokens.",
    )
    acp_command: str | None = Field(
        default=None, description="Command line of any ACP agent, for --engine acp."
    )
    chat_idle_seconds: float = Field(
        default=3600.0, gt=0, description="A chat waiting this long for a message is ended."
    )
    raw_log_days: float = Field(
        default=7.0,
        ge=0,
        description="Keep every line the agent CLIs print this many days (0: do not keep them).",
    )
    max_events: int = Field(
        default=20_000,
        ge=100,
        description=(
            "Events one attempt may record; past it, output is dropped (status, progress, errors, "
            "checks, usage and the result are always kept) and one output_truncated event says so."
        ),
    )
    max_event_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=64 * 1024,
        description="Characters of event text one attempt may record before output is dropped.",
    )
    github_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("TELECODER_GITHUB_TOKEN", "GITHUB_TOKEN"),
        description="Token for pushing to GitHub and opening pull requests.",
    )
    github_api_url: str = Field(
        default="https://api.github.com", description="GitHub REST API base (Enterprise: yours)."
    )
    github_app_id: str | None = Field(
        default=None,
        description="GitHub App id: act as the App (installation tokens) instead of a token.",
    )
    github_app_private_key: SecretStr | None = Field(
        default=None, description="The GitHub App's private key (PEM)."
    )
    github_app_private_key_file: Path | None = Field(
        default=None, description="A file holding the GitHub App's private key (PEM)."
    )
    github_webhook_secret: SecretStr | None = Field(
        default=None,
        description="Secret of the GitHub webhook (App or repository): POST /api/webhooks/github "
        "verifies X-Hub-Signature-256 with it; unset, the endpoint answers 404.",
    )
    github_allowed_users: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="GitHub logins that may trigger sessions without write permission "
        "(comma-separated).",
    )
    github_label: str = Field(
        default="telecoder", description="Labelling an issue with it starts a session."
    )
    github_handle: str = Field(
        default="telecoder", description="@<handle> in an issue or comment starts a session."
    )
    github_denied_reply: bool = Field(
        default=False,
        description="Reply to a GitHub user without write permission who asks for a change.",
    )
    github_login: str | None = Field(
        default=None,
        description="TeleCoder's own GitHub login (e.g. myapp[bot]): its comments never trigger.",
    )
    # --- Telegram (see README, "Telegram") ---
    telegram_bot_token: SecretStr | None = Field(
        default=None,
        description="The Telegram bot's token (from @BotFather): set, telecoder serve answers on "
        "Telegram (long polling, or the webhook when TELECODER_TELEGRAM_WEBHOOK_SECRET is set).",
    )
    telegram_api_url: str = Field(
        default="https://api.telegram.org",
        description="The Telegram Bot API: methods at {url}/bot{token}/{method}.",
    )
    telegram_allowed_users: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Telegram user ids that may use the bot (comma-separated); none: nobody.",
    )
    telegram_allowed_chats: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Telegram group chat ids the bot works in (comma-separated); none: only "
        "private chats with allowed users.",
    )
    telegram_webhook_secret: SecretStr | None = Field(
        default=None,
        description="Webhook mode: POST /api/channels/telegram/webhook checks "
        "X-Telegram-Bot-Api-Secret-Token against it, and serve does not long-poll.",
    )
    public_url: str | None = Field(
        default=None,
        description="The server's address as users reach it: links to sessions in replies.",
    )
    # --- ask for help / notifications ---
    notify_me: str | None = Field(
        default=None,
        description="Whom --notify slack:@me (CLI, API) means: your ids, e.g. "
        "slack:U123,telegram:456.",
    )
    # --- Slack (README, "Slack") ---
    slack_bot_token: SecretStr | None = Field(
        default=None,
        description="The Slack app's bot token (xoxb-…): set, Slack is a channel.",
    )
    slack_signing_secret: SecretStr | None = Field(
        default=None,
        description="The Slack app's signing secret: POST /api/channels/slack/events and "
        "/actions verify X-Slack-Signature with it; unset, they answer 404.",
    )
    slack_api_url: str = Field(
        default="https://slack.com/api/", description="Slack's Web API base (tests: a fake)."
    )
    slack_app_token: SecretStr | None = Field(
        default=None,
        description="The Slack app-level token (xapp-…): set, events come over Socket Mode "
        "(no public URL needed).",
    )
    # --- Linear and Jira (README, "Linear" and "Jira") ---
    linear_webhook_secret: SecretStr | None = Field(
        default=None,
        description="Signing secret of the Linear webhook: POST /api/channels/linear/webhook "
        "verifies Linear-Signature with it; unset (or no API key), the endpoint answers 404.",
    )
    linear_api_key: SecretStr | None = Field(
        default=None, description="Linear API key TeleCoder comments with (Authorization header)."
    )
    linear_api_url: str = Field(
        default="https://api.linear.app/graphql", description="Linear's GraphQL endpoint."
    )
    linear_state: str = Field(
        default="Ready for Dev", description="A Linear issue entering this state starts a session."
    )
    linear_label: str = Field(
        default="telecoder", description="A Linear issue given this label starts a session."
    )
    jira_webhook_secret: SecretStr | None = Field(
        default=None,
        description="Secret of the Jira webhook: POST /api/channels/jira/webhook verifies "
        "X-Hub-Signature with it; unset (or no URL, email, token), the endpoint answers 404.",
    )
    jira_url: str | None = Field(
        default=None, description="The Jira site, e.g. https://acme.atlassian.net."
    )
    jira_email: str | None = Field(
        default=None, description="The Atlassian account TeleCoder comments as (basic auth)."
    )
    jira_api_token: SecretStr | None = Field(
        default=None, description="That account's API token (basic auth with the email)."
    )
    jira_status: str = Field(
        default="Ready for Dev", description="A Jira issue moved to this status starts a session."
    )
    jira_label: str = Field(
        default="telecoder", description="A Jira issue given this label starts a session."
    )
    # --- the sandbox (see README, "Security model") ---
    runtime: str = Field(
        default="sandbox" if sys.platform == "linux" else "local",
        description="Where agents run: sandbox (bubblewrap, the default on Linux), docker, "
        "local (no isolation: unsafe).",
    )
    sandbox_bwrap: str = Field(
        default="bwrap", description="The bubblewrap program the sandbox runtime runs."
    )
    sandbox_memory: Annotated[int | None, BeforeValidator(_bytes)] = Field(
        default=4 << 30, description="Memory of one sandbox (e.g. 4g; 0: no limit)."
    )
    sandbox_pids: int | None = Field(
        default=1024, ge=0, description="Processes in one sandbox at once (0: no limit)."
    )
    sandbox_file_size: Annotated[int | None, BeforeValidator(_bytes)] = Field(
        default=2 << 30, description="Largest file a sandboxed process may write (0: no limit)."
    )
    worktree_max_bytes: Annotated[int | None, BeforeValidator(_bytes)] = Field(
        default=10 << 30,
        description="What a worktree may hold while its agent runs (e.g. 10g; 0: no cap).",
    )
    cache_max: Annotated[int, BeforeValidator(_cache_size)] = Field(
        default=10 << 30,
        description="Total size of the setup cache (e.g. 10G, 500M; 0: no setup cache).",
    )
    sandbox_read: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="More directories a sandbox may read (comma-separated), e.g. a toolchain.",
    )
    docker_image: str | None = Field(
        default=None,
        description="The image of the docker runtime (your toolchains; needs python3 for a "
        "network policy other than none).",
    )
    docker_host: str = Field(
        default="unix:///var/run/docker.sock",
        validation_alias=AliasChoices("TELECODER_DOCKER_HOST", "DOCKER_HOST"),
        description="The Docker Engine API of the docker runtime: unix:///path or tcp://host:port.",
    )
    docker_env: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Host environment variables the docker runtime passes into its containers "
        "(comma-separated names), e.g. a service CLI's token.",
    )
    network_policy: NetworkSetting = Field(
        default="model", description="The agent's network: none, model, allowlist, open."
    )
    setup_network_policy: NetworkSetting = Field(
        default="allowlist", description="Network of .telecoder.yml setup commands."
    )
    verify_network_policy: NetworkSetting = Field(
        default="none", description="Network of .telecoder.yml verify commands and checks."
    )
    network_allow: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Hosts reachable under the allowlist policy (comma-separated: host, "
        "*.domain, host:port), added to the repository's `network.allow`.",
    )
    network_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Names the egress proxy resolves itself (comma-separated name=address), "
        "e.g. a model endpoint on a private name.",
    )
    network_registries: Annotated[tuple[str, ...], NoDecode] = Field(
        default=DEFAULT_REGISTRIES,
        description="Package registries setup commands may reach (comma-separated).",
    )
    model_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(
            "api.anthropic.com:443",
            "api.openai.com:443",
            "generativelanguage.googleapis.com:443",
        ),
        description="Model endpoints agents may reach besides the *_BASE_URL they are given "
        "(with the gateway on, none: agents reach models only through it).",
    )
    # --- the model gateway (see README, "Model gateway") ---
    gateway: bool = Field(
        default=True,
        description="Agents reach models only through TeleCoder's gateway, with a per-attempt "
        "key; the real keys stay with the worker, which meters every request.",
    )
    gateway_host: str = Field(
        default="127.0.0.1", description="Address the gateway listens on (loopback)."
    )
    gateway_port: int = Field(
        default=0, ge=0, le=65535, description="Port of the gateway (0: a free port)."
    )
    # --- the server (telecoder serve) ---
    host: str = Field(default="127.0.0.1", description="Address the server binds to.")
    port: int = Field(default=7080, ge=0, le=65535, description="Port the server listens on.")
    api_token: SecretStr | None = Field(
        default=None,
        description=(
            "API tokens, comma-separated, each `name:token` or a bare token. None and a loopback "
            "bind: the server is open (with a warning); none and any other bind: it won't start."
        ),
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description=(
            "Log lines: text, or json (one object a line: ts, level, logger, msg, session_id, "
            "exc; secrets masked)."
        ),
    )
    log_file: Path | None = Field(
        default=None,
        description=(
            "Also write the log to this file, rotated by TeleCoder itself (log_max_bytes, "
            "log_backups); none: standard error only (the journal under systemd)."
        ),
    )
    log_max_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1, description="Size at which the log file is rotated."
    )
    log_backups: int = Field(
        default=5, ge=1, description="Rotated log files kept (file.1 … file.N)."
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description=(
            "A bearer token that may read GET /metrics and nothing else (API tokens may too; "
            "an open server's /metrics is open on loopback)."
        ),
    )
    max_body_bytes: int = Field(
        default=1 << 20, ge=1024, description="Largest request body the server accepts (413)."
    )
    rate_limit_per_minute: int = Field(
        default=120, ge=0, description="Writes per token per minute before 429 (0: no limit)."
    )
    # --- the model gateway: rate limits, endpoints, routing ---
    gateway_retry_seconds: float = Field(
        default=120.0,
        ge=0,
        description="How long the gateway waits out an endpoint's rate limit (429/503/529, "
        "honouring Retry-After) for one request before the agent gets the 429 and the session "
        "is requeued (rate_limited).",
    )
    endpoint_check_seconds: float = Field(
        default=60.0, gt=0, description="How often model endpoints are checked (health, models)."
    )
    endpoint_failures: int = Field(
        default=3,
        ge=1,
        description="Requests to an endpoint failing in a row (no answer, 5xx) that mark it "
        "unhealthy until a request or a check succeeds.",
    )
    tier_trivial: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Models for trivial tasks, in fallback order: endpoint:model entries, "
        "comma-separated (e.g. anthropic:claude-haiku-4-5,openai:gpt-5-mini).",
    )
    tier_standard: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="Models for standard tasks (endpoint:model, comma-separated)."
    )
    tier_complex: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="Models for complex tasks (endpoint:model, comma-separated)."
    )
    bus_poll_seconds: float = Field(
        default=0.025, gt=0, description="How often the live-event reader looks for new events."
    )
    bus_notify: bool = Field(
        default=True,
        description="PostgreSQL: event appends send NOTIFY and the live-event reader wakes on "
        "it, polling only every TELECODER_BUS_FALLBACK_SECONDS (off: it polls every "
        "TELECODER_BUS_POLL_SECONDS).",
    )
    bus_fallback_seconds: float = Field(
        default=1.0,
        gt=0,
        description="PostgreSQL with TELECODER_BUS_NOTIFY: how often the live-event reader "
        "looks anyway (a lost notice delays events by this much at most).",
    )
    # --- chains (README, "Chains") ---
    chain_max_depth: int = Field(
        default=3,
        ge=0,
        le=100,
        description="Deepest follow-up of a chain (the root is depth 0); deeper ones are refused.",
    )
    # --- cron jobs (telecoder.scheduler) ---
    jobs_poll_seconds: float = Field(
        default=1.0, gt=0, description="How often the scheduler looks for jobs' due slots."
    )
    jobs_max_failures: int = Field(
        default=3, ge=1, description="Consecutive failed runs after which a job pauses itself."
    )
    # --- backups (telecoder.backups) ---
    backup_schedule: str | None = Field(
        default=None,
        description="When `serve` backs the database up: cron, @daily, @every 6h (unset: never).",
    )
    backup_dir: Path | None = Field(
        default=None, description="Where scheduled backups go (default: $TELECODER_HOME/backups)."
    )
    backup_keep: int = Field(
        default=3, ge=1, description="Scheduled backups kept; older ones are deleted."
    )
    # --- notifications out (subscriptions) ---
    notify_poll_seconds: float = Field(
        default=1.0, gt=0, description="How often the deliverer looks for notifications to send."
    )
    notify_timeout_seconds: float = Field(
        default=10.0, gt=0, description="How long a subscriber has to answer one notification."
    )
    notify_max_tries: int = Field(
        default=10, ge=1, description="Tries of one notification before it fails for good."
    )
    notify_backoff_seconds: float = Field(
        default=5.0, gt=0, description="Wait after a notification's first failed try; doubles."
    )
    notify_backoff_max_seconds: float = Field(
        default=900.0, gt=0, description="Longest wait between two tries of a notification."
    )
    # --- the channels' dispatcher (see README, "Repositories and the dispatcher") ---
    dispatcher_model: str | None = Field(
        default=None,
        description="A small model that decides what a channel message asks for (run, answer, "
        "ask, ignore); unset: the rule-based dispatcher.",
    )
    dispatcher_base_url: str = Field(
        default="https://api.openai.com/v1",
        description="OpenAI-compatible API base of the dispatcher's model "
        "({url}/chat/completions).",
    )
    dispatcher_api_key: SecretStr | None = Field(
        default=None, description="API key of the dispatcher's endpoint (a Bearer token)."
    )
    dispatcher_per_minute: int = Field(
        default=10,
        ge=0,
        description="Model calls per channel user per minute; past it a message is ignored "
        "(0: no limit).",
    )
    # --- goals: the planner that decomposes a goal into a plan (see README, "Goals") ---
    planner_model: str | None = Field(
        default=None,
        description="The model that decomposes a goal into a plan of tasks; unset: goals need "
        "a plan file (goals approve ID --edit plan.yaml).",
    )
    planner_base_url: str = Field(
        default="https://api.openai.com/v1",
        description="OpenAI-compatible API base of the planner's model ({url}/chat/completions).",
    )
    planner_api_key: SecretStr | None = Field(
        default=None, description="API key of the planner's endpoint (a Bearer token)."
    )
    planner_timeout_seconds: float = Field(
        default=120.0, gt=0, description="Seconds one planner call may take."
    )

    # --- best of N: the judge of the candidates (see README, "Best of N") ---
    judge_model: str | None = Field(
        default=None,
        description="The model that compares a best-of-N run's passing candidates' diffs and "
        "names the winner; unset: the smallest passing diff wins.",
    )
    judge_base_url: str = Field(
        default="https://api.openai.com/v1",
        description="OpenAI-compatible API base of the judge's model ({url}/chat/completions).",
    )
    judge_api_key: SecretStr | None = Field(
        default=None, description="API key of the judge's endpoint (a Bearer token)."
    )

    # --- councils and review stages (see README, "Council review") ---
    council_reviewers: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="A council's reviewers, comma-separated, each ENGINE or ENGINE:MODEL "
        "(three by default; empty: three different engines of those installed, else the "
        "default engine three times).",
    )

    # --- memory (see README, "Memory") ---
    memory: bool = Field(
        default=True,
        description="Remember finished sessions and give the next session of the same "
        "repository the most relevant ones (on/off).",
    )
    memory_top_k: int = Field(
        default=3, ge=1, le=20, description="Memories a new session is given at most."
    )
    memory_embedder: str = Field(
        default="wordllama",
        description="What embeds memories for recall by meaning: wordllama (offline, the "
        "memory extra), none (full-text only), or an OpenAI-compatible API base "
        "(https://…/v1: POST {url}/embeddings).",
    )
    memory_embedder_model: str | None = Field(
        default=None, description="The model of that embeddings API (needed with a URL)."
    )
    memory_embedder_key_env: str | None = Field(
        default=None,
        description="The environment variable holding that API's key (a Bearer token; the key "
        "itself is never a setting).",
    )
    # The model that writes a finished session's summary (``remembering``).
    memory_model: str | None = Field(
        default=None,
        description="A cheap model that writes what a finished session taught (its memory); "
        "unset: the summary is taken from the session's outcome.",
    )
    memory_base_url: str = Field(
        default="https://api.openai.com/v1",
        description="OpenAI-compatible API base of the memory model ({url}/chat/completions).",
    )
    memory_api_key: SecretStr | None = Field(
        default=None, description="API key of the memory model's endpoint (a Bearer token)."
    )

    @field_validator(
        "env_allow",
        "github_allowed_users",
        "telegram_allowed_users",
        "telegram_allowed_chats",
        "engine_env",
        "worker_engines",
        "council_reviewers",
        "sandbox_read",
        "docker_env",
        "network_allow",
        "network_hosts",
        "network_registries",
        "model_hosts",
        "tier_trivial",
        "tier_standard",
        "tier_complex",
        mode="before",
    )
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("memory_embedder")
    @classmethod
    def _embedder(cls, value: str) -> str:
        value = value.strip()
        if value.lower() in ("wordllama", "none"):
            return value.lower()
        if value.startswith(("http://", "https://")):
            return value.rstrip("/")
        raise ValueError(f"not an embedder: {value!r} (wordllama, none, or https://…/v1)")

    @model_validator(mode="after")
    def _embedder_model(self) -> Settings:
        if self.memory_embedder.startswith("http") and not self.memory_embedder_model:
            raise ValueError(
                "TELECODER_MEMORY_EMBEDDER is an embeddings API: name its model in "
                "TELECODER_MEMORY_EMBEDDER_MODEL"
            )
        return self

    @field_validator("prices", mode="before")
    @classmethod
    def _prices(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        table: dict[str, tuple[float, ...]] = {}
        for entry in (part.strip() for part in value.split(",")):
            if not entry:
                continue
            model, _, text = entry.partition("=")
            try:
                numbers = tuple(float(n) for n in text.split("/"))
            except ValueError:
                numbers = ()
            if not model.strip() or not 2 <= len(numbers) <= 4 or min(numbers) < 0:
                raise ValueError(
                    f"not a price: {entry!r} (model=input/output[/cache-read[/cache-write]], "
                    "USD per million tokens, e.g. my-model=1.0/5.0/0.1/1.25)"
                )
            table[model.strip()] = numbers
        return table

    @field_validator("agent_path", mode="after")
    @classmethod
    def _absolute_dirs(cls, value: str | None) -> str | None:
        """Relative directories (``.tools/bin``) as absolute ones, against the directory the
        settings are loaded in: engines run elsewhere (their worktree, a sandbox)."""
        return absolute_path_list(value, Path.cwd()) if value else value

    @field_validator("home", "workspace_dir", "backup_dir", "log_file", mode="after")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser().absolute() if value is not None else None

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Settings from the environment and the config file under the home it names."""
        home = Path(os.environ.get("TELECODER_HOME", str(DEFAULT_HOME))).expanduser()
        env_file = home / "config.env"
        files: Any = (env_file,) if env_file.is_file() else None
        settings = cls(_env_file=files, **overrides)
        if files:
            export_engine_keys(env_file, settings.engine_env)
            settings = _agent_path_of_file(settings, env_file, overrides)
        return settings

    @property
    def store_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'telecoder.db'}"

    @property
    def worktrees(self) -> Path:
        return self.workspace_dir or self.home / "worktrees"

    @property
    def mirrors(self) -> Path:
        return self.home / "mirrors"

    @property
    def engine_homes(self) -> Path:
        return self.home / "engines"

    @property
    def sandbox_pids_limit(self) -> int | None:
        return self.sandbox_pids or None

    @property
    def hooks_dir(self) -> Path:
        """Where inbound webhooks are defined, one ``<name>.yaml`` each."""
        return self.home / "hooks"

    @property
    def templates_dir(self) -> Path:
        """Operators' prompt templates, one ``<name>.yaml`` each (besides the shipped ones)."""
        return self.home / "templates"

    @property
    def jobs_dir(self) -> Path:
        """Cron jobs, one ``<name>.yaml`` each."""
        return self.home / "jobs"

    @property
    def raw_logs(self) -> Path:
        return self.home / "logs"

    @property
    def setup_cache_dir(self) -> Path:
        """The setup cache's entries, one directory per key (``setupcache``)."""
        return self.home / "cache" / "setup"

    def engine_control_env(self) -> dict[str, str]:
        """TeleCoder's own settings for engines, as the variables engines read from their task:
        where the agent CLIs are, how often they retry the model, a custom ACP agent, the builtin
        agent's limits."""
        env = {"TELECODER_MODEL_RETRIES": str(self.model_retries)}
        if self.agent_path:
            env["TELECODER_AGENT_PATH"] = self.agent_path
        if self.acp_command:
            env["TELECODER_ACP_COMMAND"] = self.acp_command
        for name in ("max_iterations", "token_budget", "wall_seconds", "command_timeout"):
            if (value := getattr(self, f"builtin_{name}")) is not None:
                env[f"TELECODER_BUILTIN_{name.upper()}"] = str(value)
        return env


def export_engine_keys(env_file: Path, names: tuple[str, ...]) -> list[str]:
    """Put the model endpoints and keys of ``config.env`` (``TELECODER_ENGINE_ENV``'s names:
    ANTHROPIC_API_KEY, OPENAI_API_KEY, …) into this process's environment, where the gateway
    and the engines read them; the environment wins. Returns the names it set."""
    from dotenv import dotenv_values

    found = dotenv_values(env_file)
    done = []
    for name in names:
        value = found.get(name)
        if value and not os.environ.get(name):
            os.environ[name] = value
            done.append(name)
    return done


def absolute_path_list(value: str, base: Path) -> str:
    """A colon-separated list of directories, each made absolute against ``base``."""
    parts = [p for p in value.split(os.pathsep) if p]
    return os.pathsep.join(os.path.normpath(base / Path(p).expanduser()) for p in parts)


def _agent_path_of_file(settings: Settings, env_file: Path, overrides: dict[str, Any]) -> Settings:
    """A relative ``TELECODER_AGENT_PATH`` written in ``config.env`` is relative to that file."""
    from dotenv import dotenv_values

    if "agent_path" in overrides or os.environ.get("TELECODER_AGENT_PATH"):
        return settings
    raw = dotenv_values(env_file).get("TELECODER_AGENT_PATH")
    if not raw:
        return settings
    fixed = absolute_path_list(raw, env_file.parent)
    return settings.model_copy(update={"agent_path": fixed})
