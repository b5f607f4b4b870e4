"""Webhooks as the fake GitHub sends them: payloads of its own issues, comments and pull
requests, signed as GitHub signs them (``X-Hub-Signature-256: sha256=<hex HMAC>``).

A mixin of ``FakeGitHub`` (``tests/fakes/github.py``): it reads the fake's state.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.fakes.github import Comment, Pull


def user_json(login: str, *, bot: bool | None = None) -> dict[str, Any]:
    is_bot = login.endswith("[bot]") if bot is None else bot
    return {"login": login, "type": "Bot" if is_bot else "User"}


_user = user_json


class WebhookPayloads:
    """Payload builders and signing (``self`` is the ``FakeGitHub``)."""

    url: str
    webhook_secret: str
    _lock: Any

    def git_url(self, owner: str, name: str) -> str:  # defined by FakeGitHub
        raise NotImplementedError

    # --- webhooks --------------------------------------------------------------------------

    def repository_json(self, owner: str, name: str) -> dict[str, Any]:
        return {
            "id": abs(hash((owner, name))) % 10**8,
            "name": name,
            "full_name": f"{owner}/{name}",
            "owner": {"login": owner, "type": "Organization"},
            "private": False,
            "clone_url": self.git_url(owner, name),
            "html_url": f"{self.url}/{owner}/{name}",
            "default_branch": "main",
        }

    def issue_json(self, owner: str, name: str, number: int) -> dict[str, Any]:
        with self._lock:
            repo = self._repo(owner, name)
            if number in repo.pulls:
                pull = repo.pulls[number]
                return {
                    "number": number,
                    "title": pull.title,
                    "body": pull.body,
                    "user": {"login": "octocat", "type": "User"},
                    "labels": [],
                    "pull_request": {"url": f"{self.url}/repos/{owner}/{name}/pulls/{number}"},
                }
            issue = repo.issues[number]
            return {
                "number": number,
                "title": issue.title,
                "body": issue.body,
                "user": {"login": issue.login, "type": "User"},
                "labels": [],
                "html_url": f"{self.url}/{owner}/{name}/issues/{number}",
            }

    def labeled_payload(
        self, owner: str, name: str, number: int, label: str, *, sender: str = "octocat"
    ) -> dict[str, Any]:
        issue = self.issue_json(owner, name, number)
        issue["labels"] = [{"name": label}]
        return {
            "action": "labeled",
            "issue": issue,
            "label": {"name": label},
            "repository": self.repository_json(owner, name),
            "sender": _user(sender),
            "installation": {"id": 4242},
        }

    def comment_payload(self, comment: Comment, *, fork: bool = False) -> dict[str, Any]:
        """The ``issue_comment`` (or, for a review comment, ``pull_request_review_comment``)
        payload of a comment just created."""
        owner, name = comment.owner, comment.repo
        data = {
            "action": "created",
            "comment": self._comment_json(comment),
            "repository": self.repository_json(owner, name),
            "sender": _user(comment.login),
            "installation": {"id": 4242},
        }
        with self._lock:
            pull = self._repo(owner, name).pulls.get(comment.number)
        if comment.kind == "review":
            assert pull is not None
            data["pull_request"] = self._pull_payload(pull, fork=fork)
        else:
            data["issue"] = self.issue_json(owner, name, comment.number)
        return data

    def pull_payload(self, pull: Pull, *, fork: bool = False) -> dict[str, Any]:
        return self._pull_payload(pull, fork=fork)

    def _pull_payload(self, pull: Pull, *, fork: bool) -> dict[str, Any]:
        data = pull.to_json(self.url)
        head_repo = self.repository_json(pull.owner, pull.repo)
        if fork:
            head_repo = {
                **self.repository_json("mallory", pull.repo),
                "fork": True,
                "clone_url": f"{self.url}/mallory/{pull.repo}.git",
            }
        data["head"]["repo"] = head_repo
        data["base"]["repo"] = self.repository_json(pull.owner, pull.repo)
        data["user"] = _user("octocat")
        return data

    def check_run_payload(
        self, pull: Pull, *, conclusion: str = "failure", name: str = "tests", text: str = ""
    ) -> dict[str, Any]:
        """``check_run`` ``completed`` on the pull request's head commit."""
        with self._lock:
            sha = self._sha(self._repo(pull.owner, pull.repo), pull.head) or pull.head_sha
        ref = {"ref": pull.head, "sha": sha, "repo": {"name": pull.repo}}
        return {
            "action": "completed",
            "check_run": {
                "id": 9001,
                "name": name,
                "head_sha": sha,
                "status": "completed",
                "conclusion": conclusion,
                "html_url": f"{self.url}/{pull.owner}/{pull.repo}/runs/9001",
                "output": {"title": f"{name} failed", "summary": "1 failed", "text": text},
                "app": {"name": "GitHub Actions"},
                "pull_requests": [{"number": pull.number, "head": ref, "base": {"ref": pull.base}}],
            },
            "repository": self.repository_json(pull.owner, pull.repo),
            "sender": _user("github-actions[bot]"),
            "installation": {"id": 4242},
        }

    def closed_payload(self, pull: Pull) -> dict[str, Any]:
        """``pull_request`` ``closed`` (merged when it was)."""
        return {
            "action": "closed",
            "number": pull.number,
            "pull_request": self._pull_payload(pull, fork=False),
            "repository": self.repository_json(pull.owner, pull.repo),
            "sender": _user("maintainer"),
            "installation": {"id": 4242},
        }

    def sign(self, body: bytes, secret: str | None = None) -> str:
        key = (secret if secret is not None else self.webhook_secret).encode()
        return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()

    def webhook_headers(
        self, event: str, body: bytes, *, delivery: str | None = None, secret: str | None = None
    ) -> dict[str, str]:
        """The headers GitHub sends with a webhook (``X-Hub-Signature-256`` over the body)."""
        return {
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/7e5a3b1",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "X-GitHub-Hook-ID": "123456",
            "X-Hub-Signature-256": self.sign(body, secret),
        }
