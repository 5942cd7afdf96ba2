"""Property: whatever faults the providers serve, money stays right.

Random fault scripts for both tiers of a cascade under a day cap; whatever happens, no settlement
is negative, the cap is never passed, and no hold is left behind.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cascade import Cascade
from cascade.budget import Budget, Cap
from cascade.engine.actions import Tier
from cascade.errors import CascadeError
from cascade.testing import FixedScorer
from tests.faults.conftest import MAX_TOKENS, PRICE, RETRY, make_ledger, provider
from tests.faults.fault_server import FAULTS, FaultServer

FAST = sorted(set(FAULTS) - {"drip", "drip_headers", "sleep"})
CAPS = [Decimal("0.0006"), Decimal("0.0015"), Decimal("0.004"), Decimal(1)]


class Recording:
    """A ledger that records every settlement it is asked to make."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.settled: list[Decimal] = []

    def reserve(self, caps: Any, amount: Decimal, *, ttl: float = 600.0) -> str:
        hold: str = self.inner.reserve(caps, amount, ttl=ttl)
        return hold

    async def areserve(self, caps: Any, amount: Decimal, *, ttl: float = 600.0) -> str:
        return self.reserve(caps, amount, ttl=ttl)

    def settle(self, hold: str, actual: Decimal) -> None:
        self.settled.append(actual)
        self.inner.settle(hold, actual)

    async def asettle(self, hold: str, actual: Decimal) -> None:
        self.settle(hold, actual)

    def release(self, hold: str) -> None:
        self.inner.release(hold)

    async def arelease(self, hold: str) -> None:
        self.release(hold)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def build(server: FaultServer, kind: str, ledger: Recording, cap: Decimal) -> Cascade:
    small = Tier("small", provider(server, kind), PRICE, FixedScorer(0.9), 0.5, RETRY, kind, MAX_TOKENS)
    big_p = provider(server, kind)
    big_p.model = big_p.model + "-big"  # another request body: its own fault script counter
    big = Tier("big", big_p, PRICE, None, None, RETRY, kind, MAX_TOKENS)
    budget = Budget(caps=(Cap(cap, "day"),), ledger=ledger, hold_ttl=60)
    return Cascade([small, big], name=f"prop-{uuid.uuid4().hex[:6]}", budget=budget)


scripts = st.lists(st.lists(st.sampled_from(FAST), min_size=1, max_size=3), min_size=1, max_size=5)


def check(c: Cascade, ledger: Recording, cap: Decimal, spent_by_runs: Decimal) -> None:
    bucket = c.settings.budget.buckets(c.name, None)[0][0]
    assert all(a >= 0 for a in ledger.settled), ledger.settled
    assert Decimal(ledger.inner.spent(bucket)) == spent_by_runs <= cap
    assert Decimal(ledger.inner.held(bucket)) == 0
    if hasattr(ledger.inner, "holds"):
        assert ledger.inner.holds() == 0


def run_all(c: Cascade, prompts: list[str]) -> Decimal:
    total = Decimal(0)
    for p in prompts:
        try:
            total += c.run(p).cost
        except CascadeError as err:
            total += err.spent
    return total


async def arun_all(c: Cascade, prompts: list[str]) -> Decimal:
    results = await c.abatch(prompts, return_exceptions=True, concurrency=4)
    await c.aclose()
    return sum((r.cost if not isinstance(r, CascadeError) else r.spent for r in results), Decimal(0))


def prompts_for(plan: list[list[str]]) -> list[str]:
    return [f"q{i} {uuid.uuid4().hex[:6]} !faults={','.join(s)}" for i, s in enumerate(plan)]


@pytest.mark.slow
@pytest.mark.parametrize("ledger_kind", ["memory", "sqlite"])
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=scripts, cap=st.sampled_from(CAPS), kind=st.sampled_from(["openai", "anthropic"]))
def test_random_faults_never_break_the_books(
    server: FaultServer, ledger_kind: str, plan: list[list[str]], cap: Decimal, kind: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Recording(make_ledger(ledger_kind, Path(tmp)))
        c = build(server, kind, ledger, cap)
        spent = run_all(c, prompts_for(plan))
        c.close()
        check(c, ledger, cap, spent)


@pytest.mark.slow
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=scripts, cap=st.sampled_from(CAPS), kind=st.sampled_from(["openai", "anthropic"]))
def test_random_faults_never_break_the_books_async(
    server: FaultServer, plan: list[list[str]], cap: Decimal, kind: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Recording(make_ledger("sqlite", Path(tmp)))
        c = build(server, kind, ledger, cap)
        spent = asyncio.run(arun_all(c, prompts_for(plan)))
        c.close()
        check(c, ledger, cap, spent)
