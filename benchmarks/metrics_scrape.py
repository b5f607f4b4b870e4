"""What a ``GET /metrics`` scrape costs: every figure is read from the database at scrape time.

Seeds a database (SQLite by default, ``--database postgresql://…`` for PostgreSQL) with N
sessions (a quarter queued, the rest finished, one attempt each) and 5·N gateway usage rows, then
times ``metrics.collect`` + ``metrics.render`` (what the route does) over several scrapes and
prints the median and the slowest, the rows, and the size of the exposition.
Run: `.venv/bin/python benchmarks/metrics_scrape.py [--sessions N] [--scrapes K]`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert

from telecoder import metrics
from telecoder.domain import NewSession, SessionStatus
from telecoder.settings import Settings
from telecoder.store import open_store
from telecoder.store.rows import new_session_values
from telecoder.store.schema import attempts, sessions, usage

ENGINES = ("claude-code", "codex", "shell", "opencode")
MODELS = ("claude-sonnet-4-5", "gpt-5-codex", "qwen3-coder")


async def seed(url: str, n: int) -> None:
    store = await open_store(url)
    now = time.time()
    session_rows, attempt_rows, usage_rows = [], [], []
    for i in range(n):
        engine = ENGINES[i % len(ENGINES)]
        new = NewSession(repo=f"/src/r{i % 50}", prompt="x", engine=engine)
        values = new_session_values(new, now - 3600 + i * 0.01)
        finished = i % 4 != 0
        if finished:
            status = SessionStatus.SUCCEEDED if i % 5 else SessionStatus.FAILED
            values.update(status=status.value, attempt=1, started_at=now - 600, finished_at=now)
            attempt_rows.append(
                {
                    "session_id": new.id,
                    "number": 1,
                    "worker_id": "w",
                    "status": "succeeded",
                    "started_at": now - 600 + i % 500,
                    "lease_until": now,
                    "heartbeat_at": now,
                    "finished_at": now,
                }
            )
            for k in range(5):
                usage_rows.append(
                    {
                        "session_id": new.id,
                        "attempt": 1,
                        "ts": now - k,
                        "engine": engine,
                        "endpoint": "anthropic" if k % 2 else "openai",
                        "api": "anthropic",
                        "model": MODELS[(i + k) % len(MODELS)],
                        "input_tokens": 1000 + k,
                        "output_tokens": 100,
                        "cost_usd": 0.01,
                        "latency_ms": 200.0 * (k + 1),
                        "status": 200 if k else 429,
                    }
                )
        session_rows.append(values)
    async with store.db.write() as conn:
        for table, rows in (
            (sessions, session_rows),
            (attempts, attempt_rows),
            (usage, usage_rows),
        ):
            for start in range(0, len(rows), 2000):
                await conn.execute(insert(table), rows[start : start + 2000])
    await store.close()


async def scrape(url: str, scrapes: int, home: Path) -> tuple[list[float], int]:
    store = await open_store(url)
    settings = Settings(home=home, budget_daily_usd=100.0)
    times, size = [], 0
    for _ in range(scrapes):
        started = time.perf_counter()
        text = metrics.render(await metrics.collect(store, settings))
        times.append(time.perf_counter() - started)
        size = len(text)
    await store.close()
    return times, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20000)
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument("--database", help="a PostgreSQL URL (an empty database); else SQLite")
    parser.add_argument("--quick", action="store_true", help="1000 sessions, 5 scrapes")
    args = parser.parse_args()
    if args.quick:
        args.sessions, args.scrapes = 1000, 5
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database or f"sqlite:///{Path(tmp) / 'bench.db'}"
        asyncio.run(seed(url, args.sessions))
        times, size = asyncio.run(scrape(url, args.scrapes, Path(tmp)))
    ms = [t * 1000 for t in times]
    print(f"database        {url.split(':', 1)[0]}")
    print(f"sessions        {args.sessions} (usage rows {args.sessions * 3 // 4 * 5})")
    print(f"scrape median   {statistics.median(ms):.1f} ms")
    print(f"scrape slowest  {max(ms):.1f} ms  (of {args.scrapes})")
    print(f"exposition      {size} bytes")


if __name__ == "__main__":
    main()
