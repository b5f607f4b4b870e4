"""Cron jobs: job_state's ``since`` (slots after it may fire) and ``counted_at`` (the last run
counted into ``failures``).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job_state") as batch:
        batch.add_column(sa.Column("since", sa.Double(), nullable=True))
        batch.add_column(sa.Column("counted_at", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job_state") as batch:
        batch.drop_column("counted_at")
        batch.drop_column("since")
