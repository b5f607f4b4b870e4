"""The scan before a push, on real ``git diff`` output: credential formats and TeleCoder's own
values are found (file, line, kind — never the value); hashes are not; allowed paths and
``pragma: allowlist secret`` lines are let through, but TeleCoder's own values never are."""

from __future__ import annotations

from pathlib import Path

import pytest

from telecoder import repoconfig
from telecoder.errors import BadInput
from telecoder.masking import Masker
from telecoder.secretscan import KNOWN, Finding, report, scan
from tests.conftest import GitRepo, make_repo

AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
OWN = "operator-model-key-0123456789"


def diff_of(repo: GitRepo, files: dict[str, str]) -> str:
    base = repo.git("rev-parse", "HEAD")
    for rel, content in files.items():
        (repo.path / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo.path / rel).write_text(content)
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "agent's work")
    return repo.git("diff", "--no-ext-diff", "--no-textconv", base, "HEAD") + "\n"


def test_secrets_on_added_lines_are_found_by_file_and_line(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, files={"README.md": "hello\n", "app.py": "x = 1\n"})
    diff = diff_of(
        repo,
        {
            "app.py": "x = 1\nsha = '3f786850e387550fdab836ed7e6dc881de23001b'\n"
            f"aws = '{AWS_KEY}'\n",
            "conf/settings.env": f"MODEL_KEY={OWN}\n",
            "src/safe.py": "print('hello world')\nVERSION = '1.2.3'\n",
        },
    )
    found = scan(diff, Masker([OWN]))
    assert found == [
        Finding(path="app.py", line=3, kind="AWS Access Key"),
        Finding(path="conf/settings.env", line=1, kind=KNOWN),
    ]
    message = report(found)
    assert "app.py:3 (AWS Access Key)" in message
    assert AWS_KEY not in message
    assert OWN not in message


def test_allowed_paths_and_pragmas_are_let_through_but_never_known_values(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    diff = diff_of(
        repo,
        {
            "tests/fixtures/keys.py": f"aws = '{AWS_KEY}'\nmine = '{OWN}'\n",
            "docs/example.py": f"aws = '{AWS_KEY}'  # pragma: allowlist secret\n",
        },
    )
    config = repoconfig.parse("secrets:\n  allow: [tests/fixtures]\n")
    found = scan(diff, Masker([OWN]), config.secrets.allow)
    assert found == [Finding(path="tests/fixtures/keys.py", line=2, kind=KNOWN)]
    assert scan(diff, Masker([OWN]), ["tests/*"]) == found
    assert len(scan(diff, Masker([OWN]))) == 2  # without the allow-list, the AWS key too


def test_an_unknown_secrets_key_is_refused() -> None:
    with pytest.raises(BadInput, match="secrets"):
        repoconfig.parse("secrets:\n  ignore: [x]\n")


def test_removed_lines_and_an_empty_diff_are_not_findings(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, files={"old.py": f"aws = '{AWS_KEY}'\n"})
    diff = diff_of(repo, {"old.py": "aws = None\n"})
    assert scan(diff, Masker([AWS_KEY])) == []
    assert scan("", Masker([AWS_KEY])) == []
