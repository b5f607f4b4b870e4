"""A small typed client for TeleCoder's HTTP API: what ``telecoder … --server URL`` speaks.

Sessions come back as the API's JSON (``Session.to_dict`` shape), so ``--json`` prints exactly
what the server sent; ``domain.wire`` makes domain records of them for
the human output. HTTP errors become the errors the CLI already knows how to report:

    422, 413, 400   BadInput            404   SessionNotFound     409   Conflict
                                                                  (LeaseLost: lease_lost)
    401, 403        Unauthorized        429, 5xx, no connection   ServerUnavailable

The token travels in the ``Authorization`` header only; no message here ever contains it.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, cast
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from telecoder import __version__
from telecoder.apierrors import error_for
from telecoder.domain import Event, SessionStatus
from telecoder.domain.wire import event_of
from telecoder.errors import (
    BadInput,
    EndpointNotFound,
    GoalNotFound,
    MemoryNotFound,
    MessageNotFound,
    RegisteredRepoNotFound,
    ServerUnavailable,
    SessionNotFound,
    TeleCoderError,
    WorkerNotFound,
)

Json = dict[str, Any]
Jsons = list[Json]

CONNECT_SECONDS = 5.0
REQUEST_SECONDS = 30.0
# Longer than the server's 15 s keep-alive comments: a silent stream this long is dead.
STREAM_IDLE_SECONDS = 45.0
RECONNECT_SECONDS = 60.0  # how long a live stream keeps trying to get back to the server
PAGE_SIZE = 200  # the server's largest session page


@dataclass(frozen=True, slots=True)
class End:
    """The stream's last frame: the session has finished, with this status."""

    status: SessionStatus


