"""A fake Jira Cloud on 127.0.0.1: REST v3 comments, and webhooks signed as Jira signs them.

``/rest/api/3/issue/{key}/comment``: ``GET`` (pages: ``startAt``, ``maxResults``, ``total``),
``POST`` and ``PUT …/{id}`` with an Atlassian Document Format body, behind basic auth (the
account's email and API token: else 401). An unknown issue is a 404, a body that is not an ADF
document a 400, as Jira answers. The webhook helpers make the payloads of Jira Cloud's admin
webhooks (``jira:issue_created``, ``jira:issue_updated`` with a ``changelog``,
``comment_created``) and their headers: ``X-Atlassian-Webhook-Identifier`` and, for a webhook
with a secret, ``X-Hub-Signature: sha256=<hex HMAC-SHA256 of the body>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.fakes.ticket_http import Call, JsonServer

EMAIL = "telecoder@acme.example"
API_TOKEN = "ATATT3xFfGF0-fake-token"
WEBHOOK_SECRET = "jira-webhook-secret-0123"
STATUS_IDS = {"To Do": "10000", "Ready for Dev": "10001", "In Progress": "3", "Done": "10002"}


def adf(text: str) -> dict[str, Any]:
    """The ADF a person's plain text becomes in Jira's editor: a paragraph per line."""
    paragraphs = [
        {"type": "paragraph", "content": [{"type": "text", "text": line}]}
        for line in text.splitlines()
        if line
    ]
    return {"type": "doc", "version": 1, "content": paragraphs}


def adf_text(node: Any) -> str:
    """All the text of an ADF node, paragraphs on their own lines (to read comments)."""
    if isinstance(node, list):
        return "".join(adf_text(n) for n in node)
    if not isinstance(node, dict):
        return ""
    if node.get("type") == "text":
        return str(node.get("text"))
    if node.get("type") == "hardBreak":
        return "\n"
    inner = adf_text(node.get("content"))
    return inner + "\n" if node.get("type") == "paragraph" else inner


@dataclass
class Comment:
    id: str
    key: str
    body: dict[str, Any]
    author: str
    edits: int = 0

    @property
    def text(self) -> str:
        return adf_text(self.body)


@dataclass
class Issue:
    id: str
    key: str
    summary: str
    description: Any
    status: str
    labels: list[str] = field(default_factory=list)

    @property
    def project(self) -> str:
        return self.key.rpartition("-")[0]


class FakeJira(JsonServer):
    def __init__(self) -> None:
        super().__init__()
        self.issues: dict[str, Issue] = {}
        self.comments: list[Comment] = []
        self._ids = itertools.count(10001)

    # --- the API ------------------------------------------------------------------------------

    def handle(self, call: Call) -> tuple[int, Any]:
        expected = "Basic " + base64.b64encode(f"{EMAIL}:{API_TOKEN}".encode()).decode()
        if call.headers.get("authorization") != expected:
            return 401, {"errorMessages": ["You are not authenticated."], "errors": {}}
        parts = call.path.strip("/").split("/")
        if parts[:4] != ["rest", "api", "3", "issue"] or len(parts) < 6 or parts[5] != "comment":
            return 404, {"errorMessages": ["Not found"], "errors": {}}
        issue = self.issues.get(parts[4])
        if issue is None:
            return 404, {"errorMessages": ["Issue does not exist or you do not have permission"]}
        if call.method == "GET" and len(parts) == 6:
            return self._list(issue, call.query)
        body = (call.json() or {}).get("body")
        if not (isinstance(body, dict) and body.get("type") == "doc" and body.get("version") == 1):
            return 400, {"errorMessages": [], "errors": {"comment": "Comment body is not valid!"}}
        if call.method == "POST" and len(parts) == 6:
            comment = Comment(str(next(self._ids)), issue.key, body, EMAIL)
            self.comments.append(comment)
            return 201, self._json(comment)
        if call.method == "PUT" and len(parts) == 7:
            found = next((c for c in self.comments if c.id == parts[6]), None)
            if found is None or found.key != issue.key:
                return 404, {"errorMessages": ["Can not find a comment for the id"], "errors": {}}
            found.body, found.edits = body, found.edits + 1
            return 200, self._json(found)
        return 405, {"errorMessages": ["Method not allowed"]}

    def _list(self, issue: Issue, query: dict[str, str]) -> tuple[int, Any]:
        start, most = int(query.get("startAt", "0")), min(int(query.get("maxResults", "50")), 2)
        mine = [c for c in self.comments if c.key == issue.key]
        page = [self._json(c) for c in mine[start : start + most]]
        return 200, {"startAt": start, "maxResults": most, "total": len(mine), "comments": page}

    def _json(self, comment: Comment) -> dict[str, Any]:
        return {
            "id": comment.id,
            "self": f"{self.url}/rest/api/3/issue/{comment.key}/comment/{comment.id}",
            "author": {"accountId": "acc-" + comment.author, "displayName": comment.author},
            "body": comment.body,
        }

    # --- what is on an issue --------------------------------------------------------------------

    def add_issue(
        self, summary: str, description: str = "", *, project: str = "PROJ", status: str = "To Do"
    ) -> Issue:
        number = len([i for i in self.issues.values() if i.project == project]) + 1
        issue = Issue(
            id=str(next(self._ids)),
            key=f"{project}-{number}",
            summary=summary,
            description=adf(description) if description else None,
            status=status,
        )
        self.issues[issue.key] = issue
        return issue

    def comments_on(self, issue: Issue) -> list[Comment]:
        with self.lock:
            return [c for c in self.comments if c.key == issue.key]

    # --- webhooks -------------------------------------------------------------------------------

    def issue_json(self, issue: Issue) -> dict[str, Any]:
        return {
            "id": issue.id,
            "self": f"{self.url}/rest/api/3/issue/{issue.id}",
            "key": issue.key,
            "fields": {
                "summary": issue.summary,
                "description": issue.description,
                "labels": list(issue.labels),
                "status": {"name": issue.status, "id": STATUS_IDS.get(issue.status, "1")},
                "project": {"id": "10000", "key": issue.project, "name": issue.project.title()},
                "issuetype": {"name": "Task"},
            },
        }

    def _event(self, event: str, issue: Issue, **more: Any) -> dict[str, Any]:
        return {
            "timestamp": int(time.time() * 1000),
            "webhookEvent": event,
            "user": {"accountId": "acc-alice", "displayName": "Alice", "active": True},
            "issue": self.issue_json(issue),
            **more,
        }

    def created(self, issue: Issue) -> dict[str, Any]:
        return self._event("jira:issue_created", issue, issue_event_type_name="issue_created")

    def update(self, issue: Issue, **changes: Any) -> dict[str, Any]:
        """Change the issue (``status=``, ``labels=``, ``summary=``) and give the
        ``jira:issue_updated`` webhook with its changelog."""
        items = []
        for name, value in changes.items():
            before = getattr(issue, name)
            setattr(issue, name, list(value) if name == "labels" else value)
            if name == "status":
                items.append(
                    {
                        "field": "status",
                        "fieldtype": "jira",
                        "fieldId": "status",
                        "from": STATUS_IDS.get(before, "1"),
                        "fromString": before,
                        "to": STATUS_IDS.get(value, "1"),
                        "toString": value,
                    }
                )
            elif name == "labels":
                items.append(
                    {
                        "field": "labels",
                        "fieldtype": "jira",
                        "fieldId": "labels",
                        "from": None,
                        "fromString": " ".join(before),
                        "to": None,
                        "toString": " ".join(value),
                    }
                )
            else:
                items.append(
                    {
                        "field": name,
                        "fieldtype": "jira",
                        "fieldId": name,
                        "from": None,
                        "fromString": str(before),
                        "to": None,
                        "toString": str(value),
                    }
                )
        changelog = {"id": str(next(self._ids)), "items": items}
        return self._event(
            "jira:issue_updated", issue, issue_event_type_name="issue_generic", changelog=changelog
        )

    def comment(self, issue: Issue, text: str, *, author: str = "Alice") -> dict[str, Any]:
        """A person comments on the issue: it is kept, and its ``comment_created`` webhook."""
        comment = Comment(str(next(self._ids)), issue.key, adf(text), author)
        with self.lock:
            self.comments.append(comment)
        return self.comment_created(comment)

    def comment_created(self, comment: Comment) -> dict[str, Any]:
        issue = self.issues[comment.key]
        body = {
            "id": comment.id,
            "self": f"{self.url}/rest/api/2/issue/{issue.id}/comment/{comment.id}",
            "author": {"accountId": "acc-" + comment.author.lower(), "displayName": comment.author},
            "body": comment.body,
            "created": "2026-11-28T12:00:00.000+0000",
        }
        event = self._event("comment_created", issue, comment=body)
        event["issue"]["fields"] = {  # Jira sends a few fields with a comment's issue
            "summary": issue.summary,
            "status": event["issue"]["fields"]["status"],
            "project": event["issue"]["fields"]["project"],
        }
        return event

    def signed(
        self,
        payload: dict[str, Any],
        *,
        identifier: str | None = None,
        secret: str = WEBHOOK_SECRET,
    ) -> tuple[bytes, dict[str, str]]:
        """The body and headers of the webhook, signed as Jira Cloud signs it."""
        body = json.dumps(payload).encode()
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Atlassian Webhook HTTP Client",
            "X-Atlassian-Webhook-Identifier": identifier or str(uuid.uuid4()),
            "X-Atlassian-Webhook-Flow": "Primary",
            "X-Hub-Signature": f"sha256={digest}",
        }
        return body, headers


@pytest.fixture(name="fake_jira")
def fake_jira_fixture() -> Iterator[FakeJira]:
    with FakeJira() as server:
        yield server
