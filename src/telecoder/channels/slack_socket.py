"""Slack's Socket Mode: events over a websocket, for a server Slack cannot reach.

``apps.connections.open`` (with the app-level token, ``xapp-…``) gives a one-use ``wss://`` URL;
Slack sends envelopes on it: ``hello``, ``events_api`` (an Events API payload), ``interactive``,
``disconnect`` (Slack is about to close it: open a new one). Each envelope with an
``envelope_id`` is acknowledged at once by sending ``{"envelope_id": …}`` back; the event is then
parsed like one that came over HTTP and handed to ``receive`` (a redelivery is deduplicated there,
by its ``event_id``). A dropped connection is reopened after a short, growing pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from telecoder.channels.slack import parse_payload
from telecoder.errors import TeleCoderError
from telecoder.protocols import Inbound

log = logging.getLogger(__name__)

MAX_PAUSE = 30.0


class SocketMode:
    def __init__(
        self,
        api_url: str,
        app_token: str,
        transport: httpx.AsyncBaseTransport | None = None,
        first_pause: float = 0.5,
    ) -> None:
        self.api_url = api_url
        self._token = app_token
        self._transport = transport
        self.first_pause = first_pause

    async def open_url(self) -> str:
        """A new websocket URL from ``apps.connections.open``."""
        headers = {"Authorization": f"Bearer {self._token}"}
        async with httpx.AsyncClient(timeout=10.0, transport=self._transport) as client:
            try:
                response = await client.post(
                    self.api_url + "apps.connections.open", headers=headers
                )
                data = response.json()
            except (httpx.HTTPError, ValueError) as e:
                raise TeleCoderError(f"Slack apps.connections.open failed: {e}") from None
        if not isinstance(data, dict) or not data.get("ok") or not data.get("url"):
            error = data.get("error") if isinstance(data, dict) else response.status_code
            raise TeleCoderError(f"Slack apps.connections.open failed: {error}")
        return str(data["url"])

    async def run(
        self,
        receive: Callable[[Inbound], Awaitable[object]],
        stop: asyncio.Event,
        on_action: Callable[[dict[str, Any]], Awaitable[object]] | None = None,
    ) -> None:
        """Connect, read envelopes until ``stop``; reconnect when Slack or the network drops us."""
        pause = self.first_pause
        while not stop.is_set():
            try:
                url = await self.open_url()
                async with connect(url, open_timeout=10, max_size=4 * 1024 * 1024) as socket:
                    pause = self.first_pause
                    await self._read(socket, receive, stop, on_action)
            except (OSError, ConnectionClosed, InvalidHandshake, InvalidURI, TimeoutError) as e:
                log.warning("Slack Socket Mode: the connection dropped: %s", e)
            except TeleCoderError as e:
                log.warning("Slack Socket Mode: %s", e.message)
            if stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
            pause = min(pause * 2, MAX_PAUSE)

    async def _read(
        self,
        socket: ClientConnection,
        receive: Callable[[Inbound], Awaitable[object]],
        stop: asyncio.Event,
        on_action: Callable[[dict[str, Any]], Awaitable[object]] | None,
    ) -> None:
        stopping = asyncio.create_task(stop.wait())
        try:
            while True:
                reading = asyncio.create_task(socket.recv())
                await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not reading.done():
                    reading.cancel()
                    return
                envelope = _envelope(reading.result())
                if envelope is None:
                    continue
                if envelope.get("envelope_id"):
                    await socket.send(json.dumps({"envelope_id": envelope["envelope_id"]}))
                if envelope.get("type") == "disconnect":
                    log.info("Slack Socket Mode: disconnect (%s)", envelope.get("reason"))
                    return
                payload = envelope.get("payload")
                if envelope.get("type") == "events_api":
                    await _hand_over(payload, receive)
                elif (
                    envelope.get("type") == "interactive"
                    and on_action
                    and isinstance(payload, dict)
                ):
                    await _click(payload, on_action)
        finally:
            stopping.cancel()


def _envelope(frame: str | bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(frame)
    except (UnicodeDecodeError, json.JSONDecodeError):
        log.warning("Slack Socket Mode: a frame that is not JSON was dropped")
        return None
    return data if isinstance(data, dict) else None


async def _click(
    payload: dict[str, Any], on_action: Callable[[dict[str, Any]], Awaitable[object]]
) -> None:
    try:
        await on_action(payload)
    except TeleCoderError as e:
        log.warning("Slack Socket Mode: a button click failed: %s", e.message)
    except Exception:
        log.exception("Slack Socket Mode: a button click failed")


async def _hand_over(payload: Any, receive: Callable[[Inbound], Awaitable[object]]) -> None:
    if not isinstance(payload, dict):
        return
    for inbound in parse_payload(payload):
        try:
            await receive(inbound)
        except TeleCoderError as e:
            log.warning("Slack Socket Mode: event %s failed: %s", inbound.key, e.message)
        except Exception:
            log.exception("Slack Socket Mode: event %s failed", inbound.key)
