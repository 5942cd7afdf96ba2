"""The in-process ledger charges a settle once, like SQLite and Redis."""

from __future__ import annotations

from decimal import Decimal

from cascade.budget import new_hold_id
from cascade.budget.memory import MemoryLedger

CAPS = [("b", Decimal("10"))]


def test_a_retried_settle_charges_once() -> None:
    ledger = MemoryLedger()
    hold = ledger.reserve(CAPS, Decimal("0.5"))
    for _ in range(3):
        ledger.settle(hold, Decimal("0.2"))  # was KeyError on the second
    assert ledger.spent("b") == Decimal("0.2") and ledger.held("b") == 0


def test_a_journaled_settlement_replayed_twice_charges_once() -> None:
    ledger = MemoryLedger()
    hold = new_hold_id(["b"])  # a fail_open hold: the ledger never saw it, its id names the bucket
    ledger.settle(hold, Decimal("0.3"))
    ledger.settle(hold, Decimal("0.3"))  # a replay retried after a crash: was charged twice
    assert ledger.spent("b") == Decimal("0.3")


def test_an_unknown_hold_is_still_an_error() -> None:
    ledger = MemoryLedger()
    try:
        ledger.settle("nope", Decimal("1"))
    except KeyError:
        pass
    else:
        raise AssertionError("an unknown hold id settled")
    assert ledger.spent("b") == 0
