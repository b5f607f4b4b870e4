"""The docker runtime's start-up: from ``spawn`` (create) to the first output line, and to the
container's removal, against the tests' own podman service (runc, vfs, the skeleton image).

    .venv/bin/python benchmarks/docker_latency.py [--runs 30] [--network none|model]

Prints the median and the 10th/90th percentiles. ``model`` adds the egress proxy and the
``sandbox_init`` bridge (a ``python3`` start inside the container).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

# The repository's root, for the tests' podman helpers (tests.docker_support).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.docker_support import HOST_READ, podman_service

from telecoder.protocols import Confinement, Endpoint, Mount, NetworkPolicy
from telecoder.runtimes.docker import DockerRuntime


async def once(rt: DockerRuntime, workdir: Path, network: str) -> tuple[float, float]:
    mounts = tuple(Mount(source=Path(p), target=Path(p)) for p in HOST_READ)
    policy = NetworkPolicy(
        mode=network,  # type: ignore[arg-type]
        endpoints=(Endpoint(host="127.0.0.1", port=9),) if network != "none" else (),
    )
    c = Confinement(
        label="bench",
        mounts=(*mounts, Mount(source=workdir, target=workdir, writable=True)),
        network=policy,
        pids=1024,
        memory_bytes=1 << 30,
    )
    started = time.perf_counter()
    process = await rt.spawn(
        ["echo", "ready"], cwd=workdir, env={"PATH": "/usr/bin"}, stdin=None,
        interactive=False, confinement=c,
    )  # fmt: skip
    first = 0.0
    async for _ in process.lines():
        first = first or time.perf_counter() - started
    await process.wait()
    return first, time.perf_counter() - started


async def main(runs: int, network: str) -> None:
    with tempfile.TemporaryDirectory() as tmp, podman_service(Path(tmp) / "podman") as podman:
        rt = DockerRuntime(image=podman.image, host=podman.url, env_names=())
        workdir = Path(tmp) / "work"
        workdir.mkdir()
        for _ in range(3):
            await once(rt, workdir, network)
        firsts, totals = [], []
        for _ in range(runs):
            first, total = await once(rt, workdir, network)
            firsts.append(first * 1000)
            totals.append(total * 1000)
    for name, values in (("create -> first line", firsts), ("create -> removed", totals)):
        deciles = statistics.quantiles(values, n=10)
        print(
            f"{name:22} median {statistics.median(values):7.1f} ms  "
            f"p10 {deciles[0]:7.1f}  p90 {deciles[-1]:7.1f}  ({runs} runs, network {network})"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--network", choices=["none", "model"], default="none")
    parser.add_argument("--quick", action="store_true", help="3 runs (CI)")
    args = parser.parse_args()
    if args.quick:
        args.runs = 3
    asyncio.run(main(args.runs, args.network))
