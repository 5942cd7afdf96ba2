"""OpenAI and OpenAI-compatible providers against recorded cassettes (see cassettes/README.md)."""

from __future__ import annotations

import json
from decimal import Decimal
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
from cascade.request import Request
from cascade.retry import call_with_retry
from cascade.types import Completion, Message, Usage
from tests.providers import helpers as h
from tests.providers.conftest import Endpoints, made

ASK = "What is 2+2? Reply with the number only."


def bodies(cass: Any) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in cass.requests]


# -- calls --------------------------------------------------------------------------------------


def test_complete(endpoints: Endpoints, cassette: Any) -> None:
    p = h.openai(endpoints.openai)
    c = p.complete(Request.of(f"{ASK} !answers=4"))
    assert [s.text.strip() for s in c.samples] == ["4"]
    assert c.model.startswith("gpt-4o-mini")
    assert c.usage.input_tokens > 0 and c.usage.output_tokens > 0
    assert c.request_id and c.samples[0].finish_reason == "stop"
    sent = bodies(cassette)[0]
    assert sent["max_completion_tokens"] == 64 and sent["temperature"] == 0.0 and "n" not in sent


async def test_acomplete(endpoints: Endpoints, cassette: Any) -> None:
    p = h.openai(endpoints.openai)
    c = await p.acomplete(Request.of(f"{ASK} !answers=4"))
    assert [s.text.strip() for s in c.samples] == ["4"]
    assert c.usage.input_tokens > 0 and c.request_id


@pytest.mark.wire_only
def test_n_samples_are_one_request_billed_once(endpoints: Endpoints, cassette: Any) -> None:
    p = h.openai(endpoints.openai, params={"temperature": 1.0})
    request = Request.of(f"{ASK} !answers=4|4|5")
    c = p.complete(request, n=3)
    assert [s.text for s in c.samples] == ["4", "4", "5"]
    assert made(cassette) == 1 and bodies(cassette)[0]["n"] == 3
    one = p.complete(request, n=1)  # same prompt, one sample: same input tokens
    assert c.usage.input_tokens == one.usage.input_tokens
    assert c.usage.output_tokens == 3 * one.usage.output_tokens


@pytest.mark.wire_only
async def test_async_n_samples(endpoints: Endpoints, cassette: Any) -> None:
    p = h.openai(endpoints.openai, params={"temperature": 1.0})
    c = await p.acomplete(Request.of(f"{ASK} !answers=4|5"), n=4)
    assert [s.text for s in c.samples] == ["4", "5", "4", "5"]
    assert made(cassette) == 1


@pytest.mark.wire_only
def test_logprobs(endpoints: Endpoints, cassette: Any) -> None:
    p = h.openai(endpoints.openai, logprobs=True, top_logprobs=2)
    s = p.complete(Request.of("Say: the answer is 4 !answers=the_answer_is_4")).samples[0]
    assert s.logprobs is not None and len(s.logprobs) == 4 and all(lp < 0 for lp in s.logprobs)
    assert s.top_logprobs is not None and len(s.top_logprobs) == 4
    assert all(len(alts) == 2 for alts in s.top_logprobs)
    assert bodies(cassette)[0]["logprobs"] is True and bodies(cassette)[0]["top_logprobs"] == 2


