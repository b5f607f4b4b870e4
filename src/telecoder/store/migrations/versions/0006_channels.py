"""Channels: sessions' thread, question and notify targets; the repo registry and its routes;
channel deliveries that made no session; users' preferences.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sessions", sa.Column("thread", sa.String(length=512), nullable=True))
    op.add_column("sessions", sa.Column("question", sa.Text(), nullable=True))
    op.add_column("sessions", sa.Column("notify", sa.Text(), nullable=True))
    op.create_index("ix_sessions_thread", "sessions", ["thread", "created_at"])
    op.create_table(
        "repos",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("engine", sa.String(length=64), nullable=True),
        sa.Column("priority", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_repos")),
    )
    op.create_table(
        "repo_routes",
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("place", sa.String(length=255), nullable=False),
        sa.Column("repo", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("channel", "place", name=op.f("pk_repo_routes")),
    )
    op.create_table(
        "channel_events",
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("session_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("channel", "key", name=op.f("pk_channel_events")),
    )
    op.create_index("ix_channel_events_created", "channel_events", ["created_at"])
    op.create_table(
        "channel_prefs",
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("user", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("channel", "user", "name", name=op.f("pk_channel_prefs")),
    )


def downgrade() -> None:
    op.drop_table("channel_prefs")
    op.drop_index("ix_channel_events_created", table_name="channel_events")
    op.drop_table("channel_events")
    op.drop_table("repo_routes")
    op.drop_table("repos")
    op.drop_index("ix_sessions_thread", table_name="sessions")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("notify")
        batch.drop_column("question")
        batch.drop_column("thread")
