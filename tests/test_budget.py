"""Spend caps: per-request, window caps per policy and per key, stop vs raise, concurrency."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from cascade import Budget, BudgetExceededError, Cap, Cascade, Tier
from cascade.budget.memory import MemoryLedger
from cascade.budget.sqlite import SQLiteLedger
from cascade.request import Request
from cascade.testing import FixedScorer, ScriptedProvider
from cascade.types import Completion, Score
from tests import clock
from tests.helpers import PRICE, cost_of, tier

ONE_CALL = cost_of(1)  # $0.00002 worst case and actual per scripted call


def _cascade(budget: Budget, scores: tuple[float, ...] = (0.1, 0.1)) -> Cascade:
    return Cascade(
        [tier("small", "s", scores[0], 0.5), tier("medium", "m", scores[1], 0.5), tier("large", "l")],
        name="p",
        budget=budget,
    )


def test_per_request_cap_stops_with_best_answer_so_far() -> None:
    result = _cascade(Budget(per_request=ONE_CALL * 2)).run("q")
    assert (result.answer, result.tier, result.accepted, result.reason) == ("m", "medium", False, "budget")
    last = result.attempts[-1]
    assert (last.tier, last.decision) == ("large", "stopped")
    assert last.reason.startswith("budget: per-request cap")
    assert result.cost == ONE_CALL * 2


def test_per_request_cap_raise_mode() -> None:
    with pytest.raises(BudgetExceededError) as info:
        _cascade(Budget(per_request=ONE_CALL * 2, on_exceeded="raise")).run("q")
    assert [a.decision for a in info.value.attempts] == ["escalated", "escalated", "stopped"]
    assert info.value.cap == "per_request"


def test_cap_too_small_for_first_tier_raises_even_in_stop_mode() -> None:
    with pytest.raises(BudgetExceededError):
        _cascade(Budget(per_request=ONE_CALL / 2)).run("q")


@pytest.mark.parametrize("ledger_kind", ["memory", "sqlite"])
def test_window_cap_charges_actual_cost_and_then_refuses(ledger_kind: str, tmp_path: Path) -> None:
    ledger = MemoryLedger() if ledger_kind == "memory" else SQLiteLedger(tmp_path / "l.db")
    day = clock.now()
    budget = Budget(caps=(Cap(ONE_CALL * 4, "day"),), ledger=ledger, clock=lambda: day)
    c = _cascade(budget, scores=(0.9, 0.9))  # each run: one call
    for _ in range(4):
        assert c.run("q").accepted
    assert ledger.spent(clock.day_bucket(at=day)) == ONE_CALL * 4
    with pytest.raises(BudgetExceededError) as info:
        c.run("q")
    assert info.value.cap == clock.day_bucket(at=day)
    # the next day has its own bucket
    budget2 = Budget(caps=budget.caps, ledger=ledger, clock=lambda: day + timedelta(days=1))
    assert _cascade(budget2, scores=(0.9, 0.9)).run("q").accepted


def test_month_and_total_windows_bucket_names() -> None:
    budget = Budget(
        caps=(Cap(Decimal(1), "month"), Cap(Decimal(5), "total", "key")),
        clock=lambda: datetime(2026, 2, 3, tzinfo=UTC),
    )
    assert [b for b, _ in budget.buckets("p", "tenant-1")] == [
        "policy:p|month:2026-02",  # literal date ok: a fixed clock, names only, no ledger
        "key:p:tenant-1|total",
    ]
    assert budget.buckets("p", None)[1][0] == "key:p:anonymous|total"


def test_key_scoped_caps_are_separate_per_key() -> None:
    ledger = MemoryLedger()
    c = _cascade(Budget(caps=(Cap(ONE_CALL, "total", "key"),), ledger=ledger), scores=(0.9, 0.9))
    assert c.run("q", budget_key="alice").accepted
    assert c.run("q", budget_key="bob").accepted
    with pytest.raises(BudgetExceededError):
        c.run("q", budget_key="alice")


def test_window_cap_stop_returns_best_answer_mid_cascade() -> None:
    ledger = MemoryLedger()
    c = _cascade(Budget(caps=(Cap(ONE_CALL * 2, "total"),), ledger=ledger))
    result = c.run("q")
    assert result.reason == "budget" and result.tier == "medium"
    assert ledger.spent("policy:p|total") == ONE_CALL * 2


def test_reservation_covers_scorer_worst_case() -> None:
    ledger = MemoryLedger()
    c = _cascade(Budget(caps=(Cap(ONE_CALL * 2, "total"),), ledger=ledger), scores=(0.9, 0.9))
    c.tiers[0].scorer.cost = ONE_CALL * 2  # type: ignore[union-attr]  # a scorer as costly as two calls
    with pytest.raises(BudgetExceededError):
        c.run("q")
    assert ledger.spent("policy:p|total") == 0


def test_failed_call_releases_its_hold() -> None:
    from cascade import PermanentProviderError

    ledger = MemoryLedger()
    c = Cascade(
        [tier("a", PermanentProviderError("x"), 0.9, 0.5), tier("b", "y")],
        name="p",
        budget=Budget(caps=(Cap(ONE_CALL, "total"),), ledger=ledger),
    )
    assert c.run("q").answer == "y"  # the failed tier's hold did not block the second
    assert ledger.spent("policy:p|total") == ONE_CALL


@pytest.mark.parametrize("ledger_kind", ["memory", "sqlite"])
def test_concurrent_threads_never_exceed_cap(ledger_kind: str, tmp_path: Path) -> None:
    ledger = MemoryLedger() if ledger_kind == "memory" else SQLiteLedger(tmp_path / "l.db")
    cap = ONE_CALL * 25
    c = Cascade(
        [tier("a", ScriptedProvider("x", latency=0.002))],
        name="p",
        budget=Budget(caps=(Cap(cap, "total"),), ledger=ledger),
    )
    ok, refused = [], []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(10):
            try:
                c.run("q")
                with lock:
                    ok.append(1)
            except BudgetExceededError:
                with lock:
                    refused.append(1)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ok) == 25 and len(refused) == 55
    assert ledger.spent("policy:p|total") == cap


def test_concurrent_async_runs_never_exceed_cap() -> None:
    ledger = MemoryLedger()
    cap = ONE_CALL * 30
    c = Cascade(
        [tier("a", ScriptedProvider("x", latency=0.005))],
        name="p",
        budget=Budget(caps=(Cap(cap, "total"),), ledger=ledger),
    )
    results = asyncio.run(c.abatch(["q"] * 200, concurrency=200, return_exceptions=True))
    assert sum(isinstance(r, BudgetExceededError) for r in results) == 170
    assert ledger.spent("policy:p|total") == cap


def _hammer(path: str, n: int) -> int:
    ledger = SQLiteLedger(
        path, lock_timeout=60
    )  # contention is the point: a busy CI machine must not time out
    won = 0
    for _ in range(n):
        try:
            hold = ledger.reserve([("b", Decimal("0.001") * 50)], Decimal("0.001"))
        except BudgetExceededError:
            continue
        ledger.settle(hold, Decimal("0.001"))
        won += 1
    return won


def test_sqlite_ledger_holds_across_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    SQLiteLedger(path)
    with multiprocessing.get_context("fork").Pool(4) as pool:
        won = sum(pool.starmap(_hammer, [(path, 30)] * 4))
    assert won == 50
    assert SQLiteLedger(path).spent("b") == Decimal("0.050")


def test_expired_hold_stops_counting_but_settles() -> None:
    ledger = MemoryLedger()
    hold = ledger.reserve([("b", Decimal(1))], Decimal(1), ttl=-1)  # already expired
    ledger.reserve([("b", Decimal(1))], Decimal("0.5"))  # room again
    ledger.settle(hold, Decimal("0.25"))
    assert ledger.spent("b") == Decimal("0.25")


def test_sqlite_expired_hold_settles(tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path / "l.db")
    hold = ledger.reserve([("b", Decimal(1))], Decimal(1), ttl=-1)
    ledger.reserve([("b", Decimal(1))], Decimal("0.5"))
    ledger.settle(hold, Decimal("0.25"))
    assert ledger.spent("b") == Decimal("0.25")


def test_caps_without_a_ledger_still_hold() -> None:
    c = _cascade(Budget(caps=(Cap(ONE_CALL, "total"),)), scores=(0.9, 0.9))
    c.run("q")
    with pytest.raises(BudgetExceededError):
        c.run("q")


def test_a_cancelled_run_settles_its_hold_at_the_worst_case() -> None:
    """Cancelled mid-call (a timeout, a client gone): nothing stays held, the cut-off call is charged."""
    ledger = MemoryLedger()
    slow = ScriptedProvider("x", latency=5.0)
    c = Cascade(
        [tier("only", slow)], name="p", budget=Budget(caps=(Cap(ONE_CALL * 3, "total"),), ledger=ledger)
    )
    worst = c.tiers[0].worst_case(Request.of("q"))

    async def cancelled() -> None:
        with pytest.raises(TimeoutError):  # the hold is in place by 0.5 s: a 5 s call cut off mid-way
            await asyncio.wait_for(c.arun("q"), 0.5)

    asyncio.run(cancelled())
    assert ledger._holds == {}
    assert ledger.spent("policy:p|total") == worst


def test_an_unexpected_exception_settles_the_hold() -> None:
    """A scorer bug (not a ScorerError) propagates, but its call is charged and nothing stays held."""
    ledger = MemoryLedger()

    class Broken(FixedScorer):
        def score(self, request: Request, completion: Completion) -> Score:
            raise ValueError("bug in my scorer")

    c = Cascade(
        [Tier("a", ScriptedProvider("x"), PRICE, Broken(), 0.5), tier("b", "y")],
        name="p",
        budget=Budget(caps=(Cap(ONE_CALL * 10, "total"),), ledger=ledger),
    )
    with pytest.raises(ValueError, match="bug in my scorer"):
        c.run("q")
    assert ledger._holds == {}
    assert ledger.spent("policy:p|total") == ONE_CALL  # the call that happened; the scorer is free


def test_cap_errors_show_money_without_trailing_zeros(tmp_path: Path) -> None:
    from cascade.types import show

    assert (show(Decimal("0.040000000")), show(Decimal(5)), show(Decimal("0.00002"))) == (
        "0.04",
        "5.00",
        "0.00002",
    )
    ledger = SQLiteLedger(tmp_path / "l.sqlite3")
    ledger.reserve([("b", Decimal("0.04"))], Decimal("0.03"))
    with pytest.raises(
        BudgetExceededError, match=r"^cap b \(\$0\.04\) cannot cover \$0\.02: \$0\.03 used or held$"
    ):
        ledger.reserve([("b", Decimal("0.04"))], Decimal("0.02"))


def _first_use(path: str) -> str:
    try:
        ledger = SQLiteLedger(path)
        ledger.settle(ledger.reserve([("b", Decimal(1))], Decimal("0.001")), Decimal("0.001"))
    except Exception as exc:  # the failure is the finding: report it, do not crash the pool
        return f"{type(exc).__name__}: {exc}"
    return "ok"


@pytest.mark.slow
def test_processes_that_start_together_on_a_new_ledger_file_all_get_in(tmp_path: Path) -> None:
    """A new file's WAL switch and tables answered "locked" at once to the losers (1 start in 4 failed)."""
    for i in range(12):
        path = str(tmp_path / f"new-{i}.db")
        with multiprocessing.get_context("fork").Pool(4) as pool:  # four fresh processes at once
            assert pool.map(_first_use, [path] * 4, chunksize=1) == ["ok"] * 4
        assert SQLiteLedger(path).spent("b") == Decimal("0.004")


@pytest.mark.parametrize("ttl", [0, -1.0, float("nan"), float("inf")])
def test_a_hold_ttl_that_is_no_duration_is_refused(ttl: float) -> None:
    with pytest.raises(ValueError, match="hold_ttl must be a finite number of seconds above 0"):
        Budget(hold_ttl=ttl)


def test_python_refuses_a_hold_ttl_shorter_than_a_call_as_yaml_does() -> None:
    """A hold that expires mid-call frees its money: a 100-call cap paid for 103 calls."""
    from cascade.retry import RetryPolicy

    slow = tier("only", ScriptedProvider("x", timeout=1.0), retry=RetryPolicy(2, 0.1, 1.0, 0.0, 5.0))
    capped = Budget(caps=(Cap(Decimal(1), "day"),), hold_ttl=0.05)
    with pytest.raises(ValueError, match=r"hold_ttl 0.05 s must exceed the longest call, 1 s \(tier 'only'"):
        Cascade([slow], budget=capped)
    Cascade([slow], budget=Budget(caps=(Cap(Decimal(1), "day"),), hold_ttl=7.5))
    Cascade([slow], budget=Budget(hold_ttl=0.05))  # no cap, no hold in a ledger: as in a policy
