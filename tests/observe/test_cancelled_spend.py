"""A run cancelled mid-call is charged its worst case; the outcome log and the error carry it."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

from cascade import Budget, Cap, Cascade
from cascade.budget.memory import MemoryLedger
from cascade.observe import Observer, OutcomeLog
from cascade.request import Request
from cascade.testing import ScriptedProvider
from tests.helpers import tier
from tests.observe.support import rows


def test_a_cancelled_run_is_logged_with_what_it_was_charged(tmp_path: Path) -> None:
    ledger = MemoryLedger()
    budget = Budget(caps=(Cap(Decimal(1), "day"),), ledger=ledger, hold_ttl=60)
    only = tier("only", ScriptedProvider("x", latency=5.0))
    c = Cascade(
        [only], name="cancel", budget=budget, observer=Observer(log=OutcomeLog(tmp_path / "out.jsonl"))
    )
    worst = only.worst_case(Request.of("q"))
    caught: list[BaseException] = []

    async def main() -> None:
        task = asyncio.create_task(c.arun("q"))
        await asyncio.sleep(0.05)  # reserved, now in the call
        task.cancel()
        try:
            await task
        except asyncio.CancelledError as exc:
            caught.append(exc)

    asyncio.run(main())
    c.close()
    bucket = budget.buckets("cancel", None)[0][0]
    assert ledger.spent(bucket) == worst > 0 and ledger.held(bucket) == 0
    (exc,) = caught
    (attempt,) = exc.attempts  # type: ignore[attr-defined]
    assert (attempt.decision, attempt.reason, attempt.cost) == ("failed", "abandoned: CancelledError", worst)
    (row,) = rows(tmp_path)  # was: no row at all, so the log never saw this spend
    assert Decimal(row["cascade"]["cost"]) == worst
    assert row["cascade"]["error"].startswith("CancelledError")
