"""Chains and multi-step tasks: a session's ``steps`` (JSON list), an attempt's follow-up
rules (``follow_ups``: the ``on_success`` / ``on_failure`` of the ``.telecoder.yml`` it read).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sessions", sa.Column("steps", sa.Text(), nullable=True))
    op.add_column("attempts", sa.Column("follow_ups", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("follow_ups")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("steps")
