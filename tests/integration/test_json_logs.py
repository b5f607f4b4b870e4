"""``TELECODER_LOG_FORMAT=json``: every line a JSON object (ts, level, logger, msg, session_id,
exc), and no secret of the configuration in any of them — a real ``telecoder serve`` whose
config.env holds a planted token, made to log a failure that carries it."""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from telecoder.logformat import SESSION_ID, JsonFormatter
from telecoder.masking import Masker
from tests.cli import TELECODER, cli_env, telecoder
from tests.conftest import GitRepo
from tests.e2e.test_serve import free_port

PLANTED = "planted-Zq8v3XkT0pL9wR2m"
API = "api-Hn4tY7cQ1sD5fG8j"


def test_a_record_becomes_one_masked_json_line_with_its_session() -> None:
    formatter = JsonFormatter(Masker([PLANTED]).text)
    try:
        raise RuntimeError(f"cannot reach https://x:{PLANTED}@example.com")
    except RuntimeError:
        record = logging.LogRecord(
            "telecoder.test", logging.ERROR, __file__, 1, "push with %s failed", (PLANTED,), True
        )
        record.exc_info = sys.exc_info()
    known = SESSION_ID.set("s-123")
    try:
        line = json.loads(formatter.format(record))
    finally:
        SESSION_ID.reset(known)
    assert line["level"] == "error"
    assert line["logger"] == "telecoder.test"
    assert line["msg"] == "push with *** failed"
    assert line["session_id"] == "s-123"
    assert "RuntimeError" in line["exc"]
    assert PLANTED not in json.dumps(line)
    assert line["ts"].endswith("+00:00")
    assert "session_id" not in json.loads(formatter.format(record))


def test_a_server_with_json_logs_never_writes_a_planted_secret(
    home: Path, git_repo: GitRepo, tmp_path: Path
) -> None:
    (home / "config.env").write_text(
        f"ACME_DEPLOY_TOKEN={PLANTED}\nTELECODER_LOG_FORMAT=json\nTELECODER_RUNTIME=local\n"
        f"TELECODER_API_TOKEN=ops:{API}\n"
    )
    (home / "config.env").chmod(0o600)
    env = cli_env(
        home,
        TELECODER_POLL_SECONDS="0.1",
        TELECODER_HEARTBEAT_SECONDS="0.3",
        GIT_CONFIG_GLOBAL="/dev/null",
        GIT_CONFIG_NOSYSTEM="1",
    )
    closed = free_port()  # nobody listens: the notification fails, and says where it went
    added = telecoder(
        "subscriptions", "add", f"http://127.0.0.1:{closed}/hook/{PLANTED}", "--json", env=env
    )
    assert added.returncode == 0, added.stderr
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [TELECODER, "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        auth = {"authorization": f"Bearer {API}"}
        for _ in range(300):
            try:
                if httpx.get(f"{base}/api/health", timeout=1).status_code in (200, 503):
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        created = httpx.post(
            f"{base}/api/sessions",
            json={"repo": str(git_repo.path), "prompt": f"echo {PLANTED}", "engine": "shell"},
            headers=auth,
            timeout=10,
        )
        assert created.status_code == 201, created.text
        deadline = time.monotonic() + 40
        while "notification" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    text = log_path.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # every line parses
    failed = [p for p in parsed if "notification" in p["msg"]]
    assert failed, text
    assert "/hook/***" in failed[0]["msg"]
    assert {"ts", "level", "logger", "msg"} <= set(failed[0])
    assert PLANTED not in text
    assert base64.b64encode(PLANTED.encode()).decode() not in text
    assert API not in text
