"""The CLI's exit codes and its JSON output: what every command needs, without Rich."""

from __future__ import annotations

import enum
import json
import sys
from typing import Any


class Exit(enum.IntEnum):
    """Stable exit codes (documented in the README)."""

    OK = 0
    TASK_FAILED = 1  # the session failed or is dead
    BAD_INPUT = 2  # the command line or the request is wrong; nothing was queued
    NOT_FOUND = 3  # no such session
    CONFLICT = 4  # the session's state forbids it (cancel a finished session, …)
    CANCELLED = 5  # the session was cancelled
    UNAVAILABLE = 6  # the database (or server) cannot be reached
    UNAUTHORIZED = 7  # the server refused the API token (--server)
    UNSUPPORTED = 8  # not available here (db backup on PostgreSQL, logs --raw with --server)
    LEASE_LOST = 9  # the inbox claim expired or another agent holds it now
    TIMED_OUT = 10  # a wait (inbox wait-reply, orch wait, council wait) timed out
    INTERRUPTED = 130  # Ctrl-C


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")
    sys.stdout.flush()


def print_json_line(value: Any) -> None:
    """One JSON object on one line (JSON Lines), for streams."""
    sys.stdout.write(json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n")
    sys.stdout.flush()
