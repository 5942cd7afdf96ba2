"""Anthropic provider against recorded cassettes (see cassettes/README.md)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cascade.errors import (
    ConfigurationError,
    PermanentProviderError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    TransientProviderError,
)
from cascade.price_table import lookup
from cascade.providers.anthropic import to_anthropic_messages, to_anthropic_tool
from cascade.request import Request
from cascade.types import Message, ToolCall
from tests.providers import helpers as h
from tests.providers.conftest import Endpoints, made

ASK = "What is 2+2? Reply with the number only."


def bodies(cass: Any) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in cass.requests]


def test_complete_with_system_prompt(endpoints: Endpoints, cassette: Any) -> None:
    p = h.anthropic(endpoints.anthropic)
    request = Request((Message("system", "You are terse."), Message("user", f"{ASK} !answers=4")))
    c = p.complete(request)
    assert [s.text.strip() for s in c.samples] == ["4"]
    assert c.model.startswith("claude-haiku-4-5") and c.request_id
    assert c.usage.input_tokens > 0 and c.usage.output_tokens > 0
    sent = bodies(cassette)[0]
    assert sent["system"] == "You are terse." and [m["role"] for m in sent["messages"]] == ["user"]
    assert sent["max_tokens"] == 64 and sent["temperature"] == 0.0


async def test_acomplete(endpoints: Endpoints, cassette: Any) -> None:
    p = h.anthropic(endpoints.anthropic)
    c = await p.acomplete(Request.of(f"{ASK} !answers=4"))
    assert [s.text.strip() for s in c.samples] == ["4"] and c.samples[0].finish_reason == "end_turn"


@pytest.mark.wire_only
def test_parallel_samples_are_k_calls(endpoints: Endpoints, cassette: Any) -> None:
    p = h.anthropic(endpoints.anthropic, parallel=2, params={"temperature": 1.0})
    c = p.complete(Request.of(f"{ASK} !answers=4|4|5"), n=3)
    assert sorted(s.text for s in c.samples) == ["4", "4", "5"]
    assert made(cassette) == 3 and c.raw["calls"] == 3
    single = c.usage.input_tokens // 3
    assert c.usage.input_tokens == 3 * single  # each call billed for the prompt


@pytest.mark.wire_only
async def test_async_parallel_samples(endpoints: Endpoints, cassette: Any) -> None:
    p = h.anthropic(endpoints.anthropic, parallel=3, params={"temperature": 1.0})
    c = await p.acomplete(Request.of(f"{ASK} !answers=4|5|6"), n=3)
    assert sorted(s.text for s in c.samples) == ["4", "5", "6"] and made(cassette) == 3


@pytest.mark.wire_only
def test_some_failed_samples_still_return_the_paid_ones(endpoints: Endpoints, cassette: Any) -> None:
    p = h.anthropic(endpoints.anthropic, parallel=1)
    c = p.complete(Request.of(f"{ASK} !fail=529x1 !answers=4"), n=3)
    assert len(c.samples) == 2 and c.failed_calls == 1


def test_tools_are_converted_and_tool_use_parsed(endpoints: Endpoints, cassette: Any) -> None:
    p = h.anthropic(endpoints.anthropic)
    request = Request(
        (Message("user", 'What is the weather in Paris? Use the tool. !tool={"city":"Paris"}'),),
        tools=(h.WEATHER_TOOL,),
        tool_choice="required",
    )
    s = p.complete(request).samples[0]
    assert [(tc.name, dict(tc.arguments)) for tc in s.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert s.tool_calls[0].id and s.finish_reason == "tool_use"
    tool = bodies(cassette)[0]["tools"][0]
    assert tool["name"] == "get_weather" and tool["input_schema"]["required"] == ["city"]
    assert bodies(cassette)[0]["tool_choice"] == {"type": "any"}


@pytest.mark.wire_only
def test_cache_usage_is_apart_and_priced(endpoints: Endpoints, cassette: Any) -> None:
    p = h.anthropic(endpoints.anthropic)
    c = p.complete(Request.of(f"{ASK} !cached=6 !cache-write=3 !answers=4"))
    wire = json.loads(cassette.responses[0]["body"]["string"])["usage"]
    assert c.usage.cached_input_tokens == 6 and c.usage.cache_creation_tokens == 3
    assert c.usage.input_tokens == wire["input_tokens"]
    price = lookup("anthropic", c.model)
    assert price is not None
    expected = (
        c.usage.input_tokens * Decimal("1.00")
        + c.usage.output_tokens * Decimal("5.00")
        + 6 * Decimal("0.10")
        + 3 * Decimal("1.25")
    ) / 1_000_000
    assert price.cost(c.usage) == expected


def test_streaming_is_assembled(endpoints: Endpoints, cassette: Any) -> None:
    p = h.anthropic(endpoints.anthropic, stream=True)
    c = p.complete(Request.of(f"{ASK} !answers=4"))
    assert c.samples[0].text.strip() == "4" and c.usage.output_tokens > 0 and c.usage.input_tokens > 0
    assert bodies(cassette)[0]["stream"] is True


async def test_async_streaming(endpoints: Endpoints, cassette: Any) -> None:
    p = h.anthropic(endpoints.anthropic, stream=True)
    c = await p.acomplete(Request.of(f"{ASK} !answers=4"))
    assert c.samples[0].text.strip() == "4"


def test_cassette_miss_is_permanent(endpoints: Endpoints, cassette: Any) -> None:
    if endpoints.mode != "replay":
        pytest.skip("only meaningful in replay")
    p = h.anthropic(endpoints.anthropic)  # the anthropic SDK wraps it in a (retryable) connection error
    with pytest.raises(PermanentProviderError, match="cassette"):
        p.complete(Request.of("a prompt nobody recorded"))


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.wire_only
def test_429_carries_retry_after(endpoints: Endpoints, cassette: Any) -> None:
    p = h.anthropic(endpoints.anthropic)
    with pytest.raises(RateLimitError) as info:
        p.complete(Request.of(f"{ASK} !fail=429 !retry-after=3"))
    assert info.value.retry_after == 3.0 and info.value.request_id and info.value.provider == "anthropic"


@pytest.mark.wire_only
@pytest.mark.parametrize(
    ("status", "error"),
    [(529, TransientProviderError), (500, TransientProviderError), (400, PermanentProviderError)],
)
def test_status_errors(endpoints: Endpoints, cassette: Any, status: int, error: type[Exception]) -> None:
    p = h.anthropic(endpoints.anthropic)
    with pytest.raises(error) as info:
        p.complete(Request.of(f"{ASK} !fail={status}"))
    assert getattr(info.value, "status_code", None) == status
    if status == 529:
        assert "overloaded_error" in str(info.value)


def test_timeout(wire: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-anthropic-key")
    p = h.anthropic(f"{wire.url}/anthropic", timeout=0.2)
    with pytest.raises(ProviderTimeoutError):
        p.complete(Request.of("slow !sleep=1"))


async def test_async_timeout(wire: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-anthropic-key")
    p = h.anthropic(f"{wire.url}/anthropic", timeout=0.2)
    with pytest.raises(ProviderTimeoutError):
        await p.acomplete(Request.of("slow !sleep=1"), n=2)


# -- configuration and conversion ---------------------------------------------------------------


def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="ANTHROPIC_API_KEY"):
        h.anthropic(None)


def test_seed_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "x")
    with pytest.raises(ConfigurationError, match="seed"):
        h.anthropic(None, params={"seed": 1})


def test_max_usage_counts_the_prompt_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "x")
    p = h.anthropic(None)
    one, three = p.max_usage(Request.of("hello " * 50)), p.max_usage(Request.of("hello " * 50), n=3)
    assert three.input_tokens == 3 * one.input_tokens and three.output_tokens == 3 * 64


def test_message_conversion() -> None:
    system, messages = to_anthropic_messages(
        (
            Message("system", "Be brief."),
            Message("system", "Use tools."),
            Message("user", "Weather?"),
            Message(
                "assistant", "Checking.", tool_calls=(ToolCall("get_weather", {"city": "Paris"}, "tu_1"),)
            ),
            Message("tool", '{"temp": 12}', tool_call_id="tu_1"),
            Message("user", "And tomorrow?"),
        )
    )
    assert system == "Be brief.\n\nUse tools."
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"][1] == {
        "type": "tool_use",
        "id": "tu_1",
        "name": "get_weather",
        "input": {"city": "Paris"},
    }
    assert [b["type"] for b in messages[2]["content"]] == ["tool_result", "text"]
    native = {"name": "x", "input_schema": {"type": "object"}}
    assert to_anthropic_tool(native) == native


def test_a_tier_price_without_cache_rates_bills_cache_tokens_as_anthropic_does(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from cascade.engine.build import build

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "name: p\ntiers:\n  - {name: t, provider: anthropic, model: claude-custom, price: {input: 4, output: 20}}\n"
    )
    price = build(policy).tiers[0].price
    assert (price.cached_input, price.cache_write) == (Decimal("0.4"), Decimal("5.00"))


# -- one sample streamed (the LangChain front's live last tier) ------------------------------------------


def test_stream_text_yields_deltas_then_the_completion(wire: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    p = h.anthropic(f"{wire.url}/anthropic")
    request = Request.of("say !answers=one_two_three")
    *deltas, completion = list(p.stream_text(request))
    assert len(deltas) == 3 and "".join(deltas) == "one two three"  # type: ignore[arg-type]
    whole = p.complete(request)
    assert completion.samples[0].text == whole.samples[0].text == "one two three"  # type: ignore[union-attr]
    assert completion.usage.output_tokens > 0  # type: ignore[union-attr]


async def test_astream_text_yields_deltas_then_the_completion(
    wire: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    p = h.anthropic(f"{wire.url}/anthropic")
    steps = [s async for s in p.astream_text(Request.of("say !answers=one_two_three"))]
    assert "".join(s for s in steps[:-1]) == "one two three"  # type: ignore[misc]
    assert steps[-1].samples[0].text == "one two three"  # type: ignore[union-attr]


def test_stream_text_timeout_and_errors_are_ours(wire: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    p = h.anthropic(f"{wire.url}/anthropic", timeout=0.2)
    with pytest.raises(ProviderTimeoutError):
        list(p.stream_text(Request.of("slow !sleep=1")))
    with pytest.raises(ProviderError) as info:
        list(p.stream_text(Request.of("q !fail=500")))
    assert info.value.status_code == 500
