"""Linear: an issue that enters the trigger state (or gets the label) becomes a session.

Linear signs each webhook with ``Linear-Signature``, the hex HMAC-SHA256 of the raw body keyed
with the webhook's signing secret, and puts ``webhookTimestamp`` (milliseconds) in the body: a
delivery more than a minute old is refused as a replay. ``parse`` takes

- ``Issue`` ``update`` that moved the issue into ``TELECODER_LINEAR_STATE`` (``data.state.name``
  is it and ``updatedFrom.stateId`` says the state changed), or added ``TELECODER_LINEAR_LABEL``
  (in ``data.labels`` and not among ``updatedFrom.labelIds``);
- ``Issue`` ``create`` already in that state or with that label;
- ``Comment`` ``create`` on an issue: continues the issue's session (the conversation finds it
  by the thread, the issue id); without one it starts a session only when it mentions
  ``@telecoder``. TeleCoder's own comments (they start with ``<!-- telecoder``) are ignored.

Replies go through the GraphQL API with the API key: ``commentCreate`` and, for the one status
comment of each session, ``commentUpdate`` (found again in the issue's comments by its marker).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from telecoder import signing
from telecoder.channels import json_object, tickets
from telecoder.errors import WebhookSignatureInvalid
from telecoder.protocols import Inbound
from telecoder.settings import Settings

NAME = "linear"
MARKER = "<!-- telecoder"  # starts every comment TeleCoder writes
TOLERANCE_MS = 60_000
MAX_TEXT = 20_000
_STATUS = re.compile(r"^<!-- telecoder session=(?P<id>\S+) at=(?P<at>\S*) -->")

CREATE = """mutation($input: CommentCreateInput!) {
  commentCreate(input: $input) { success comment { id } }
}"""
UPDATE = """mutation($id: String!, $input: CommentUpdateInput!) {
  commentUpdate(id: $id, input: $input) { success comment { id } }
}"""
COMMENTS = """query($id: String!, $after: String) {
  issue(id: $id) {
    comments(first: 100, after: $after) { nodes { id body } pageInfo { hasNextPage endCursor } }
  }
}"""


def status_marker(session_id: str, stamp: str) -> str:
    return f"{MARKER} session={session_id} at={stamp} -->"


class LinearChannel(tickets.StatusComments):
    name = NAME

    def __init__(
        self,
        *,
        secret: str,
        api_key: str,
        api_url: str,
        state: str,
        label: str,
        public_url: str | None = None,
    ) -> None:
        super().__init__(public_url)
        self._secret = secret
        self._api_key = api_key
        self.api_url = api_url
        self.state = state
        self.label = label

    @classmethod
    def from_settings(cls, settings: Settings) -> LinearChannel | None:
        if settings.linear_webhook_secret is None or settings.linear_api_key is None:
            return None
        return cls(
            secret=settings.linear_webhook_secret.get_secret_value(),
            api_key=settings.linear_api_key.get_secret_value(),
            api_url=settings.linear_api_url,
            state=settings.linear_state,
            label=settings.linear_label,
            public_url=settings.public_url,
        )

    # --- in -------------------------------------------------------------------------------------

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> None:
        given = headers.get("linear-signature")
        if not given:
            raise WebhookSignatureInvalid("missing the Linear-Signature header")
        expected = signing.hmac_hex(self._secret, body)
        if not hmac.compare_digest(given.strip().lower().encode(), expected.encode()):
            raise WebhookSignatureInvalid("the Linear-Signature does not match the body")
        stamp = json_object(body).get("webhookTimestamp")
        if not isinstance(stamp, int | float) or isinstance(stamp, bool):
            raise WebhookSignatureInvalid("the body has no webhookTimestamp")
        if abs(now * 1000 - stamp) > TOLERANCE_MS:
            raise WebhookSignatureInvalid(
                "the webhookTimestamp is more than 60 s from now: refused as a replay (stale)"
            )

    def parse(self, headers: Mapping[str, str], body: bytes) -> Sequence[Inbound]:
        return self.read(headers, body)[0]

    def read(self, headers: Mapping[str, str], body: bytes) -> tuple[list[Inbound], str]:
        """The messages in a verified delivery, or none and why."""
        payload = json_object(body)
        kind, action = payload.get("type"), payload.get("action")
        data = payload.get("data")
        if not isinstance(data, dict):
            return [], "the delivery has no data"
        key = _key(headers, payload, data)
        if kind == "Issue" and action in ("create", "update"):
            return self._issue(payload, data, key)
        if kind == "Comment" and action == "create":
            return self._comment(payload, data, key)
        return [], f"a {kind} {action} is not a trigger"

    def _issue(
        self, payload: dict[str, Any], data: dict[str, Any], key: str
    ) -> tuple[list[Inbound], str]:
        before = payload.get("updatedFrom") if payload.get("action") == "update" else None
        before = before if isinstance(before, dict) else {}
        state = tickets.obj(data.get("state")).get("name")
        entered = state == self.state and (
            payload.get("action") == "create"
            or ("stateId" in before and before.get("stateId") != data.get("stateId"))
        )
        label = _label_id(data, self.label)
        labelled = label is not None and (
            payload.get("action") == "create"
            or ("labelIds" in before and label not in (before.get("labelIds") or []))
        )
        if not (entered or labelled):
            why = f"the issue did not enter {self.state!r} nor get the label {self.label!r}"
            return [], why
        title = str(data.get("title") or "")
        text = str(data.get("description") or "").strip() or title
        return [self._inbound(payload, data, key, text=text, title=title, issue=data)], ""

    def _comment(
        self, payload: dict[str, Any], data: dict[str, Any], key: str
    ) -> tuple[list[Inbound], str]:
        body = str(data.get("body") or "")
        if body.lstrip().startswith(MARKER):
            return [], "TeleCoder's own comment"
        issue = tickets.obj(data.get("issue"))
        if not (data.get("issueId") or issue.get("id")):
            return [], "the comment is not on an issue"
        issue = {**issue, "id": data.get("issueId") or issue.get("id")}
        addressed = tickets.mentions(body)
        text = tickets.without_mention(body)
        if not text:
            return [], "an empty comment"
        title = str(issue.get("title") or "") or None
        inbound = self._inbound(
            payload, data, key, text=text, title=title, issue=issue, addressed=addressed
        )
        return [inbound], ""

    def _inbound(
        self,
        payload: dict[str, Any],
        data: dict[str, Any],
        key: str,
        *,
        text: str,
        title: str | None,
        issue: dict[str, Any],
        addressed: bool = True,
    ) -> Inbound:
        actor = tickets.obj(payload.get("actor"))
        user = tickets.obj(data.get("user"))
        sender = actor.get("id") or user.get("id") or data.get("userId") or data.get("creatorId")
        identifier = str(issue.get("identifier") or "")
        team = tickets.obj(issue.get("team")).get("key") or identifier.partition("-")[0]
        url = issue.get("url") or (payload.get("url") if issue is data else None)
        return Inbound(
            channel=NAME,
            key=key,
            thread=str(issue["id"]),
            place=str(team or ""),
            sender=str(sender or "unknown"),
            sender_name=actor.get("name") or user.get("name"),
            text=text[:MAX_TEXT],
            addressed=addressed,
            title=title,
            url=str(url) if url else None,
            reply={"issue_id": str(issue["id"]), "identifier": identifier or None},
        )

    # --- out ------------------------------------------------------------------------------------

    async def say(self, origin: Mapping[str, object], text: str) -> None:
        await self._create(str(origin["issue_id"]), f"{MARKER} -->\n{text}")

    def _ours(self, origin: Mapping[str, Any]) -> bool:
        return origin.get("channel") == NAME and bool(origin.get("issue_id"))

    async def _find_status(
        self, origin: Mapping[str, Any], session_id: str
    ) -> tuple[str, str] | None:
        after: str | None = None
        while True:
            data = await self._call(COMMENTS, {"id": str(origin["issue_id"]), "after": after})
            comments = tickets.obj(tickets.obj(data.get("issue")).get("comments"))
            for node in comments.get("nodes") or []:
                found = _STATUS.match(str(node.get("body") or ""))
                if found is not None and found.group("id") == session_id:
                    return str(node["id"]), found.group("at")
            page = tickets.obj(comments.get("pageInfo"))
            if not page.get("hasNextPage") or not page.get("endCursor"):
                return None
            after = str(page["endCursor"])

    async def _post_status(
        self, origin: Mapping[str, Any], session_id: str, stamp: str, text: str
    ) -> str:
        body = f"{status_marker(session_id, stamp)}\n{text}"
        return await self._create(str(origin["issue_id"]), body)

    async def _edit_status(
        self, origin: Mapping[str, Any], comment_id: str, session_id: str, stamp: str, text: str
    ) -> None:
        body = f"{status_marker(session_id, stamp)}\n{text}"
        data = await self._call(UPDATE, {"id": comment_id, "input": {"body": body}})
        if not tickets.obj(data.get("commentUpdate")).get("success"):
            raise tickets.TicketError("Linear did not update the status comment")

    async def _create(self, issue_id: str, body: str) -> str:
        data = await self._call(CREATE, {"input": {"issueId": issue_id, "body": body}})
        created = tickets.obj(data.get("commentCreate"))
        comment = tickets.obj(created.get("comment"))
        if not created.get("success") or not comment.get("id"):
            raise tickets.TicketError("Linear did not create the comment")
        return str(comment["id"])

    async def _call(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        headers = {"Authorization": self._api_key, "Content-Type": "application/json"}
        request = {"query": query, "variables": variables}
        try:
            async with httpx.AsyncClient(timeout=tickets.HTTP_TIMEOUT) as http:
                response = await http.post(self.api_url, json=request, headers=headers)
        except httpx.HTTPError as e:
            raise tickets.TicketError(f"Linear could not be reached: {type(e).__name__}") from None
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise tickets.TicketError(f"Linear answered {response.status_code} without JSON")
        errors = answer.get("errors")
        if errors or response.status_code >= 400:
            first = errors[0].get("message") if isinstance(errors, list) and errors else ""
            raise tickets.TicketError(f"Linear answered {response.status_code}: {first}"[:300])
        return tickets.obj(answer.get("data"))


def _label_id(data: dict[str, Any], name: str) -> str | None:
    for label in data.get("labels") or []:
        if isinstance(label, dict) and str(label.get("name", "")).lower() == name.lower():
            return str(label.get("id"))
    return None


def _key(headers: Mapping[str, str], payload: dict[str, Any], data: dict[str, Any]) -> str:
    delivery = (headers.get("linear-delivery") or "").strip()
    if delivery:
        return delivery[:255]
    parts = (payload.get("webhookId"), data.get("id"), data.get("updatedAt"))
    return ":".join(str(part or "") for part in parts)[:255]
