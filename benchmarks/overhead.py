"""Engine overhead: per request and per attempt, and 1,000 concurrent `arun` calls.

    .venv/bin/python benchmarks/overhead.py

1. Three scripted tiers at zero latency, every tier scored and escalated (3 attempts per request).
   The engine's overhead is the time per request minus the time of the same provider and scorer
   calls made directly (what any caller would pay anyway).
2. Sync ``run`` against async ``arun`` per ledger kind (memory, SQLite, and Redis when
   ``$CASCADE_REDIS_URL`` names a server) with a day cap, when the first and the third tier answers.
3. 1,000 and 10,000 concurrent `arun` calls against scripted tiers sleeping 20 ms, against the
   same calls awaited bare, with the share of time spent in the garbage collector, with the default
   GC and with ``gc.freeze()`` after warm-up (an application's choice, shown for comparison).
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from cascade import Budget, Cap, Cascade, Price, Request, Tier
from cascade.budget.memory import MemoryLedger
from cascade.budget.sqlite import SQLiteLedger
from cascade.protocols import Ledger
from cascade.testing import FixedScorer, ScriptedProvider

PRICE = Price(Decimal("0.15"), Decimal("0.60"))


def make(latency: float = 0.0, budget: Budget | None = None, first_accepts: bool = False) -> Cascade:
    tiers = [
        Tier(
            "small",
            ScriptedProvider("a", latency=latency),
            PRICE,
            FixedScorer(0.9 if first_accepts else 0.1),
            0.5,
        ),
        Tier("medium", ScriptedProvider("b", latency=latency), PRICE, FixedScorer(0.1), 0.5),
        Tier("large", ScriptedProvider("c", latency=latency), PRICE),
    ]
    return Cascade(tiers, name="bench", budget=budget)


def per_request(cascade: Cascade, n: int, repeats: int = 5) -> float:
    best = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n):
            cascade.run("What is 2+2?")
        best.append((time.perf_counter() - t) / n)
    return min(best)


def bare(cascade: Cascade, n: int) -> float:
    """The provider and scorer calls alone, as a caller would make them without cascade."""
    request = Request.of("What is 2+2?")
    best = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            for tier in cascade.tiers:
                completion = tier.provider.complete(request, 1)
                if tier.scorer is not None:
                    tier.scorer.score(request, completion)
        best.append((time.perf_counter() - t) / n)
    return min(best)


def forget_calls(cascade: Cascade) -> None:
    """Empty the scripted providers' call records: kept, every request of every round would stay
    GC-tracked (a test double's memory, not a provider's) and slow later rounds' collections."""
    for tier in cascade.tiers:
        tier.provider.calls.clear()  # type: ignore[attr-defined]


async def bare_concurrent(cascade: Cascade, n: int, tiers: int) -> float:
    """The same simulated calls awaited directly (the floor asyncio itself imposes here)."""
    forget_calls(cascade)
    request = Request.of("q")

    async def one() -> None:
        for tier in cascade.tiers[:tiers]:
            await tier.provider.acomplete(request, 1)

    t = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return time.perf_counter() - t


async def concurrent(cascade: Cascade, n: int) -> float:
    forget_calls(cascade)
    t = time.perf_counter()
    await asyncio.gather(*(cascade.arun(f"q{i}") for i in range(n)))
    return time.perf_counter() - t


def ledger_for(kind: str, folder: str) -> Ledger | None:
    """A fresh ledger of ``kind`` (None for Redis when no server is configured)."""
    if kind == "memory":
        return MemoryLedger()
    if kind == "sqlite":
        return SQLiteLedger(Path(folder) / f"ledger-{time.perf_counter_ns()}.sqlite3")
    url = os.environ.get("CASCADE_REDIS_URL")
    if not url:
        return None
    from cascade.budget.redis import RedisLedger

    return RedisLedger(url, prefix=f"bench-{time.perf_counter_ns()}")


