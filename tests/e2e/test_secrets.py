"""A planted secret never leaves: ``telecoder serve`` runs a shell agent that prints the forge
token (and its base64) and commits a file with an AWS key and that token. The session fails
``secret_detected`` naming file and line; the token is nowhere — events, raw logs, the API, the
server's own output, the database file — and the remote never gets the branch."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import httpx

from tests.cli import cli_env, telecoder
from tests.conftest import GitRepo
from tests.e2e.test_serve import free_port, serve_process

API_TOKEN = "serve-token-0123456789abcdef"
PART = "Zq8x" * 3
SECRET = "ghp_" + PART * 3  # a GitHub token's shape: ghp_ and 36 characters
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
# The prompt is stored and shown as it is: it spells the token out only when the shell runs it.
PROMPT = (
    f"P={PART}; T=ghp_$P$P$P; "
    'echo "pushing with $T"; '
    'printf "x-access-token:%s" "$T" | base64; '
    f"printf 'aws_key = \"{AWS_KEY}\"\\n' > leak.py; "
    "echo \"token = '$T'\" >> leak.py"
)


def forms() -> list[str]:
    """The token as an agent could print it: itself, and inside git's Basic credentials."""
    basic = base64.b64encode(f"x-access-token:{SECRET}".encode()).decode()
    return [SECRET, basic, basic[8:40]]


def wait_started(base: str, proc) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/api/health").json()["workers"]["alive"] == 1:
                return
        except httpx.HTTPError:
            pass
        assert proc.poll() is None
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)


def test_a_planted_secret_never_leaves(home: Path, git_repo: GitRepo):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    auth = {"authorization": f"Bearer {API_TOKEN}"}
    proc = serve_process(
        home, "127.0.0.1", port, TELECODER_API_TOKEN=API_TOKEN, GITHUB_TOKEN=SECRET
    )
    try:
        wait_started(base, proc)
        created = httpx.post(
            f"{base}/api/sessions",
            json={"repo": str(git_repo.path), "prompt": PROMPT, "engine": "shell"},
            headers=auth,
        )
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        deadline = time.monotonic() + 60
        while True:
            session = httpx.get(f"{base}/api/sessions/{sid}", headers=auth)
            if session.json()["status"] in ("succeeded", "failed", "dead"):
                break
            assert time.monotonic() < deadline, session.text
            time.sleep(0.2)
        events = httpx.get(f"{base}/api/sessions/{sid}/events", headers=auth)
        page = httpx.get(f"{base}/sessions/{sid}", headers=auth)
    finally:
        proc.terminate()
        server_log, _ = proc.communicate(timeout=30)

    data = session.json()
    assert data["status"] == "failed", data
    assert data["failure_kind"] == "secret_detected"
    assert "leak.py:1 (AWS Access Key)" in data["error"]
    assert "leak.py:2" in data["error"]
    assert AWS_KEY not in data["error"]

    # The agent did print it: the events show where, masked.
    streamed = [json.loads(line[6:]) for line in events.text.splitlines() if line[:6] == "data: "]
    outputs = [e["data"]["text"] for e in streamed if e.get("kind") == "output"]
    assert "pushing with ***" in outputs

    raw = telecoder("logs", sid, "--raw", "--json", env=cli_env(home))
    assert raw.returncode == 0, raw.stderr
    assert "pushing with ***" in raw.stdout

    database = (home / "telecoder.db").read_bytes()
    for wal in home.glob("telecoder.db-*"):
        database += wal.read_bytes()
    places = {
        "session": session.text,
        "events": events.text,
        "dashboard": page.text,
        "raw log": raw.stdout,
        "server log": server_log,
        "database": database.decode("latin-1"),
    }
    for where, text in places.items():
        for form in forms():
            assert form not in text, f"the token is in the {where}"

    assert git_repo.remote_git("branch", "--list", f"telecoder/{sid}") == ""  # nothing pushed


def test_a_repository_url_with_a_credential_is_refused_and_not_stored(home: Path):
    url = f"https://x-access-token:{SECRET}@github.com/acme/repo.git"
    done = telecoder("run", "echo hi", "--repo", url, "--engine", "shell", env=cli_env(home))
    assert done.returncode == 2, done.stderr
    assert "https://github.com/acme/repo.git" in done.stderr
    assert "GITHUB_TOKEN" in done.stderr
    assert SECRET not in done.stdout + done.stderr
    listed = telecoder("sessions", "--json", env=cli_env(home))
    assert SECRET not in listed.stdout
