"""The redis-py client alone: one EVALSHA round trip, sync against async (needs a redis-server).

    CASCADE_REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/python benchmarks/redis_client.py

What the Redis ledger's async path costs before cascade adds anything: the same small Lua script
2,000 times in a row with the sync client, with ``redis.asyncio`` awaited bare, awaited through a
task and ``asyncio.shield`` (as the async driver awaits a ledger call, so that a started settle
completes under cancellation) and through a ``BlockingConnectionPool`` (as the ledger bounds its
connections). Medians of 5 rounds, per round trip, and each against sync.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from typing import Any

import redis
import redis.asyncio

LUA = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
N = 2000


def sync(url: str) -> float:
    script = redis.Redis.from_url(url).register_script(LUA)
    t = time.perf_counter()
    for _ in range(N):
        script(keys=["cascade-bench-redis-client"], args=[1])
    return (time.perf_counter() - t) / N


async def in_loop(url: str, shielded: bool = False, blocking: bool = False) -> float:
    client: Any
    if blocking:
        pool = redis.asyncio.BlockingConnectionPool.from_url(url, max_connections=50, timeout=10)
        client = redis.asyncio.Redis.from_pool(pool)
    else:
        client = redis.asyncio.Redis.from_url(url)
    script = client.register_script(LUA)
    keys, args = ["cascade-bench-redis-client"], [1]
    await script(keys=keys, args=args)  # loads the script, opens the connection
    t = time.perf_counter()
    for _ in range(N):
        if shielded:
            await asyncio.shield(asyncio.ensure_future(script(keys=keys, args=args)))
        else:
            await script(keys=keys, args=args)
    took = (time.perf_counter() - t) / N
    await client.aclose()
    return took


def main() -> None:
    url = os.environ.get("CASCADE_REDIS_URL", "redis://127.0.0.1:6379/0")
    rows: dict[str, list[float]] = {
        "sync": [],
        "async": [],
        "async, task + shield": [],
        "async, blocking pool": [],
    }
    for _ in range(5):
        rows["sync"].append(sync(url))
        rows["async"].append(asyncio.run(in_loop(url)))
        rows["async, task + shield"].append(asyncio.run(in_loop(url, shielded=True)))
        rows["async, blocking pool"].append(asyncio.run(in_loop(url, blocking=True)))
    base = statistics.median(rows["sync"])
    print("| client | per round trip | against sync |\n|---|---|---|")
    for name, times in rows.items():
        m = statistics.median(times)
        print(f"| {name} | {m * 1e6:.0f} µs | {m / base:.2f}x |")


if __name__ == "__main__":
    main()
