"""Settings from the environment (``TELECODER_*``) and ``$TELECODER_HOME/config.env``.

Built once at an edge (``Settings.load()`` in the CLI or the server) and passed down; tests build
their own ``Settings(...)``. The environment wins over the file. The fields of each area are in a
module of their own (``channels``, ``sandbox``, ``gateway``, ``server``, ``coordination``); here are
the core's, and the checks that span areas.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from telecoder.settings.channels import ChannelSettings
from telecoder.settings.coordination import CoordinationSettings
from telecoder.settings.envfile import absolute_path_list, agent_path_of_file, export_engine_keys
from telecoder.settings.gateway import GatewaySettings
from telecoder.settings.sandbox import DEFAULT_REGISTRIES, NetworkSetting, SandboxSettings
from telecoder.settings.server import ServerSettings

__all__ = [
    "DEFAULT_ENGINE_ENV",
    "DEFAULT_ENV_ALLOW",
    "DEFAULT_HOME",
    "DEFAULT_REGISTRIES",
    "NetworkSetting",
    "Settings",
    "absolute_path_list",
    "export_engine_keys",
]

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


def _default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Settings(
    ChannelSettings,
    SandboxSettings,
    GatewaySettings,
    ServerSettings,
    CoordinationSettings,
    BaseSettings,
):
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
            settings = agent_path_of_file(settings, env_file, overrides)
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
