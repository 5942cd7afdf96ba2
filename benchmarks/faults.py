"""Faulty providers against the money: what every fault leads to, and caps under random faults.

    .venv/bin/python benchmarks/faults.py [--processes 8] [--requests 500] [--timeout 1.0]

Part 1 serves every fault of ``tests/faults/fault_server.py`` (both wire formats, sync and async)
to the cheap tier of a two-tier cascade (2 tries, then the healthy strong tier) and prints what
happened: retried, escalated with a reason, billed with flagged usage, or a clean error. It also
times one direct provider call per fault: a *hang* is a call that outlives the tier timeout by more
than 1 s, a *traceback* any exception that is not a cascade error. Targets: 0 and 0.

Part 2 runs ``--processes`` processes x ``--requests`` requests, each with a random fault script
for both tiers, against one shared SQLite ledger with a day cap smaller than the demand. It prints
the overspend (ledger spent - cap; target 0), negative settlements (target 0), holds left behind
and whether the ledger agrees with the sum of what every run reported spending.

Timings on a shared machine are noisy; the counts are not.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cascade import Cascade  # noqa: E402
from cascade.budget import Budget, Cap  # noqa: E402
from cascade.budget.sqlite import SQLiteLedger  # noqa: E402
from cascade.engine.loop import Tier  # noqa: E402
from cascade.errors import CascadeError  # noqa: E402
from cascade.money import Price  # noqa: E402
from cascade.policy.schema import GenerationParams  # noqa: E402
from cascade.providers.anthropic import AnthropicProvider  # noqa: E402
from cascade.providers.openai import OpenAIProvider  # noqa: E402
from cascade.retry import RetryPolicy  # noqa: E402
from cascade.testing import FixedScorer  # noqa: E402
from cascade.types import CascadeResult, Request  # noqa: E402
from tests.faults.fault_server import FAULTS, FaultServer  # noqa: E402

PRICE = Price(Decimal(2), Decimal(8))
RETRY = RetryPolicy(attempts=2, initial=0, max_wait=0, jitter=0, max_retry_after=0)
PARAMS = GenerationParams(max_tokens=64, temperature=0.0)
SLOW = {"drip", "drip_headers", "sleep"}


STREAM = False  # --stream: every tier asks for server-sent events


def provider(url: str, kind: str, timeout: float, *, clean: bool = False, model_suffix: str = "") -> Any:
    root = f"{url}/clean" if clean else url
    if kind == "openai":
        return OpenAIProvider(
            "gpt-4o-mini" + model_suffix,
            api_key="k",
            base_url=f"{root}/openai/v1",
            params=PARAMS,
            timeout=timeout,
            stream=STREAM,
        )
    return AnthropicProvider(
        "claude-haiku-4-5" + model_suffix,
        api_key="k",
        base_url=f"{root}/anthropic",
        params=PARAMS,
        timeout=timeout,
        stream=STREAM,
    )


class Recording:
    """A ledger that counts negative settlements (and passes everything through)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.negative = 0
        self.settled = 0

    def reserve(self, caps: Any, amount: Decimal, *, ttl: float = 600.0) -> str:
        hold: str = self.inner.reserve(caps, amount, ttl=ttl)
        return hold

    async def areserve(self, caps: Any, amount: Decimal, *, ttl: float = 600.0) -> str:
        hold: str = await self.inner.areserve(caps, amount, ttl=ttl)
        return hold

    def settle(self, hold: str, actual: Decimal) -> None:
        self.settled += 1
        self.negative += actual < 0
        self.inner.settle(hold, actual)

    async def asettle(self, hold: str, actual: Decimal) -> None:
        self.settled += 1
        self.negative += actual < 0
        await self.inner.asettle(hold, actual)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def two_tiers(url: str, kind: str, timeout: float, budget: Budget, clean_big: bool = True) -> Cascade:
    small = Tier("small", provider(url, kind, timeout), PRICE, FixedScorer(0.9), 0.5, RETRY, kind, 64)
    big_p = provider(url, kind, timeout, clean=clean_big, model_suffix="" if clean_big else "-big")
    big = Tier("big", big_p, PRICE, None, None, RETRY, kind, 64)
    return Cascade([small, big], name="faults", budget=budget)


