"""Operator control and the supervisor's history: ``control`` (key → value: ``paused`` stops every
worker's claims, read at claim time by every host) and ``health_events`` (what the supervisor did:
requeued a dead worker's session, pruned a stale worktree or lock, marked an endpoint unhealthy).

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "control",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("by", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_control")),
    )
    op.create_table(
        "health_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_health_events")),
    )
    op.create_index("ix_health_events_created", "health_events", ["created_at"])


def downgrade() -> None:
    op.drop_table("health_events")
    op.drop_table("control")
