"""Failed calls that may have been billed are charged; calls that cannot have been are free.

A 200 without a usable answer but with a usage block is charged at that usage (never above the
call's worst case); a call cut off in flight at the worst case (see test_faults' hang tests); a
refused connection or a 4xx costs nothing. Under a cap a billed failure is not retried (its hold
covers one call); without one it is, and every billed try shows in the trace.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from cascade import Cascade
from cascade.budget import Budget, Cap
from cascade.engine.actions import Tier
from cascade.providers.openai import OpenAIProvider
from cascade.request import Request
from cascade.testing import FixedScorer
from cascade.types import CascadeResult
from tests.faults.conftest import MAX_TOKENS, PRICE, RETRY, make_ledger, rig, shared
from tests.faults.fault_server import FaultServer


def run(c: Cascade, prompt: str, mode: str) -> CascadeResult:
    if mode == "sync":
        return c.run(prompt)

    async def go() -> CascadeResult:
        try:
            return await c.arun(prompt)
        finally:
            for t in c.tiers:
                await t.provider.aclose()  # type: ignore[attr-defined]

    return asyncio.run(go())


def two_tiers(small: object, big: object, budget: Budget | None = None) -> Cascade:
    tiers = [
        Tier("small", small, PRICE, FixedScorer(1.0), 0.5, RETRY, "openai", MAX_TOKENS),  # type: ignore[arg-type]
        Tier("big", big, PRICE, None, None, RETRY, "openai", MAX_TOKENS),  # type: ignore[arg-type]
    ]
    return Cascade(tiers, name="billed", budget=budget)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_uncapped_billed_failures_are_retried_and_each_is_charged(server: FaultServer, mode: str) -> None:
    c = two_tiers(shared(server, "openai"), shared(server, "openai", clean=True))
    text = f"q {uuid.uuid4().hex[:8]} !faults=empty_choices"
    before = server.served["empty_choices"]
    result = run(c, text, mode)
    small, big = result.attempts
    assert server.served["empty_choices"] - before == 2 and small.retries == 1
    one = c.tiers[0].price.cost(small.usage) / 2  # both tries reported the same usage
    assert small.cost == 2 * one > 0 and small.usage.output_tokens > 0
    assert small.cost <= 2 * c.tiers[0].call_worst(Request.of(text))
    assert result.cost == small.cost + big.cost  # was: the failed tries cost $0
    assert "(usage reported by a failed response)" in result.explain()
    assert result.to_dict()["attempts"][0]["charged"] == "usage reported by a failed response"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_refused_connection_costs_nothing(server: FaultServer, mode: str, tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = OpenAIProvider("gpt-4o-mini", api_key="k", base_url=f"http://127.0.0.1:{port}/v1", timeout=2.0)
    ledger = make_ledger("memory", tmp_path)
    budget = Budget(caps=(Cap(Decimal(1), "day"),), ledger=ledger, hold_ttl=60)
    c = two_tiers(dead, shared(server, "openai", clean=True), budget)
    result = run(c, "q", mode)
    small, big = result.attempts
    assert small.reason == "error: TransientProviderError" and small.retries == 1  # retried: free
    assert small.cost == 0 and small.charged is None
    bucket = budget.buckets("billed", None)[0][0]
    assert ledger.spent(bucket) == big.cost == result.cost and ledger.held(bucket) == 0
    dead.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_sample_call_cut_off_beside_answered_ones_is_charged(
    server: FaultServer, mode: str, tmp_path: Path
) -> None:
    """n samples as n parallel calls: one answers, one is cut off by the deadline (maybe billed)."""
    ledger = make_ledger("memory", tmp_path)
    r = rig(
        server, "openai_compatible", ledger, samples=2, timeout=1.5
    )  # room for the "ok" call on a loaded machine; the drip never ends
    text = f"q {uuid.uuid4().hex[:8]} !faults=ok,drip"
    result = run(r.cascade, text, mode)
    small = result.attempts[0]
    worst = r.cascade.tiers[0].call_worst(Request.of(text))
    if mode == "sync":
        assert small.samples == 1  # the answered one is kept (it was paid)
        answered = PRICE.cost(small.usage)
        one_worst = PRICE.cost(r.cascade.tiers[0].provider.max_usage(Request.of(text), 1))
        # was: only the answered call was charged
        assert small.cost == min(answered + one_worst, worst) and small.cost > answered
    else:  # the async deadline cancels the whole gather: the call failed, charged its worst case
        assert small.samples == 0 and small.cost == worst
    assert small.charged == "cut off in flight: worst case"
    assert r.spent() == result.cost and r.held() == 0 and r.spent() <= r.cap


def test_only_a_timeout_after_sending_is_cut_off() -> None:
    import httpx2
    import openai

    from cascade.providers._sdk import map_error

    req = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    connect = openai.APITimeoutError(req)
    connect.__cause__ = httpx2.ConnectTimeout("connect", request=req)
    read = openai.APITimeoutError(req)
    read.__cause__ = httpx2.ReadTimeout("read", request=req)
    assert map_error(connect, provider="openai", sdk=openai).cut_off is False  # never sent: free
    assert map_error(read, provider="openai", sdk=openai).cut_off is True  # maybe billed
    assert map_error(httpx2.ConnectTimeout("c", request=req), provider="openai", sdk=openai).cut_off is False
