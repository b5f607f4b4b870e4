"""Runs: the runs table, sessions' run/task/chain/depth, dependencies between sessions, cron
jobs' slots and state, goals.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sessions", sa.Column("run_id", sa.String(length=32), nullable=True))
    op.add_column("sessions", sa.Column("task_key", sa.String(length=255), nullable=True))
    op.add_column("sessions", sa.Column("chain_id", sa.String(length=32), nullable=True))
    op.add_column("sessions", sa.Column("depth", sa.Integer(), server_default="0", nullable=False))
    op.create_index("ix_sessions_run", "sessions", ["run_id"])
    op.create_index("ix_sessions_chain", "sessions", ["chain_id"])
    op.create_table(
        "runs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("job", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("finished_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_index("ix_runs_created", "runs", ["created_at"])
    op.create_index("ix_runs_job", "runs", ["job", "created_at"])
    op.create_table(
        "session_deps",
        sa.Column("session_id", sa.String(length=32), nullable=False),
        sa.Column("depends_on", sa.String(length=32), nullable=False),
        sa.Column("after", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("session_id", "depends_on", name=op.f("pk_session_deps")),
    )
    op.create_index("ix_session_deps_on", "session_deps", ["depends_on"])
    op.create_table(
        "job_slots",
        sa.Column("job", sa.String(length=64), nullable=False),
        sa.Column("slot", sa.Double(), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("job", "slot", name=op.f("pk_job_slots")),
    )
    op.create_table(
        "job_state",
        sa.Column("job", sa.String(length=64), nullable=False),
        sa.Column("paused", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("paused_reason", sa.Text(), nullable=True),
        sa.Column("failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("job", name=op.f("pk_job_state")),
    )
    op.create_table(
        "goals",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("plan", sa.Text(), nullable=True),
        sa.Column("run_id", sa.String(length=32), nullable=True),
        sa.Column("origin", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_goals")),
    )


def downgrade() -> None:
    op.drop_table("goals")
    op.drop_table("job_state")
    op.drop_table("job_slots")
    op.drop_index("ix_session_deps_on", table_name="session_deps")
    op.drop_table("session_deps")
    op.drop_index("ix_runs_job", table_name="runs")
    op.drop_index("ix_runs_created", table_name="runs")
    op.drop_table("runs")
    op.drop_index("ix_sessions_chain", table_name="sessions")
    op.drop_index("ix_sessions_run", table_name="sessions")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("depth")
        batch.drop_column("chain_id")
        batch.drop_column("task_key")
        batch.drop_column("run_id")
