"""Outcome-log rows record a reused sample at what it cost when bought, not at $0 (tuning data)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from cascade import Cascade
from cascade.engine.build import build
from cascade.observe import Observer, OutcomeLog
from tests.engine.test_reuse import one_sample, voter_then_tier
from tests.observe.support import rows


def logged(tmp_path: Path, last_k: int) -> tuple[dict[str, object], object]:
    built = build(voter_then_tier(last_k=last_k))
    c = Cascade(built.tiers, name="reuse", observer=Observer(log=OutcomeLog(tmp_path / "out.jsonl")))
    result = c.run("q")
    c.close()
    (row,) = rows(tmp_path)
    return row, result


def test_a_fully_reused_tier_is_logged_at_its_purchase_cost(tmp_path: Path) -> None:
    row, result = logged(tmp_path, last_k=1)
    large = result.attempts[1]  # type: ignore[attr-defined]
    assert large.reused_samples == 1 and large.cost == 0  # the run paid nothing more for it
    (sample,) = row["responses"]["b"]  # type: ignore[index]
    # was "0" with 0 tokens: the sample cost one scripted call of one sample (10 in, 10 out)
    assert Decimal(sample["cost_usd"]) == one_sample(1)
    assert (sample["input_tokens"], sample["output_tokens"]) == (10, 10)
    assert row["cascade"]["tiers"]["large"]["cost"] == "0"  # type: ignore[index]


def test_a_topped_up_tier_logs_each_sample_at_its_own_call(tmp_path: Path) -> None:
    row, _ = logged(tmp_path, last_k=3)
    samples = row["responses"]["b"]  # type: ignore[index]
    assert len(samples) == 3
    costs = [Decimal(s["cost_usd"]) for s in samples]
    # the reused one: a call of 1 sample; the two topped up: halves of a call of 2 samples
    assert costs == [one_sample(1), one_sample(2) / 2, one_sample(2) / 2]
    assert [s["output_tokens"] for s in samples] == [10, 10, 10]
    assert sum(costs) == one_sample(1) + one_sample(2)


@pytest.mark.parametrize("last_k", [1, 3])
def test_the_row_never_reports_spend_twice(tmp_path: Path, last_k: int) -> None:
    row, result = logged(tmp_path, last_k)
    assert Decimal(row["cascade"]["cost"]) == result.cost  # type: ignore[index, attr-defined]
