"""Risk tiers: CI configuration, migrations, auth code and failed checks are high; manifests,
mid-sized or unverified changes medium; a small verified change or a line of docs low."""

from __future__ import annotations

import pytest

from telecoder.risk import Tier, assess

PASSED = [{"command": "pytest -q", "ok": True, "revision": 0}]


@pytest.mark.parametrize(
    "path",
    [
        ".github/workflows/ci.yml",
        ".gitlab-ci.yml",
        "db/migrations/0002_add.py",
        "schema/001_init.sql",
        "src/app/auth/middleware.py",
        "app/security.py",
        "web/login_form.ts",
        ".github/CODEOWNERS",
    ],
)
def test_sensitive_paths_are_high_even_when_small_and_verified(path: str) -> None:
    risk = assess([path], insertions=1, deletions=0, checks=PASSED)
    assert risk.tier == Tier.HIGH
    assert path in risk.reasons[0]
    assert risk.to_dict()["label"] == "risk:high"


def test_a_one_line_docs_change_is_low_without_checks() -> None:
    risk = assess(["README.md"], insertions=1, deletions=0)
    assert risk.tier == Tier.LOW
    assert risk.tier.label == "risk:low"


def test_a_small_verified_code_change_is_low_and_unverified_is_medium() -> None:
    assert assess(["src/app/util.py"], insertions=3, deletions=1, checks=PASSED).tier == Tier.LOW
    unverified = assess(["src/app/util.py"], insertions=3, deletions=1)
    assert (unverified.tier, unverified.reasons) == (Tier.MEDIUM, ["no check verified it"])


@pytest.mark.parametrize("path", ["package.json", "poetry.lock", "requirements-dev.txt", "go.sum"])
def test_dependency_manifests_are_medium(path: str) -> None:
    assert assess([path], insertions=1, deletions=1, checks=PASSED).tier == Tier.MEDIUM


def test_size_raises_the_tier() -> None:
    assert assess(["a.py"], insertions=60, deletions=0, checks=PASSED).tier == Tier.MEDIUM
    many = [f"src/m{i}.py" for i in range(30)]
    assert assess(many, insertions=30, deletions=0, checks=PASSED).tier == Tier.HIGH
    assert assess(["a.py"], insertions=400, deletions=200, checks=PASSED).tier == Tier.HIGH


def test_a_check_failing_in_the_last_revision_is_high_an_earlier_failure_is_not() -> None:
    checks = [
        {"command": "pytest -q", "ok": False, "revision": 0},
        {"command": "pytest -q", "ok": True, "revision": 1},
    ]
    assert assess(["a.py"], insertions=1, deletions=0, checks=checks).tier == Tier.LOW
    failing = [*checks, {"command": "ruff check", "ok": False, "revision": 1}]
    risk = assess(["a.py"], insertions=1, deletions=0, checks=failing)
    assert risk.tier == Tier.HIGH
    assert risk.reasons == ["checks failed: ruff check"]


def test_words_inside_other_words_are_not_sensitive() -> None:
    # "author" holds "auth" but is not authentication code; "tokenizer" is not "token".
    for path in ["src/authors_list.py", "lib/tokenizer.py", "src/sessionless/x.py"]:
        assert assess([path], insertions=1, deletions=0, checks=PASSED).tier == Tier.LOW, path
