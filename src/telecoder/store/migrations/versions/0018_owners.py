"""Owners: the user a session, a run, a goal or a cron job belongs to (``user``; NULL for the
CLI's local runs and for channels' and triggers' work). A member sees and acts on their own only,
so every list a member reads filters on it (indexed with ``created_at`` for the newest first).

Sessions submitted over the API or the dashboard before this revision named their user in
``origin.principal``; that is copied into ``user``, and a run takes its sessions' user.

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-29
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

_OWNED = ("sessions", "runs", "goals", "job_state")
_INDEXED = ("sessions", "runs", "goals")
_CHANNELS = ("api", "dashboard")  # the origins that named a principal


def upgrade() -> None:
    for table in _OWNED:
        op.add_column(table, sa.Column("user", sa.String(length=64), nullable=True))
    for table in _INDEXED:
        op.create_index(f"ix_{table}_user", table, ["user", "created_at"])
    _backfill()


def _backfill() -> None:
    conn = op.get_bind()
    sessions = sa.table(
        "sessions", sa.column("id"), sa.column("origin"), sa.column("user"), sa.column("run_id")
    )
    runs = sa.table("runs", sa.column("id"), sa.column("user"))
    query = sa.select(sessions.c.id, sessions.c.origin).where(
        sessions.c.origin.like('%"principal"%')
    )
    owners: list[dict[str, str]] = []
    for session_id, origin in conn.execute(query):
        try:
            data = json.loads(origin)
        except ValueError:
            continue
        principal = data.get("principal") if isinstance(data, dict) else None
        if data.get("channel") in _CHANNELS and isinstance(principal, str) and principal:
            owners.append({"sid": session_id, "owner": principal[:64]})
    if owners:
        conn.execute(
            sessions.update()
            .where(sessions.c.id == sa.bindparam("sid"))
            .values(user=sa.bindparam("owner")),
            owners,
        )
    first = (
        sa.select(sa.func.min(sessions.c.user))
        .where(sessions.c.run_id == runs.c.id)
        .scalar_subquery()
    )
    conn.execute(runs.update().values(user=first))


def downgrade() -> None:
    for table in _INDEXED:
        op.drop_index(f"ix_{table}_user", table_name=table)
    for table in _OWNED:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("user")
