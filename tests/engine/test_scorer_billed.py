"""A scorer's own call (judge, mixture source) that fails after being billed is charged, not retried."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from cascade import Cascade
from cascade.errors import InvalidResponseError, ProviderTimeoutError
from cascade.request import Request
from cascade.retry import RetryPolicy
from cascade.scorers.judge import JudgeScorer
from cascade.scorers.self_consistency import SelfConsistencyScorer, Source
from cascade.types import Completion, Usage
from tests.helpers import PRICE, tier

RETRY = RetryPolicy(attempts=3, initial=0, max_wait=0, jitter=0)


class Failing:
    """Every call fails: with reported usage, or cut off in flight."""

    model = "failing-model"

    def __init__(self, cut_off: bool) -> None:
        self.cut_off = cut_off
        self.calls = 0

    def complete(self, request: Request, n: int = 1) -> Completion:
        self.calls += 1
        if self.cut_off:
            err: InvalidResponseError | ProviderTimeoutError = ProviderTimeoutError("late", provider="x")
            err.cut_off = True
        else:
            err = InvalidResponseError("empty", reason="empty choices", provider="x", status_code=200)
            err.usage = Usage(5, 5)
        raise err

    async def acomplete(self, request: Request, n: int = 1) -> Completion:
        return self.complete(request, n)

    def max_usage(self, request: Request, n: int = 1) -> Usage:
        return Usage(50, 100 * n)


def run(c: Cascade, mode: str) -> object:
    return c.run("q") if mode == "sync" else asyncio.run(c.arun("q"))


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("cut_off", [False, True])
def test_a_billed_judge_failure_is_charged_once(mode: str, cut_off: bool) -> None:
    judge = Failing(cut_off)
    scorer = JudgeScorer(judge, price=PRICE, retry=RETRY)  # type: ignore[arg-type]
    small = tier("small", "a")
    small = type(small)("small", small.provider, PRICE, scorer, 0.5, RETRY, "scripted")
    c = Cascade([small, tier("large", "b")], name="j")
    result = run(c, mode)
    first = result.attempts[0]  # type: ignore[attr-defined]
    expected = PRICE.cost(Usage(50, 100)) if cut_off else PRICE.cost(Usage(5, 5))
    assert judge.calls == 1  # not retried: the reservation covers one judge call
    assert first.scorer_cost == expected > 0  # was $0
    assert first.reason.startswith("scorer error: JudgeError")


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_billed_mixture_source_failure_is_charged(mode: str) -> None:
    voter = Failing(cut_off=False)
    scorer = SelfConsistencyScorer(k=1, sources=[Source(voter, 1, PRICE, retry=RETRY)])  # type: ignore[arg-type]
    small = tier("small", "a")
    small = type(small)("small", small.provider, PRICE, scorer, 0.5, RETRY, "scripted")
    c = Cascade([small, tier("large", "b")], name="sc")
    result = run(c, mode)
    first = result.attempts[0]  # type: ignore[attr-defined]
    assert voter.calls == 1
    assert first.scorer_cost == PRICE.cost(Usage(5, 5)) > Decimal(0)  # was $0
