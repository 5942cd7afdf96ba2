"""The async engine reserves and settles at once, without a task or a thread, when the ledger can
answer without blocking (memory, a free SQLite file), and falls back to a worker thread when the
SQLite write lock is held elsewhere (issue 24: async ledgers had become 2-4x slower than sync)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from cascade import Budget, BudgetExceededError, Cap, Cascade
from cascade.budget.memory import MemoryLedger
from cascade.budget.sqlite import SQLiteLedger
from tests import clock
from tests.helpers import cost_of, tier

ONE_CALL = cost_of(1)


def _cascade(budget: Budget) -> Cascade:
    return Cascade([tier("small", "s", 0.1, 0.5), tier("large", "l")], name="p", budget=budget)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_an_async_run_on_a_free_ledger_uses_no_thread(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = MemoryLedger() if kind == "memory" else SQLiteLedger(tmp_path / "l.db")
    budget = Budget(caps=(Cap(ONE_CALL * 100, "day"),), ledger=ledger, clock=clock.now)
    c = _cascade(budget)
    c.run("open the file")  # the first use creates the file (in the caller's thread)
    threads: list[Any] = []

    async def no_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
        threads.append(fn)
        return fn(*args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", no_thread)
    result = asyncio.run(c.arun("q"))
    assert result.answer == "l" and threads == []
    assert ledger.spent(clock.day_bucket()) == ONE_CALL * 4  # two runs, two calls each
    assert ledger.held(clock.day_bucket()) == 0


def test_a_refusal_on_the_fast_path_is_the_same_refusal() -> None:
    budget = Budget(
        caps=(Cap(ONE_CALL * 3, "day"),), ledger=MemoryLedger(), on_exceeded="raise", clock=clock.now
    )
    c = _cascade(budget)
    assert asyncio.run(c.arun("a")).answer == "l"  # two calls of the three the cap allows
    with pytest.raises(BudgetExceededError) as info:
        asyncio.run(c.arun("b"))  # the second call cannot be covered
    assert info.value.cap == clock.day_bucket()
    assert budget.ledger is not None and budget.ledger.held(clock.day_bucket()) == 0


def test_a_sqlite_file_locked_elsewhere_waits_in_a_thread_not_in_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    ledger = SQLiteLedger(path)
    budget = Budget(caps=(Cap(ONE_CALL * 100, "day"),), ledger=ledger, clock=clock.now)
    c = _cascade(budget)
    c.run("open the file")
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    assert ledger.try_reserve([(clock.day_bucket(), ONE_CALL * 100)], ONE_CALL) is None  # answers at once
    released = threading.Timer(0.3, lambda: other.execute("ROLLBACK"))

    async def main() -> tuple[str, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.create_task(ticker())
        released.start()
        result = await c.arun("q")
        t.cancel()
        return result.answer, ticks

    answer, ticks = asyncio.run(main())
    other.close()
    assert answer == "l"
    assert ticks >= 10  # the loop kept running while the reservation waited for the lock (0.3 s)
    assert ledger.spent(clock.day_bucket()) == ONE_CALL * 4
