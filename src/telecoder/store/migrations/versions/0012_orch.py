"""``telecoder orch``: the tasks of orch runs, their dependencies, attempts and events.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "orch_tasks",
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("repo", sa.Text(), nullable=False),
        sa.Column("engine", sa.String(length=64), nullable=True),
        sa.Column("acceptance", sa.Text(), nullable=True),
        sa.Column("base", sa.String(length=255), nullable=True),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("assignee", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), server_default="0", nullable=False),
        sa.Column("session_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "key", name=op.f("pk_orch_tasks")),
    )
    op.create_table(
        "orch_deps",
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("task_key", sa.String(length=64), nullable=False),
        sa.Column("depends_on", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "task_key", "depends_on", name=op.f("pk_orch_deps")),
    )
    op.create_table(
        "orch_attempts",
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("task_key", sa.String(length=64), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("assignee", sa.String(length=255), nullable=False),
        sa.Column("engine", sa.String(length=64), nullable=False),
        sa.Column("worktree", sa.Text(), nullable=False),
        sa.Column("branch", sa.String(length=255), nullable=False),
        sa.Column("base_ref", sa.String(length=255), nullable=True),
        sa.Column("message_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("cleaned_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", "task_key", "number", name=op.f("pk_orch_attempts")),
    )
    op.create_index("ix_orch_attempts_session", "orch_attempts", ["session_id"])
    op.create_table(
        "orch_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("task_key", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orch_events")),
    )
    op.create_index("ix_orch_events_run", "orch_events", ["run_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_orch_events_run", table_name="orch_events")
    op.drop_table("orch_events")
    op.drop_index("ix_orch_attempts_session", table_name="orch_attempts")
    op.drop_table("orch_attempts")
    op.drop_table("orch_deps")
    op.drop_table("orch_tasks")
