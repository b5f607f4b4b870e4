"""Sessions and attempts as rows: what the store writes for a new session and reads back."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row

from telecoder.domain import (
    Attempt,
    AttemptStatus,
    EngineSource,
    EventKind,
    FailureKind,
    Mode,
    NewEvent,
    NewSession,
    Result,
    Session,
    SessionStatus,
)
from telecoder.store.db import dumps, loads


def session_from_row(row: Row[Any]) -> Session:
    m = row._mapping
    result = loads(m["result"])
    return Session(
        id=m["id"],
        repo=m["repo"],
        prompt=m["prompt"],
        engine=m["engine"],
        model=m["model"],
        base_ref=m["base_ref"],
        mode=Mode(m["mode"]),
        priority=m["priority"],
        forge=m["forge"],
        branch=m["branch"],
        status=SessionStatus(m["status"]),
        attempt=m["attempt"],
        max_attempts=m["max_attempts"],
        timeout_seconds=m["timeout_seconds"],
        parent_id=m["parent_id"],
        origin=loads(m["origin"]),
        cancel_requested=bool(m["cancel_requested"]),
        result=Result.from_dict(result) if result else None,
        error=m["error"],
        failure_kind=FailureKind(m["failure_kind"]) if m["failure_kind"] else None,
        cost_usd=m["cost_usd"],
        input_tokens=m["input_tokens"],
        output_tokens=m["output_tokens"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        available_at=m["available_at"],
        worker_id=m["worker_id"],
        lease_until=m["lease_until"],
        engine_source=EngineSource(m["engine_source"]),
        budget_usd=m["budget_usd"],
        tier=m["tier"],
        thread=m["thread"],
        question=m["question"],
        notify=tuple(loads(m["notify"]) or ()),
        run_id=m["run_id"],
        task_key=m["task_key"],
        chain_id=m["chain_id"],
        depth=m["depth"],
        steps=tuple(loads(m["steps"]) or ()),
        read_only=bool(m["read_only"]),
        user=m["user"],
    )


def attempt_from_row(row: Row[Any]) -> Attempt:
    m = row._mapping
    return Attempt(
        session_id=m["session_id"],
        number=m["number"],
        worker_id=m["worker_id"],
        status=AttemptStatus(m["status"]),
        started_at=m["started_at"],
        lease_until=m["lease_until"],
        heartbeat_at=m["heartbeat_at"],
        finished_at=m["finished_at"],
        workspace_path=m["workspace_path"],
        branch=m["branch"],
        base_sha=m["base_sha"],
        commit_sha=m["commit_sha"],
        pushed_sha=m["pushed_sha"],
        exit_code=m["exit_code"],
        failure_kind=FailureKind(m["failure_kind"]) if m["failure_kind"] else None,
        error=m["error"],
        engine_session_id=m["engine_session_id"],
    )


def new_session_values(new: NewSession, now: float) -> dict[str, Any]:
    return {
        "id": new.id,
        "repo": new.repo,
        "prompt": new.prompt,
        "engine": new.engine,
        "engine_source": new.engine_source.value,
        "model": new.model,
        "base_ref": new.base_ref,
        "mode": new.mode.value,
        "priority": new.priority,
        "forge": new.forge,
        "branch": new.branch,
        "status": SessionStatus.QUEUED.value,
        "max_attempts": new.max_attempts,
        "timeout_seconds": new.timeout_seconds,
        "parent_id": new.parent_id,
        "origin": dumps(new.origin) if new.origin is not None else None,
        "budget_usd": new.budget_usd,
        "tier": new.tier,
        "thread": new.thread,
        "notify": dumps(list(new.notify)) if new.notify else None,
        "run_id": new.run_id,
        "task_key": new.task_key,
        "chain_id": new.chain_id,
        "depth": new.depth,
        "steps": dumps(list(new.steps)) if new.steps else None,
        "read_only": new.read_only,
        "user": new.user,
        "available_at": now,
        "created_at": now,
        "updated_at": now,
    }


def queued_event(new: NewSession) -> NewEvent:
    data: dict[str, Any] = {"status": SessionStatus.QUEUED.value}
    if new.parent_id and new.depth > 0 and new.chain_id:
        data["follows"] = new.parent_id  # a chain's follow-up (``chains``)
    elif new.parent_id:
        data["retry_of"] = new.parent_id
    return NewEvent(kind=EventKind.STATUS, data=data)
