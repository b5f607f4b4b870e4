"""``RunCreate``: the body of ``POST /api/runs`` (the run it answers is ``routes.runs.RunDetail``,
the shape of ``telecoder runs show --json``: ``telecoder.runs.run_json``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from telecoder.domain import Mode
from telecoder.server.schemas import ENGINE_NAME, SESSION_REF, Text, _In

Repo = Annotated[Text, Field(min_length=1, max_length=4096)]


class RunCreate(_In):
    """A run to make — exactly one of: ``repos`` (a task over each repository: a fan-out),
    ``tasks`` (a plan: tasks with dependencies, each ``{id, prompt, repo?, engine?, model?,
    base?, depends_on?, after_any?}``; ``repo``/``engine`` are their defaults) or ``after``
    (one task on ``repo`` that starts once that session succeeded, in its run)."""

    prompt: Text | None = Field(
        default=None, max_length=100_000, description="The task (not with ``tasks``)."
    )
    repos: list[Repo] | None = Field(
        default=None, min_length=1, max_length=1000, description="Repositories: one session each."
    )
    tasks: list[dict[str, Any]] | None = Field(
        default=None, min_length=1, max_length=1000, description="A plan's tasks."
    )
    name: Text | None = Field(default=None, max_length=200, description="The run's name.")
    repo: Repo | None = Field(
        default=None, description="With ``after``: the repository; with ``tasks``: the default."
    )
    after: Text | None = Field(
        default=None, pattern=SESSION_REF, description="A session id (or unique prefix)."
    )
    engine: Text | None = Field(default=None, pattern=ENGINE_NAME, description="Engine to run.")
    model: Text | None = Field(default=None, max_length=200)
    base: Text | None = Field(default=None, max_length=255)
    mode: Mode = Field(default=Mode.TASK)
    priority: int = Field(default=0, ge=-1000, le=1000)
    forge: Text | None = Field(default=None, pattern=ENGINE_NAME)
    timeout_seconds: float | None = Field(default=None, gt=0, le=7 * 86400)
    tier: Literal["trivial", "standard", "complex"] | None = None
    budget_usd: float | None = Field(default=None, ge=0, le=1_000_000)
    notify: list[Annotated[Text, Field(max_length=256)]] = Field(
        default_factory=list, max_length=10
    )

    @model_validator(mode="after")
    def _one_shape(self) -> RunCreate:
        given = [k for k in ("repos", "tasks", "after") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of repos (fan-out), tasks (a plan) or after")
        if self.tasks is not None:
            if self.prompt is not None:
                raise ValueError("a plan's tasks hold their prompts: give no prompt with tasks")
        elif self.prompt is None or not self.prompt.strip():
            raise ValueError("prompt is required (the task)")
        if self.after is not None and self.repo is None:
            raise ValueError("after needs repo: the repository of the new task")
        if self.repos is not None and self.repo is not None:
            raise ValueError("give repos or repo, not both")
        return self
