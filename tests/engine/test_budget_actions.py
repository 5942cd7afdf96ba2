"""Budget holds are actions the drivers execute: sync through Budget.reserve/settle, async through
Budget.areserve/asettle (never blocking the event loop), and a cancelled or crashed run still settles."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from decimal import Decimal

import pytest

from cascade import Budget, Cap, Cascade, Request, Tier
from cascade.budget.memory import MemoryLedger
from cascade.engine.actions import SETTLED, Call, Reserve, Reserved, Settle
from cascade.engine.drive import execute
from cascade.engine.loop import Outcome, steps
from cascade.testing import FixedScorer, ScriptedProvider
from cascade.types import Completion, Score
from tests.helpers import PRICE, cost_of, tier

ONE_CALL = cost_of(1)


class RecordingLedger:
    """A memory ledger that records which entry points were used, optionally slow or sync-less.

    Async methods exist only with ``native_async`` (else Budget runs the sync ones off the loop).
    """

    def __init__(self, *, delay: float = 0.0, sync_allowed: bool = True, native_async: bool = False) -> None:
        self.inner = MemoryLedger()
        self.delay = delay
        self.sync_allowed = sync_allowed
        self.used: list[str] = []
        self.threads: set[int] = set()
        if native_async:
            self.areserve = self._areserve
            self.asettle = self._asettle

    @property
    def _holds(self) -> dict[str, object]:
        return dict(self.inner._holds)

    def spent(self, bucket_key: str) -> Decimal:
        return self.inner.spent(bucket_key)

    def reserve(self, caps: Sequence[tuple[str, Decimal]], amount: Decimal, *, ttl: float = 600.0) -> str:
        assert self.sync_allowed, "sync reserve called"
        self.used.append("reserve")
        self.threads.add(threading.get_ident())
        time.sleep(self.delay)
        return self.inner.reserve(caps, amount, ttl=ttl)

    def settle(self, hold_id: str, actual: Decimal) -> None:
        assert self.sync_allowed, "sync settle called"
        self.used.append("settle")
        self.threads.add(threading.get_ident())
        time.sleep(self.delay)
        self.inner.settle(hold_id, actual)

    async def _areserve(
        self, caps: Sequence[tuple[str, Decimal]], amount: Decimal, *, ttl: float = 600.0
    ) -> str:
        self.used.append("areserve")
        await asyncio.sleep(self.delay)
        return self.inner.reserve(caps, amount, ttl=ttl)

    async def _asettle(self, hold_id: str, actual: Decimal) -> None:
        self.used.append("asettle")
        await asyncio.sleep(self.delay)
        self.inner.settle(hold_id, actual)


def capped(ledger: RecordingLedger, *tiers: Tier) -> Cascade:
    return Cascade(list(tiers), name="p", budget=Budget(caps=(Cap(ONE_CALL * 100, "total"),), ledger=ledger))


def test_the_loop_yields_budget_actions_and_does_no_ledger_io() -> None:
    ledger = RecordingLedger(sync_allowed=False)
    c = capped(ledger, tier("a", "x", 0.1, 0.5), tier("b", "y"))
    gen = steps(c.settings, Request.of("q"))
    kinds: list[str] = []
    action = next(gen)
    while True:
        kinds.append(type(action).__name__)
        if isinstance(action, Reserve):
            outcome: Outcome = Reserved(f"h{len(kinds)}", None)
        elif isinstance(action, Settle):
            outcome = SETTLED
        else:
            outcome = execute(action)
        try:
            action = gen.send(outcome)
        except StopIteration:
            break
    assert kinds == ["Reserve", "Call", "Rate", "Settle", "Reserve", "Call", "Settle"]
    assert ledger.used == []


def test_sync_run_goes_through_the_sync_ledger() -> None:
    ledger = RecordingLedger()
    result = capped(ledger, tier("a", "x", 0.1, 0.5), tier("b", "y")).run("q")
    assert ledger.used == ["reserve", "settle", "reserve", "settle"]
    assert ledger.spent("policy:p|total") == result.cost == ONE_CALL * 2
    assert ledger._holds == {}


def test_async_run_uses_the_async_ledger_methods() -> None:
    ledger = RecordingLedger(sync_allowed=False, native_async=True)
    result = asyncio.run(capped(ledger, tier("a", "x", 0.1, 0.5), tier("b", "y")).arun("q"))
    assert ledger.used == ["areserve", "asettle", "areserve", "asettle"]
    assert ledger.spent("policy:p|total") == result.cost
    assert ledger._holds == {}


def test_a_slow_sync_ledger_does_not_block_the_event_loop() -> None:
    """A ledger without async methods runs off the loop: a ticker keeps ticking while it works."""
    ledger = RecordingLedger(delay=0.1)
    c = capped(ledger, tier("a", "x", 0.1, 0.5), tier("b", "y"))

    async def main() -> float:
        worst = 0.0
        done = False

        async def tick() -> None:
            nonlocal worst
            last = time.perf_counter()
            while not done:
                await asyncio.sleep(0.005)
                now = time.perf_counter()
                worst = max(worst, now - last)
                last = now

        ticker = asyncio.create_task(tick())
        await c.arun("q")
        done = True
        await ticker
        return worst

    stall = asyncio.run(main())
    assert threading.get_ident() not in ledger.threads
    assert stall < 0.08, f"event loop stalled {stall * 1000:.0f} ms"


def test_cancelled_async_run_settles_through_asettle_at_the_worst_case() -> None:
    ledger = RecordingLedger(sync_allowed=False, native_async=True)
    c = capped(ledger, tier("only", ScriptedProvider("x", latency=5.0)))
    worst = c.tiers[0].worst_case(Request.of("q"))

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(c.arun("q"), 0.05)

    asyncio.run(main())
    assert ledger.used == ["areserve", "asettle"]
    assert ledger._holds == {}
    assert ledger.spent("policy:p|total") == worst


@pytest.mark.slow
def test_a_settle_started_before_cancellation_completes() -> None:
    """Cancelled while the abandoned hold's settle is in flight: the settle still lands."""
    ledger = RecordingLedger(delay=0.2, sync_allowed=False, native_async=True)
    c = capped(ledger, tier("only", ScriptedProvider("x", latency=5.0)))

    async def main() -> None:
        task = asyncio.create_task(c.arun("q"))
        await asyncio.sleep(0.3)  # reserved (0.2 s), now in the call
        task.cancel()
        await asyncio.sleep(0.05)  # the abandon settle has started
        task.cancel()  # a second cancel hits the settle itself
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.3)

    asyncio.run(main())
    assert ledger._holds == {}
    assert ledger.used == ["areserve", "asettle"]


