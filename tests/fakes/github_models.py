"""The fake GitHub's records (pull requests, comments, issues, reactions, its repositories),
its refusals, and the git it runs on the bare repositories."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DOCS = "https://docs.github.com/rest"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    json: Any


@dataclass
class Pull:
    owner: str
    repo: str
    number: int
    title: str
    body: str | None
    head: str  # the branch
    base: str
    state: str = "open"
    merged: bool = False
    head_sha: str | None = None
    maintainer_can_modify: bool = False
    draft: bool = False
    labels: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.owner}:{self.head}"

    def to_json(self, url: str, *, full: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "url": f"{url}/repos/{self.owner}/{self.repo}/pulls/{self.number}",
            "html_url": f"{url}/{self.owner}/{self.repo}/pull/{self.number}",
            "number": self.number,
            "state": self.state,
            "title": self.title,
            "body": self.body,
            "head": {
                "ref": self.head,
                "label": self.label,
                "sha": self.head_sha,
                "repo": {"full_name": f"{self.owner}/{self.repo}", "name": self.repo},
            },
            "base": {
                "ref": self.base,
                "label": f"{self.owner}:{self.base}",
                "repo": {"full_name": f"{self.owner}/{self.repo}", "name": self.repo},
            },
            "merged_at": "2025-01-01T00:00:00Z" if self.merged else None,
            "maintainer_can_modify": self.maintainer_can_modify,
            "draft": self.draft,
            "labels": [{"name": name} for name in self.labels],
        }
        if full:  # like GitHub: only a single pull request says ``merged``
            data["merged"] = self.merged
        return data


@dataclass
class Comment:
    id: int
    owner: str
    repo: str
    number: int
    body: str
    login: str = "telecoder[bot]"
    kind: str = "issue"  # or "review": a review comment, in a thread
    in_reply_to: int | None = None
    edits: list[str] = field(default_factory=list)  # earlier bodies, oldest first


@dataclass
class Issue:
    number: int
    title: str
    body: str
    login: str


@dataclass
class Reaction:
    subject: str  # "issue", "comment" or "review_comment"
    id: int  # the issue's number or the comment's id
    content: str


@dataclass
class _Repo:
    owner: str
    name: str
    git_dir: Path | None
    next_number: int = 1
    pulls: dict[int, Pull] = field(default_factory=dict)
    comments: list[Comment] = field(default_factory=list)
    issues: dict[int, Issue] = field(default_factory=dict)
    reactions: list[Reaction] = field(default_factory=list)
    permissions: dict[str, str] = field(default_factory=dict)


@dataclass
class _Failure:
    status: int
    message: str
    headers: dict[str, str]
    disconnect: bool


class _Refusal(Exception):
    def __init__(self, status: int, message: str, errors: list[dict[str, str]] | None = None):
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"message": message, "documentation_url": DOCS}
        if errors:
            self.body["errors"] = errors
        self.body["status"] = str(status)


def _validation(resource: str = "PullRequest", **error: str) -> _Refusal:
    return _Refusal(422, "Validation Failed", [{"resource": resource, **error}])


def _git(git_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=git_dir, capture_output=True, text=True, check=False, env=_git_env()
    )


def _git_env() -> dict[str, str]:
    return {
        **os.environ,
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "GitHub",
        "GIT_AUTHOR_EMAIL": "noreply@github.com",
        "GIT_COMMITTER_NAME": "GitHub",
        "GIT_COMMITTER_EMAIL": "noreply@github.com",
    }


def _ahead(git_dir: Path, base: str, head: str) -> bool:
    result = _git(git_dir, "rev-list", "--count", f"refs/heads/{base}..refs/heads/{head}")
    return result.returncode == 0 and int(result.stdout.strip() or "0") > 0


def _is_ancestor(git_dir: Path, ancestor: str, descendant: str) -> bool:
    return _git(git_dir, "merge-base", "--is-ancestor", ancestor, descendant).returncode == 0


def _git_merge(git_dir: Path, pull: Pull) -> None:
    base, head = f"refs/heads/{pull.base}", f"refs/heads/{pull.head}"
    tree = _git(git_dir, "merge-tree", "--write-tree", base, head)
    if tree.returncode != 0:
        raise AssertionError(f"fake GitHub cannot merge #{pull.number}: {tree.stdout}")
    message = f"Merge pull request #{pull.number} from {pull.label}"
    commit = _git(
        git_dir, "commit-tree", tree.stdout.split()[0], "-p", base, "-p", head, "-m", message
    )
    _git(git_dir, "update-ref", base, commit.stdout.strip())
