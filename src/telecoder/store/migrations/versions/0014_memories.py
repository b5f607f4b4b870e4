"""Memories: what finished sessions taught about a repository, and users' facts, with full-text
search (SQLite: an FTS5 table kept by triggers; PostgreSQL: a GIN index on a ``tsvector``).

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# What full-text search reads of a memory (both backends index the same text).
_SQLITE_FTS = [
    "CREATE VIRTUAL TABLE memories_fts USING fts5("
    "text, prompt, files, content='memories', content_rowid='id', tokenize='porter unicode61')",
    "CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories BEGIN "
    "INSERT INTO memories_fts(rowid, text, prompt, files) "
    "VALUES (new.id, new.text, coalesce(new.prompt, ''), new.files); END",
    "CREATE TRIGGER memories_fts_delete AFTER DELETE ON memories BEGIN "
    "INSERT INTO memories_fts(memories_fts, rowid, text, prompt, files) "
    "VALUES ('delete', old.id, old.text, coalesce(old.prompt, ''), old.files); END",
    "CREATE TRIGGER memories_fts_update AFTER UPDATE ON memories BEGIN "
    "INSERT INTO memories_fts(memories_fts, rowid, text, prompt, files) "
    "VALUES ('delete', old.id, old.text, coalesce(old.prompt, ''), old.files); "
    "INSERT INTO memories_fts(rowid, text, prompt, files) "
    "VALUES (new.id, new.text, coalesce(new.prompt, ''), new.files); END",
]
PG_DOCUMENT = "to_tsvector('english', text || ' ' || coalesce(prompt, '') || ' ' || files)"


def upgrade() -> None:
    op.create_table(
        "memories",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("repo", sa.Text(), nullable=True),
        sa.Column("user", sa.String(length=255), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("files", sa.Text(), nullable=False),
        sa.Column("session_id", sa.String(length=32), nullable=True),
        sa.Column("embedding", sa.LargeBinary(), nullable=True),
        sa.Column("embedder", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memories")),
        sa.UniqueConstraint("session_id", name="uq_memories_session_id"),
    )
    op.create_index("ix_memories_repo", "memories", ["repo", "id"])
    op.create_index("ix_memories_user", "memories", ["user", "id"])
    if op.get_bind().dialect.name == "sqlite":
        for statement in _SQLITE_FTS:
            op.execute(statement)
    else:
        op.execute(f"CREATE INDEX ix_memories_document ON memories USING GIN ({PG_DOCUMENT})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS memories_fts")
    op.drop_table("memories")