@pytest.mark.slow
def test_cancelled_while_reserving_releases_the_hold_when_it_lands() -> None:
    ledger = RecordingLedger(delay=0.2, sync_allowed=False, native_async=True)
    c = capped(ledger, tier("only", "x"))

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(c.arun("q"), 0.05)
        await asyncio.sleep(0.5)

    asyncio.run(main())
    assert ledger._holds == {}
    assert ledger.spent("policy:p|total") == 0


def test_crash_in_a_scorer_settles_through_the_driver_sync_and_async() -> None:
    class Broken(FixedScorer):
        def score(self, request: Request, completion: Completion) -> Score:
            raise ValueError("bug in my scorer")

    for mode in ("sync", "async"):
        ledger = RecordingLedger(sync_allowed=mode == "sync", native_async=mode == "async")
        c = capped(ledger, Tier("a", ScriptedProvider("x"), PRICE, Broken(), 0.5), tier("b", "y"))
        with pytest.raises(ValueError, match="bug in my scorer"):
            c.run("q") if mode == "sync" else asyncio.run(c.arun("q"))
        assert ledger._holds == {}
        assert ledger.spent("policy:p|total") == ONE_CALL
        assert ledger.used[-1] == ("settle" if mode == "sync" else "asettle")


def test_a_closed_generator_still_settles_its_hold() -> None:
    """A driver that closes the loop mid-call (an abandoned stream) cannot get a Settle: the loop settles."""
    ledger = RecordingLedger()
    c = capped(ledger, tier("only", "x"))
    gen = steps(c.settings, Request.of("q"))
    reserve = next(gen)
    assert isinstance(reserve, Reserve)
    assert isinstance(gen.send(Reserved(ledger.reserve(reserve.buckets, reserve.amount), None)), Call)
    gen.close()
    assert ledger._holds == {}
    assert ledger.spent("policy:p|total") == reserve.amount


def test_a_refused_async_reservation_is_a_decision_not_a_ledger_error() -> None:
    from structlog.testing import capture_logs

    ledger = RecordingLedger(native_async=True)
    c = Cascade(
        [tier("a", "x", 0.1, 0.5), tier("b", "y")],
        name="p",
        budget=Budget(caps=(Cap(ONE_CALL, "total"),), ledger=ledger),  # room for one call only
    )
    with capture_logs() as logs:
        result = asyncio.run(c.arun("q"))
    assert [a.decision for a in result.attempts] == ["escalated", "stopped"]
    assert [e["event"] for e in logs if e["log_level"] == "error"] == []


def test_a_settle_that_fails_after_its_run_was_cancelled_is_logged() -> None:
    from structlog.testing import capture_logs

    class Failing(RecordingLedger):
        async def _asettle(self, hold_id: str, actual: Decimal) -> None:
            await asyncio.sleep(0.05)
            raise OSError("disk gone")

    ledger = Failing(native_async=True)
    c = capped(ledger, tier("only", ScriptedProvider("x", latency=5.0)))

    async def main() -> None:
        task = asyncio.create_task(c.arun("q"))
        await asyncio.sleep(0.02)
        task.cancel()  # the abandon settle starts
        await asyncio.sleep(0.01)
        task.cancel()  # the run gives up waiting for it
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.1)

    with capture_logs() as logs:
        asyncio.run(main())
    assert any(e["event"] == "cascade.ledger_error" and "disk gone" in e["error"] for e in logs)
