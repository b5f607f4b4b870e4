"""What the model gateway adds to a streamed model response.

Three processes on 127.0.0.1: a tiny streaming upstream (an Anthropic Messages SSE stream of
``--chunks`` events, ``--gap`` ms apart, with usage), the gateway as a worker runs it (a live
ticket, metering, a usage row per request in a SQLite store), and this process as the agent:
it asks the upstream directly and through the gateway, alternately, ``--requests`` times each
(after a warm-up), and times the first body chunk (time to first token) and the whole response.

Prints p50/p95 of both, direct and through, and what the gateway added (target: <= 5 ms at
p50). Bounded: a fixed number of requests, a deadline, only loopback.

    .venv/bin/python benchmarks/gateway.py [--requests 300] [--chunks 20] [--gap 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

DEADLINE_SECONDS = 300
BODY = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 64,
    "stream": True,
    "messages": [{"role": "user", "content": "hello"}],
}


# --- the upstream: an Anthropic-shaped SSE stream, as fast as asyncio serves it ----------------


def _events(chunks: int) -> list[bytes]:
    usage = {"input_tokens": 120, "output_tokens": 1, "cache_read_input_tokens": 0}
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": BODY["model"]}
    out = [("message_start", {"type": "message_start", "message": {**message, "usage": usage}})]
    for _ in range(chunks):
        delta = {"type": "text_delta", "text": "token "}
        out.append(("content_block_delta", {"type": "content_block_delta", "delta": delta}))
    out.append(("message_delta", {"type": "message_delta", "usage": {"output_tokens": chunks}}))
    out.append(("message_stop", {"type": "message_stop"}))
    return [f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in out]


async def serve_upstream(chunks: int, gap: float) -> None:
    events = _events(chunks)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                    b"transfer-encoding: chunked\r\n\r\n"
                )
                for index, event in enumerate(events):
                    if index and gap:
                        await asyncio.sleep(gap)
                    writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


# --- the gateway, as a worker runs it ------------------------------------------------------------


async def serve_gateway(upstream: str, home: Path) -> None:
    from telecoder.domain import NewSession
    from telecoder.gateway import Gateway, Ticket
    from telecoder.settings import Settings
    from telecoder.store import open_store

    store = await open_store(f"sqlite:///{home / 'telecoder.db'}")
    session = await store.sessions.create(NewSession(repo="r", prompt="p", engine="claude-code"))
    env = {"ANTHROPIC_BASE_URL": upstream, "ANTHROPIC_API_KEY": "sk-ant-bench"}
    # As a worker builds it: backoff, retries, fallback and the endpoint registry included.
    gateway = Gateway.from_settings(Settings(home=home), store, environ=env)
    ticket = await gateway.issue(Ticket(session_id=session.id, attempt=1, engine="claude-code"))
    print(json.dumps({"url": gateway.env(ticket)["ANTHROPIC_BASE_URL"], "key": ticket.key}))
    sys.stdout.flush()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await gateway.revoke(ticket)
    rows = await store.usage.of_session(session.id)
    print(json.dumps({"rows": len(rows)}), flush=True)
    await store.close()


# --- the agent -----------------------------------------------------------------------------------


def timed(client: httpx.Client, url: str, headers: dict[str, str]) -> tuple[float, float]:
    """(time to the first body chunk, time to the end) of one streamed request, in ms."""
    start = time.perf_counter()
    first = 0.0
    with client.stream("POST", url, headers=headers, json=BODY) as response:
        response.raise_for_status()
        for chunk in response.iter_raw():
            if chunk and not first:
                first = time.perf_counter()
    end = time.perf_counter()
    return (first - start) * 1000, (end - start) * 1000


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True, env=os.environ
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--chunks", type=int, default=20, help="SSE events of a response")
    parser.add_argument("--gap", type=float, default=1.0, help="ms between events")
    parser.add_argument("--role", choices=["upstream", "gateway"], help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="30 requests (CI)")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.warmup = 30, 5
    if args.role == "upstream":
        asyncio.run(serve_upstream(args.chunks, args.gap / 1000))
        return
    if args.role == "gateway":
        asyncio.run(serve_gateway(args.upstream, Path(args.home)))
        return

    home = Path(tempfile.mkdtemp(prefix="telecoder-bench-gateway-"))
    upstream = spawn("--role", "upstream", "--chunks", str(args.chunks), "--gap", str(args.gap))
    gateway = None
    try:
        assert upstream.stdout is not None
        direct_url = f"http://127.0.0.1:{upstream.stdout.readline().strip()}"
        gateway = spawn("--role", "gateway", "--upstream", direct_url, "--home", str(home))
        assert gateway.stdout is not None
        info = json.loads(gateway.stdout.readline())
        through_url = info["url"] + "/v1/messages"
        through_headers = {"x-api-key": info["key"], "anthropic-version": "2023-06-01"}
        direct_headers = {"x-api-key": "sk-ant-bench", "anthropic-version": "2023-06-01"}
        results: dict[str, list[tuple[float, float]]] = {"direct": [], "through": []}
        deadline = time.monotonic() + DEADLINE_SECONDS
        with httpx.Client(timeout=30) as direct, httpx.Client(timeout=30) as through:
            for n in range(args.warmup + args.requests):
                if time.monotonic() > deadline:
                    raise SystemExit("deadline passed")
                pair = (
                    ("direct", timed(direct, direct_url + "/v1/messages", direct_headers)),
                    ("through", timed(through, through_url, through_headers)),
                )
                if n >= args.warmup:
                    for name, value in pair if n % 2 else pair[::-1]:
                        results[name].append(value)
        gateway.send_signal(signal.SIGTERM)
        rows = json.loads(gateway.stdout.readline())["rows"]
        gateway.wait(30)
    finally:
        for proc in (upstream, gateway):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()

    print(
        f"{args.requests} streamed responses of {args.chunks + 3} SSE events, "
        f"{args.gap:g} ms apart; usage rows written: {rows}"
    )
    header = ("", "direct p50", "p95", "gateway p50", "p95", "added p50")
    print("{:>16} {:>11} {:>8} {:>12} {:>8} {:>10}".format(*header))
    for index, what in enumerate(("first chunk ms", "total ms")):
        d = [r[index] for r in results["direct"]]
        t = [r[index] for r in results["through"]]
        added = statistics.median(t) - statistics.median(d)
        print(
            f"{what:>16} {pct(d, 50):>11.2f} {pct(d, 95):>8.2f} "
            f"{pct(t, 50):>12.2f} {pct(t, 95):>8.2f} {added:>10.2f}"
        )
    ttft_added = statistics.median([r[0] for r in results["through"]]) - statistics.median(
        [r[0] for r in results["direct"]]
    )
    verdict = "ok" if ttft_added <= 5.0 else "OVER TARGET"
    print(f"added time to first token at p50: {ttft_added:.2f} ms (target <= 5 ms): {verdict}")


if __name__ == "__main__":
    main()
