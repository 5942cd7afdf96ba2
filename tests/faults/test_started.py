"""A response that has started is billable (issue 18): streams and bodies that fail mid-answer.

Once the status is in and any body byte or stream event read, a failed try is charged what it
produced: the reported usage where there is one, else the prompt plus the text and tool arguments
received so far (a body cut off mid-way: the worst case). The fault server counts what a provider
would bill for each prompt (``server.produced``); the ledger must never hold less.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cascade import Cascade
from cascade.errors import InvalidResponseError, PermanentProviderError, ProviderError
from cascade.request import Request
from cascade.retry import RetryPolicy, deadline
from cascade.types import CascadeResult
from tests.faults.conftest import PRICE, make_ledger, provider, rig
from tests.faults.fault_server import FaultServer

KINDS = ["openai", "anthropic"]
MODES = ["sync", "async"]
MIDWAY = ["reset", "no_end", "bad_event", "early_event", "bad_index", "overloaded", "bad_tool_json"]
"""Streams that fail (or stop) after some tokens: before the fix each was charged $0."""

STRICT = {
    "type": "function",
    "function": {
        "name": "weather",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}


def execute(c: Cascade, prompt: str | Request, mode: str) -> CascadeResult:
    if mode == "sync":
        return c.run(prompt)

    async def go() -> CascadeResult:
        try:
            return await c.arun(prompt)
        finally:
            for t in c.tiers:
                await t.provider.aclose()  # type: ignore[attr-defined]

    return asyncio.run(go())


def produced_cost(server: FaultServer, tag: str) -> Decimal:
    inp, out = server.produced(tag)
    return PRICE.input * inp / 1_000_000 + PRICE.output * out / 1_000_000


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("fault", "kind"),
    # OpenAI keeps arguments that are not JSON as an answer's (test_invalid_strict_arguments_...)
    [(f, k) for f in MIDWAY for k in KINDS if (f, k) != ("bad_tool_json", "openai")],
)
def test_a_stream_failing_midway_is_charged_what_it_produced(
    server: FaultServer, fault: str, kind: str, mode: str, tmp_path: Path
) -> None:
    r = rig(server, kind, make_ledger("memory", tmp_path), stream=True)
    tag = uuid.uuid4().hex[:10]
    result = execute(r.cascade, f"q {tag} !faults={fault}", mode)
    small = result.attempts[0]
    assert small.decision == "escalated" and result.tier == "big"
    assert small.cost > 0 and small.charged  # was: $0
    assert r.spent() == result.cost >= produced_cost(server, tag) > 0
    worst = r.cascade.tiers[0].call_worst(Request.of(f"q {tag} !faults={fault}"))
    assert small.cost <= (small.retries + 1) * worst  # each try at most its own reservation
    assert r.held() == 0


@pytest.mark.parametrize("kind", KINDS)
def test_a_stream_without_finish_or_end_marker_is_truncated(server: FaultServer, kind: str) -> None:
    p = provider(server, kind, stream=True)
    with pytest.raises(InvalidResponseError) as info:
        p.complete(Request.of(f"q {uuid.uuid4().hex} !faults=no_end"))
    assert info.value.reason == "truncated"  # was: accepted as complete
    assert info.value.usage is not None and info.value.usage.output_tokens >= 5
    p.close()


def test_a_later_usage_null_does_not_replace_reported_usage(server: FaultServer) -> None:
    p = provider(server, "openai", stream=True)
    tag = uuid.uuid4().hex
    got = p.complete(Request.of(f"q {tag} !faults=usage_null"))
    inp, out = server.produced(tag)
    assert got.usage_source == "reported"  # was: estimated (2 tokens)
    assert (got.usage.input_tokens, got.usage.output_tokens) == (inp, out)
    p.close()


def test_an_anthropic_delta_without_usage_keeps_the_start_usage(server: FaultServer) -> None:
    p = provider(server, "anthropic", stream=True)
    tag = uuid.uuid4().hex
    with pytest.raises(InvalidResponseError) as info:
        p.complete(Request.of(f"q {tag} !faults=delta_no_usage"))
    inp, out = server.produced(tag)
    usage = info.value.usage
    assert usage is not None and usage.input_tokens == inp and usage.output_tokens >= out
    p.close()


@pytest.mark.parametrize("fault", ["length", "content_filter"])
def test_a_strict_tool_stream_stopped_early_is_an_answer_billed(server: FaultServer, fault: str) -> None:
    p = provider(server, "openai", stream=True)
    tag = uuid.uuid4().hex
    request = replace(Request.of(f"q {tag} !faults={fault}"), tools=(STRICT,))
    got = p.complete(request)  # as unstreamed: was a PermanentProviderError from the SDK's parser
    inp, out = server.produced(tag)
    assert got.samples[0].finish_reason == fault and got.samples[0].tool_calls
    assert got.usage.output_tokens >= out > 0  # billed what it produced
    p.close()


@pytest.mark.parametrize("mode", MODES)
def test_invalid_strict_arguments_are_an_answer_billed_as_unstreamed(
    server: FaultServer, mode: str, tmp_path: Path
) -> None:
    p = provider(server, "openai", stream=True)
    raw = p.complete(replace(Request.of(f"q {uuid.uuid4().hex} !faults=bad_tool_json"), tools=(STRICT,)))
    assert "_raw" in raw.samples[0].tool_calls[0].arguments  # kept for the scorer, as unstreamed
    p.close()
    r = rig(server, "openai", make_ledger("memory", tmp_path), stream=True)
    tag = uuid.uuid4().hex[:10]
    request = replace(Request.of(f"q {tag} !faults=bad_tool_json"), tools=(STRICT,))
    result = execute(r.cascade, request, mode)
    small = result.attempts[0]
    assert small.usage_source == "reported" and small.retries == 0  # the scorer judges it, as unstreamed
    one = r.cascade.tiers[0].call_worst(request)
    assert 0 < small.cost <= one and r.spent() == result.cost >= produced_cost(server, tag)
    assert small.usage.output_tokens > 0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_a_plain_body_reset_midway_is_charged_the_worst_case(
    server: FaultServer, kind: str, mode: str, tmp_path: Path
) -> None:
    r = rig(server, kind, make_ledger("memory", tmp_path))
    text = f"q {uuid.uuid4().hex[:10]} !faults=reset"
    result = execute(r.cascade, text, mode)
    small = result.attempts[0]
    worst = r.cascade.tiers[0].call_worst(Request.of(text))
    assert small.cost == (small.retries + 1) * worst > 0  # was: $0, retried uncounted
    assert small.charged == "cut off in flight: worst case"


@pytest.mark.parametrize("mode", MODES)
def test_a_retry_the_cap_cannot_cover_is_not_sent(server: FaultServer, mode: str, tmp_path: Path) -> None:
    """A billed try under a day cap (a body reset midway: the worst case) leaves no room for a retry:
    it needs a new reservation, which the cap refuses; the trace says so."""
    ledger = make_ledger("memory", tmp_path)
    r0 = rig(server, "openai", ledger)
    text = f"q {uuid.uuid4().hex[:10]} !faults=reset"
    worst = r0.cascade.tiers[0].worst_case(Request.of(text))
    cap = worst * Decimal("1.5")  # room for one try, not two
    r = rig(server, "openai", ledger, cap=cap)
    before = server.served["reset"]
    with pytest.raises(Exception) as info:  # noqa: PT011 - the big tier cannot be covered either
        execute(r.cascade, text, mode)
    attempts: Any = getattr(info.value, "attempts", ())
    small = attempts[0]
    assert server.served["reset"] - before == 1  # the retry was not sent
    assert "retry not sent: budget" in small.reason and small.cost > 0
    assert r.spent() == small.cost <= cap and r.held() == 0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_too_large_body_is_refused_while_read(
    server: FaultServer, kind: str, stream: bool, mode: str
) -> None:
    """Plain: refused from its content-length; streamed (no content-length): counted while read."""
    p = provider(server, kind, stream=stream, max_response_bytes=1 << 20)
    server_big = server.big_bytes
    server.big_bytes = 4 << 20
    request = Request.of(f"q {uuid.uuid4().hex} !faults=big_body")

    async def acall() -> None:
        try:
            await p.acomplete(request)
        finally:
            await p.aclose()

    try:
        with pytest.raises(PermanentProviderError, match=r"larger than .*max_response_bytes") as info:
            p.complete(request) if mode == "sync" else asyncio.run(acall())
    finally:
        server.big_bytes = server_big
    assert info.value.cut_off  # generated whole: charged the worst case
    p.close()


def test_reading_a_body_keeps_the_deadline() -> None:
    import httpx2

    from cascade.providers import _sdk

    got = _sdk.Received(limit=1 << 30)
    got.body(b"x" * 100)  # no deadline: read on
    with deadline(0.0), pytest.raises(httpx2.ReadTimeout):
        got.body(b"x")  # the async path has no socket timeout to stop a fast, endless body
    with pytest.raises(_sdk.ResponseTooLarge):
        _sdk.Received(limit=10).body(b"x" * 11)


def test_provider_errors_carry_no_charge_before_the_response_started(server: FaultServer) -> None:
    p = provider(server, "openai", stream=True)
    with pytest.raises(ProviderError) as info:
        p.complete(Request.of(f"q {uuid.uuid4().hex} !faults=status500"))
    assert info.value.usage is None and not info.value.cut_off
    p.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_tier_meeting_429_forever_ends_within_its_timeout(
    server: FaultServer, mode: str, tmp_path: Path
) -> None:
    r = rig(server, "openai", make_ledger("memory", tmp_path), timeout=1.0, retry=RetryPolicy())
    text = f"q {uuid.uuid4().hex[:8]} !faults=status429_forever"
    if mode == "sync":
        result = r.cascade.run(text)
    else:

        async def go() -> object:
            try:
                return await r.cascade.arun(text)
            finally:
                await r.aclose()

        result = asyncio.run(go())  # type: ignore[assignment]
    small = result.attempts[0]  # type: ignore[attr-defined]
    # the tier's 1 s deadline cannot hold a 30 s wait: no retry (was: 2 retries after 30 s each)
    assert small.reason == "error: RateLimitError" and small.retries == 0
