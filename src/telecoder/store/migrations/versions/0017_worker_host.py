"""Workers: an operator's drain flag (``telecoder workers drain``: finish what runs, claim
nothing new) and what each host reports in its heartbeat (CPUs, RAM total/available, load).

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "workers",
        sa.Column("drain", sa.Boolean(), nullable=False, server_default=sa.text("false")),
    )
    op.add_column("workers", sa.Column("cpu_count", sa.Integer(), nullable=True))
    op.add_column("workers", sa.Column("mem_total", sa.BigInteger(), nullable=True))
    op.add_column("workers", sa.Column("mem_available", sa.BigInteger(), nullable=True))
    op.add_column("workers", sa.Column("load1", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        for name in ("load1", "mem_available", "mem_total", "cpu_count", "drain"):
            batch.drop_column(name)
