"""A fake Linear on 127.0.0.1: its GraphQL endpoint, and webhooks built and signed as Linear's.

``POST /graphql`` takes ``{"query", "variables"}`` with the API key in ``Authorization`` (a
wrong one: 400 with Linear's ``AUTHENTICATION_ERROR``) and answers ``commentCreate``,
``commentUpdate`` and ``issue(id) { comments }`` (pages of ``first``, after a cursor) from the
comments it keeps per issue. The webhook helpers make the payloads Linear sends (``Issue``
create/update with ``updatedFrom``, ``Comment`` create) and their headers: ``Linear-Delivery``,
``Linear-Event`` and ``Linear-Signature`` (hex HMAC-SHA256 of the body with the signing secret),
with ``webhookTimestamp`` in milliseconds.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.fakes.ticket_http import Call, JsonServer

API_KEY = "lin_api_fake0123456789"
WEBHOOK_SECRET = "lin_wh_fake-signing-secret"
ORG = "8f2c1d9e-0000-4000-8000-00000000acme"
STATES = {
    "Backlog": "st-backlog",
    "Todo": "st-todo",
    "Ready for Dev": "st-ready",
    "Done": "st-done",
}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Comment:
    id: str
    issue_id: str
    body: str
    user: str
    edits: int = 0


@dataclass
class Issue:
    id: str
    identifier: str
    number: int
    title: str
    description: str
    team: str
    state: str
    labels: list[str] = field(default_factory=list)
    updated_at: str = field(default_factory=_now)

    @property
    def url(self) -> str:
        slug = "-".join(self.title.lower().split())[:40]
        return f"https://linear.app/acme/issue/{self.identifier.lower()}/{slug}"


class FakeLinear(JsonServer):
    def __init__(self) -> None:
        super().__init__()
        self.issues: dict[str, Issue] = {}
        self.comments: list[Comment] = []
        self.labels: dict[str, str] = {}  # name -> id
        self._numbers = itertools.count(1)

    @property
    def api_url(self) -> str:
        return f"{self.url}/graphql"

    # --- the API ------------------------------------------------------------------------------

    def handle(self, call: Call) -> tuple[int, Any]:
        if call.method != "POST" or call.path != "/graphql":
            return 404, {"errors": [{"message": "Not found"}]}
        if call.headers.get("authorization") != API_KEY:
            error = {
                "message": "Authentication required, not authenticated",
                "extensions": {"code": "AUTHENTICATION_ERROR"},
            }
            return 400, {"errors": [error]}
        request = call.json() or {}
        query, variables = str(request.get("query") or ""), request.get("variables") or {}
        if "commentCreate" in query:
            return self._create(variables.get("input") or {})
        if "commentUpdate" in query:
            return self._update(str(variables.get("id")), variables.get("input") or {})
        if "comments" in query and "issue(" in query:
            return self._list(str(variables.get("id")), variables.get("after"))
        return 400, {"errors": [{"message": "the fake does not know this query"}]}

    def _create(self, given: dict[str, Any]) -> tuple[int, Any]:
        issue = self.issues.get(str(given.get("issueId")))
        if issue is None:
            return 200, {"errors": [{"message": "Entity not found: Issue"}], "data": None}
        comment = Comment(str(uuid.uuid4()), issue.id, str(given.get("body")), "telecoder")
        self.comments.append(comment)
        return 200, {"data": {"commentCreate": {"success": True, "comment": {"id": comment.id}}}}

    def _update(self, comment_id: str, given: dict[str, Any]) -> tuple[int, Any]:
        found = next((c for c in self.comments if c.id == comment_id), None)
        if found is None:
            return 200, {"errors": [{"message": "Entity not found: Comment"}], "data": None}
        found.body = str(given.get("body"))
        found.edits += 1
        return 200, {"data": {"commentUpdate": {"success": True, "comment": {"id": found.id}}}}

    def _list(self, issue_id: str, after: Any, first: int = 2) -> tuple[int, Any]:
        """Pages of two: small, so that paging is exercised."""
        if issue_id not in self.issues:
            return 200, {"errors": [{"message": "Entity not found: Issue"}], "data": None}
        mine = [c for c in self.comments if c.issue_id == issue_id]
        start = int(after) if after else 0
        page = mine[start : start + first]
        more = start + first < len(mine)
        nodes = [{"id": c.id, "body": c.body} for c in page]
        info = {"hasNextPage": more, "endCursor": str(start + first) if more else None}
        return 200, {"data": {"issue": {"comments": {"nodes": nodes, "pageInfo": info}}}}

    # --- what is on an issue --------------------------------------------------------------------

    def add_issue(
        self,
        title: str,
        description: str = "",
        *,
        team: str = "ENG",
        state: str = "Todo",
        labels: tuple[str, ...] = (),
    ) -> Issue:
        number = next(self._numbers)
        issue = Issue(
            id=str(uuid.uuid4()),
            identifier=f"{team}-{number}",
            number=number,
            title=title,
            description=description,
            team=team,
            state=state,
            labels=list(labels),
        )
        self.issues[issue.id] = issue
        return issue

    def comments_on(self, issue: Issue) -> list[Comment]:
        with self.lock:
            return [c for c in self.comments if c.issue_id == issue.id]

    def api_calls(self) -> list[Call]:
        with self.lock:
            return list(self.calls)

    # --- webhooks -------------------------------------------------------------------------------

    def _label_id(self, name: str) -> str:
        return self.labels.setdefault(name, f"lbl-{uuid.uuid4().hex[:8]}")

    def issue_data(self, issue: Issue) -> dict[str, Any]:
        return {
            "id": issue.id,
            "createdAt": issue.updated_at,
            "updatedAt": issue.updated_at,
            "number": issue.number,
            "title": issue.title,
            "description": issue.description,
            "priority": 0,
            "identifier": issue.identifier,
            "url": issue.url,
            "stateId": STATES.get(issue.state, "st-other"),
            "state": {
                "id": STATES.get(issue.state, "st-other"),
                "name": issue.state,
                "color": "#e2e2e2",
                "type": "unstarted",
            },
            "teamId": f"team-{issue.team.lower()}",
            "team": {"id": f"team-{issue.team.lower()}", "key": issue.team, "name": issue.team},
            "labelIds": [self._label_id(name) for name in issue.labels],
            "labels": [
                {"id": self._label_id(name), "name": name, "color": "#5e6ad2"}
                for name in issue.labels
            ],
            "creatorId": "user-alice",
        }

    def _envelope(self, kind: str, action: str, data: dict[str, Any], url: str) -> dict[str, Any]:
        return {
            "action": action,
            "actor": {"id": "user-alice", "name": "Alice", "type": "user"},
            "createdAt": _now(),
            "data": data,
            "url": url,
            "type": kind,
            "organizationId": ORG,
            "webhookTimestamp": int(time.time() * 1000),
            "webhookId": "wh-" + ORG[:8],
        }

    def created(self, issue: Issue) -> dict[str, Any]:
        return self._envelope("Issue", "create", self.issue_data(issue), issue.url)

    def update(self, issue: Issue, **changes: Any) -> dict[str, Any]:
        """Change the issue (``state=``, ``labels=``, ``title=``…) and give the ``update``
        webhook, with ``updatedFrom`` holding what changed, as Linear sends it."""
        before = self.issue_data(issue)
        for name, value in changes.items():
            setattr(issue, name, list(value) if name == "labels" else value)
        issue.updated_at = _now()
        data = self.issue_data(issue)
        updated_from: dict[str, Any] = {"updatedAt": before["updatedAt"]}
        for name in ("stateId", "labelIds", "title", "description"):
            if before[name] != data[name]:
                updated_from[name] = before[name]
        payload = self._envelope("Issue", "update", data, issue.url)
        payload["updatedFrom"] = updated_from
        return payload

    def comment(self, issue: Issue, body: str, *, user: str = "Alice") -> dict[str, Any]:
        """A person comments on the issue: it is kept, and its ``Comment`` ``create`` webhook."""
        comment = Comment(str(uuid.uuid4()), issue.id, body, user)
        with self.lock:
            self.comments.append(comment)
        return self.comment_created(comment)

    def comment_created(self, comment: Comment) -> dict[str, Any]:
        issue = self.issues[comment.issue_id]
        data = {
            "id": comment.id,
            "createdAt": _now(),
            "updatedAt": _now(),
            "body": comment.body,
            "issueId": issue.id,
            "userId": f"user-{comment.user.lower()}",
            "issue": {
                "id": issue.id,
                "title": issue.title,
                "identifier": issue.identifier,
                "teamId": f"team-{issue.team.lower()}",
                "url": issue.url,
            },
            "user": {"id": f"user-{comment.user.lower()}", "name": comment.user},
        }
        return self._envelope("Comment", "create", data, f"{issue.url}#comment-{comment.id[:8]}")

    def signed(
        self,
        payload: dict[str, Any],
        *,
        delivery: str | None = None,
        secret: str = WEBHOOK_SECRET,
    ) -> tuple[bytes, dict[str, str]]:
        """The body and headers of the webhook, signed as Linear signs it."""
        body = json.dumps(payload).encode()
        signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Linear-Webhook",
            "Linear-Delivery": delivery or str(uuid.uuid4()),
            "Linear-Event": str(payload["type"]),
            "Linear-Signature": signature,
        }
        return body, headers


@pytest.fixture(name="fake_linear")
def fake_linear_fixture() -> Iterator[FakeLinear]:
    with FakeLinear() as server:
        yield server
