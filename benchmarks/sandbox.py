"""What the sandbox costs: session start with the sandbox vs without, and the egress proxy's
added latency per model request, both measured in the same run.

  start    N shell sessions (`echo started`) through the real worker and pipeline, once with
           TELECODER_RUNTIME=local and once with sandbox; for each, the time from the
           `workspace_ready` event (the worktree is there) to the agent's first output line:
           reading .telecoder.yml, the sandbox's git dir, the uid, the proxy, bubblewrap, the
           bridge and the agent's own start. Reported: medians and the added milliseconds.
  proxy    a client making M sequential HTTP requests (a new connection each, as CLIs often
           do, and M on one kept-alive connection) to a local server standing in for a model
           API: run on the host directly, then inside a sandbox whose policy is `model`
           (through the bridge, the Unix socket and the egress proxy). Reported: median request
           times and the added milliseconds.

Run: `.venv/bin/python benchmarks/sandbox.py [--sessions N] [--requests M]`.
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from telecoder.assemble import build_worker
from telecoder.domain import EventKind, NewSession
from telecoder.protocols import Confinement, Endpoint, Mount, NetworkPolicy
from telecoder.runtimes.local import LocalRuntime
from telecoder.runtimes.sandbox import SandboxRuntime
from telecoder.settings import Settings
from telecoder.store import open_store

CLIENT = r"""
import http.client, statistics, sys, time
port, count = int(sys.argv[1]), int(sys.argv[2])
fresh, kept = [], []
for _ in range(count):
    t = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("POST", "/v1/messages", body=b"{}")
    c.getresponse().read()
    c.close()
    fresh.append(time.perf_counter() - t)
c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
for _ in range(count):
    t = time.perf_counter()
    c.request("POST", "/v1/messages", body=b"{}")
    c.getresponse().read()
    kept.append(time.perf_counter() - t)
print(statistics.median(fresh) * 1000, statistics.median(kept) * 1000)
"""


class _Model(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"type":"message","content":[{"type":"text","text":"ok"}]}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def make_repo(root: Path) -> Path:
    remote = root / "remote.git"
    git("init", "-q", "--bare", "-b", "main", str(remote), cwd=root)
    seed = root / "seed"
    git("clone", "-q", str(remote), str(seed), cwd=root)
    (seed / "README.md").write_text("hello\n")
    git("add", ".", cwd=seed)
    git("-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "init", cwd=seed)
    git("push", "-q", "origin", "HEAD:main", cwd=seed)
    return seed


async def session_starts(runtime: str, sessions: int, root: Path) -> list[float]:
    home = root / f"home-{runtime}"
    settings = Settings(home=home, runtime=runtime, raw_log_days=0, worktree_pool=4)
    store = await open_store(settings.store_url)
    worker = build_worker(settings, store)
    (root / runtime).mkdir()
    repo = make_repo(root / runtime)
    found: list[float] = []
    try:
        for _ in range(sessions + 1):  # the first warms the mirror and the pool
            new = NewSession(repo=str(repo), prompt="echo started", engine="shell")
            await store.sessions.create(new)
            claimed = await store.queue.claim(worker.id)
            assert claimed is not None
            await worker.execute(claimed)
            events = await store.events.list(new.id, after=0)
            ready = next(e.ts for e in events if e.data.get("step") == "workspace_ready")
            first = next(e.ts for e in events if e.kind == EventKind.OUTPUT)
            found.append(first - ready)
    finally:
        await store.close()
    return found[1:]


async def request_times(confined: bool, requests: int, root: Path) -> tuple[float, float]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Model)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    work = root / f"proxy-{confined}"
    work.mkdir()
    runtime = SandboxRuntime() if confined else LocalRuntime()
    confinement = Confinement(
        label="bench",
        mounts=(Mount(source=work, target=work, writable=True),),
        network=NetworkPolicy(mode="model", endpoints=(Endpoint(host="127.0.0.1", port=port),)),
    )
    process = await runtime.spawn(
        ["/usr/bin/python3", "-c", CLIENT, str(port), str(requests)],
        cwd=work,
        env={"PATH": "/usr/bin:/bin", "HOME": str(work)},
        stdin=None,
        interactive=False,
        confinement=confinement,
    )
    out = [line.decode() async for stream, line in process.lines() if stream == "stdout"]
    await process.wait()
    server.shutdown()
    fresh, kept = (float(x) for x in out[-1].split())
    return fresh, kept


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=15)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="3 sessions, 20 requests (CI)")
    args = parser.parse_args()
    if args.quick:
        args.sessions, args.requests = 3, 20
    with tempfile.TemporaryDirectory(prefix="telecoder-bench-") as tmp:
        root = Path(tmp)
        local = await session_starts("local", args.sessions, root)
        sandbox = await session_starts("sandbox", args.sessions, root)
        direct = await request_times(False, args.requests, root)
        proxied = await request_times(True, args.requests, root)
    lm, sm = statistics.median(local) * 1000, statistics.median(sandbox) * 1000
    print(f"session start (worktree ready -> agent's first line), median of {args.sessions}:")
    print(f"  local    {lm:7.1f} ms")
    print(f"  sandbox  {sm:7.1f} ms   added {sm - lm:+.1f} ms   ratio {sm / lm:.2f}x")
    print(f"model request through the egress proxy, median of {args.requests}:")
    print(
        f"  new connection  direct {direct[0]:6.2f} ms  proxied {proxied[0]:6.2f} ms  "
        f"added {proxied[0] - direct[0]:+.2f} ms"
    )
    print(
        f"  kept-alive      direct {direct[1]:6.2f} ms  proxied {proxied[1]:6.2f} ms  "
        f"added {proxied[1] - direct[1]:+.2f} ms"
    )


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
