"""The API's JSON as domain records: the inverse of ``Session.to_dict`` and of the API's event
and attempt shapes (what a client of the HTTP API reads back)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from telecoder.domain.sessions import (
    Attempt,
    AttemptStatus,
    EngineSource,
    Event,
    EventKind,
    FailureKind,
    Mode,
    Result,
    Session,
    SessionStatus,
)

Json = dict[str, Any]


def _epoch(value: str | None) -> float | None:
    if value is None:
        return None
    return datetime.fromisoformat(value).timestamp()


def attempts_of(data: Json) -> list[Attempt]:
    """The attempts of a session as ``GET /api/sessions/{id}`` lists them."""
    return [
        Attempt(
            session_id=data["id"],
            number=a["number"],
            worker_id=a["worker_id"],
            status=AttemptStatus(a["status"]),
            started_at=_epoch(a.get("started_at")) or 0.0,
            lease_until=0.0,
            heartbeat_at=_epoch(a.get("heartbeat_at")) or 0.0,
            finished_at=_epoch(a.get("finished_at")),
            base_sha=a.get("base_sha"),
            commit_sha=a.get("commit_sha"),
            pushed_sha=a.get("pushed_sha"),
            exit_code=a.get("exit_code"),
            failure_kind=FailureKind(a["failure_kind"]) if a.get("failure_kind") else None,
            error=a.get("error"),
        )
        for a in data.get("attempts", [])
    ]


def session_of(data: Json) -> Session:
    created = _epoch(data["created_at"]) or 0.0
    return Session(
        id=data["id"],
        repo=data["repo"],
        prompt=data["prompt"],
        engine=data["engine"],
        model=data.get("model"),
        base_ref=data.get("base"),
        mode=Mode(data.get("mode", Mode.TASK)),
        priority=data.get("priority", 0),
        forge=data.get("forge"),
        branch=data["branch"],
        status=SessionStatus(data["status"]),
        attempt=data.get("attempt", 0),
        max_attempts=data.get("max_attempts", 1),
        timeout_seconds=data.get("timeout_seconds"),
        parent_id=data.get("parent_id"),
        origin=data.get("origin"),
        user=data.get("user"),
        cancel_requested=data.get("cancel_requested", False),
        result=Result.from_dict(data["result"]) if data.get("result") else None,
        error=data.get("error"),
        failure_kind=FailureKind(data["failure_kind"]) if data.get("failure_kind") else None,
        cost_usd=data.get("cost_usd", 0.0),
        budget_usd=data.get("budget_usd"),
        input_tokens=data.get("input_tokens", 0),
        output_tokens=data.get("output_tokens", 0),
        created_at=created,
        updated_at=_epoch(data.get("updated_at")) or created,
        started_at=_epoch(data.get("started_at")),
        finished_at=_epoch(data.get("finished_at")),
        available_at=created,
        worker_id=data.get("worker_id"),
        engine_source=EngineSource(data.get("engine_source", EngineSource.REQUEST)),
        tier=data.get("tier"),
        run_id=data.get("run_id"),
        task_key=data.get("task_key"),
        chain_id=data.get("chain_id"),
        depth=data.get("depth", 0),
        steps=tuple(data.get("steps") or ()),
        read_only=bool(data.get("read_only", False)),
    )


def event_of(data: Json) -> Event:
    return Event(
        id=data["id"],
        session_id=data["session_id"],
        attempt=data.get("attempt"),
        seq=data["seq"],
        ts=data["ts"],
        kind=EventKind(data["kind"]),
        data=data.get("data") or {},
    )
