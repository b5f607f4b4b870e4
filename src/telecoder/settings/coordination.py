"""The settings of work that spans sessions: chains, cron jobs, backups, goals' planner,
best-of judge, councils, and memory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import NoDecode


class CoordinationSettings(BaseModel):
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
