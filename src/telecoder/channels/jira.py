"""Jira Cloud: an issue moved to the trigger status (or given the label) becomes a session.

Jira Cloud's admin webhooks with a secret send ``X-Hub-Signature: sha256=<hex HMAC-SHA256 of
the body>``; the scheme has no timestamp, so a redelivery is told apart by
``X-Atlassian-Webhook-Identifier`` (else the event, the issue id and the payload's timestamp).
``parse`` takes

- ``jira:issue_updated`` whose changelog moves ``status`` to ``TELECODER_JIRA_STATUS`` or adds
  ``TELECODER_JIRA_LABEL`` to ``labels``;
- ``jira:issue_created`` already in that status or with that label;
- ``comment_created``: continues the issue's session (its thread is the issue key); without one
  it starts a session only when it mentions ``@telecoder``. TeleCoder's own comments (they end
  with its signature line) are ignored.

Descriptions and comments come as Atlassian Document Format (or a string) and are flattened to
text. Replies go through REST v3 with basic auth (email and API token): a comment, and one
status comment per session, edited in place and found again by its signature line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from telecoder import signing
from telecoder.channels import adf, json_object, tickets
from telecoder.protocols import Inbound
from telecoder.settings import Settings

NAME = "jira"
SIGNATURE = "— TeleCoder"  # the last line of every comment TeleCoder writes
MAX_TEXT = 20_000
PAGE = 100
_STATUS = re.compile(r"^— TeleCoder · session (?P<id>\S+) · (?P<at>\S*)$")


def status_line(session_id: str, stamp: str) -> str:
    return f"{SIGNATURE} · session {session_id} · {stamp}"


def own(text: str) -> bool:
    lines = text.strip().splitlines()
    return bool(lines) and lines[-1].strip().startswith(SIGNATURE)


class JiraChannel(tickets.StatusComments):
    name = NAME

    def __init__(
        self,
        *,
        secret: str,
        url: str,
        email: str,
        token: str,
        status: str,
        label: str,
        public_url: str | None = None,
    ) -> None:
        super().__init__(public_url)
        self._secret = secret
        self.url = url.rstrip("/")
        self._auth = (email, token)
        self.status = status
        self.label = label

    @classmethod
    def from_settings(cls, settings: Settings) -> JiraChannel | None:
        secret, token = settings.jira_webhook_secret, settings.jira_api_token
        if secret is None or token is None or not settings.jira_url or not settings.jira_email:
            return None
        return cls(
            secret=secret.get_secret_value(),
            url=settings.jira_url,
            email=settings.jira_email,
            token=token.get_secret_value(),
            status=settings.jira_status,
            label=settings.jira_label,
            public_url=settings.public_url,
        )

    # --- in -------------------------------------------------------------------------------------

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> None:
        given = headers.get("x-hub-signature")
        if given is not None and not given.strip().lower().startswith("sha256="):
            given = "unsupported"  # only sha256= is accepted
        signing.verify_hmac(self._secret, given, body, header="X-Hub-Signature")

    def parse(self, headers: Mapping[str, str], body: bytes) -> Sequence[Inbound]:
        return self.read(headers, body)[0]

    def read(self, headers: Mapping[str, str], body: bytes) -> tuple[list[Inbound], str]:
        """The messages in a verified delivery, or none and why."""
        payload = json_object(body)
        event = str(payload.get("webhookEvent") or "")
        issue = payload.get("issue")
        if not isinstance(issue, dict) or not issue.get("key"):
            return [], f"a {event or 'delivery'} without an issue is not a trigger"
        key = _key(headers, payload, event, issue)
        if event in ("jira:issue_updated", "jira:issue_created"):
            return self._issue(payload, event, issue, key)
        if event == "comment_created":
            return self._comment(payload, issue, key)
        return [], f"{event or 'an unnamed event'} is not a trigger"

    def _issue(
        self, payload: dict[str, Any], event: str, issue: dict[str, Any], key: str
    ) -> tuple[list[Inbound], str]:
        fields = tickets.obj(issue.get("fields"))
        if event == "jira:issue_created":
            status = str(tickets.obj(fields.get("status")).get("name") or "")
            labels = [str(label).lower() for label in fields.get("labels") or []]
            hit = status == self.status or self.label.lower() in labels
        else:
            items = tickets.obj(payload.get("changelog")).get("items") or []
            hit = any(self._moved(item) for item in items)
        if not hit:
            why = f"the issue did not move to {self.status!r} nor get the label {self.label!r}"
            return [], why
        title = str(fields.get("summary") or "")
        text = adf.text(fields.get("description")).strip() or title
        sender = tickets.obj(payload.get("user"))
        return [self._inbound(issue, key, sender, text=text, title=title)], ""

    def _moved(self, item: Any) -> bool:
        if not isinstance(item, dict):
            return False
        if item.get("field") == "status":
            return item.get("toString") == self.status
        if item.get("field") == "labels":
            before = str(item.get("fromString") or "").lower().split()
            after = str(item.get("toString") or "").lower().split()
            return self.label.lower() in after and self.label.lower() not in before
        return False

    def _comment(
        self, payload: dict[str, Any], issue: dict[str, Any], key: str
    ) -> tuple[list[Inbound], str]:
        comment = tickets.obj(payload.get("comment"))
        body = adf.text(comment.get("body"))
        if own(body):
            return [], "TeleCoder's own comment"
        text = tickets.without_mention(body)
        if not text:
            return [], "an empty comment"
        author = tickets.obj(comment.get("author"))
        title = str(tickets.obj(issue.get("fields")).get("summary") or "") or None
        addressed = tickets.mentions(body)
        return [self._inbound(issue, key, author, text=text, title=title, addressed=addressed)], ""

    def _inbound(
        self,
        issue: dict[str, Any],
        key: str,
        sender: dict[str, Any],
        *,
        text: str,
        title: str | None,
        addressed: bool = True,
    ) -> Inbound:
        issue_key = str(issue["key"])
        project = tickets.obj(tickets.obj(issue.get("fields")).get("project")).get("key")
        return Inbound(
            channel=NAME,
            key=key,
            thread=issue_key,
            place=str(project or issue_key.rpartition("-")[0]),
            sender=str(sender.get("accountId") or sender.get("name") or "unknown"),
            sender_name=sender.get("displayName"),
            text=text[:MAX_TEXT],
            addressed=addressed,
            title=title,
            url=f"{self.url}/browse/{issue_key}",
            reply={"issue_key": issue_key, "identifier": issue_key},
        )

    # --- out ------------------------------------------------------------------------------------

    async def say(self, origin: Mapping[str, object], text: str) -> None:
        await self._create(str(origin["issue_key"]), f"{text}\n\n{SIGNATURE}")

    def _ours(self, origin: Mapping[str, Any]) -> bool:
        return origin.get("channel") == NAME and bool(origin.get("issue_key"))

    async def _find_status(
        self, origin: Mapping[str, Any], session_id: str
    ) -> tuple[str, str] | None:
        start = 0
        while True:
            params = {"startAt": str(start), "maxResults": str(PAGE)}
            data = await self._call("GET", _comments(origin), params=params)
            comments = data.get("comments") or []
            for comment in comments:
                lines = adf.text(comment.get("body")).strip().splitlines()
                found = _STATUS.match(lines[-1].strip()) if lines else None
                if found is not None and found.group("id") == session_id:
                    return str(comment["id"]), found.group("at")
            start += len(comments)
            if not comments or start >= int(data.get("total") or 0):
                return None

    async def _post_status(
        self, origin: Mapping[str, Any], session_id: str, stamp: str, text: str
    ) -> str:
        body = f"{text}\n\n{status_line(session_id, stamp)}"
        return await self._create(str(origin["issue_key"]), body)

    async def _edit_status(
        self, origin: Mapping[str, Any], comment_id: str, session_id: str, stamp: str, text: str
    ) -> None:
        body = {"body": adf.document(f"{text}\n\n{status_line(session_id, stamp)}")}
        path = f"{_comments(origin)}/{quote(comment_id, safe='')}"
        await self._call("PUT", path, json=body)

    async def _create(self, issue_key: str, text: str) -> str:
        path = f"/rest/api/3/issue/{quote(issue_key, safe='')}/comment"
        data = await self._call("POST", path, json={"body": adf.document(text)})
        if not data.get("id"):
            raise tickets.TicketError("Jira did not create the comment")
        return str(data["id"])

    async def _call(self, method: str, path: str, **options: Any) -> dict[str, Any]:
        try:
            async with httpx.AsyncClient(
                base_url=self.url, auth=self._auth, timeout=tickets.HTTP_TIMEOUT
            ) as http:
                response = await http.request(
                    method, path, headers={"Accept": "application/json"}, **options
                )
        except httpx.HTTPError as e:
            raise tickets.TicketError(f"Jira could not be reached: {type(e).__name__}") from None
        if response.status_code >= 400:
            raise tickets.TicketError(f"Jira answered {response.status_code} to {method} {path}")
        try:
            answer = response.json()
        except ValueError:
            raise tickets.TicketError(f"Jira answered {method} {path} without JSON") from None
        return answer if isinstance(answer, dict) else {}


def _comments(origin: Mapping[str, Any]) -> str:
    return f"/rest/api/3/issue/{quote(str(origin['issue_key']), safe='')}/comment"


def _key(headers: Mapping[str, str], payload: dict[str, Any], event: str, issue: Any) -> str:
    delivery = (headers.get("x-atlassian-webhook-identifier") or "").strip()
    if delivery:
        return delivery[:255]
    comment = tickets.obj(payload.get("comment"))
    parts = (event, issue.get("id"), comment.get("id"), payload.get("timestamp"))
    return ":".join(str(part or "") for part in parts if part is not None)[:255]
