"""A small client of the Docker Engine API: the handful of calls the ``docker`` runtime makes.

JSON calls go through httpx (over a Unix socket or TCP, from ``DOCKER_HOST``: ``unix:///path``,
``tcp://host:port``; ``http://`` is taken as ``tcp://``). The attach stream is a hijacked
connection (HTTP ``Upgrade: tcp``, then raw bytes both ways), which httpx does not expose, so
``attach`` speaks that one request itself over asyncio streams: it needs a half-close to end
the container's stdin.

With ``Tty`` off, what the daemon sends back on an attach is multiplexed: frames of an 8-byte
header (the stream: 1 stdout, 2 stderr; three zero bytes; the payload's length, big-endian)
and the payload. ``frames`` reads them.

Works against Docker and against podman's Docker-compatible service (``podman system
service``); where podman differs (it answers an attach only once the container is initialised,
and replays logs with wrong frame lengths) the comments say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx

from telecoder.errors import SandboxUnavailable

API = "/v1.41"  # Docker 20.10 and later; podman ≥ 3 serves it too
DEFAULT_HOST = "unix:///var/run/docker.sock"
_HEADER = 8

HOW_TO_START = (
    "start a Docker daemon (`systemctl start docker`) or podman's Docker-compatible service "
    "(`podman system service --time=0 unix:///run/podman/podman.sock`) and point DOCKER_HOST "
    "at it (unix:///path or tcp://host:port), or choose another runtime (TELECODER_RUNTIME="
    "sandbox)"
)


class DockerError(SandboxUnavailable):
    """The Docker daemon refused a request."""


@dataclass(frozen=True, slots=True)
class Address:
    """Where the daemon listens: a Unix socket path, or a TCP host and port."""

    socket: str | None = None
    host: str = "localhost"
    port: int = 2375

    @classmethod
    def parse(cls, url: str) -> Address:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return cls(socket=parts.path)
        if parts.scheme in ("tcp", "http") and parts.hostname:
            return cls(host=parts.hostname, port=parts.port or 2375)
        raise SandboxUnavailable(
            f"DOCKER_HOST={url!r} is neither unix:///path nor tcp://host:port "
            "(TLS daemons are not supported: use a local socket)"
        )

    def __str__(self) -> str:
        return f"unix://{self.socket}" if self.socket else f"tcp://{self.host}:{self.port}"


class DockerAPI:
    """One daemon. Cheap to make; ``close`` it when done."""

    def __init__(self, url: str = DEFAULT_HOST) -> None:
        self.address = Address.parse(url)
        # No keep-alive: podman's service drops idle connections without a word, and a
        # connection to a local socket costs next to nothing.
        transport = httpx.AsyncHTTPTransport(
            uds=self.address.socket, limits=httpx.Limits(max_keepalive_connections=0)
        )
        base = "http://docker" if self.address.socket else f"http://{self.address.host}:"
        if not self.address.socket:
            base += str(self.address.port)
        self._http = httpx.AsyncClient(
            transport=transport, base_url=base + API, timeout=httpx.Timeout(30.0)
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        http_timeout: float | None = 30.0,
        missing_ok: bool = False,
    ) -> Any:
        try:
            response = await self._http.request(
                method, path, json=body, params=params, timeout=http_timeout
            )
        except httpx.TransportError as e:
            raise SandboxUnavailable(
                f"cannot reach the Docker daemon at {self.address} ({e or type(e).__name__}): "
                f"{HOW_TO_START}"
            ) from e
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code >= 400:
            try:
                message = response.json().get("message") or response.text
            except ValueError:
                message = response.text
            raise DockerError(f"Docker {method} {path}: {response.status_code} {message}")
        if "json" not in response.headers.get("content-type", ""):
            return response.text or None  # /_ping says OK
        return response.json()

    async def ping(self) -> None:
        await self._call("GET", "/_ping")

    async def has_image(self, image: str) -> bool:
        found = await self._call("GET", f"/images/{quote(image, safe='')}/json", missing_ok=True)
        return found is not None

    async def create(self, spec: Mapping[str, Any], *, name: str | None = None) -> str:
        params = {"name": name} if name else None
        created = await self._call("POST", "/containers/create", body=spec, params=params)
        return str(created["Id"])

    async def start(self, container: str) -> None:
        await self._call("POST", f"/containers/{container}/start")

    async def wait(self, container: str) -> int:
        """The container's exit status, once it has stopped."""
        done = await self._call("POST", f"/containers/{container}/wait", http_timeout=None)
        return int(done["StatusCode"])

    async def kill(self, container: str, signal: str) -> None:
        """Signal the container's first process; nothing if it is gone or has stopped."""
        with contextlib.suppress(DockerError):  # 409: not running any more
            await self._call(
                "POST", f"/containers/{container}/kill", params={"signal": signal}, missing_ok=True
            )

    async def remove(self, container: str) -> None:
        """Remove the container, killing it first if it runs (no error if already gone)."""
        await self._call(
            "DELETE",
            f"/containers/{container}",
            params={"force": "1", "v": "1"},
            missing_ok=True,
        )

    async def containers(self, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """Every container (running or not) with all of ``labels``."""
        filters = json.dumps({"label": [f"{k}={v}" for k, v in labels.items()]})
        found = await self._call("GET", "/containers/json", params={"all": "1", "filters": filters})
        return list(found or [])

    async def attach(self, container: str, *, stdin: bool) -> Attachment:
        """Attach to the container's streams before it starts (nothing of its output is lost).

        Returns once the daemon has answered the upgrade: Docker does so at once, podman once it
        has initialised the container (its process is created, not yet started).
        """
        query = urlencode({"stream": "1", "stdout": "1", "stderr": "1", "stdin": int(stdin)})
        path = f"{API}/containers/{quote(container)}/attach?{query}"
        try:
            if self.address.socket:
                reader, writer = await asyncio.open_unix_connection(self.address.socket)
            else:
                reader, writer = await asyncio.open_connection(self.address.host, self.address.port)
        except OSError as e:
            raise SandboxUnavailable(
                f"cannot reach the Docker daemon at {self.address} ({e}): {HOW_TO_START}"
            ) from e
        attachment = Attachment(reader, writer)
        try:
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\n"
                "Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n".encode()
            )
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = head.split(b"\r\n", 1)[0].decode(errors="replace")
            if " 101 " not in status + " " and " 200 " not in status + " ":
                body = await _rest(reader)
                raise DockerError(f"Docker attach {container}: {status} {body}")
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
            await attachment.close()
            raise DockerError(f"Docker attach {container} failed: {e}") from e
        except BaseException:
            await attachment.close()
            raise
        return attachment


async def _rest(reader: asyncio.StreamReader) -> str:
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(2):
            return (await reader.read(4096)).decode(errors="replace").strip()
    return ""


class Attachment:
    """A hijacked attach connection: the container's stdin one way, its output the other."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._eof = False

    async def frames(self) -> AsyncIterator[tuple[int, bytes]]:
        """(stream, payload) until the daemon closes the connection (the container ended)."""
        reader = self._reader
        while True:
            try:
                header = await reader.readexactly(_HEADER)
                payload = await reader.readexactly(int.from_bytes(header[4:], "big"))
            except (asyncio.IncompleteReadError, OSError):
                return
            yield header[0], payload

    async def send(self, data: bytes) -> None:
        if self._eof or self._writer.is_closing():
            return
        self._writer.write(data)
        with contextlib.suppress(OSError):
            await self._writer.drain()

    async def close_stdin(self) -> None:
        """End the container's stdin (a half-close: its output still arrives)."""
        if self._eof or self._writer.is_closing():
            return
        self._eof = True
        with contextlib.suppress(OSError):
            self._writer.write_eof()

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
