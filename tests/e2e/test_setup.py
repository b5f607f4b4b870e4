"""`telecoder setup`: the non-interactive form writes a 0600 config.env that `telecoder serve` then
runs with (its port, its API token); the wizard, driven through a pseudo-terminal, completes. The
GitHub token is checked against the fake GitHub's `GET /user`."""

from __future__ import annotations

import io
import json
import os
import socket
import stat
from pathlib import Path

import httpx
import pexpect

from tests.cli import TELECODER, cli_env, start_serve, telecoder, until_serving
from tests.fakes.github import USER_LOGIN, FakeGitHub

MODEL_KEY = "sk-ant-api03-" + "k" * 40 + "9f3e"
API_TOKEN = "ops-token-" + "z" * 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_non_interactive_setup_writes_a_config_serve_runs_with(
    tmp_path: Path, fake_github: FakeGitHub
) -> None:
    env = cli_env(tmp_path)
    port = free_port()
    done = telecoder(
        "setup", "--non-interactive", "--json",
        "--github-token", fake_github.token, "--github-api-url", fake_github.url,
        "--model-key", MODEL_KEY, "--engine", "shell", "--channels", "github",
        "--port", str(port), "--api-token", API_TOKEN,
        env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for secret in (fake_github.token, MODEL_KEY, API_TOKEN):
        assert secret not in done.stdout + done.stderr
    summary = json.loads(done.stdout)
    assert summary["github_login"] == USER_LOGIN
    assert summary["model_provider"] == "Anthropic"
    assert summary["written"]["ANTHROPIC_API_KEY"] == "****9f3e"
    assert summary["sandbox"] in ("ok", "unavailable")
    assert "shell" in summary["engines_installed"]
    config = tmp_path / "config.env"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    text = config.read_text()
    assert f"GITHUB_TOKEN={fake_github.token}\n" in text
    assert f"ANTHROPIC_API_KEY={MODEL_KEY}\n" in text
    assert "TELECODER_GITHUB_WEBHOOK_SECRET=" in text  # generated for the github channel
    assert [r.path for r in fake_github.requests] == ["/user"]

    # Run again without --yes: refused, the file untouched.
    again = telecoder("setup", "--non-interactive", "--skip-github", env=env)
    assert again.returncode == 4
    assert config.read_text() == text

    # serve reads it: its port, and its API token guards the API.
    proc = start_serve(env)
    base = f"http://127.0.0.1:{port}"
    try:
        until_serving(proc, base, what="serve never answered on the configured port")
        assert httpx.get(f"{base}/api/workers").status_code == 401
        auth = {"authorization": f"Bearer {API_TOKEN}"}
        assert httpx.get(f"{base}/api/workers", headers=auth).status_code == 200
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    assert API_TOKEN not in output
    assert MODEL_KEY not in output


def test_a_refused_token_or_an_unknown_key_writes_nothing(
    tmp_path: Path, fake_github: FakeGitHub
) -> None:
    env = cli_env(tmp_path)
    bad = "ghp_" + "x" * 36
    done = telecoder(
        "setup", "--non-interactive", "--github-token", bad, "--github-api-url", fake_github.url,
        env=env,
    )  # fmt: skip
    assert done.returncode == 7, done.stderr
    assert "refused the token" in done.stderr
    assert bad not in done.stderr
    done = telecoder(
        "setup", "--non-interactive", "--skip-github", "--model-key", "zz-unknown-0123456789",
        env=env,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--model-key-var" in done.stderr
    done = telecoder("setup", "--non-interactive", "--skip-github", "--engine", "nope", env=env)
    assert done.returncode == 2
    assert "claude-code" in done.stderr
    done = telecoder("setup", "--non-interactive", "--skip-github", "--channels", "slack", env=env)
    assert done.returncode == 2
    assert "--slack-bot-token" in done.stderr
    assert not (tmp_path / "config.env").exists()


def test_the_wizard_completes_on_a_terminal(tmp_path: Path, fake_github: FakeGitHub) -> None:
    env = cli_env(tmp_path, TELECODER_GITHUB_API_URL=fake_github.url, TERM="xterm")
    env["PATH"] = os.defpath  # no agent CLIs: the wizard offers to install them
    child = pexpect.spawn(TELECODER, ["setup"], env=env, encoding="utf-8", timeout=30)
    child.logfile_read = seen = io.StringIO()
    try:
        child.expect("GitHub token")
        child.sendline("ghp_wrong_" + "w" * 30)
        child.expect("refused the token")
        child.expect("GitHub token")
        child.sendline(fake_github.token)
        child.expect(f"belongs to {USER_LOGIN}")
        child.expect("Model API key")
        child.sendline(MODEL_KEY)
        child.expect("Anthropic")
        child.expect("Install the pinned agent CLIs")
        child.send("n")
        child.expect("Default engine")
        child.send("\r")  # the default: shell
        child.expect("Channels")
        child.send("\r")  # none
        child.expect("Port")
        child.send("\x15")  # Ctrl-U: clear the default
        child.sendline("8191")
        child.expect("Write config.env")
        child.send("y")
        child.expect("wrote ")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    transcript = seen.getvalue()
    assert child.exitstatus == 0, transcript
    text = (tmp_path / "config.env").read_text()
    assert f"GITHUB_TOKEN={fake_github.token}\n" in text
    assert f"ANTHROPIC_API_KEY={MODEL_KEY}\n" in text
    assert "TELECODER_ENGINE=shell\n" in text
    assert "TELECODER_PORT=8191\n" in text
    assert MODEL_KEY not in transcript
    assert fake_github.token not in transcript