class Client:
    """An async client for one server. Use as ``async with Client(url, token=…) as api``."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        reconnect_seconds: float = RECONNECT_SECONDS,
    ) -> None:
        parts = urlsplit(base_url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadInput(f"the server must be an http:// or https:// URL, not {base_url!r}")
        self.url = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        # For messages: never the userinfo part of the URL.
        host = parts.hostname + (f":{parts.port}" if parts.port else "")
        self.shown_url = urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))
        headers = {"user-agent": f"telecoder/{__version__}", "accept": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self.reconnect_seconds = reconnect_seconds
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=headers,
            transport=transport,
            timeout=httpx.Timeout(REQUEST_SECONDS, connect=CONNECT_SECONDS),
        )

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._http.aclose()

    # --- sessions ---

    async def create(self, body: Json) -> Json:
        """Queue a task: ``{repo, prompt, engine?, …}`` -> the session, with ``warnings``."""
        return await self._call("POST", "/api/sessions", json=body)

    async def create_run(self, body: Json) -> Json:
        """Make a run: ``{prompt, repos}``, ``{tasks}`` (a plan) or ``{prompt, repo, after}``
        -> the run (``runs.run_json``), with ``warnings``."""
        return await self._call("POST", "/api/runs", json=body)

    async def list(
        self,
        *,
        status: str | None = None,
        repo: str | None = None,
        engine: str | None = None,
        limit: int = 50,
    ) -> list[Json]:
        """Sessions, newest first: up to ``limit`` of them, over as many pages as it takes."""
        params = {"status": status, "repo": repo, "engine": engine}
        query = {k: v for k, v in params.items() if v is not None}
        sessions: list[Json] = []
        cursor: str | None = None
        while len(sessions) < limit:
            page_query: dict[str, str | int] = {
                **query,
                "limit": min(PAGE_SIZE, limit - len(sessions)),
            }
            if cursor:
                page_query["cursor"] = cursor
            page = await self._call("GET", "/api/sessions", params=page_query)
            sessions.extend(page["sessions"])
            cursor = page.get("next_cursor")
            if not cursor or not page["sessions"]:
                break
        return sessions[:limit]

    async def page(
        self,
        *,
        status: str | None = None,
        repo: str | None = None,
        engine: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Json:
        """One page of sessions as the API gives it: ``sessions`` and ``next_cursor``."""
        params = {"status": status, "repo": repo, "engine": engine, "cursor": cursor}
        query: dict[str, str | int] = {k: v for k, v in params.items() if v is not None}
        query["limit"] = min(limit, PAGE_SIZE)
        return await self._call("GET", "/api/sessions", params=query)

    async def get(self, ref: str) -> Json:
        """One session, by id or a unique prefix."""
        return await self._call("GET", f"/api/sessions/{ref}")

    async def cancel(self, ref: str) -> Json:
        return await self._call("POST", f"/api/sessions/{ref}/cancel")

    async def retry(self, ref: str) -> Json:
        """A new session running the same task on the same branch."""
        return await self._call("POST", f"/api/sessions/{ref}/retry")

    async def raise_budget(self, ref: str, body: Json) -> Json:
        """``{"add": 1.0}`` or ``{"usd": 5.0}``: the session, queued again if it waited."""
        return await self._call("POST", f"/api/sessions/{ref}/budget", json=body)

    async def budgets(self) -> Jsons:
        """The period budgets and what each spent."""
        return cast(Jsons, await self._call("GET", "/api/budgets"))

    async def put_budget(self, body: Json) -> Jsons:
        """Set (``usd``) or remove (``usd: null``) a period budget; every budget after."""
        return cast(Jsons, await self._call("PUT", "/api/budgets", json=body))

    async def message(self, ref: str, text: str) -> Json:
        """A follow-up for a chat session: ``{session_id, seq}``."""
        return await self._call("POST", f"/api/sessions/{ref}/messages", json={"text": text})

    async def answer(self, ref: str, text: str) -> Json:
        """The answer to a blocked session's question: ``{session_id, seq}``."""
        return await self._call("POST", f"/api/sessions/{ref}/answer", json={"text": text})

    # --- costs ---

    async def costs(self, **params: str | int | None) -> Json:
        """``GET /api/costs``: ``by``, ``since``, ``until``, ``top``, ``limit`` (None: left out)."""
        query = {k: v for k, v in params.items() if v is not None}
        return await self._call("GET", "/api/costs", params=query)

    async def estimate(self, **params: str | None) -> Json:
        """``GET /api/costs/estimate``: ``repo``, ``prompt``, ``engine``, ``model``."""
        query = {k: v for k, v in params.items() if v is not None}
        return await self._call("GET", "/api/costs/estimate", params=query)

    # --- model endpoints ---

    async def endpoints(self) -> builtins.list[Json]:
        found: Any = await self._call("GET", "/api/endpoints")
        return list(found)

    async def add_endpoint(self, body: Json) -> Json:
        return await self._call("POST", "/api/endpoints", json=body, missing=EndpointNotFound)

    async def remove_endpoint(self, name: str) -> None:
        await self._call("DELETE", f"/api/endpoints/{name}", missing=EndpointNotFound)

    async def check_endpoint(self, name: str) -> Json:
        return await self._call("POST", f"/api/endpoints/{name}/check", missing=EndpointNotFound)

    # --- the repository registry and its routes ---

    async def repos(self) -> Json:
        """``{repos, routes}``."""
        return await self._call("GET", "/api/repos")

    async def add_repo(self, body: Json) -> Json:
        return await self._call("POST", "/api/repos", json=body, missing=RegisteredRepoNotFound)

    async def remove_repo(self, name: str) -> None:
        await self._call("DELETE", f"/api/repos/{name}", missing=RegisteredRepoNotFound)

    async def route(self, channel: str, place: str, repo: str) -> Json:
        path = f"/api/repos/routes/{channel}/{quote(place, safe='')}"
        return await self._call("PUT", path, json={"repo": repo}, missing=RegisteredRepoNotFound)

    async def unroute(self, channel: str, place: str) -> None:
        path = f"/api/repos/routes/{channel}/{quote(place, safe='')}"
        await self._call("DELETE", path, missing=RegisteredRepoNotFound)

    # --- goals ---

    async def goals(self) -> Json:
        """``{goals}``, newest first."""
        return await self._call("GET", "/api/goals", missing=GoalNotFound)

    async def add_goal(self, body: Json) -> Json:
        return await self._call("POST", "/api/goals", json=body, missing=GoalNotFound)

    async def goal(self, goal_id: str) -> Json:
        return await self._call("GET", f"/api/goals/{quote(goal_id)}", missing=GoalNotFound)

    async def approve_goal(self, goal_id: str, plan: Json | None) -> Json:
        path = f"/api/goals/{quote(goal_id)}/approve"
        return await self._call("POST", path, json={"plan": plan}, missing=GoalNotFound)

    async def drop_goal(self, goal_id: str) -> Json:
        path = f"/api/goals/{quote(goal_id)}/drop"
        return await self._call("POST", path, missing=GoalNotFound)

    # --- runs ---

    async def runs(self, *, limit: int = 50) -> builtins.list[Json]:
        """The runs with their totals, newest first."""
        found: Any = await self._call("GET", "/api/runs", params={"limit": limit})
        return list(found)

    async def run(self, run_id: str) -> Json:
        """The run as ``runs show --json`` prints it."""
        return await self._call("GET", f"/api/runs/{run_id}")

    async def cancel_run(self, run_id: str) -> Json:
        return await self._call("POST", f"/api/runs/{run_id}/cancel")

    async def retry_failed(self, run_id: str) -> Json:
        return await self._call("POST", f"/api/runs/{run_id}/retry-failed")

    # --- best of N ---

    async def best_of(self, body: Json) -> Json:
        """``{run, sessions, warnings}``."""
        return await self._call("POST", "/api/runs/best-of", json=body)

    async def compare(self, run_id: str) -> Json:
        """``{run, candidates, verdict}``."""
        return await self._call("GET", f"/api/runs/{quote(run_id, safe='')}/compare")

    async def pick(self, run_id: str, session_id: str) -> Json:
        path = f"/api/runs/{quote(run_id, safe='')}/pick"
        return await self._call("POST", path, json={"session_id": session_id})

    # --- memories ---

    async def memories(self, **params: str | int | None) -> Jsons:
        """``GET /api/memories``: ``repo`` (resolved by the server), ``user``, ``kind``,
        ``limit``, ``before``; newest first."""
        query = {k: v for k, v in params.items() if v is not None}
        found: Any = await self._call("GET", "/api/memories", params=query)
        return list(found)

    async def memory_repos(self) -> Jsons:
        """``[{repo, memories}]``: each repository that has memories, with how many."""
        found: Any = await self._call("GET", "/api/memories/repos")
        return list(found)

    async def memory_users(self) -> Jsons:
        """``[{user, memories}]``: each user that memories name, with how many."""
        found: Any = await self._call("GET", "/api/memories/users")
        return list(found)

    async def memory(self, memory_id: int) -> Json:
        return await self._call("GET", f"/api/memories/{memory_id}", missing=MemoryNotFound)

    async def add_memory(self, body: Json) -> Json:
        return await self._call("POST", "/api/memories", json=body, missing=MemoryNotFound)

    async def forget_memory(self, memory_id: int) -> Json:
        return await self._call("DELETE", f"/api/memories/{memory_id}", missing=MemoryNotFound)

    # --- the inbox ---

    async def inbox_send(
        self,
        *,
        agent: str,
        body: str,
        to: str | None,
        thread: str | None,
        artifacts: Sequence[tuple[str, bytes]] = (),
    ) -> Json:
        payload = {
            "agent": agent,
            "body": body,
            "to": to,
            "thread": thread,
            "artifacts": _artifacts(artifacts),
        }
        return await self._inbox("POST", "/api/inbox/messages", json=payload)

    async def inbox_reply(
        self, message_id: int, *, agent: str, body: str, artifacts: Sequence[tuple[str, bytes]]
    ) -> Json:
        payload = {"agent": agent, "body": body, "artifacts": _artifacts(artifacts)}
        return await self._inbox("POST", f"/api/inbox/messages/{message_id}/reply", json=payload)

    async def inbox_act(self, message_id: int, action: str, *, agent: str, **fields: Any) -> Json:
        """``claim``/``renew`` (``lease``), ``update`` (``progress``), ``done``/``fail``/
        ``cancel`` (``note``) -> the message."""
        path = f"/api/inbox/messages/{message_id}/{action}"
        return await self._inbox("POST", path, json={"agent": agent, **fields})

    async def inbox_message(self, message_id: int) -> Json:
        return await self._inbox("GET", f"/api/inbox/messages/{message_id}")

    async def inbox_artifact(self, message_id: int, name: str) -> bytes:
        path = f"/api/inbox/messages/{message_id}/artifacts/{quote(name, safe='')}"
        found = await self._inbox("GET", path)
        return base64.b64decode(found["content_base64"])

    async def inbox_fetch(self, *, agent: str, limit: int) -> Jsons:
        payload = {"agent": agent, "limit": limit}
        return cast(Jsons, await self._inbox("POST", "/api/inbox/fetch", json=payload))

    async def inbox_list(
        self,
        *,
        agent: str | None = None,
        thread: str | None = None,
        status: str | None = None,
        after: int = 0,
        limit: int = 100,
        wait: float = 0,
    ) -> Jsons:
        """Messages after ``after``; with ``wait``, a long-poll: the server waits up to that
        many seconds for one to land."""
        params = {"agent": agent, "thread": thread, "status": status}
        query: dict[str, Any] = {k: v for k, v in params.items() if v is not None}
        query.update(after=after, limit=limit, wait=wait)
        return cast(Jsons, await self._inbox("GET", "/api/inbox/messages", params=query))

    async def inbox_latest(self) -> int:
        return int((await self._inbox("GET", "/api/inbox/latest"))["id"])

    async def inbox_replies(self, *, agent: str, reply_to: int | None, wait: float) -> Jsons:
        """The replies to ``agent`` it has not seen (a long-poll of up to ``wait`` s); []."""
        payload = {"agent": agent, "reply_to": reply_to, "wait": wait}
        return cast(Jsons, await self._inbox("POST", "/api/inbox/replies", json=payload))

    async def _inbox(self, method: str, path: str, **kwargs: Any) -> Json:
        return await self._call(method, path, missing=MessageNotFound, **kwargs)

    # --- events ---

    async def event_page(self, ref: str, *, after: int = 0, limit: int = 200) -> Json:
        """``{events, next_after, more, status}``: the events with ``seq > after``."""
        params = {"after": after, "limit": limit}
        return await self._call("GET", f"/api/sessions/{ref}/events", params=params)

    async def recorded(self, ref: str, *, after: int = 0) -> AsyncIterator[Event]:
        """Every event recorded so far, page by page."""
        while True:
            page = await self.event_page(ref, after=after)
            for data in page["events"]:
                yield event_of(data)
            after = page["next_after"]
            if not page["more"]:
                return

    async def live(self, ref: str, *, after: int = 0) -> AsyncIterator[Event | End]:
        """The session's events as they happen (SSE), then its :class:`End`.

        A dropped connection is picked up again with ``Last-Event-ID``, so nothing is lost or
        repeated; after ``reconnect_seconds`` without getting back, ServerUnavailable.
        """
        failing_since: float | None = None
        while True:
            delivered = False
            try:
                async with self._http.stream(
                    "GET",
                    f"/api/sessions/{ref}/events",
                    headers={"accept": "text/event-stream", "last-event-id": str(after)},
                    timeout=httpx.Timeout(STREAM_IDLE_SECONDS, connect=CONNECT_SECONDS),
                ) as response:
                    if response.is_error:
                        await response.aread()
                        raise_for(response)
                    async for name, data in _frames(response):
                        if name == "end":
                            yield End(SessionStatus(json.loads(data)["status"]))
                            return
                        event = event_of(json.loads(data))
                        after = event.seq
                        delivered = True
                        failing_since = None
                        yield event
            except ServerUnavailable:
                pass  # 5xx or 429 while the server restarts: try again
            except httpx.TransportError:
                pass  # refused, reset, timed out: try again from `after`
            now = time.monotonic()
            if not delivered:
                failing_since = failing_since or now
                if now - failing_since > self.reconnect_seconds:
                    raise ServerUnavailable(
                        f"lost the event stream from {self.shown_url} and could not get it back"
                    )
            await asyncio.sleep(0.5)

    # --- plumbing ---

    async def status(self) -> Json:
        """``GET /api/status``: the queue per status, live workers, sandbox, endpoints and the
        last failures (what ``telecoder status`` shows)."""
        return await self._call("GET", "/api/status")

    async def set_drain(self, worker_id: str, drain: bool) -> Json:
        """``POST /api/workers/{id}/drain`` (or ``/resume``): the worker, as now recorded."""
        action = "drain" if drain else "resume"
        path = f"/api/workers/{quote(worker_id, safe='')}/{action}"
        return await self._call("POST", path, missing=WorkerNotFound)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        missing: type[TeleCoderError] = SessionNotFound,
        **kwargs: Any,
    ) -> Json:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise ServerUnavailable(f"the server at {self.shown_url} did not answer") from None
        except httpx.TransportError as e:
            reason = str(e) or type(e).__name__
            where = self.shown_url
            raise ServerUnavailable(f"cannot reach the server at {where}: {reason}") from None
        raise_for(response, missing=missing)
        if response.status_code == 204:
            return {}
        try:
            body: Json = response.json()
        except ValueError:
            raise ServerUnavailable(
                f"{self.shown_url} answered {response.status_code} without JSON: "
                "is it a TeleCoder server?"
            ) from None
        return body


def raise_for(response: httpx.Response, *, missing: type[TeleCoderError] = SessionNotFound) -> None:
    """Raise the error an error response stands for; nothing for a success. ``missing``: the
    error a 404 stands for (what the request named)."""
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    error = error_for(
        response.status_code,
        body,
        reason=response.reason_phrase,
        retry_after=response.headers.get("retry-after"),
        missing=missing,
    )
    if error is not None:
        raise error


def _artifacts(artifacts: Sequence[tuple[str, bytes]]) -> list[Json]:
    return [
        {"name": name, "content_base64": base64.b64encode(content).decode("ascii")}
        for name, content in artifacts
    ]


async def _frames(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """``(event, data)`` for each SSE frame; comments and ``retry`` lines skipped."""
    name, data = "message", list[str]()
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield name, "\n".join(data)
            name, data = "message", list[str]()
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
