"""HTTP shapes of the operator's switches and the supervisor's history."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class PauseOut(BaseModel):
    paused: bool = Field(description="True: no worker on any host starts a session.")
    since: float | None = Field(default=None, description="When the pause began (epoch s).")
    by: str | None = Field(default=None, description="Who paused: a token's name, or cli.")


class HealthEventOut(BaseModel):
    id: int
    kind: str = Field(
        description="requeued, recovered, pruned_worktree, endpoint_unhealthy, endpoint_healthy"
    )
    subject: str = Field(description="The session, path or endpoint it acted on.")
    detail: dict[str, Any]
    created_at: float
