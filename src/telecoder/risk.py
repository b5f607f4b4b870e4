"""A pull request's risk tier — low, medium or high — from its diff and its checks.

A pure function (``assess``) of the paths the change touches, its size and the ``verify``
reports of its last revision. The rules, the first that applies raising the tier:

high
    - a check failed in the last revision;
    - it touches CI configuration: ``.github/workflows/``, ``.github/actions/``,
      ``.gitlab-ci.yml``, ``.circleci/``, ``.buildkite/``, ``Jenkinsfile``, ``azure-pipelines.yml``,
      ``.travis.yml``;
    - it touches database migrations: a ``migrations/``, ``migrate/`` or ``alembic/`` directory,
      or a ``.sql`` file;
    - it touches authentication or security code: a path with a part naming ``auth``,
      ``oauth``, ``security``, ``crypto``, ``permission(s)``, ``password``, ``secret(s)``,
      ``login``, ``session(s)`` or ``token(s)`` (``src/auth/``, ``security.py``, ``login_form.ts``),
      or ``CODEOWNERS``;
    - it is large: more than ``LARGE_LINES`` changed lines or ``LARGE_FILES`` files.

medium
    - it touches a dependency manifest or lockfile (``package.json``, ``package-lock.json``,
      ``yarn.lock``, ``pnpm-lock.yaml``, ``pyproject.toml``, ``requirements*.txt``, ``poetry.lock``,
      ``uv.lock``, ``Pipfile(.lock)``, ``go.mod``, ``go.sum``, ``Cargo.toml``, ``Cargo.lock``,
      ``Gemfile(.lock)``, ``composer.json``/``.lock``, ``pom.xml``, ``build.gradle(.kts)``);
    - it is mid-sized: more than ``SMALL_LINES`` changed lines or ``SMALL_FILES`` files;
    - no check verified it and it changes more than documentation.

low
    everything else: a small change, verified by passing checks (or documentation only:
    ``*.md``, ``*.rst``, ``*.txt``, ``*.adoc``, ``docs/``, ``LICENSE``), touching none of the above.

Plain values in and out (no telecoder imports): the outcome and the forge's label both read it.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

SMALL_LINES = 50
SMALL_FILES = 5
LARGE_LINES = 500
LARGE_FILES = 25


class Tier(enum.StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def label(self) -> str:
        """The pull request's label: ``risk:low``, ``risk:medium``, ``risk:high``."""
        return f"risk:{self.value}"


_ORDER = {Tier.LOW: 0, Tier.MEDIUM: 1, Tier.HIGH: 2}


@dataclass(frozen=True, slots=True, kw_only=True)
class Risk:
    tier: Tier
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"tier": self.tier.value, "label": self.tier.label, "reasons": list(self.reasons)}


_CI_PREFIXES = (".github/workflows/", ".github/actions/", ".circleci/", ".buildkite/")
_CI_FILES = {".gitlab-ci.yml", "jenkinsfile", "azure-pipelines.yml", ".travis.yml"}
_MIGRATION_DIRS = {"migrations", "migrate", "alembic"}
_SENSITIVE = re.compile(
    r"(^|[^a-z])(auth|oauth\d*|security|crypto|permissions?|passwords?|secrets?|login|"
    r"sessions?|tokens?)([^a-z]|$)"
)
_MANIFESTS = {
    "package.json", "package-lock.json", "npm-shrinkwrap.json", "yarn.lock", "pnpm-lock.yaml",
    "pyproject.toml", "poetry.lock", "uv.lock", "pipfile", "pipfile.lock", "setup.py",
    "setup.cfg", "go.mod", "go.sum", "cargo.toml", "cargo.lock", "gemfile", "gemfile.lock",
    "composer.json", "composer.lock", "pom.xml", "build.gradle", "build.gradle.kts",
}  # fmt: skip
_REQUIREMENTS = re.compile(r"^requirements[\w.-]*\.(txt|in)$")
_DOC_SUFFIXES = {".md", ".rst", ".txt", ".adoc"}
_DOC_FILES = {"license", "licence", "authors", "changelog", "notice"}


def assess(
    paths: Iterable[str],
    *,
    insertions: int,
    deletions: int,
    checks: Iterable[Mapping[str, Any]] = (),
) -> Risk:
    """The risk tier of a change to ``paths`` of that size, with these ``verify`` reports (the
    data of the attempt's verify events: ``ok``, ``command``, ``revision``)."""
    files = sorted({p.strip().lstrip("/") for p in paths if p.strip()})
    lines = insertions + deletions
    passed, failed = _checks(checks)
    found: list[tuple[Tier, str]] = []
    if failed:
        found.append((Tier.HIGH, f"checks failed: {', '.join(failed)}"))
    for path, why in _kinds(files):
        found.append(
            (Tier.MEDIUM if why == "a dependency manifest" else Tier.HIGH, f"{why}: {path}")
        )
    if lines > LARGE_LINES or len(files) > LARGE_FILES:
        found.append((Tier.HIGH, f"a large change: {len(files)} file(s), {lines} line(s)"))
    elif lines > SMALL_LINES or len(files) > SMALL_FILES:
        found.append((Tier.MEDIUM, f"a mid-sized change: {len(files)} file(s), {lines} line(s)"))
    if not passed and not failed and not all(_is_doc(p) for p in files):
        found.append((Tier.MEDIUM, "no check verified it"))
    if not found:
        return Risk(tier=Tier.LOW, reasons=["a small change with nothing sensitive"])
    tier = max((t for t, _ in found), key=_ORDER.__getitem__)
    return Risk(tier=tier, reasons=[why for t, why in found if t == tier])


def checks_passed(checks: Iterable[Mapping[str, Any]]) -> bool:
    """Whether checks ran and all of the last revision's passed."""
    passed, failed = _checks(checks)
    return bool(passed) and not failed


def _checks(checks: Iterable[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """The commands that passed and failed in the last revision that ran."""
    reports: Sequence[Mapping[str, Any]] = list(checks)
    if not reports:
        return [], []
    last = max(int(r.get("revision") or 0) for r in reports)
    current = [r for r in reports if int(r.get("revision") or 0) == last]
    passed = [str(r.get("command")) for r in current if r.get("ok")]
    failed = [str(r.get("command")) for r in current if not r.get("ok")]
    return passed, failed


def _kinds(files: Sequence[str]) -> Iterable[tuple[str, str]]:
    for path in files:
        why = _kind(path)
        if why is not None:
            yield path, why


def _kind(path: str) -> str | None:
    lower = path.lower()
    parts = PurePosixPath(lower).parts
    name = parts[-1] if parts else lower
    if lower.startswith(_CI_PREFIXES) or name in _CI_FILES:
        return "CI configuration"
    if _MIGRATION_DIRS.intersection(parts[:-1]) or name.endswith(".sql"):
        return "a database migration"
    if name == "codeowners" or any(_SENSITIVE.search(part) for part in parts):
        return "authentication or security code"
    if name in _MANIFESTS or _REQUIREMENTS.match(name):
        return "a dependency manifest"
    return None


def _is_doc(path: str) -> bool:
    lower = path.lower()
    pure = PurePosixPath(lower)
    return lower.startswith("docs/") or pure.suffix in _DOC_SUFFIXES or pure.stem in _DOC_FILES
