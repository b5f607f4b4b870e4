"""``telecoder inbox`` as agents run it: real processes on one SQLite file or PostgreSQL database.

One database per module and backend (every test names its own agents, so they do not meet);
waits are short, and processes few.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import psycopg
import pytest
from pydantic import BaseModel, ConfigDict

from tests.cli import TELECODER, cli_env, telecoder
from tests.conftest import PG_ADMIN_URL


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ErrorDetail(_Strict):
    code: Literal[
        "bad_input",
        "not_found",
        "conflict",
        "lease_lost",
        "timed_out",
        "unavailable",
        "unauthorized",
        "unsupported",
        "failed",
        "interrupted",
    ]
    message: str


class ErrorBody(_Strict):
    """The one shape of every error printed with ``--json`` (README, "Inbox")."""

    error: ErrorDetail


EXIT_OF = {
    "bad_input": 2,
    "not_found": 3,
    "conflict": 4,
    "unsupported": 8,
    "lease_lost": 9,
    "timed_out": 10,
}


def error_of(done: subprocess.CompletedProcess[str], code: str) -> str:
    """Check a failed ``--json`` command: one JSON object on stdout, of the one error shape,
    with ``code`` and its exit code; returns the message."""
    assert done.returncode == EXIT_OF[code], (done.returncode, done.stdout, done.stderr)
    body = ErrorBody.model_validate(json.loads(done.stdout))
    assert body.error.code == code
    assert body.error.message
    return body.error.message


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def env(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[dict[str, str]]:
    home: Path = tmp_path_factory.mktemp("inbox-home")
    if request.param == "sqlite":
        yield cli_env(home, TELECODER_DATABASE_URL=f"sqlite:///{home / 'telecoder.db'}")
        return
    template = request.getfixturevalue("pg_template")
    name = f"telecoder_inbox_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    yield cli_env(home, TELECODER_DATABASE_URL=PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}")
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def inbox(env: dict[str, str], *args: str, agent: str | None = None, cwd: Path | None = None):
    who = ["--as", agent] if agent else []
    return telecoder("inbox", *args, *who, env=env, cwd=cwd)


def ok(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    return json.loads(done.stdout)


def spawn(env: dict[str, str], *args: str, agent: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [TELECODER, "inbox", *args, "--as", agent],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def names(prefix: str) -> tuple[str, str, str]:
    tag = uuid.uuid4().hex[:6]
    return f"{prefix}-lead-{tag}", f"{prefix}-w1-{tag}", f"{prefix}-w2-{tag}"


def test_send_fetch_claim_update_reply_done(env, tmp_path):
    lead, worker, _ = names("life")
    (tmp_path / "task.md").write_text("Build the parser.\nThen test it.\n")
    (tmp_path / "spec.bin").write_bytes(b"\x00\xffspec" * 50)
    sent = ok(
        inbox(
            env,
            "send",
            "--to",
            worker,
            "--body-file",
            str(tmp_path / "task.md"),
            "--artifact",
            str(tmp_path / "spec.bin"),
            "--json",
            agent=lead,
        )
    )
    assert (sent["from"], sent["to"], sent["status"]) == (lead, worker, "open")
    assert sent["body"] == "Build the parser.\nThen test it.\n"
    assert sent["artifacts"] == [
        {
            "name": "spec.bin",
            "sha256": hashlib.sha256(b"\x00\xffspec" * 50).hexdigest(),
            "size": 300,
        }
    ]
    mid = str(sent["id"])

    fetched = ok(inbox(env, "fetch", "--json", agent=worker))
    assert [m["id"] for m in fetched] == [sent["id"]]
    assert ok(inbox(env, "fetch", "--json", agent=worker)) == []  # read: not shown again

    claimed = ok(inbox(env, "claim", mid, "--lease", "60", "--json", agent=worker))
    assert (claimed["status"], claimed["claimed_by"]) == ("claimed", worker)
    assert claimed["lease_until"] is not None
    updated = ok(inbox(env, "update", mid, "--body", "parser done", "--json", agent=worker))
    assert updated["progress"] == "parser done"

    answer = ok(inbox(env, "reply", mid, "--body", "parsed; tests pass", "--json", agent=worker))
    assert (answer["kind"], answer["to"], answer["reply_to"]) == ("reply", lead, sent["id"])
    assert answer["thread"] == sent["thread"]
    finished = ok(inbox(env, "done", mid, "--note", "merged", "--json", agent=worker))
    assert (finished["status"], finished["note"], finished["claimed_by"]) == (
        "done",
        "merged",
        None,
    )

    assert [m["id"] for m in ok(inbox(env, "fetch", "--json", agent=lead))] == [answer["id"]]
    thread = ok(inbox(env, "list", "--thread", sent["thread"], "--json"))
    assert [(m["id"], m["status"]) for m in thread] == [
        (sent["id"], "done"),
        (answer["id"], "open"),
    ]
    saved = ok(
        inbox(
            env,
            "show",
            mid,
            "--artifact",
            "spec.bin",
            "--output",
            str(tmp_path / "got.bin"),
            "--json",
        )
    )
    assert (tmp_path / "got.bin").read_bytes() == b"\x00\xffspec" * 50
    assert saved["sha256"] == sent["artifacts"][0]["sha256"]
    shown = inbox(env, "show", mid)  # for people: the fields, then the body
    assert shown.returncode == 0, shown.stderr
    assert "done" in shown.stdout
    assert shown.stdout.rstrip().endswith("Then test it.")


def test_of_two_claimers_one_wins_and_the_other_gets_a_conflict(env):
    lead, w1, w2 = names("race")
    mid = str(ok(inbox(env, "send", "--to", w1, "--body", "one job", "--json", agent=lead))["id"])
    racers = [spawn(env, "claim", mid, "--json", agent=w) for w in (w1, w2)]
    results = [(p.wait(30), p.communicate()) for p in racers]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 4], results
    (winner,) = [json.loads(out) for code, (out, _) in results if code == 0]
    (loser,) = [out for code, (out, _) in results if code == 4]
    message = error_of(subprocess.CompletedProcess([], 4, stdout=loser, stderr=""), "conflict")
    assert f"claimed by {winner['claimed_by']}" in message
    assert winner["claimed_by"] in (w1, w2)


def test_an_expired_claim_is_claimable_again_and_its_renewal_is_lease_lost(env):
    lead, w1, w2 = names("lease")
    mid = str(ok(inbox(env, "send", "--to", w1, "--body", "slow job", "--json", agent=lead))["id"])
    ok(inbox(env, "claim", mid, "--lease", "0.5", "--json", agent=w1))
    time.sleep(0.6)
    assert ok(inbox(env, "show", mid, "--json", agent=w1))["status"] == "open"  # free again
    message = error_of(inbox(env, "renew", mid, "--lease", "60", "--json", agent=w1), "lease_lost")
    assert w1 in message
    taken = ok(inbox(env, "claim", mid, "--lease", "60", "--json", agent=w2))
    assert taken["claimed_by"] == w2
    error_of(inbox(env, "update", mid, "--body", "still mine?", "--json", agent=w1), "lease_lost")
    renewed = ok(inbox(env, "renew", mid, "--lease", "120", "--json", agent=w2))
    assert renewed["lease_until"] > taken["lease_until"]


def test_wait_reply_returns_when_a_reply_lands_and_times_out_otherwise(env):
    lead, worker, _ = names("wait")
    asked = ok(inbox(env, "send", "--to", lead, "--body", "which db?", "--json", agent=worker))
    waiting = spawn(env, "wait-reply", str(asked["id"]), "--timeout", "30", "--json", agent=worker)
    time.sleep(0.5)
    assert waiting.poll() is None  # it blocks
    answer = ok(inbox(env, "reply", str(asked["id"]), "--body", "postgres", "--json", agent=lead))
    out, errors = waiting.communicate(timeout=30)
    assert waiting.returncode == 0, errors
    got = json.loads(out)
    assert [(m["id"], m["body"], m["kind"]) for m in got] == [(answer["id"], "postgres", "reply")]
    # Seen now: another wait does not return it again, and times out with its code.
    started = time.monotonic()
    again = inbox(env, "wait-reply", str(asked["id"]), "--timeout", "0.5", "--json", agent=worker)
    assert "0.5 s" in error_of(again, "timed_out")
    assert time.monotonic() - started < 10


def test_watch_streams_new_messages_as_json_lines(env):
    lead, worker, _ = names("watch")
    first = ok(inbox(env, "send", "--to", worker, "--body", "start", "--json", agent=lead))
    thread = first["thread"]
    args = ["watch", "--thread", thread, "--since", str(first["id"]), "--timeout", "4", "--json"]
    watching = spawn(env, *args, agent=worker)
    second = ok(inbox(env, "send", "--thread", thread, "--body", "more", "--json", agent=lead))
    reply = ok(inbox(env, "reply", str(first["id"]), "--body", "ok", "--json", agent=worker))
    out, _ = watching.communicate(timeout=30)
    *lines, last = [json.loads(line) for line in out.splitlines()]
    assert [m["id"] for m in lines] == [second["id"], reply["id"]]
    # Its --timeout ended it: the error, one line of its own at the end of the stream.
    assert watching.returncode == 10
    assert ErrorBody.model_validate(last).error.code == "timed_out"


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["fetch"], "bad_input"),  # no --as, no TELECODER_AGENT
        (["claim", "twelve", "--as", "w"], "bad_input"),  # not an id
        (["update", "1", "--as", "w"], "bad_input"),  # --body is required
        (["send", "--to", "w", "--as", "w", "--body", "x", "--body-file", "f"], "bad_input"),
        (["show", "999999"], "not_found"),
        (["wait-reply", "--as", "nobody-asked", "--timeout", "0.2"], "timed_out"),
    ],
)
def test_every_error_in_json_has_the_one_shape(env, args, code):
    error_of(telecoder("inbox", *args, "--json", env=env), code)


def test_conflict_and_lease_lost_have_the_shape_too_and_plain_errors_stay_on_stderr(env):
    lead, w1, _ = names("errors")
    mid = str(ok(inbox(env, "send", "--to", w1, "--body", "x", "--json", agent=lead))["id"])
    error_of(inbox(env, "renew", mid, "--json", agent=w1), "lease_lost")
    ok(inbox(env, "cancel", mid, "--note", "not needed", "--json", agent=lead))
    assert "cancelled" in error_of(inbox(env, "done", mid, "--json", agent=w1), "conflict")
    plain = inbox(env, "done", mid, agent=w1)
    assert (plain.returncode, plain.stdout) == (4, "")
    assert plain.stderr.startswith("error: message")
    as_env = inbox({**env, "TELECODER_AGENT": w1}, "claim", "999999")
    assert (as_env.returncode, as_env.stderr.strip()) == (3, "error: no message 999999")


def test_json_errors_cover_the_rest_of_the_cli(env):
    missing = telecoder("show", "nosuchsession", "--json", env=env)
    assert "nosuchsession" in error_of(missing, "not_found")
    error_of(telecoder("list", "--limit", "many", "--json", env=env), "bad_input")
    nowhere = "http://127.0.0.1:9"
    remote_raw = telecoder("logs", "x", "--raw", "--server", nowhere, "--json", env=env)
    assert "worker host" in error_of(remote_raw, "unsupported")
    usage = telecoder("list", "--limit", "many", env=env)
    assert usage.returncode == 2
    assert usage.stdout == ""
    assert "Invalid value for '--limit'" in usage.stderr
