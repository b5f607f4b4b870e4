"""``telecoder hooks`` and ``telecoder subscriptions`` as a user runs them (subprocesses)."""

from __future__ import annotations

import json

import yaml

from telecoder.channels import hooks
from tests.cli import cli_env, telecoder


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
