"""Caps that are used: on_exceeded: wait queues for room; a per-tier reserve tightens the worst case."""

from __future__ import annotations

import asyncio
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from cascade import Budget, BudgetExceededError, Cap, Cascade, Tier
from cascade.budget.memory import MemoryLedger
from cascade.budget.sqlite import SQLiteLedger
from cascade.engine.build import build
from cascade.request import Request
from cascade.testing import ScriptedProvider
from cascade.types import Usage
from tests.helpers import PRICE, cost_of

REAL = cost_of(1)  # $0.00002: 10 in + 10 out tokens


class Wide(ScriptedProvider):
    """Answers with 10 output tokens but may produce ``bound`` (its reserved worst case)."""

    def __init__(self, *args: object, bound: int = 500, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.bound = bound

    def max_usage(self, request: Request, n: int = 1) -> Usage:
        return Usage(self.usage.input_tokens, self.bound * n)


def _cascade(budget: Budget, latency: float = 0.002, reserve: int | None = None) -> Cascade:
    provider = Wide("x", latency=latency, bound=990)  # worst case 1000 tokens: 50x the real 20
    t = Tier("only", provider, PRICE, max_tokens=990, reserve_output_tokens=reserve)
    return Cascade([t], name="p", budget=budget)


@pytest.mark.slow
def test_wait_lets_queued_requests_through_as_holds_settle_async() -> None:
    """50x worst cases, a cap that fits 400 real calls: refusing at once spends 2%, waiting >= 85%."""
    cap = REAL * 400
    stop = _cascade(Budget(caps=(Cap(cap, "total"),), ledger=MemoryLedger()))
    results = asyncio.run(stop.abatch(["q"] * 1000, concurrency=1000, return_exceptions=True))
    refused_spent = stop.settings.budget.ledger.spent("policy:p|total")  # type: ignore[union-attr]
    assert sum(isinstance(r, BudgetExceededError) for r in results) > 900
    assert refused_spent <= cap * Decimal("0.05")

    ledger = MemoryLedger()
    wait = _cascade(
        Budget(caps=(Cap(cap, "total"),), ledger=ledger, on_exceeded="wait", max_wait=10), latency=0.0005
    )
    results = asyncio.run(wait.abatch(["q"] * 1000, concurrency=1000, return_exceptions=True))
    spent = ledger.spent("policy:p|total")
    # waiting stops only when the cap minus what is spent cannot fit one worst case (50 real calls)
    assert cap - REAL * 50 < spent <= cap
    assert ledger.held("policy:p|total") == 0


def test_wait_with_a_reserve_spends_the_whole_cap() -> None:
    cap = REAL * 400
    ledger = MemoryLedger()
    c = _cascade(
        Budget(caps=(Cap(cap, "total"),), ledger=ledger, on_exceeded="wait", max_wait=10), reserve=10
    )
    asyncio.run(c.abatch(["q"] * 500, concurrency=500, return_exceptions=True))
    assert ledger.spent("policy:p|total") == cap


def test_wait_across_threads_and_a_shared_sqlite_file(tmp_path: Path) -> None:
    cap = REAL * 60
    ledger = SQLiteLedger(tmp_path / "l.sqlite3")
    c = _cascade(Budget(caps=(Cap(cap, "total"),), ledger=ledger, on_exceeded="wait", max_wait=10))
    done: list[object] = []

    def worker() -> None:
        for _ in range(10):
            try:
                done.append(c.run("q"))
            except BudgetExceededError as exc:
                done.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = sum(not isinstance(d, BudgetExceededError) for d in done)
    assert ok >= 10  # without waiting, 8 concurrent 50x holds would let through about 1 run each
    assert ledger.spent("policy:p|total") <= cap and ledger.held("policy:p|total") == 0


def test_wait_gives_up_after_max_wait() -> None:
    ledger = MemoryLedger()
    budget = Budget(caps=(Cap(Decimal(1), "total"),), ledger=ledger, on_exceeded="wait", max_wait=0.2)
    buckets = budget.buckets("p", None)
    budget.reserve(buckets, Decimal("0.8"))  # never settled
    started = time.monotonic()
    with pytest.raises(BudgetExceededError):
        budget.reserve(buckets, Decimal("0.5"))
    assert 0.19 < time.monotonic() - started < 1.0

    async def late() -> None:
        with pytest.raises(BudgetExceededError):
            await budget.areserve(buckets, Decimal("0.5"))

    started = time.monotonic()
    asyncio.run(late())
    assert 0.19 < time.monotonic() - started < 1.0


def test_wait_refuses_at_once_when_no_settlement_can_make_room() -> None:
    ledger = MemoryLedger()
    budget = Budget(caps=(Cap(Decimal(1), "total"),), ledger=ledger, on_exceeded="wait", max_wait=30)
    buckets = budget.buckets("p", None)
    budget.settle(budget.reserve(buckets, Decimal("0.8")), Decimal("0.8"))
    started = time.monotonic()
    with pytest.raises(BudgetExceededError):
        budget.reserve(buckets, Decimal("0.5"))  # 0.8 spent: 0.5 never fits
    assert time.monotonic() - started < 0.1


def test_a_waiting_reservation_is_woken_by_a_settle() -> None:
    budget = Budget(caps=(Cap(Decimal(1), "total"),), on_exceeded="wait", max_wait=5)
    buckets = budget.buckets("p", None)
    hold = budget.reserve(buckets, Decimal("0.8"))
    threading.Timer(0.1, lambda: budget.settle(hold, Decimal("0.1"))).start()
    started = time.monotonic()
    budget.reserve(buckets, Decimal("0.5"))  # an in-process ledger is not polled (next poll after 1 s)
    assert (
        0.05 < time.monotonic() - started < 0.8
    )  # waited for the settle (due 0.1 s after the timer started)


def test_reserve_output_tokens_tightens_the_worst_case_but_charges_the_real_cost() -> None:
    provider = Wide("x", bound=990)
    full = Tier("t", provider, PRICE, max_tokens=990)
    tight = Tier("t", provider, PRICE, max_tokens=990, reserve_output_tokens=40)
    request = Request.of("q")
    assert full.worst_case(request) == PRICE.cost(Usage(10, 990))
    assert tight.worst_case(request) == PRICE.cost(Usage(10, 40))
    # a reserve above the bound never raises the worst case
    assert Tier("t", provider, PRICE, max_tokens=990, reserve_output_tokens=5000).worst_case(request) == (
        full.worst_case(request)
    )
    long = ScriptedProvider("x", usage=Usage(10, 300))  # answers longer than reserved are charged in full
    ledger = MemoryLedger()
    c = Cascade(
        [Tier("t", long, PRICE, max_tokens=990, reserve_output_tokens=40)],
        name="p",
        budget=Budget(caps=(Cap(Decimal(1), "total"),), ledger=ledger),
    )
    c.run("q")
    assert ledger.spent("policy:p|total") == PRICE.cost(Usage(10, 300))


def test_policy_keys_reach_the_budget_and_tiers(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "name: p\ntiers:\n  - {name: a, provider: scripted, model: m, price: {input: 1, output: 1},"
        " params: {max_tokens: 1000}, reserve: {output_tokens: 50}, options: {answers: [hi]}}\n"
        "budget:\n  caps: [{limit: 1, window: day}]\n  on_exceeded: wait\n  max_wait: 2.5\n"
        "  on_ledger_error: fail_open\n  ledger: {kind: sqlite, path: l.sqlite3, lock_timeout: 0.5}\n"
    )
    c = build(policy)
    b = c.settings.budget
    assert (b.on_exceeded, b.max_wait, b.on_ledger_error) == ("wait", 2.5, "fail_open")
    assert isinstance(b.ledger, SQLiteLedger) and b.ledger.lock_timeout == 0.5
    assert c.tiers[0].reserve_output_tokens == 50


def test_waiting_is_first_come_first_served_even_against_newcomers() -> None:
    """Room freed while a reservation waits goes to it, not to a request arriving that instant."""

    async def main() -> None:
        budget = Budget(caps=(Cap(Decimal(1), "total"),), on_exceeded="wait", max_wait=0.3)
        buckets = budget.buckets("p", None)
        hold = budget.reserve(buckets, Decimal(1))  # the cap is fully held
        first = asyncio.create_task(budget.areserve(buckets, Decimal("0.5")))
        await asyncio.sleep(0.05)  # first is queued
        budget.settle(hold, Decimal("0.5"))  # room for exactly one
        late = asyncio.create_task(budget.areserve(buckets, Decimal("0.5")))  # arrives that instant
        assert isinstance(await first, str)
        with pytest.raises(BudgetExceededError):
            await late

    asyncio.run(main())
