"""Faulty providers against the money: what every fault leads to, and caps under random faults.

    .venv/bin/python benchmarks/faults.py [--processes 8] [--requests 500] [--timeout 1.0]

Part 1 serves every fault of ``tests/faults/fault_server.py`` (both wire formats, plain and
streamed, sync and async) to the cheap tier of a two-tier cascade (2 tries, then the healthy strong
tier) and prints what happened: retried, escalated with a reason, billed with flagged usage, or a
clean error. Each run is classified by comparing its ledger with what the fault server produced
(what a provider would bill): UNDER (charged less than produced), OVER (a settlement above its
hold), RAW (an exception that is not a cascade error), SLOW (past the deadline + 1 s: one tier
timeout for a direct call, two for a run). Targets: 0, 0, 0, 0.

Part 3 sends 30 requests through a cascade whose tiers both stream and then fail, on a tiny day
cap: the ledger must hold at least what the provider would bill, and calls must be refused once
the cap is reached.

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
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cascade import Cascade  # noqa: E402
from cascade.budget import Budget, Cap  # noqa: E402
from cascade.budget.memory import MemoryLedger  # noqa: E402
from cascade.budget.sqlite import SQLiteLedger  # noqa: E402
from cascade.engine.actions import Tier  # noqa: E402
from cascade.errors import BudgetExceededError, CascadeError  # noqa: E402
from cascade.money import Price  # noqa: E402
from cascade.policy.schema import GenerationParams  # noqa: E402
from cascade.providers.anthropic import AnthropicProvider  # noqa: E402
from cascade.providers.openai import OpenAIProvider  # noqa: E402
from cascade.request import Request  # noqa: E402
from cascade.retry import RetryPolicy  # noqa: E402
from cascade.testing import FixedScorer  # noqa: E402
from cascade.types import CascadeResult, Usage  # noqa: E402
from tests.faults.fault_server import FAULTS, FaultServer  # noqa: E402

PRICE = Price(Decimal(2), Decimal(8))
RETRY = RetryPolicy(attempts=2, initial=0, max_wait=0, jitter=0, max_retry_after=0)
PARAMS = GenerationParams(max_tokens=64, temperature=0.0)
SLOW = {"drip", "drip_headers", "sleep"}


STREAM = False  # every tier asks for server-sent events (part 1 runs both ways)


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
        self.over = 0  # settlements above their hold
        self.holds: dict[str, Decimal] = {}

    def reserve(self, caps: Any, amount: Decimal, *, ttl: float = 600.0) -> str:
        hold: str = self.inner.reserve(caps, amount, ttl=ttl)
        self.holds[hold] = amount
        return hold

    async def areserve(self, caps: Any, amount: Decimal, *, ttl: float = 600.0) -> str:
        hold: str = await self.inner.areserve(caps, amount, ttl=ttl)
        self.holds[hold] = amount
        return hold

    def _count(self, hold: str, actual: Decimal) -> None:
        self.settled += 1
        self.negative += actual < 0
        self.over += actual > self.holds.pop(hold, actual)

    def settle(self, hold: str, actual: Decimal) -> None:
        self._count(hold, actual)
        self.inner.settle(hold, actual)

    async def asettle(self, hold: str, actual: Decimal) -> None:
        self._count(hold, actual)
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
        retried = f"retried x{small.retries}, " if small.retries else "not retried, "
        charged = f" [{small.charged}: ${small.cost}]" if small.charged else ""
        return f"{retried}escalated: {small.reason}{charged}"
    if small.usage_source != "reported":
        return f"answered, usage {small.usage_source} (${small.cost} billed)"
    return f"answered (retries {small.retries})"


STRICT = {
    "type": "function",
    "function": {
        "name": "weather",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TOOL_FAULTS = {"length", "content_filter", "bad_tool_json"}  # sent with a strict tool


def request_for(fault: str, text: str) -> Request:
    request = Request.of(text)
    return replace(request, tools=(STRICT,)) if fault in TOOL_FAULTS else request


def direct(p: Any, request: Request, mode: str) -> tuple[float, str]:
    """One provider call with no retry: (seconds, 'ok' / cascade error name / 'RAW ...')."""
    start = time.perf_counter()
    try:
        if mode == "sync":
            p.complete(request, 2)
        else:

            async def go() -> None:
                try:
                    await p.acomplete(request, 2)
                finally:
                    await p.aclose()

            asyncio.run(go())
        what = "ok"
    except CascadeError as exc:
        what = type(exc).__name__
    except Exception as exc:  # the benchmark counts these: the target is none
        what = f"RAW {type(exc).__name__}"
    return time.perf_counter() - start, what


def produced_cost(server: FaultServer, tag: str) -> Decimal:
    """What a provider would bill for the prompts carrying ``tag`` (the fault server's count)."""
    inp, out = server.produced(tag)
    return PRICE.cost(Usage(inp, out))


def run_once(c: Cascade, request: Request, mode: str) -> CascadeResult:
    if mode == "sync":
        return c.run(request)

    async def arun() -> CascadeResult:
        try:
            return await c.arun(request)
        finally:
            await c.aclose()

    return asyncio.run(arun())


def part1(server: FaultServer, timeout: float) -> Counter[str]:
    global STREAM
    print(
        "Part 1: every fault, both wire formats, plain and streamed, sync and async"
        f" (timeout {timeout:g} s, 2 tries)"
    )
    head = f"  {'fault':<17} {'kind':<9} {'reply':<6} {'mode':<5} {'call':>6}  {'direct call':<24}"
    print(f"{head} cascade outcome")
    flags: Counter[str] = Counter()
    runs = 0
    for fault in FAULTS:
        for kind in ("openai", "anthropic"):
            for stream in (False, True):
                STREAM = stream
                for mode in ("sync", "async"):
                    runs += 1
                    tag = uuid.uuid4().hex[:10]
                    p = provider(server.url, kind, timeout)
                    seconds, what = direct(p, request_for(fault, f"q {tag} !faults={fault}"), mode)
                    p.close()
                    marks = {"RAW"} if what.startswith("RAW") else set()
                    if seconds > timeout + 1.0:
                        marks.add("SLOW")
                    ledger = Recording(MemoryLedger())
                    budget = Budget(caps=(Cap(Decimal(1), "day"),), ledger=ledger, hold_ttl=60)
                    c = two_tiers(server.url, kind, timeout, budget)
                    run_tag = f"{tag}-c"
                    start = time.perf_counter()
                    try:
                        told = outcome(run_once(c, request_for(fault, f"q {run_tag} !faults={fault}"), mode))
                    except CascadeError as exc:
                        told = f"clean error: {type(exc).__name__}"
                    except Exception as exc:
                        marks.add("RAW")
                        told = f"RAW {type(exc).__name__}: {exc}"
                    elapsed = time.perf_counter() - start
                    c.close()
                    if elapsed > 2 * timeout + 1.0:
                        marks.add("SLOW")
                    bucket = budget.buckets("faults", None)[0][0]
                    spent = Decimal(ledger.spent(bucket))
                    if spent < produced_cost(server, run_tag):
                        marks.add("UNDER")
                    if ledger.over:
                        marks.add("OVER")
                    flags.update(marks)
                    mark = " " + ",".join(sorted(marks)) if marks else ""
                    reply = "stream" if stream else "plain"
                    print(
                        f"  {fault:<17} {kind:<9} {reply:<6} {mode:<5} {seconds:5.2f}s  {what:<24}"
                        f" {told}; ledger ${spent}{mark}"
                    )
    STREAM = False
    print(
        f"  runs: {runs}; UNDER {flags['UNDER']}, OVER {flags['OVER']}, RAW {flags['RAW']},"
        f" SLOW {flags['SLOW']} (targets 0, 0, 0, 0)"
    )
    return flags


# -- part 2: random faults under a shared cap ------------------------------------------------------

FAST = sorted(set(FAULTS) - SLOW - {"big_body", "status429_forever"})


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


# -- part 3: streams that fail on a tiny day cap -----------------------------------------------------

STREAM_THEN_FAIL = ["reset", "no_end", "overloaded", "bad_event", "bad_index", "length"]


def part3(server: FaultServer, cap: Decimal, timeout: float, requests: int = 30) -> None:
    global STREAM
    print(f"\nPart 3: {requests} requests, both tiers stream then fail, one day cap of ${cap}")
    tag = uuid.uuid4().hex[:10]
    ok = refused = 0
    STREAM = True
    try:
        for kind in ("openai", "anthropic"):
            ledger = Recording(MemoryLedger())
            budget = Budget(caps=(Cap(cap, "day"),), ledger=ledger, hold_ttl=60)
            c = two_tiers(server.url, kind, timeout, budget, clean_big=False)
            before = server.requests
            bucket = budget.buckets("faults", None)[0][0]
            sent_after_cap = 0  # provider requests after the cap first refused a call
            refused_at: int | None = None
            for i in range(requests // 2):
                fault = STREAM_THEN_FAIL[i % len(STREAM_THEN_FAIL)]
                start_requests = server.requests
                try:
                    result = c.run(request_for(fault, f"q {tag}-{kind}-{i} !faults={fault}"))
                    ok += 1
                    stopped = any(
                        a.reason.startswith("budget") or "retry not sent: budget" in a.reason
                        for a in result.attempts
                    )
                except BudgetExceededError:
                    stopped = True
                    refused += 1
                except CascadeError as exc:
                    refused += 1
                    stopped = any("budget" in a.reason for a in getattr(exc, "attempts", ()))
                if refused_at is not None:
                    sent_after_cap += server.requests - start_requests
                if stopped and refused_at is None:
                    refused_at = i
            c.close()
            spent = Decimal(ledger.spent(bucket))
            billed = produced_cost(server, f"{tag}-{kind}-")
            print(
                f"  {kind:<9} provider requests {server.requests - before}; ledger ${spent} of ${cap};"
                f" the provider would bill ${billed} (ledger >= bill: {spent >= billed});"
                f" first refusal at request {refused_at}, provider requests after it: {sent_after_cap};"
                f" over: {ledger.over}, negative: {ledger.negative}"
            )
    finally:
        STREAM = False
    inp, out = server.produced(f"{tag}-")
    total_billed = PRICE.cost(Usage(inp, out))
    print(f"  runs answered {ok}, refused or failed {refused}; provider would bill ${total_billed} in all")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=8)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--timeout", type=float, default=1.0)
    ap.add_argument("--cap", type=Decimal, default=Decimal("0.25"))
    ap.add_argument("--tiny-cap", type=Decimal, default=Decimal("0.005"), help="part 3's day cap")
    ap.add_argument("--skip-part1", action="store_true")
    ap.add_argument("--skip-part2", action="store_true")
    args = ap.parse_args()
    with FaultServer() as server:
        if not args.skip_part1:
            part1(server, args.timeout)
        if not args.skip_part2:
            part2(server, args.processes, args.requests, args.cap, args.timeout)
        part3(server, args.tiny_cap, args.timeout)


if __name__ == "__main__":
    main()
