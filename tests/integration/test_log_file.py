"""``TELECODER_LOG_FILE``: the log also goes to a file TeleCoder rotates itself — at
``TELECODER_LOG_MAX_BYTES``, ``TELECODER_LOG_BACKUPS`` old files kept — with every secret
masked, uvicorn's lines included (a real ``telecoder serve``); several processes may share one
file and lose no line."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from telecoder.logformat import log_to_file
from tests.cli import TELECODER, cli_env, telecoder
from tests.conftest import GitRepo
from tests.e2e.test_serve import free_port

PLANTED = "planted-Wq2n7RkT0pL9xC4m"


def rotated(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + ".*"))


def test_the_file_rotates_at_its_size_and_keeps_its_backups(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "telecoder.log"  # its directory is made
    logger = logging.getLogger("telecoder.test_log_file")
    handler = log_to_file(path, max_bytes=500, backups=2, loggers=())
    try:
        assert log_to_file(path, max_bytes=500, backups=2, loggers=()) is handler  # once
        for n in range(200):
            logger.warning("line %03d of the log", n)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    assert [p.name for p in rotated(path)] == ["telecoder.log.1", "telecoder.log.2"]
    for p in [path, *rotated(path)]:
        assert 0 < p.stat().st_size <= 500
    assert path.stat().st_mode & 0o077 == 0  # the owner's alone
    assert path.read_text().rstrip().endswith("line 199 of the log")
    assert "line 000" not in "".join(p.read_text() for p in [path, *rotated(path)])
    assert " WARNING telecoder.test_log_file: line 199 of the log" in path.read_text()


WRITER = """
import logging, sys
from pathlib import Path
from telecoder.logformat import log_to_file
path, name, lines = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
log_to_file(path, max_bytes=2000, backups=500, loggers=())
logging.getLogger().setLevel(logging.INFO)
for n in range(lines):
    logging.getLogger("w").info("%s line %05d", name, n)
"""


def test_processes_sharing_the_file_lose_no_line(tmp_path: Path) -> None:
    path = tmp_path / "shared.log"
    lines, names = 1500, ("alpha", "bravo", "charl")
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, str(lines)])
        for name in names
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    files = [path, *rotated(path)]
    written = [line for p in files for line in p.read_text().splitlines()]
    for name in names:  # every line once: none written into a file another process rotated away
        mine = sorted(line.split(": ", 1)[1] for line in written if f": {name} line" in line)
        assert mine == [f"{name} line {n:05d}" for n in range(lines)]
    assert len(written) == lines * len(names)
    # Rotated one at a time: each file about its size (a line may land after another's rotation).
    assert len(files) > 50
    assert max(p.stat().st_size for p in files) < 2000 * 2


def test_a_server_writes_its_log_to_a_rotated_file_masked(
    home: Path, git_repo: GitRepo, tmp_path: Path
) -> None:
    log = tmp_path / "var" / "telecoder.log"
    (home / "config.env").write_text(
        f"ACME_DEPLOY_TOKEN={PLANTED}\nTELECODER_RUNTIME=local\n"
        f"TELECODER_LOG_FILE={log}\nTELECODER_LOG_MAX_BYTES=300\nTELECODER_LOG_BACKUPS=3\n"
    )
    (home / "config.env").chmod(0o600)
    env = cli_env(home, TELECODER_POLL_SECONDS="0.1", GIT_CONFIG_GLOBAL="/dev/null")
    closed = free_port()  # nobody listens: each notification fails, and says where it went
    added = telecoder(
        "subscriptions", "add", f"http://127.0.0.1:{closed}/hook/{PLANTED}", "--json", env=env
    )
    assert added.returncode == 0, added.stderr
    assert not log.exists()  # a short command logs to standard error only
    port = free_port()
    proc = subprocess.Popen(
        [TELECODER, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"

    def everything() -> str:
        return "".join(p.read_text() for p in [log, *rotated(log)] if p.exists())

    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/api/health", timeout=1).status_code in (200, 503):
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        for n in range(3):
            created = httpx.post(
                f"{base}/api/sessions",
                json={"repo": str(git_repo.path), "prompt": f"echo {n}", "engine": "shell"},
                timeout=10,
            )
            assert created.status_code == 201, created.text
        deadline = time.monotonic() + 40
        while everything().count("notification") < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    text = everything()
    assert " INFO uvicorn.error: " in text  # uvicorn's own loggers write there too
    assert text.count("notification") >= 3, text
    assert "/hook/***" in text
    assert PLANTED not in text
    assert [p.name for p in rotated(log)] == [f"telecoder.log.{n}" for n in (1, 2, 3)]
    for p in [log, *rotated(log)]:
        assert p.stat().st_size <= 300 + 400  # a line past the size ends the file it starts
