"""`telecoder service`: the unit it renders passes `systemd-analyze verify` without a warning, and
its ExecStart line — run with the unit's environment, working directory and (emulated) hardening:
read-only system, no new privileges — serves /api/health and runs a session in the sandbox.

systemd itself does not run here, so `install` writes the unit and exits 8, saying so; the
hardening is emulated in a private mount namespace (`unshare --mount`, root remounted read-only
but for ReadWritePaths) under `setpriv --no-new-privs`."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from tests.cli import TELECODER, cli_env, telecoder, until_serving
from tests.conftest import GitRepo

TOKEN = "service-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unit_values(text: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def verify(unit: Path, *, user: bool, env: dict[str, str]) -> None:
    command = ["systemd-analyze", "verify", *(["--user"] if user else []), str(unit)]
    with tempfile.TemporaryDirectory(prefix="xdg") as runtime:  # short: socket paths fit
        done = subprocess.run(
            command, env={**env, "XDG_RUNTIME_DIR": runtime}, capture_output=True, text=True
        )
    assert done.returncode == 0, done.stderr
    # A warning about our unit ("Unknown key …, ignoring") is a failure; the host's own units'
    # complaints are not ours.
    ours = [line for line in done.stderr.splitlines() if unit.name in line]
    assert ours == [], done.stderr


def test_install_renders_a_verified_hardened_unit(tmp_path: Path) -> None:
    home = tmp_path / "tc"
    env = cli_env(home, HOME=str(tmp_path))
    done = telecoder("service", "install", "--user", env=env)
    assert done.returncode == 8, done.stderr  # unsupported here: no systemd
    assert "systemd is not running" in done.stderr
    unit = tmp_path / ".config/systemd/user/telecoder.service"
    text = unit.read_text()
    values = unit_values(text)
    assert values["ExecStart"] == [f"{TELECODER} serve"]
    assert values["EnvironmentFile"] == [f"-{home}/config.env"]
    assert values["Restart"] == ["on-failure"]
    assert values["ReadWritePaths"] == [str(home)]
    for line in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=read-only"):
        assert f"\n{line}\n" in text
    assert "\nRestrictNamespaces=" not in text  # bubblewrap needs namespaces
    assert values["StandardOutput"] == ["journal"]
    verify(unit, user=True, env=env)

    status = telecoder("service", "status", "--user", env=env)
    assert status.returncode == 8
    assert "present" in status.stdout

    # A system unit for a worker, logging to a file it rotates: printed, verified as a system unit.
    log = tmp_path / "logs" / "telecoder.log"
    shown = telecoder(
        "service", "install", "--worker", "--dry-run", "--log-file", str(log), env=env
    )
    assert shown.returncode == 0, shown.stderr
    unit_text = shown.stdout
    assert unit_text.startswith("# /etc/systemd/system/telecoder-worker.service\n")
    assert "logrotate" not in unit_text  # TeleCoder rotates the file itself
    assert f"ExecStart={TELECODER} worker\n" in unit_text
    shown_values = unit_values(unit_text)
    assert f"TELECODER_LOG_FILE={log}" in shown_values["Environment"]
    assert shown_values["ReadWritePaths"] == [f"{home} {log.parent}"]
    assert shown_values["StandardOutput"] == ["journal"]  # what prints before logging starts
    system_unit = tmp_path / "telecoder-worker.service"
    system_unit.write_text(unit_text)
    verify(system_unit, user=False, env=env)

    assert telecoder("service", "uninstall", "--user", env=env).returncode == 0
    assert not unit.exists()
    assert telecoder("service", "uninstall", "--user", env=env).returncode == 3


def test_the_units_exec_start_serves_and_sandboxes_under_its_hardening(
    tmp_path: Path, git_repo: GitRepo
) -> None:
    home = tmp_path / "tc"
    home.mkdir(mode=0o700)
    port = free_port()
    (home / "config.env").write_text(
        f"TELECODER_PORT={port}\nTELECODER_API_TOKEN={TOKEN}\nTELECODER_POLL_SECONDS=0.1\n"
    )
    env = cli_env(home, HOME=str(tmp_path))
    remotes = git_repo.remote.parent.parent
    log = tmp_path / "logs" / "telecoder.log"
    log.parent.mkdir()  # `install` makes it; a dry run does not
    shown = telecoder(
        "service", "install", "--dry-run", "--writable", str(remotes), "--log-file", str(log),
        env=env,
    )  # fmt: skip
    values = unit_values(shown.stdout)
    assert values["ReadWritePaths"] == [f"{home} {remotes} {log.parent}"]
    # The unit's environment: its Environment= lines and its EnvironmentFile=, as systemd does.
    service_env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG")}
    service_env.update(v.split("=", 1) for v in values["Environment"])  # type: ignore[arg-type]
    config = Path(values["EnvironmentFile"][0].removeprefix("-"))
    service_env.update(
        line.split("=", 1) for line in config.read_text().splitlines() if "=" in line
    )  # type: ignore[arg-type]
    writable = values["ReadWritePaths"][0].split()
    hardened = " && ".join(
        [
            "mount --make-rprivate /",
            "mount -o remount,bind,ro /",
            *(f"mount --bind {p} {p} && mount -o remount,bind,rw {p}" for p in writable),
            f"exec setpriv --no-new-privs -- {values['ExecStart'][0]}",
        ]
    )
    proc = subprocess.Popen(
        ["unshare", "--mount", "sh", "-c", hardened],
        env=service_env,
        cwd=values["WorkingDirectory"][0],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    auth = {"authorization": f"Bearer {TOKEN}"}
    try:
        health = until_serving(
            proc, base, seconds=60, what="no /api/health from the unit's ExecStart"
        )
        assert health.json()["sandbox"] == "ok"
        created = httpx.post(
            f"{base}/api/sessions",
            json={
                "repo": str(git_repo.path),
                "prompt": "echo hardened > proof.txt",
                "engine": "shell",
            },
            headers=auth,
        ).json()
        deadline = time.monotonic() + 90
        while True:
            session = httpx.get(f"{base}/api/sessions/{created['id']}", headers=auth).json()
            if session["status"] not in ("queued", "running"):
                break
            assert time.monotonic() < deadline, session
            time.sleep(0.3)
        assert session["status"] == "succeeded", (session["error"], session["failure_kind"])
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=60)
    assert TOKEN not in output
    written = log.read_text()  # written under the hardening, by the service's own process
    assert " INFO uvicorn.error: " in written
    assert TOKEN not in written
