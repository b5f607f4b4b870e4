"""SQLAlchemy Core tables: the one place columns are named.

Times are seconds since the epoch (DOUBLE), so both backends compare them the same way.
JSON values are TEXT written by ``store.codec``: portable, and a NUL in an agent's output
cannot break PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("repo", Text, nullable=False),
    Column("prompt", Text, nullable=False),
    Column("engine", String(64), nullable=False),
    # request, repo or settings: whether the repository's .telecoder.yml may choose the engine.
    Column("engine_source", String(16), nullable=False, server_default="request"),
    Column("model", String(200)),
    Column("base_ref", String(255)),
    Column("mode", String(16), nullable=False, server_default="task"),
    Column("priority", Integer, nullable=False, server_default="0"),
    Column("forge", String(32)),
    Column("branch", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    # The current attempt: its number, holder and lease are the fencing token of every write.
    Column("attempt", Integer, nullable=False, server_default="0"),
    Column("worker_id", String(255)),
    Column("lease_until", Double),
    Column("max_attempts", Integer, nullable=False, server_default="3"),
    Column("timeout_seconds", Double),
    Column("available_at", Double, nullable=False),
    Column("cancel_requested", Boolean, nullable=False, server_default=text("false")),
    Column("parent_id", String(32), ForeignKey("sessions.id", ondelete="SET NULL")),
    Column("origin", Text),
    Column("result", Text),
    Column("error", Text),
    Column("failure_kind", String(32)),
    Column("cost_usd", Double, nullable=False, server_default="0"),
    Column("input_tokens", Integer, nullable=False, server_default="0"),
    Column("output_tokens", Integer, nullable=False, server_default="0"),
    Column("last_seq", Integer, nullable=False, server_default="0"),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("started_at", Double),
    Column("finished_at", Double),
    Index("ix_sessions_claim", "status", "priority", "available_at"),
    Index("ix_sessions_lease", "status", "lease_until"),
    Index("ix_sessions_created", "created_at"),
    Index("ix_sessions_repo", "repo"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("session_id", String(32), ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("worker_id", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("started_at", Double, nullable=False),
    Column("lease_until", Double, nullable=False),
    Column("heartbeat_at", Double, nullable=False),
    Column("finished_at", Double),
    Column("workspace_path", Text),
    Column("branch", String(255)),
    Column("base_sha", String(64)),
    Column("commit_sha", String(64)),
    Column("pushed_sha", String(64)),
    Column("exit_code", Integer),
    Column("failure_kind", String(32)),
    Column("error", Text),
    Column("engine_session_id", String(255)),
    UniqueConstraint("session_id", "number", name="uq_attempts_session_number"),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("session_id", String(32), ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
    Column("attempt", Integer),
    Column("seq", Integer, nullable=False),
    Column("ts", Double, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("data", Text, nullable=False),
    UniqueConstraint("session_id", "seq", name="uq_events_session_seq"),
)

workers = Table(
    "workers",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("capacity", Integer, nullable=False),
    Column("engines", Text, nullable=False),  # JSON list of engine names
    Column("state", String(16), nullable=False),
    Column("running", Integer, nullable=False, server_default="0"),
    Column("started_at", Double, nullable=False),
    Column("last_heartbeat", Double, nullable=False),
)
