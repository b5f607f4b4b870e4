"""Chains: follow-up sessions spawned when a session ends, in the transaction that ends it.

The rules are the ``on_success`` / ``on_failure`` of the ``.telecoder.yml`` the session's last
attempt read, kept on that attempt (``attempts.follow_ups``, with the depth limit in force).
``spawn`` runs inside every transaction that ends a session (``transitions``), so a follow-up
is created exactly once per ended session: a crash before the commit loses the end and the
follow-ups together, and the end is written once (it is fenced by the attempt's lease).

A follow-up is a new task (``chain_id``: the root's id, ``parent_id``: the session that ended,
``depth``: its parent's + 1) on the same repository unless the rule names another, starting
from the parent's branch when the parent pushed one. A follow-up deeper than the limit is
refused, and so is one whose repository and rendered prompt a session of the chain already
has (``followups.prompt_hash``): each with a ``chain`` event on the parent saying so.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from telecoder import followups
from telecoder.domain import (
    EngineSource,
    EventKind,
    NewEvent,
    NewSession,
    Session,
    SessionStatus,
)
from telecoder.store.db import Database, loads
from telecoder.store.events import append_events
from telecoder.store.notify import Notice, NoticeKind
from telecoder.store.rows import new_session_values, queued_event, session_from_row
from telecoder.store.schema import attempts, sessions

DEFAULT_MAX_DEPTH = 3
_FIRES = {
    SessionStatus.SUCCEEDED: "on_success",
    SessionStatus.FAILED: "on_failure",
    SessionStatus.DEAD: "on_failure",
}


async def spawn(conn: AsyncConnection, db: Database, ended: Session, now: float) -> list[str]:
    """Create the follow-ups of ``ended`` (in the caller's transaction); their ids."""
    which = _FIRES.get(ended.status)
    if which is None or ended.attempt < 1:
        return []
    # The rules its latest attempt that read them kept (one that failed before reading the
    # file, e.g. on a fetch, leaves them to an earlier one).
    stored = (
        await conn.execute(
            select(attempts.c.follow_ups)
            .where(attempts.c.session_id == ended.id, attempts.c.follow_ups.is_not(None))
            .order_by(attempts.c.number.desc())
            .limit(1)
        )
    ).scalar()
    rules: dict[str, Any] = loads(stored) or {}
    wanted: list[dict[str, str]] = rules.get(which) or []
    if not wanted:
        return []
    max_depth = int(rules.get("max_depth", DEFAULT_MAX_DEPTH))
    chain_id = ended.chain_id or ended.id
    # One spawner per chain at a time (PostgreSQL; SQLite has one writer anyway), so two of
    # its sessions ending together cannot both create the same follow-up.
    await conn.execute(select(sessions.c.id).where(sessions.c.id == chain_id).with_for_update())
    if ended.chain_id is None:  # a root starts its chain
        await conn.execute(
            update(sessions).where(sessions.c.id == ended.id).values(chain_id=ended.id)
        )
    depth = ended.depth + 1
    notes: list[NewEvent] = []
    if depth > max_depth:
        message = (
            f"{which}: {len(wanted)} follow-up(s) refused: depth {depth} is past the chain's "
            f"limit of {max_depth} (TELECODER_CHAIN_MAX_DEPTH)"
        )
        notes.append(_note(refused="depth", depth=depth, max_depth=max_depth, message=message))
        await append_events(conn, ended.id, None, notes, now=now)
        return []
    members = (
        await conn.execute(
            select(sessions.c.repo, sessions.c.prompt).where(
                or_(sessions.c.chain_id == chain_id, sessions.c.id == chain_id)
            )
        )
    ).all()
    seen = {followups.prompt_hash(r.repo, r.prompt) for r in members}
    values = followups.values_of(ended)
    made: list[str] = []
    for rule in wanted:
        prompt = followups.render(rule["prompt"], values)
        repo = rule.get("repo") or ended.repo
        key = followups.prompt_hash(repo, prompt)
        if key in seen:
            message = f"{which}: not spawned: the chain already has this prompt for {repo}"
            notes.append(_note(refused="duplicate", repo=repo, prompt=prompt, message=message))
            continue
        seen.add(key)
        child = _child(ended, chain_id, depth, rule, prompt, repo)
        await conn.execute(insert(sessions).values(new_session_values(child, now)))
        await append_events(conn, child.id, None, [queued_event(child)], now=now)
        await db.notify(conn, Notice(NoticeKind.QUEUED, child.id))
        made.append(child.id)
        message = f"{which}: spawned {child.id} (depth {depth}) on {repo}"
        notes.append(_note(spawned=child.id, depth=depth, repo=repo, base=child.base_ref,
                           message=message))  # fmt: skip
    await append_events(conn, ended.id, None, notes, now=now)
    return made


class Chains:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def members(self, chain_id: str) -> list[Session]:
        """The chain's sessions: the root, then its follow-ups by depth and age."""
        query = (
            select(sessions)
            .where(or_(sessions.c.chain_id == chain_id, sessions.c.id == chain_id))
            .order_by(sessions.c.depth, sessions.c.created_at, sessions.c.id)
        )
        async with self._db.read() as conn:
            return [session_from_row(r) for r in (await conn.execute(query)).all()]


def _child(
    parent: Session, chain_id: str, depth: int, rule: dict[str, str], prompt: str, repo: str
) -> NewSession:
    same_repo = repo == parent.repo
    pushed = parent.result is not None and parent.result.commit and parent.result.branch
    base = parent.result.branch if same_repo and pushed and parent.result else None
    if base is None and same_repo:
        base = parent.base_ref
    if rule.get("engine"):
        engine, source = rule["engine"], EngineSource.REQUEST
    else:
        engine = parent.engine
        # An engine the repository chose is chosen again, from the child's own .telecoder.yml.
        source = (
            EngineSource.SETTINGS
            if parent.engine_source == EngineSource.REPO
            else parent.engine_source
        )
    return NewSession(
        repo=repo,
        prompt=prompt,
        engine=engine,
        engine_source=source,
        model=parent.model if engine == parent.engine else None,
        base_ref=base,
        priority=parent.priority,
        forge=parent.forge,
        max_attempts=parent.max_attempts,
        timeout_seconds=parent.timeout_seconds,
        budget_usd=parent.budget_usd,
        tier=parent.tier,
        parent_id=parent.id,
        # Not the parent's origin or thread: a session from a pull request's comment works on
        # that pull request's branch, and a thread's next message continues its session.
        notify=parent.notify,
        chain_id=chain_id,
        depth=depth,
        user=parent.user,  # a follow-up is its parent's submitter's too
    )


def _note(**data: Any) -> NewEvent:
    return NewEvent(kind=EventKind.CHAIN, data=data)