async def per_request_async(cascade: Cascade, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        await cascade.arun("What is 2+2?")
    return (time.perf_counter() - t) / n


def ledger_rows(n: int, rounds: int = 5, kinds: tuple[str, ...] = ("memory", "sqlite", "redis")) -> None:
    """Sync ``run`` against async ``arun`` per ledger kind with a day cap, alternating rounds."""
    print("\n## Sync vs async per ledger (day cap; first tier answers / third tier answers)\n")
    print("| ledger | tier answering | sync per request | async per request | async / sync |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for kind in kinds:
            for first_accepts, label in [(True, "first"), (False, "third")]:
                sync_t: list[float] = []
                async_t: list[float] = []
                for _ in range(rounds):
                    ledgers = [ledger_for(kind, folder) for _ in range(2)]
                    if ledgers[0] is None:
                        break
                    caps = (Cap(Decimal(10**6), "day"),)
                    sync_c = make(budget=Budget(caps=caps, ledger=ledgers[0]), first_accepts=first_accepts)
                    async_c = make(budget=Budget(caps=caps, ledger=ledgers[1]), first_accepts=first_accepts)
                    sync_c.run("warm up")
                    asyncio.run(async_c.arun("warm up"))
                    sync_t.append(per_request(sync_c, n, repeats=1))
                    async_t.append(asyncio.run(per_request_async(async_c, n)))
                if not sync_t:
                    print(f"| {kind} | {label} | (set CASCADE_REDIS_URL) | | |")
                    continue
                s, a = statistics.median(sync_t), statistics.median(async_t)
                print(f"| {kind} | {label} | {s * 1e6:.0f} µs | {a * 1e6:.0f} µs | {a / s:.2f}x |")


def observed_row(n: int) -> None:
    """Outcome log + 10% shadow (cascade.observe) against the same cascade without, in alternating
    rounds (median of 5). Zero-latency tiers: each watched round builds its own observer and its
    time includes ``close()``, which waits for the writer thread to render and write every row, so
    all the log's CPU (which, in CPython, the writer takes from a CPU-bound caller) is counted: an
    upper bound. 1 ms tiers: the caller waits on I/O, as with real providers, and the writer works
    in those waits; the rounds time the requests only."""
    import tempfile
    from pathlib import Path

    from cascade.observe import Observer, OutcomeLog, Shadow

    for latency, rounds_n in ((0.0, n), (0.001, n // 10)):
        with tempfile.TemporaryDirectory() as tmp:
            plain = make(latency=latency, first_accepts=latency > 0)
            times: dict[str, list[float]] = {"plain": [], "watched": []}
            logged = dropped = shadow_jobs = 0
            for r in range(5):
                t = time.perf_counter()
                for _ in range(rounds_n):
                    plain.run("What is 2+2?")
                times["plain"].append((time.perf_counter() - t) / rounds_n)
                obs = Observer(
                    log=OutcomeLog(Path(tmp) / f"o{r}.jsonl", queue_size=200_000), shadow=Shadow(0.1)
                )
                watched = Cascade(plain.tiers, name="bench", observer=obs)
                t = time.perf_counter()
                for _ in range(rounds_n):
                    watched.run("What is 2+2?")
                if latency == 0:
                    obs.close()  # the writer's work is counted
                times["watched"].append((time.perf_counter() - t) / rounds_n)
                obs.close()
                stats = obs.stats()
                logged, dropped = logged + stats["logged"], dropped + stats["log_dropped"]
                shadow_jobs += stats["shadow_completed"]
            total, base = statistics.median(times["watched"]), statistics.median(times["plain"])
            if latency == 0:
                b = bare(plain, n)
                print(
                    f"| no caps + outcome log + 10% shadow (writer's work included) | {total * 1e3:.3f} ms"
                    f" | {b * 1e3:.3f} ms | {(total - b) * 1e3:.3f} ms | {(total - b) / 3 * 1e3:.3f} ms |"
                )
                print()
            print(
                f"Outcome log + 10% shadow, tiers at {latency * 1e3:g} ms per call:"
                f" + {(total - base) * 1e3:.3f} ms per request ({base * 1e3:.3f} -> {total * 1e3:.3f} ms;"
                f" median of 5 alternating rounds of {rounds_n}; {logged} rows logged, {dropped} dropped,"
                f" {shadow_jobs} shadow jobs)."
            )


def main() -> None:
    n = 5000
    print("## Engine overhead (scripted provider, zero latency, 3 tiers, 3 attempts per request)\n")
    print("| setting | time per request | bare calls | engine overhead per request | per attempt |")
    print("|---|---|---|---|---|")
    for label, budget in [
        ("no caps", None),
        ("per-request cap", Budget(per_request=Decimal("0.01"))),
        (
            "per-request + day cap (memory ledger)",
            Budget(per_request=Decimal("0.01"), caps=(Cap(Decimal(10**6), "day"),), ledger=MemoryLedger()),
        ),
    ]:
        c = make(budget=budget)
        total = per_request(c, n)
        b = bare(c, n)
        over = total - b
        print(
            f"| {label} | {total * 1e3:.3f} ms | {b * 1e3:.3f} ms | {over * 1e3:.3f} ms"
            f" | {over / 3 * 1e3:.3f} ms |"
        )
    observed_row(n)
    ledger_rows(500)
    allocation_rows()
    concurrency_rows()


def allocation_rows(n: int = 1000) -> None:
    """What drives the garbage collector: the objects it tracks per request in flight, and the
    collections per 1,000 requests of each generation (``gc.get_stats``) for N concurrent ``arun``."""
    print("\n## Garbage per request (1,000 concurrent `arun`, 20 ms per call, day cap on a memory ledger)\n")
    columns = [
        "tier answering",
        "GC-tracked objects per request in flight",
        "collections per 1,000 (gen 0 / 1 / 2)",
    ]
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---|")
    for first_accepts, label in [(True, "first"), (False, "third")]:
        caps = (Cap(Decimal(10**6), "day"),)
        c = make(latency=0.02, budget=Budget(caps=caps, ledger=MemoryLedger()), first_accepts=first_accepts)
        asyncio.run(concurrent(c, 100))  # warm up
        before = [g["collections"] for g in gc.get_stats()]
        in_flight = asyncio.run(_tracked_in_flight(c, n))
        after = [g["collections"] for g in gc.get_stats()]
        per = " / ".join(f"{(y - x) * 1000 / n:.1f}" for x, y in zip(before, after, strict=True))
        print(f"| {label} | {in_flight:.1f} | {per} |")


async def _tracked_in_flight(cascade: Cascade, n: int) -> float:
    base = len(gc.get_objects())
    tasks = [asyncio.ensure_future(cascade.arun(f"q{i}")) for i in range(n)]
    await asyncio.sleep(0.005)  # every run is in its first call (20 ms)
    tracked = len(gc.get_objects()) - base
    await asyncio.gather(*tasks)
    return tracked / n


class GCTimer:
    """Time spent in the garbage collector (``gc.callbacks``) while it is installed."""

    def __init__(self) -> None:
        self.total = 0.0
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.total += time.perf_counter() - self._start

    def __enter__(self) -> GCTimer:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


def concurrency_rows(rounds: int = 5) -> None:
    """N concurrent ``arun`` against the same calls awaited bare, with the time spent in GC.

    Runs alternate cascade / bare, ``rounds`` each; medians. ``gc.freeze()`` is the application's
    choice (after start-up, so the collector stops rescanning import-time objects): a library must
    not change GC settings behind the application's back, so it gets its own rows.
    """
    print("\n## N concurrent `arun` calls, 20 ms simulated latency per call\n")
    print(
        "| N | tiers called | GC | cascade wall (median) | bare asyncio (median) | cascade / bare"
        " | time in GC (cascade) | latency-bound minimum |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n in (1000, 10000):
        for first_accepts, tiers_called in [(True, 1), (False, 3)]:
            for frozen in (False, True):
                c = make(latency=0.02, first_accepts=first_accepts)
                asyncio.run(concurrent(c, 100))  # warm up
                if frozen:
                    gc.collect()
                    gc.freeze()
                walls, bares, in_gc = [], [], []
                for _ in range(rounds):
                    with GCTimer() as timer:
                        walls.append(asyncio.run(concurrent(c, n)))
                    in_gc.append(timer.total)
                    bares.append(asyncio.run(bare_concurrent(c, n, tiers_called)))
                if frozen:
                    gc.unfreeze()
                wall, floor_bare = statistics.median(walls), statistics.median(bares)
                share = statistics.median(g / w for g, w in zip(in_gc, walls, strict=True))
                print(
                    f"| {n:,} | {tiers_called} | {'frozen' if frozen else 'default'} | {wall * 1e3:.1f} ms"
                    f" | {floor_bare * 1e3:.1f} ms | {wall / floor_bare:.2f}x | {share:.0%}"
                    f" | {0.02 * tiers_called * 1e3:.0f} ms |"
                )


if __name__ == "__main__":
    main()
