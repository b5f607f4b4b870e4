"""Builders of domain records for tests."""

from __future__ import annotations

from telecoder.domain import Mode, Session, SessionStatus


def make_session(**overrides: object) -> Session:
    fields: dict[str, object] = {
        "id": "abc123defg",
        "repo": "/src/repo",
        "prompt": "fix it",
        "engine": "shell",
        "model": None,
        "base_ref": None,
        "mode": Mode.TASK,
        "priority": 0,
        "forge": None,
        "branch": "telecoder/abc123defg",
        "status": SessionStatus.QUEUED,
        "attempt": 0,
        "max_attempts": 3,
        "timeout_seconds": None,
        "parent_id": None,
        "origin": None,
        "cancel_requested": False,
        "result": None,
        "error": None,
        "failure_kind": None,
        "cost_usd": 0.0,
        "input_tokens": 0,
        "output_tokens": 0,
        "created_at": 1_700_000_000.25,
        "updated_at": 1_700_000_001.5,
        "started_at": None,
        "finished_at": None,
        "available_at": 1_700_000_000.25,
    }
    fields.update(overrides)
    return Session(**fields)  # type: ignore[arg-type]
