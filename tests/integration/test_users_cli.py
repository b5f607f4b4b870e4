"""``telecoder users``, ``tokens`` and ``audit`` as a user runs them (subprocesses on a real
SQLite file), and what the database holds of a token: its digest, never the token."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from telecoder.cli.exits import Exit
from tests.cli import cli_env, telecoder


def _ok(*args: str, env: dict[str, str]) -> str:
    done = telecoder(*args, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_users_tokens_and_audit_commands(home: Path) -> None:
    env = cli_env(home)
    _ok("users", "add", "alice", "--role", "member", env=env)
    _ok("users", "add", "val", "--role", "viewer", env=env)
    assert telecoder("users", "add", "alice", env=env).returncode == Exit.CONFLICT
    assert telecoder("users", "set-role", "zed", "admin", env=env).returncode == Exit.NOT_FOUND
    assert telecoder("tokens", "create", env=env).returncode == Exit.BAD_INPUT  # whose?
    _ok("users", "set-role", "val", "member", env=env)
    _ok("users", "disable", "val", env=env)
    users = json.loads(_ok("users", "list", "--json", env=env))
    assert [(u["name"], u["role"], u["disabled"]) for u in users] == [
        ("alice", "member", False),
        ("val", "member", True),
    ]

    made = _ok("tokens", "create", "--user", "alice", "--label", "laptop", env=env)
    token = made.splitlines()[-1]
    assert token.startswith("tc_")
    assert len(token) > 40
    assert " " not in token
    worker = _ok("tokens", "create", "--role", "worker", env=env).splitlines()[-1]
    listed = _ok("tokens", "list", "--json", env=env)
    assert token not in listed
    assert worker not in listed
    rows = json.loads(listed)
    assert [(t["id"], t["user"], t["role"], t["label"]) for t in rows] == [
        (1, "alice", None, "laptop"),
        (2, None, "worker", None),
    ]
    _ok("tokens", "revoke", "2", env=env)
    assert json.loads(_ok("tokens", "list", "--json", env=env))[1]["revoked_at"] is not None

    # The database holds the digest only: no file of it contains the token.
    files = [p for p in home.rglob("*") if p.is_file() and ".db" in p.name]
    assert files, "no database file"
    blob = b"".join(p.read_bytes() for p in files)
    assert token.encode() not in blob
    assert worker.encode() not in blob
    assert hashlib.sha256(token.encode()).hexdigest().encode() in blob

    # Every change above (not the refused ones, not the reads) is one audit row.
    audit = json.loads(_ok("audit", "--json", "--limit", "100", env=env))
    assert [r["action"] for r in reversed(audit)] == [
        "users add",
        "users add",
        "users set-role",
        "users disable",
        "tokens create",
        "tokens create",
        "tokens revoke",
    ]
    assert {r["source"] for r in audit} == {"cli"}
    assert all(r["actor"].startswith("cli") and r["role"] == "admin" for r in audit)
    recent = json.loads(_ok("audit", "--json", "--since", "1h", "--limit", "2", env=env))
    assert [r["target"] for r in recent] == ["token 2", "token 2"]
    table = _ok("tokens", "list", env=env)
    assert "laptop" in table
    assert token not in table
