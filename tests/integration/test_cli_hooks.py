"""``telecoder hooks`` and ``telecoder subscriptions`` as a user runs them (subprocesses)."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import yaml

from telecoder.channels import hooks
from tests.cli import TELECODER, cli_env, telecoder, wait_for
from tests.fakes.receiver import Receiver


def test_hooks_add_list_remove(tmp_path):
    env = cli_env(tmp_path / "home")
    added = telecoder(
        "hooks", "add", "ci",
        "--repo", "{{ payload.repo }}",
        "--prompt", "Fix {{ payload.test }}",
        "--idempotency-key", "{{ payload.run_id }}",
        env=env,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    secret = added.stdout.strip()
    assert secret.startswith("whsec_")
    path = tmp_path / "home" / "hooks" / "ci.yaml"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert yaml.safe_load(path.read_text())["secret"] == secret
    assert hooks.load(path.parent, "ci").spec.prompt == "Fix {{ payload.test }}"

    listed = telecoder("hooks", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["name"] == "ci"
    assert row["idempotency_key"] == "{{ payload.run_id }}"
    assert secret not in listed.stdout

    twice = telecoder("hooks", "add", "ci", "--repo", "r", "--prompt", "p", env=env)
    assert twice.returncode == 2
    assert "exists" in twice.stderr
    broken = telecoder("hooks", "add", "b", "--repo", "{{ x", "--prompt", "p", env=env)
    assert broken.returncode == 2
    assert "repo template" in broken.stderr

    assert telecoder("hooks", "remove", "ci", env=env).returncode == 0
    gone = telecoder("hooks", "remove", "ci", env=env)
    assert gone.returncode == 3
    assert "no hook 'ci'" in gone.stderr


def test_subscriptions_add_list_remove(tmp_path):
    env = cli_env(tmp_path / "home")
    added = telecoder(
        "subscriptions", "add", "https://example.com/in", "--events", "finished,failed", "--json",
        env=env,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    made = json.loads(added.stdout)
    assert made["events"] == ["failed", "finished"]
    assert made["secret"].startswith("whsec_")

    listed = telecoder("subscriptions", "list", "--json", env=env)
    assert json.loads(listed.stdout) == [{k: v for k, v in made.items() if k != "secret"}]

    bad = telecoder("subscriptions", "add", "https://x", "--events", "done", env=env)
    assert bad.returncode == 2
    assert "unknown event 'done'" in bad.stderr

    assert telecoder("subscriptions", "remove", made["id"], env=env).returncode == 0
    assert json.loads(telecoder("subscriptions", "list", "--json", env=env).stdout) == []
    missing = telecoder("subscriptions", "remove", made["id"], env=env)
    assert missing.returncode == 3


def test_a_worker_process_sends_the_notification_of_its_session(tmp_path, git_repo):
    """`telecoder worker` runs a deliverer too: a session it finishes is notified, signed."""
    env = cli_env(
        tmp_path / "home", TELECODER_POLL_SECONDS="0.1", TELECODER_NOTIFY_POLL_SECONDS="0.1"
    )
    with Receiver() as receiver:
        added = telecoder("subscriptions", "add", receiver.url, "--json", env=env)
        receiver.secret = json.loads(added.stdout)["secret"]
        done = telecoder(
            "run", "echo ok > ok.txt", "--repo", str(git_repo.path), "--detach", env=env
        )
        session_id = done.stdout.strip()
        worker = subprocess.Popen(
            [TELECODER, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        try:
            wait_for(lambda: receiver.verified, timeout=60, what="the notification")
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(30)
    (bodies,) = receiver.verified.values()
    assert bodies[0]["type"] == "session.finished"
    assert bodies[0]["data"]["session"]["id"] == session_id
    assert bodies[0]["data"]["session"]["status"] == "succeeded"
