"""The inbox: messages between agents, their artifacts, and what each agent was shown.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("thread", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("sender", sa.String(length=255), nullable=False),
        sa.Column("recipient", sa.String(length=255), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("reply_to", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("claimed_by", sa.String(length=255), nullable=True),
        sa.Column("lease_until", sa.Double(), nullable=True),
        sa.Column("progress", sa.Text(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
    )
    op.create_index("ix_messages_recipient", "messages", ["recipient", "id"])
    op.create_index("ix_messages_thread", "messages", ["thread", "id"])
    op.create_index("ix_messages_reply_to", "messages", ["reply_to"])
    op.create_table(
        "message_artifacts",
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("message_id", "name", name=op.f("pk_message_artifacts")),
    )
    op.create_table(
        "inbox_cursors",
        sa.Column("agent", sa.String(length=255), nullable=False),
        sa.Column("seen", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("agent", name=op.f("pk_inbox_cursors")),
    )
    op.create_table(
        "inbox_shown",
        sa.Column("agent", sa.String(length=255), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("agent", "message_id", name=op.f("pk_inbox_shown")),
    )


def downgrade() -> None:
    op.drop_table("inbox_shown")
    op.drop_table("inbox_cursors")
    op.drop_table("message_artifacts")
    op.drop_index("ix_messages_reply_to", table_name="messages")
    op.drop_index("ix_messages_thread", table_name="messages")
    op.drop_index("ix_messages_recipient", table_name="messages")
    op.drop_table("messages")
