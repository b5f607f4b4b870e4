"""The server's settings (``telecoder serve``): bind, tokens, logs, limits, the live-event bus."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr


class ServerSettings(BaseModel):
    host: str = Field(default="127.0.0.1", description="Address the server binds to.")
    port: int = Field(default=7080, ge=0, le=65535, description="Port the server listens on.")
    api_token: SecretStr | None = Field(
        default=None,
        description=(
            "API tokens, comma-separated, each `name:token` or a bare token. None and a loopback "
            "bind: the server is open (with a warning); none and any other bind: it won't start."
        ),
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description=(
            "Log lines: text, or json (one object a line: ts, level, logger, msg, session_id, "
            "exc; secrets masked)."
        ),
    )
    log_file: Path | None = Field(
        default=None,
        description=(
            "Also write the log to this file, rotated by TeleCoder itself (log_max_bytes, "
            "log_backups); none: standard error only (the journal under systemd)."
        ),
    )
    log_max_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1, description="Size at which the log file is rotated."
    )
    log_backups: int = Field(
        default=5, ge=1, description="Rotated log files kept (file.1 … file.N)."
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description=(
            "A bearer token that may read GET /metrics and nothing else (API tokens may too; "
            "an open server's /metrics is open on loopback)."
        ),
    )
    max_body_bytes: int = Field(
        default=1 << 20, ge=1024, description="Largest request body the server accepts (413)."
    )
    rate_limit_per_minute: int = Field(
        default=120, ge=0, description="Writes per token per minute before 429 (0: no limit)."
    )
    bus_poll_seconds: float = Field(
        default=0.025, gt=0, description="How often the live-event reader looks for new events."
    )
    bus_notify: bool = Field(
        default=True,
        description="PostgreSQL: event appends send NOTIFY and the live-event reader wakes on "
        "it, polling only every TELECODER_BUS_FALLBACK_SECONDS (off: it polls every "
        "TELECODER_BUS_POLL_SECONDS).",
    )
    bus_fallback_seconds: float = Field(
        default=1.0,
        gt=0,
        description="PostgreSQL with TELECODER_BUS_NOTIFY: how often the live-event reader "
        "looks anyway (a lost notice delays events by this much at most).",
    )
