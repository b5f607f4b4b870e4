"""The API client on its own: status codes to errors, JSON to records, SSE resumption.

httpx.MockTransport plays the server's wire protocol (the real server is in
tests/e2e/test_cli_remote.py).
"""

from __future__ import annotations

import json

import httpx
import pytest

from telecoder.client import Client, End
from telecoder.domain import DiffStats, FailureKind, Result, ResultType, SessionStatus
from telecoder.domain.wire import event_of, session_of
from telecoder.errors import (
    BadInput,
    Conflict,
    ServerUnavailable,
    SessionNotFound,
    TeleCoderError,
    Unauthorized,
)
from tests.factories import make_session

TOKEN = "sekrit-token-42"


def error(status: int, detail: str, **headers: str) -> httpx.MockTransport:
    body = {"error": "x", "detail": detail, "fields": []}
    return httpx.MockTransport(lambda _: httpx.Response(status, json=body, headers=headers))


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (422, BadInput),
        (413, BadInput),
        (404, SessionNotFound),
        (409, Conflict),
        (401, Unauthorized),
        (403, Unauthorized),
        (429, ServerUnavailable),
        (503, ServerUnavailable),
        (418, TeleCoderError),
    ],
)
async def test_status_codes_become_the_errors_the_cli_reports(status, kind):
    async with Client("http://h", token=TOKEN, transport=error(status, "it went\nwrong")) as api:
        with pytest.raises(kind) as raised:
            await api.get("abc")
    assert type(raised.value) is kind
    assert "it went wrong" in raised.value.message  # the server's detail, on one line


async def test_the_token_is_sent_and_never_shown():
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        raise httpx.ConnectError("connection refused")

    transport = httpx.MockTransport(handler)
    async with Client("http://example.test:7080/base/", token=TOKEN, transport=transport) as api:
        with pytest.raises(ServerUnavailable) as raised:
            await api.list()
    assert seen == [f"Bearer {TOKEN}"]
    assert raised.value.message == (
        "cannot reach the server at http://example.test:7080/base: connection refused"
    )
    # A password in the URL (a proxy's basic auth) is not shown either.
    async with Client(f"http://me:{TOKEN}@example.test/", transport=transport) as api:
        with pytest.raises(ServerUnavailable) as raised:
            await api.get("x")
    assert TOKEN not in raised.value.message
    assert "http://example.test:" in raised.value.message


def test_only_http_urls():
    with pytest.raises(BadInput, match="http:// or https://"):
        Client("127.0.0.1:7080")


def test_session_json_round_trips():
    session = make_session(
        status=SessionStatus.FAILED,
        result=Result(type=ResultType.BRANCH, branch="b", commit="c", diff=DiffStats(insertions=2)),
        failure_kind=FailureKind.TIMEOUT,
        error="too slow",
        started_at=1_700_000_002.125,
        finished_at=1_700_000_009.5,
    )
    data = session.to_dict()
    assert session_of(data).to_dict() == data


async def test_list_pages_through_cursors_up_to_the_limit():
    def handler(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        start = int(cursor or 0)
        size = int(request.url.params["limit"])
        rows = [make_session(id=f"s{i:09d}").to_dict() for i in range(start, start + size)]
        return httpx.Response(200, json={"sessions": rows, "next_cursor": str(start + size)})

    async with Client("http://h", transport=httpx.MockTransport(handler)) as api:
        sessions = await api.list(limit=450)
    assert [s["id"] for s in sessions] == [f"s{i:09d}" for i in range(450)]


def frame(seq: int) -> str:
    event = {
        "id": seq,
        "session_id": "s",
        "seq": seq,
        "attempt": 1,
        "ts": 1.0,
        "kind": "output",
        "data": {"text": f"line {seq}"},
    }
    return f"id: {seq}\nevent: output\ndata: {json.dumps(event)}\n\n"


async def test_a_dropped_stream_resumes_after_the_last_event():
    asked: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("last-event-id"))
        if len(asked) == 1:  # two events, then the connection ends without `end`
            return httpx.Response(200, text=": telecoder\n\n" + frame(1) + frame(2))
        if len(asked) == 2:
            return httpx.Response(502, json={"detail": "bad gateway"})
        end = 'event: end\nid: 3\ndata: {"status": "succeeded"}\n\n'
        return httpx.Response(200, text=frame(3) + end)

    async with Client("http://h", transport=httpx.MockTransport(handler)) as api:
        items = [item async for item in api.live("s")]
    assert asked == ["0", "2", "2"]
    assert [i.seq for i in items if not isinstance(i, End)] == [1, 2, 3]
    assert items[-1] == End(SessionStatus.SUCCEEDED)


async def test_a_stream_that_never_comes_back_is_unavailable():
    def handler(_: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    transport = httpx.MockTransport(handler)
    async with Client("http://h", transport=transport, reconnect_seconds=0.6) as api:
        with pytest.raises(ServerUnavailable, match="lost the event stream"):
            [item async for item in api.live("s")]


async def test_a_refused_stream_is_not_retried():
    async with Client("http://h", transport=error(401, "invalid API token")) as api:
        with pytest.raises(Unauthorized):
            [item async for item in api.live("s")]


def test_event_json_round_trips():
    data = json.loads(frame(7).split("data: ", 1)[1])
    event = event_of(data)
    assert (event.seq, event.kind.value, event.data) == (7, "output", {"text": "line 7"})