def test_tools_pass_through_and_tool_calls_come_back(endpoints: Endpoints, cassette: Any) -> None:
    p = h.openai(endpoints.openai)
    request = Request(
        (Message("user", 'What is the weather in Paris? Use the tool. !tool={"city":"Paris"}'),),
        tools=(h.WEATHER_TOOL,),
        tool_choice="get_weather",
    )
    s = p.complete(request).samples[0]
    assert [(tc.name, dict(tc.arguments)) for tc in s.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert s.tool_calls[0].id and s.finish_reason == "tool_calls"
    assert bodies(cassette)[0]["tools"] == [h.WEATHER_TOOL]
    assert bodies(cassette)[0]["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


@pytest.mark.wire_only
def test_cached_tokens_are_apart_and_priced(endpoints: Endpoints, cassette: Any) -> None:
    p = h.openai(endpoints.openai)
    c = p.complete(Request.of(f"{ASK} !cached=8 !answers=4"))
    prompt_tokens = json.loads(cassette.responses[0]["body"]["string"])["usage"]["prompt_tokens"]
    assert c.usage.cached_input_tokens == 8
    assert c.usage.input_tokens == prompt_tokens - 8
    price = lookup("openai", c.model)
    assert price is not None
    expected = (
        c.usage.input_tokens * Decimal("0.15")
        + c.usage.cached_input_tokens * Decimal("0.075")
        + c.usage.output_tokens * Decimal("0.60")
    ) / 1_000_000
    assert price.cost(c.usage) == expected


def test_streaming_is_assembled(endpoints: Endpoints, cassette: Any) -> None:
    p = h.openai(endpoints.openai, stream=True)
    c = p.complete(Request.of(f"{ASK} !answers=4"))
    assert c.samples[0].text.strip() == "4" and c.usage.output_tokens > 0
    sent = bodies(cassette)[0]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


@pytest.mark.wire_only
def test_streaming_with_n_and_logprobs(endpoints: Endpoints, cassette: Any) -> None:
    p = h.openai(endpoints.openai, stream=True, logprobs=True, top_logprobs=2)
    c = p.complete(Request.of(f"{ASK} !answers=four_exactly|4"), n=2)
    assert [s.text for s in c.samples] == ["four exactly", "4"] and made(cassette) == 1
    assert [len(s.logprobs or ()) for s in c.samples] == [2, 1]
    assert c.samples[0].top_logprobs is not None and len(c.samples[0].top_logprobs[0]) == 2


async def test_async_streaming(endpoints: Endpoints, cassette: Any) -> None:
    p = h.openai(endpoints.openai, stream=True)
    c = await p.acomplete(Request.of(f"{ASK} !answers=4"))
    assert c.samples[0].text.strip() == "4" and c.usage.input_tokens > 0


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.wire_only
def test_429_is_a_rate_limit_with_retry_after(endpoints: Endpoints, cassette: Any) -> None:
    p = h.openai(endpoints.openai)
    with pytest.raises(RateLimitError) as info:
        p.complete(Request.of(f"{ASK} !fail=429 !retry-after=7"))
    err = info.value
    assert err.transient and err.status_code == 429 and err.retry_after == 7.0
    assert err.request_id and err.provider == "openai"
    assert isinstance(err.__cause__, __import__("openai").RateLimitError)


@pytest.mark.wire_only
def test_retry_after_is_honoured_up_to_the_cap(endpoints: Endpoints, cassette: Any) -> None:
    p = h.openai(endpoints.openai)
    request = Request.of(f"{ASK} !fail=429x1 !retry-after=2 !answers=4")
    slept: list[float] = []
    policy = h.NO_WAIT.__class__(attempts=3, initial=0, max_wait=0, jitter=0, max_retry_after=30)
    c, retries = call_with_retry(lambda: p.complete(request), policy, sleep=slept.append)
    assert c.samples[0].text == "4" and retries == 1 and slept == [2.0]
    capped = h.NO_WAIT.__class__(attempts=3, initial=0, max_wait=0, jitter=0, max_retry_after=0.5)
    slept.clear()
    with pytest.raises(RateLimitError):  # the recorded 429 again, then the cassette has no more
        call_with_retry(
            lambda: p.complete(Request.of(f"{ASK} !fail=429 !retry-after=60")), capped, slept.append
        )
    assert slept == [0.5, 0.5]


@pytest.mark.wire_only
def test_insufficient_quota_is_not_retried(endpoints: Endpoints, cassette: Any) -> None:
    p = h.openai(endpoints.openai)
    with pytest.raises(PermanentProviderError) as info:
        p.complete(Request.of(f"{ASK} !quota"))
    assert info.value.status_code == 429 and not info.value.transient


@pytest.mark.wire_only
@pytest.mark.parametrize(
    ("status", "error"),
    [(500, TransientProviderError), (503, TransientProviderError), (400, PermanentProviderError)],
)
def test_status_errors(endpoints: Endpoints, cassette: Any, status: int, error: type[Exception]) -> None:
    p = h.openai(endpoints.openai)
    with pytest.raises(error) as info:
        p.complete(Request.of(f"{ASK} !fail={status}"))
    assert getattr(info.value, "status_code", None) == status
    assert "simulated" in str(info.value)


def test_cassette_miss_is_loud_and_not_retried(endpoints: Endpoints, cassette: Any) -> None:
    if endpoints.mode != "replay":
        pytest.skip("only meaningful in replay")
    from vcr.errors import CannotOverwriteExistingCassetteException

    p = h.openai(endpoints.openai)
    with pytest.raises(CannotOverwriteExistingCassetteException):  # the openai SDK lets it through
        p.complete(Request.of("a prompt nobody recorded"))


def test_timeout_is_transient(wire: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "test-openai-key")
    p = h.openai(f"{wire.url}/openai/v1", timeout=0.2)
    with pytest.raises(ProviderTimeoutError) as info:
        p.complete(Request.of("slow !sleep=1"))
    assert info.value.transient


async def test_async_timeout(wire: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "test-openai-key")
    p = h.openai(f"{wire.url}/openai/v1", timeout=0.2)
    with pytest.raises(ProviderTimeoutError):
        await p.acomplete(Request.of("slow !sleep=1"))


# -- configuration ------------------------------------------------------------------------------


def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        h.openai(None)
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    monkeypatch.delenv("TEAM_OPENAI_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="TEAM_OPENAI_KEY"):
        h.openai(None, api_key_env="TEAM_OPENAI_KEY")


def test_max_usage_reserves_the_worst_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    request = Request.of("x" * 300)
    p = h.openai(None)
    u = p.max_usage(request, n=3)
    assert u.output_tokens == 3 * 64
    assert u.input_tokens >= 100  # 300 ASCII chars is about 75 real tokens: estimate high
    c = h.compatible("http://localhost:8000/v1")
    assert c.max_usage(request, n=3).input_tokens == 3 * u.input_tokens  # no native n: 3 prompts


def test_messages_and_params_on_the_wire(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    p = h.openai(None, params={"stop": ["\n\n"], "seed": 7, "extra": {"reasoning_effort": "low"}})
    from cascade.types import ToolCall

    request = Request(
        (
            Message("system", "Be brief."),
            Message("user", "Weather?"),
            Message("assistant", "", tool_calls=(ToolCall("get_weather", {"city": "Paris"}, "call_1"),)),
            Message("tool", '{"temp": 12}', tool_call_id="call_1"),
        )
    )
    kw = p.request_kwargs(request, n=2)
    assert kw["n"] == 2 and kw["stop"] == ["\n\n"] and kw["seed"] == 7
    assert kw["extra_body"] == {"reasoning_effort": "low"}
    assert [m["role"] for m in kw["messages"]] == ["system", "user", "assistant", "tool"]
    assert kw["messages"][2]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
    }
    assert kw["messages"][3]["tool_call_id"] == "call_1"


# -- OpenAI-compatible servers ------------------------------------------------------------------


@pytest.mark.wire_only
def test_compatible_without_n_makes_k_calls(endpoints: Endpoints, cassette: Any) -> None:
    p = h.compatible(endpoints.compat)
    assert p.free  # a local server costs nothing unless priced
    c = p.complete(Request.of(f"{ASK} !answers=4|5"), n=3)
    assert sorted(s.text for s in c.samples) == ["4", "4", "5"]
    assert made(cassette) == 3 and all("n" not in b for b in bodies(cassette))
    assert all(b["max_tokens"] == 64 for b in bodies(cassette))
    assert c.usage.input_tokens == 3 * (c.usage.input_tokens // 3)


@pytest.mark.wire_only
def test_compatible_server_that_ignores_n_is_topped_up(endpoints: Endpoints, cassette: Any) -> None:
    import structlog
    from structlog.testing import capture_logs

    p = h.compatible(endpoints.compat, supports_n=True)
    try:
        with capture_logs() as logs:
            c = p.complete(Request.of(f"{ASK} !choices=1 !answers=4"), n=3)
    finally:
        structlog.reset_defaults()  # capture_logs leaves structlog "configured" (printing to stdout)
    assert [e["event"] for e in logs] == ["cascade.provider_ignored_n"]
    assert logs[0]["asked"] == 3 and logs[0]["got"] == 1 and ASK not in str(logs)
    assert [s.text for s in c.samples] == ["4", "4", "4"]
    sent = bodies(cassette)
    assert sent[0]["n"] == 3 and len(sent) == 3 and all("n" not in b for b in sent[1:])


@pytest.mark.wire_only
async def test_async_compatible_with_n_and_logprobs(endpoints: Endpoints, cassette: Any) -> None:
    p = h.compatible(endpoints.compat, supports_n=True, logprobs=True)
    c = await p.acomplete(Request.of(f"{ASK} !answers=4|5"), n=2)
    assert [s.text for s in c.samples] == ["4", "5"] and made(cassette) == 1
    assert all(s.logprobs for s in c.samples) and c.samples[0].top_logprobs is None


def test_compatible_remote_server_needs_a_price() -> None:
    remote = h.compatible("https://llm.example.com/v1")
    local = h.compatible("http://192.168.1.20:11434/v1")
    assert not remote.free and local.free
    assert remote.max_usage(Request.of("hi")) == Usage(remote.max_usage(Request.of("hi")).input_tokens, 64)


# -- one sample streamed (the LangChain front's live last tier) ------------------------------------------


def test_stream_text_yields_deltas_then_the_completion(wire: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    p = h.openai(f"{wire.url}/openai/v1")
    request = Request.of("say !answers=one_two_three")
    *deltas, completion = list(p.stream_text(request))
    assert len(deltas) == 3 and "".join(deltas) == "one two three"  # type: ignore[arg-type]
    whole = p.complete(request)
    assert completion.samples[0].text == whole.samples[0].text == "one two three"  # type: ignore[union-attr]
    assert completion.usage.output_tokens > 0  # type: ignore[union-attr]


async def test_astream_text_yields_deltas_then_the_completion(
    wire: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    p = h.openai(f"{wire.url}/openai/v1")
    steps = [s async for s in p.astream_text(Request.of("say !answers=one_two_three"))]
    assert "".join(s for s in steps[:-1]) == "one two three"  # type: ignore[misc]
    assert steps[-1].samples[0].text == "one two three"  # type: ignore[union-attr]


def test_stream_text_timeout_and_errors_are_ours(wire: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    p = h.openai(f"{wire.url}/openai/v1", timeout=0.2)
    with pytest.raises(ProviderTimeoutError):
        list(p.stream_text(Request.of("slow !sleep=1")))
    with pytest.raises(ProviderError) as info:
        list(p.stream_text(Request.of("q !fail=500")))
    assert info.value.status_code == 500


# -- a reply cut by length or a content filter: an answer, streamed or not -------------------------


def _cut(finish: str) -> tuple[Request, dict[str, Any]]:
    """A request whose reply ends with ``finish``, and the provider options that make it so."""
    if finish == "length":
        return Request.of("say !answers=one_two_three"), {"params": {"max_tokens": 2}}
    return Request.of(f"say !answers=one_two_three !finish={finish}"), {}


def _answered(completion: Any, finish: str) -> None:
    assert isinstance(completion, Completion)
    assert completion.samples[0].finish_reason == finish and completion.samples[0].text
    assert completion.usage.output_tokens > 0  # it started answering: billed as an answer


@pytest.mark.parametrize("finish", ["length", "content_filter"])
@pytest.mark.parametrize("how", ["create", "stream", "stream_text"])
def test_a_length_or_filtered_finish_is_an_answer_streamed_or_not(
    wire: Any, monkeypatch: pytest.MonkeyPatch, finish: str, how: str
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    request, kw = _cut(finish)
    p = h.openai(f"{wire.url}/openai/v1", stream=how == "stream", **kw)
    _answered(list(p.stream_text(request))[-1] if how == "stream_text" else p.complete(request), finish)


@pytest.mark.parametrize("finish", ["length", "content_filter"])
@pytest.mark.parametrize("how", ["create", "stream", "stream_text"])
async def test_async_a_length_or_filtered_finish_is_an_answer_streamed_or_not(
    wire: Any, monkeypatch: pytest.MonkeyPatch, finish: str, how: str
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    request, kw = _cut(finish)
    p = h.openai(f"{wire.url}/openai/v1", stream=how == "stream", **kw)
    if how == "stream_text":
        _answered([s async for s in p.astream_text(request)][-1], finish)
    else:
        _answered(await p.acomplete(request), finish)
