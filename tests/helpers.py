"""Builders for engine tests."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from cascade import Budget, Cascade, Price, RetryPolicy, Tier
from cascade.testing import FixedScorer, ScriptedProvider
from cascade.types import Usage

# $1 per million input and output tokens: 10 in + 10 out tokens cost $0.00002
PRICE = Price(Decimal(1), Decimal(1))
NO_WAIT = RetryPolicy(attempts=3, initial=0, max_wait=0, jitter=0)


def tier(
    name: str,
    answer: Any = "ok",
    score: float | None = None,
    threshold: float | None = None,
    *,
    price: Price = PRICE,
    retry: RetryPolicy = NO_WAIT,
    **kw: Any,
) -> Tier:
    provider = (
        answer
        if isinstance(answer, ScriptedProvider)
        else ScriptedProvider(answer, model=f"{name}-model", **kw)
    )
    scorer = FixedScorer(score) if score is not None else None
    return Tier(name, provider, price, scorer, threshold, retry, provider_kind="scripted")


def three(
    scores: tuple[float, float] = (0.2, 0.3), thresholds: tuple[float, float] = (0.5, 0.5), **kw: Any
) -> Cascade:
    return Cascade(
        [
            tier("small", "s", scores[0], thresholds[0]),
            tier("medium", "m", scores[1], thresholds[1]),
            tier("large", "l"),
        ],
        name="t",
        **kw,
    )


def cost_of(calls: int, usage: Usage = Usage(10, 10)) -> Decimal:
    return PRICE.cost(usage) * calls


def budget(**kw: Any) -> Budget:
    return Budget(**kw)
