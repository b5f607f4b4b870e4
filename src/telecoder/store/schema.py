"""SQLAlchemy Core tables: the one place columns are named.

Times are seconds since the epoch (DOUBLE), so both backends compare them the same way.
JSON values are TEXT written by ``store.codec``: portable, and a NUL in an agent's output
cannot break PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
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
    Column("budget_usd", Double),
    Column("tier", String(16)),
    # channel:thread key (Slack channel/thread_ts, a Telegram chat's thread, a Linear or Jira
    # issue): a later message in that thread continues the session it started.
    Column("thread", String(512)),
    Column("question", Text),  # blocked: what the agent or a check asks a human
    Column("notify", Text),  # JSON list of "slack:<who>" / "telegram:<chat>" to tell at the end
    Column("run_id", String(32)),  # the run it belongs to
    Column("task_key", String(255)),  # its name in the run (a plan's task id, a repo)
    Column("chain_id", String(32)),  # the chain of follow-ups (its root session's id)
    Column("depth", Integer, nullable=False, server_default="0"),  # in its chain
    Column("steps", Text),  # JSON list: a multi-step task's steps, run in order (``steps``)
    # An answer session that only reads (a council's reviewer): nothing written or pushed.
    Column("read_only", Boolean, nullable=False, server_default=text("false")),
    Column("last_seq", Integer, nullable=False, server_default="0"),
    # 0018: the user who submitted it (API, dashboard; a run's or a job's owner); NULL for the
    # CLI's local runs and channels' work. A member sees and acts on their own only.
    Column("user", String(64)),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("started_at", Double),
    Column("finished_at", Double),
    Index("ix_sessions_claim", "status", "priority", "available_at"),
    Index("ix_sessions_lease", "status", "lease_until"),
    Index("ix_sessions_created", "created_at"),
    Index("ix_sessions_repo", "repo"),
    Index("ix_sessions_thread", "thread", "created_at"),
    Index("ix_sessions_run", "run_id"),
    Index("ix_sessions_chain", "chain_id"),
    Index("ix_sessions_user", "user", "created_at"),
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
    # JSON: the on_success / on_failure rules of the .telecoder.yml it read (``chains``)
    Column("follow_ups", Text),
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
    # Set by an operator (``telecoder workers drain``): finish what runs, claim nothing new.
    Column("drain", Boolean, nullable=False, server_default=text("false")),
    # What the host reported in its last heartbeat; None until it has.
    Column("cpu_count", Integer),
    Column("mem_total", BigInteger),  # bytes
    Column("mem_available", BigInteger),  # bytes
    Column("load1", Double),  # the 1-minute load average
)

# One row per model request the gateway forwarded: who asked, which endpoint and model answered,
# the tokens the upstream reported and what they cost. Sessions' totals are sums of these; the
# repo, engine and user are copied so costs can be grouped without the session (or after it).
usage = Table(
    "usage",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("session_id", String(32)),
    Column("attempt", Integer),
    Column("ts", Double, nullable=False),
    Column("repo", Text),
    Column("engine", String(64)),
    Column("user", String(255)),
    Column("endpoint", String(64), nullable=False),
    Column("api", String(32), nullable=False),  # anthropic, openai-chat, openai-responses, ...
    Column("model", String(200)),  # the model that answered, as the upstream named it
    Column("input_tokens", Integer, nullable=False, server_default="0"),  # fresh input only
    Column("output_tokens", Integer, nullable=False, server_default="0"),
    Column("cache_read_tokens", Integer, nullable=False, server_default="0"),
    Column("cache_write_tokens", Integer, nullable=False, server_default="0"),
    Column("cost_usd", Double),  # None: no price known for the model
    Column("latency_ms", Double, nullable=False),  # request to the last byte
    Column("ttft_ms", Double),  # request to the first byte of the body
    Column("status", Integer, nullable=False),  # the HTTP status the agent got
    Column("streamed", Boolean, nullable=False, server_default=text("false")),
    Index("ix_usage_session", "session_id"),
    Index("ix_usage_ts", "ts"),
)

# The model endpoints the gateway forwards to (besides those from the operator's environment).
# Keys are never stored: ``key_env`` names the variable of the gateway's environment holding it.
endpoints = Table(
    "endpoints",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("url", Text, nullable=False),
    Column("kind", String(16), nullable=False),  # anthropic, openai, gemini, ollama
    Column("key_env", String(128)),
    Column("models", Text),  # JSON list, from the last model discovery
    Column("healthy", Boolean),  # None: not checked yet
    Column("latency_ms", Double),
    Column("error", Text),
    Column("checked_at", Double),
    Column("failures", Integer, nullable=False, server_default="0"),
    # One shared backoff for every session on every host: no request before this time.
    Column("backoff_until", Double),
    Column("created_at", Double, nullable=False),
)

# Period budgets: ``scope`` is ``global`` or ``user:<name>``; ``period`` daily or monthly. The
# last alert level sent (80, 90, 100) and the period it was sent in keep alerts to one each.
budgets = Table(
    "budgets",
    metadata,
    Column("scope", String(255), primary_key=True),
    Column("period", String(16), primary_key=True),
    Column("limit_usd", Double, nullable=False),
    Column("alerted_level", Integer, nullable=False, server_default="0"),
    Column("alerted_period", String(16)),
    Column("created_at", Double, nullable=False),
)

# Exactly-once intake: a request that carries a key (an API client's Idempotency-Key, a hook's
# idempotency key, GitHub's X-GitHub-Delivery) is stored under (source, key) in the transaction
# that queues its session, so the same key twice finds the session instead of making another.
deliveries = Table(
    "deliveries",
    metadata,
    Column("source", String(255), primary_key=True),  # api:<principal>, hook:<name>, github
    Column("key", String(255), primary_key=True),
    Column("session_id", String(32), nullable=False),
    Column("fingerprint", String(64)),  # of the request, where a reused key must match it
    Column("created_at", Double, nullable=False),
)

# Who hears of sessions' events: signed HTTP POSTs (Standard Webhooks) to ``url``.
subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("url", Text, nullable=False),
    Column("events", Text, nullable=False),  # JSON list: finished, failed, needs_input, all
    Column("secret", Text, nullable=False),  # whsec_<base64>: the key notifications are signed with
    Column("created_at", Double, nullable=False),
)

# The outbox: one row per notification to send, written in the transaction that changes the
# session's status, so none is lost to a crash. A deliverer claims due rows with a lease.
# ``subscription_id`` None: the row is for the in-process subscribers (telecoder.subscribers).
outbox = Table(
    "outbox",
    metadata,
    Column("id", String(40), primary_key=True),  # the webhook-id: the same on every retry
    Column("subscription_id", String(32)),
    Column("session_id", String(32), nullable=False),
    Column("event", String(32), nullable=False),
    Column("payload", Text, nullable=False),
    Column("state", String(16), nullable=False),  # pending, delivered, failed
    Column("tries", Integer, nullable=False, server_default="0"),
    Column("next_at", Double, nullable=False),
    Column("claimed_by", String(255)),
    Column("lease_until", Double),
    Column("last_error", Text),
    Column("last_status", Integer),
    Column("created_at", Double, nullable=False),
    Column("delivered_at", Double),
    Index("ix_outbox_due", "state", "next_at"),
    Index("ix_outbox_created", "created_at"),
)

# The repository registry: names a channel message can use ("app: fix the typo"), each with the
# engine and priority its sessions get by default.
repos = Table(
    "repos",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("url", Text, nullable=False),
    Column("engine", String(64)),
    Column("priority", Integer, nullable=False, server_default="0"),
    Column("created_at", Double, nullable=False),
)

# A channel's place (a Slack channel, a Telegram chat, a Linear team, a Jira project; "*" for
# every place of the channel) -> its default repository's registered name.
repo_routes = Table(
    "repo_routes",
    metadata,
    Column("channel", String(32), primary_key=True),
    Column("place", String(255), primary_key=True),
    Column("repo", String(64), nullable=False),
    Column("created_at", Double, nullable=False),
)

# Channel deliveries that made no session (ignored, answered, asked): kept so a redelivery is
# answered once. Those that made one are in ``deliveries``.
channel_events = Table(
    "channel_events",
    metadata,
    Column("channel", String(32), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("action", String(16), nullable=False),
    Column("session_id", String(32)),
    Column("created_at", Double, nullable=False),
    Index("ix_channel_events_created", "created_at"),
)

# What a channel's user chose for themselves (Telegram's /model): (channel, user, name) -> value.
channel_prefs = Table(
    "channel_prefs",
    metadata,
    Column("channel", String(32), primary_key=True),
    Column("user", String(255), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", Double, nullable=False),
)

# Runs: sessions that belong together (a fan-out, a plan, a job's firing, best-of-N).
runs = Table(
    "runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("name", Text),
    Column("status", String(16), nullable=False),
    Column("spec", Text, nullable=False),  # JSON: what made it
    Column("job", String(64)),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("finished_at", Double),
    Column("user", String(64)),  # 0018: its sessions' user (they come from one request)
    Index("ix_runs_created", "created_at"),
    Index("ix_runs_job", "job", "created_at"),
    Index("ix_runs_user", "user", "created_at"),
)

# A session waits ``after`` (success) or ``after_any`` (any end) of each one it depends on.
session_deps = Table(
    "session_deps",
    metadata,
    Column("session_id", String(32), primary_key=True),
    Column("depends_on", String(32), primary_key=True),
    Column("after", String(16), nullable=False),
    Index("ix_session_deps_on", "depends_on"),
)

# Cron jobs: one row per (job, slot) fired, inserted in the transaction that queues its run, so
# a slot fires once however many servers look; and each job's own state.
job_slots = Table(
    "job_slots",
    metadata,
    Column("job", String(64), primary_key=True),
    Column("slot", Double, primary_key=True),  # the scheduled time it fired for (epoch)
    Column("run_id", String(32)),
    Column("created_at", Double, nullable=False),
)

job_state = Table(
    "job_state",
    metadata,
    Column("job", String(64), primary_key=True),
    Column("paused", Boolean, nullable=False, server_default=text("false")),
    Column("paused_reason", Text),
    Column("failures", Integer, nullable=False, server_default="0"),  # consecutive failed runs
    Column("updated_at", Double, nullable=False),
    # 0008: slots after ``since`` may fire (set when the job is first seen and on resume);
    # ``counted_at``: the finish time of the last run counted into ``failures``.
    Column("since", Double),
    Column("counted_at", Double),
    Column("user", String(64)),  # 0018: who defined it over the API; its runs are theirs
)

# Goals: a wish in plain words, a model's plan for it, approved by a person, run as a run.
goals = Table(
    "goals",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("text", Text, nullable=False),
    # planning, proposed, approved, running, failed, dropped (done/failed of a running goal
    # are its run's, derived on read)
    Column("status", String(16), nullable=False),
    Column("plan", Text),  # JSON
    Column("run_id", String(32)),
    Column("origin", Text),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("repo", Text),  # the repository the goal was given for (--repo), if any
    Column("error", Text),  # why planning failed
    Column("user", String(64)),  # 0018: who added it; its run is theirs
    Index("ix_goals_user", "user", "created_at"),
)

# The inbox: durable notes between agents. Ids are integers in the order messages were sent, so a
# per-agent read cursor (``inbox_cursors.seen``) is the highest id that agent has been shown.
messages = Table(
    "messages",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("thread", String(255), nullable=False),
    Column("kind", String(16), nullable=False),  # message, reply, question, answer
    Column("sender", String(255), nullable=False),
    Column("recipient", String(255)),  # NULL: to the thread
    Column("body", Text, nullable=False),
    Column("reply_to", Integer),
    Column("status", String(16), nullable=False),  # open, claimed, done, failed, cancelled
    Column("claimed_by", String(255)),
    Column("lease_until", Double),
    Column("progress", Text),
    Column("note", Text),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Index("ix_messages_recipient", "recipient", "id"),
    Index("ix_messages_thread", "thread", "id"),
    Index("ix_messages_reply_to", "reply_to"),
)

message_artifacts = Table(
    "message_artifacts",
    metadata,
    Column("message_id", Integer, primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("size", Integer, nullable=False),
    Column("content", LargeBinary, nullable=False),
)

inbox_cursors = Table(
    "inbox_cursors",
    metadata,
    Column("agent", String(255), primary_key=True),
    Column("seen", Integer, nullable=False),  # the highest message id shown to this agent
    Column("updated_at", Double, nullable=False),
)

# Messages above an agent's ``seen`` that it was shown out of order (a reply waited for).
inbox_shown = Table(
    "inbox_shown",
    metadata,
    Column("agent", String(255), primary_key=True),
    Column("message_id", Integer, primary_key=True),
)

# ``telecoder orch``: a leader's tasks in an orch run, what each waits for, each dispatch of one
# (an attempt: one session), and the events ``orch wait`` follows.
orch_tasks = Table(
    "orch_tasks",
    metadata,
    Column("run_id", String(32), primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("prompt", Text, nullable=False),
    Column("repo", Text, nullable=False),
    Column("engine", String(64)),
    Column("acceptance", Text),
    Column("base", String(255)),  # an explicit base ref; None: the checkout's HEAD
    Column("mode", String(16), nullable=False),  # code or answer
    Column("assignee", String(255)),  # None: the session itself (session:<id>)
    # pending, dispatched, running, blocked, succeeded, failed, cancelled (ready is derived)
    Column("status", String(16), nullable=False),
    Column("attempt", Integer, nullable=False, server_default="0"),  # the current one
    Column("session_id", String(32)),  # the current attempt's session
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
)

orch_deps = Table(
    "orch_deps",
    metadata,
    Column("run_id", String(32), primary_key=True),
    Column("task_key", String(64), primary_key=True),
    Column("depends_on", String(64), primary_key=True),
)

orch_attempts = Table(
    "orch_attempts",
    metadata,
    Column("run_id", String(32), primary_key=True),
    Column("task_key", String(64), primary_key=True),
    Column("number", Integer, primary_key=True),
    Column("session_id", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("assignee", String(255), nullable=False),
    Column("engine", String(64), nullable=False),
    Column("worktree", Text, nullable=False),
    Column("branch", String(255), nullable=False),
    Column("base_ref", String(255)),
    Column("message_id", Integer),  # the inbox message that dispatched it
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("cleaned_at", Double),  # its worktree removed by ``orch cleanup``
    Index("ix_orch_attempts_session", "session_id"),
)

orch_events = Table(
    "orch_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), nullable=False),
    Column("task_key", String(64), nullable=False),
    Column("kind", String(32), nullable=False),  # added, dispatched, status, answered, …
    Column("data", Text, nullable=False),  # JSON
    Column("created_at", Double, nullable=False),
    Index("ix_orch_events_run", "run_id", "id"),
)

# What finished sessions taught about a repository, and what users told TeleCoder about
# themselves. Full-text search: an FTS5 table ``memories_fts`` (SQLite) or a GIN index on
# ``to_tsvector('english', …)`` (PostgreSQL), both made by migration 0014 (not declared here).
# ``embedding``: float32 little-endian, scored in Python against the query's vector.
memories = Table(
    "memories",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("repo", Text),  # the repository as sessions name it; NULL: a user's memory
    Column("user", String(255)),  # channel:id of a chat user; NULL: the repository's
    Column("kind", String(16), nullable=False),  # session, lesson, fact, note
    Column("text", Text, nullable=False),
    Column("prompt", Text),
    Column("outcome", String(32)),
    Column("files", Text, nullable=False),  # JSON list
    Column("session_id", String(32)),
    Column("embedding", LargeBinary),
    Column("embedder", String(128)),
    Column("created_at", Double, nullable=False),
    UniqueConstraint("session_id", name="uq_memories_session_id"),
    Index("ix_memories_repo", "repo", "id"),
    Index("ix_memories_user", "user", "id"),
)

# People and the API tokens that act for them (``store.users``): a role each (admin, member,
# viewer); a token may narrow its user's role to ``worker``. Only a token's SHA-256 is stored.
users = Table(
    "users",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("disabled", Boolean, nullable=False, server_default=text("false")),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user", String(64)),  # NULL: a worker token that belongs to no one
    Column("role", String(16)),  # NULL: the user's role; ``worker``: worker endpoints only
    Column("digest", String(64), nullable=False),  # hex SHA-256 of the token
    Column("label", String(255)),
    Column("created_at", Double, nullable=False),
    Column("last_used_at", Double),
    Column("revoked_at", Double),
    Column("worker_id", String(255)),  # a worker token's worker: the id its first sign-in named
    UniqueConstraint("digest", name="uq_api_tokens_digest"),
    Index("ix_api_tokens_user", "user"),
)

# Append-only: who did what, to what, when and from where (``store.audit``).
audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Double, nullable=False),
    Column("actor", String(255), nullable=False),
    Column("role", String(16), nullable=False),
    Column("action", String(255), nullable=False),
    Column("target", Text, nullable=False),
    Column("detail", Text, nullable=False),  # JSON
    Column("source", String(255), nullable=False),  # the client's address, or ``cli``
    Column("user_agent", Text),
    Index("ix_audit_ts", "ts"),
    Index("ix_audit_actor", "actor", "ts"),
)

# Operator switches read by every process: ``paused`` = "1" stops all claims (``store.control``).
control = Table(
    "control",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("by", String(255)),  # who set it: a user, "cli", "api"
)

# What the supervisor did to heal (``GET /api/health/history``): newest last.
health_events = Table(
    "health_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),  # requeued, pruned_worktree, endpoint_unhealthy, …
    Column("subject", Text, nullable=False),  # a session id, a path, an endpoint name
    Column("detail", Text, nullable=False),  # JSON
    Column("created_at", Double, nullable=False),
    Index("ix_health_events_created", "created_at"),
)

# Made by the migrations alone (raw DDL): what the schema check leaves out.
FULL_TEXT_OBJECTS = ("memories_fts", "ix_memories_document")
