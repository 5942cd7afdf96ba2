"""A cap covers what a recorded call bills (its recorded cost), not only its tokens at the tier price."""

from __future__ import annotations

import gzip
import json
from decimal import Decimal
from pathlib import Path

import pytest

from cascade import Budget, Cap, Cascade, Price, Tier
from cascade.budget.memory import MemoryLedger
from cascade.errors import BudgetExceededError
from cascade.providers.replay import ReplayProvider
from cascade.request import Request


def test_a_cap_covers_the_recorded_cost_not_just_the_tokens(tmp_path: Path) -> None:
    sample = {"text": "4", "answer": "4", "quality": 1.0, "input_tokens": 100, "output_tokens": 3}
    row = {"id": "q1", "prompt": "What is 2+2?", "responses": {"strong": [{**sample, "cost_usd": 0.01}]}}
    path = tmp_path / "rec.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(json.dumps(row) + "\n")
    ledger = MemoryLedger()
    budget = Budget(caps=(Cap(Decimal("0.005"), "day"),), ledger=ledger, on_exceeded="raise")
    # $0.01 recorded for 103 tokens; at $1/Mtok the tokens alone come to $0.000103
    strong = Tier("strong", ReplayProvider(str(path), "strong"), Price(Decimal(1), Decimal(1)))
    assert strong.worst_case(Request.of("What is 2+2?")) == Decimal("0.01")
    c = Cascade([strong], name="replay-cap", budget=budget)
    with pytest.raises(BudgetExceededError):
        c.run("What is 2+2?")  # was: reserved $0.000103, then settled $0.01 against a $0.005 cap
    assert ledger.spent(budget.buckets("replay-cap", None)[0][0]) == 0