# -- part 1: every fault ---------------------------------------------------------------------------


def outcome(result: CascadeResult) -> str:
    small = result.attempts[0]
    if small.decision == "escalated":
        if small.retries:
            retried = f"retried x{small.retries}, "
        elif small.charged:  # a failed call that may have been billed: charged once, never retried
            retried = f"not retried ({small.charged}: ${small.cost}), "
        else:
            retried = "not retried (permanent), "
        return f"{retried}escalated: {small.reason}"
    if small.usage_source != "reported":
        return f"answered, usage {small.usage_source} (${small.cost} billed)"
    return f"answered (retries {small.retries})"


def direct(p: Any, prompt: str, mode: str) -> tuple[float, str]:
    """One provider call with no retry: (seconds, 'ok' / cascade error name / 'TRACEBACK ...')."""
    start = time.perf_counter()
    try:
        if mode == "sync":
            p.complete(Request.of(prompt), 2)
        else:

            async def go() -> None:
                try:
                    await p.acomplete(Request.of(prompt), 2)
                finally:
                    await p.aclose()

            asyncio.run(go())
        what = "ok"
    except CascadeError as exc:
        what = type(exc).__name__
    except Exception as exc:  # the benchmark counts these: the target is none
        what = f"TRACEBACK {type(exc).__name__}"
    return time.perf_counter() - start, what


def part1(server: FaultServer, timeout: float) -> tuple[int, int]:
    how = "streamed" if STREAM else "plain"
    print(
        f"Part 1: every fault, both wire formats, sync and async, {how} replies"
        f" (timeout {timeout:g} s, 2 tries)"
    )
    print(f"  {'fault':<15} {'kind':<10} {'mode':<6} {'call':>6}  {'direct call':<24} cascade outcome")
    tracebacks = hangs = 0
    for fault in FAULTS:
        for kind in ("openai", "anthropic"):
            for mode in ("sync", "async"):
                tag = uuid.uuid4().hex[:8]
                p = provider(server.url, kind, timeout)
                seconds, what = direct(p, f"q {tag} !faults={fault}", mode)
                p.close()
                tracebacks += what.startswith("TRACEBACK")
                hang = seconds > timeout + 1.0
                hangs += hang
                with tempfile.TemporaryDirectory() as tmp:
                    ledger = SQLiteLedger(Path(tmp) / "l.sqlite3")
                    budget = Budget(caps=(Cap(Decimal(1), "day"),), ledger=ledger, hold_ttl=60)
                    c = two_tiers(server.url, kind, timeout, budget)
                    prompt = f"q {tag}-c !faults={fault}"
                    try:
                        if mode == "sync":
                            result = c.run(prompt)
                        else:

                            async def arun(c: Cascade = c, prompt: str = prompt) -> CascadeResult:
                                try:
                                    return await c.arun(prompt)
                                finally:
                                    await c.aclose()

                            result = asyncio.run(arun())
                        told = outcome(result)
                    except CascadeError as exc:
                        told = f"clean error: {type(exc).__name__}"
                    except Exception as exc:
                        tracebacks += 1
                        told = f"TRACEBACK {type(exc).__name__}: {exc}"
                    c.close()
                    left = ledger.holds()
                    told += f"; holds left {left}" if left else ""
                mark = " HANG" if hang else ""
                print(f"  {fault:<15} {kind:<10} {mode:<6} {seconds:5.2f}s  {what:<24} {told}{mark}")
    print(f"  tracebacks: {tracebacks} (target 0); hangs beyond timeout + 1 s: {hangs} (target 0)")
    return tracebacks, hangs


# -- part 2: random faults under a shared cap ------------------------------------------------------

FAST = sorted(set(FAULTS) - SLOW)


def worker(args: tuple[str, str, int, int, Decimal, float]) -> dict[str, Any]:
    url, path, seed, requests, cap, timeout = args
    rng = random.Random(seed)
    ledger = Recording(SQLiteLedger(path))
    budget = Budget(caps=(Cap(cap, "day"),), ledger=ledger, hold_ttl=60)
    kind = "openai" if seed % 2 else "anthropic"
    c = two_tiers(url, kind, timeout, budget, clean_big=False)
    prompts = []
    for i in range(requests):
        # half the tries meet a fault (one in a hundred a slow drip); the last fault repeats
        pool = FAST + (["drip"] if rng.random() < 0.01 else [])
        script = ",".join(rng.choice(pool) if rng.random() < 0.5 else "ok" for _ in range(rng.randint(1, 4)))
        prompts.append(f"p{seed}-{i} !faults={script}")

    async def go() -> list[CascadeResult | CascadeError]:
        try:
            return await c.abatch(prompts, concurrency=8, return_exceptions=True)
        finally:
            await c.aclose()

    tracebacks = 0
    try:
        results = asyncio.run(go())
    except Exception:
        tracebacks += 1
        results = []
    c.close()
    reasons: Counter[str] = Counter()
    spent = Decimal(0)
    for r in results:
        if isinstance(r, CascadeError):
            spent += r.spent
            reasons[f"error {type(r).__name__}"] += 1
        else:
            spent += r.cost
            reasons[f"{r.reason} at {r.tier}"] += 1
    return {
        "spent": spent,
        "negative": ledger.negative,
        "settled": ledger.settled,
        "reasons": reasons,
        "tracebacks": tracebacks,
        "runs": len(results),
    }


def part2(
    server: FaultServer, processes: int, requests: int, cap: Decimal, timeout: float
) -> tuple[Decimal, int]:
    print(f"\nPart 2: {processes} processes x {requests} requests, random faults, one SQLite day cap ${cap}")
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "shared.sqlite3")
        start = time.perf_counter()
        ctx = mp.get_context("spawn")
        with ctx.Pool(processes) as pool:
            out = pool.map(
                worker, [(server.url, path, seed, requests, cap, timeout) for seed in range(processes)]
            )
        elapsed = time.perf_counter() - start
        ledger = SQLiteLedger(path)
        budget = Budget(caps=(Cap(cap, "day"),), ledger=ledger)
        bucket = budget.buckets("faults", None)[0][0]
        spent = Decimal(ledger.spent(bucket))
        held = Decimal(ledger.held(bucket))
        holds = ledger.holds()
    reported = sum((o["spent"] for o in out), Decimal(0))
    negative = sum(o["negative"] for o in out)
    reasons: Counter[str] = sum((o["reasons"] for o in out), Counter())
    overspend = max(spent - cap, Decimal(0))
    runs, settled = sum(o["runs"] for o in out), sum(o["settled"] for o in out)
    print(f"  runs: {runs} in {elapsed:.1f} s; settlements: {settled}")
    for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
        print(f"    {reason:<40} {n:>6}")
    print(f"  ledger spent ${spent} of ${cap} ({spent / cap:.1%}); runs reported ${reported}")
    print(f"  overspend: ${overspend} (target 0)")
    print(f"  negative settlements: {negative} (target 0)")
    print(f"  holds left: {holds}, held ${held}; tracebacks in workers: {sum(o['tracebacks'] for o in out)}")
    return overspend, negative


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=8)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--timeout", type=float, default=1.0)
    ap.add_argument("--cap", type=Decimal, default=Decimal("0.25"))
    ap.add_argument("--skip-part1", action="store_true")
    ap.add_argument("--stream", action="store_true", help="part 1 with streamed replies (server-sent events)")
    args = ap.parse_args()
    global STREAM
    STREAM = args.stream
    with FaultServer() as server:
        if not args.skip_part1:
            part1(server, args.timeout)
        part2(server, args.processes, args.requests, args.cap, args.timeout)


if __name__ == "__main__":
    main()
