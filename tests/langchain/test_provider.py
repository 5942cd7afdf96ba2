"""LangChainProvider: any LangChain chat model as a tier."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from pydantic import Field

from cascade import Message, Request, ToolCall, Usage
from cascade.engine.build import build
from cascade.errors import (
    ConfigurationError,
    PermanentProviderError,
    PolicyError,
    ProviderTimeoutError,
    RateLimitError,
    TransientProviderError,
)
from cascade.langchain import ScriptedChatModel
from cascade.providers.langchain import LangChainProvider, map_error
from tests.langchain.support import call

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def test_messages_and_tools_reach_the_model() -> None:
    model = ScriptedChatModel(model="m-1", script=[call("get_weather", {"city": "Oslo"}, "c1")])
    provider = LangChainProvider(model)
    request = Request(
        (
            Message("system", "be brief"),
            Message("user", "weather?"),
            Message("assistant", "", tool_calls=(ToolCall("get_weather", {"city": "Rome"}, "c0"),)),
            Message("tool", "sunny", tool_call_id="c0", name="get_weather"),
        ),
        tools=(WEATHER,),
        tool_choice="required",
    )
    completion = provider.complete(request)
    sent, kwargs = model.calls[0]
    assert [type(m) for m in sent] == [SystemMessage, HumanMessage, AIMessage, ToolMessage]
    assert sent[2].tool_calls[0]["args"] == {"city": "Rome"}  # type: ignore[attr-defined]
    assert kwargs["tools"][0]["function"]["name"] == "get_weather"
    assert kwargs["tool_choice"] == "any"  # "required" is spelled the way bind_tools accepts widely
    assert completion.samples[0].tool_calls == (ToolCall("get_weather", {"city": "Oslo"}, "c1"),)
    assert completion.model == "m-1"
    assert completion.usage == Usage(10, 10)


def test_usage_reads_cache_details() -> None:
    answer = AIMessage(
        "hi",
        usage_metadata={
            "input_tokens": 100,
            "output_tokens": 7,
            "total_tokens": 107,
            "input_token_details": {"cache_read": 60, "cache_creation": 10},
        },
        response_metadata={"model_name": "served-model", "finish_reason": "stop"},
    )
    completion = LangChainProvider(ScriptedChatModel(script=[answer])).complete(Request.of("hi"))
    assert completion.usage == Usage(
        input_tokens=30, output_tokens=7, cached_input_tokens=60, cache_creation_tokens=10
    )
    assert completion.model == "served-model"
    assert completion.samples[0].finish_reason == "stop"


def test_n_samples_are_n_calls_bounded_in_async() -> None:
    running = 0
    peak = 0

    class Slow(ScriptedChatModel):
        async def _agenerate(
            self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> Any:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.01)
            running -= 1
            return self._generate(messages, **kw)

    model = Slow(script=["a", "b", "c", "d", "e"])
    provider = LangChainProvider(model, max_concurrency=2)
    completion = asyncio.run(provider.acomplete(Request.of("q"), n=5))
    assert sorted(s.text for s in completion.samples) == ["a", "b", "c", "d", "e"]
    assert completion.usage == Usage(50, 50)
    assert peak == 2
    sync = LangChainProvider(ScriptedChatModel(script=["x", "y"])).complete(Request.of("q"), n=2)
    assert [s.text for s in sync.samples] == ["x", "y"]


def test_max_usage_reserves_max_tokens_per_sample() -> None:
    provider = LangChainProvider(ScriptedChatModel(script=["a"]), max_tokens=100)
    usage = provider.max_usage(Request.of("x" * 400), n=3)
    assert usage.output_tokens == 300
    assert usage.input_tokens >= 3 * 100  # n samples are n calls: the prompt is billed n times
    cjk = provider.max_usage(Request.of("数" * 400))
    assert cjk.input_tokens >= 400  # one token per non-ASCII character, not 4 characters a token


class _Response:
    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status_code = status
        self.headers = headers


class APIStatusError(Exception):
    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"status {status}")
        self.status_code = status
        self.response = _Response(status, headers or {})


class APIConnectionError(Exception):
    pass


class APITimeoutError(APIConnectionError):
    pass


@pytest.mark.parametrize(
    ("exc", "kind", "transient"),
    [
        (APIStatusError(429, {"retry-after": "3", "x-request-id": "req-1"}), RateLimitError, True),
        (APIStatusError(503), TransientProviderError, True),
        (APIStatusError(529), TransientProviderError, True),
        (APIStatusError(408), ProviderTimeoutError, True),
        (APIStatusError(400), PermanentProviderError, False),
        (APIStatusError(401), PermanentProviderError, False),
        (APITimeoutError("slow"), ProviderTimeoutError, True),
        (TimeoutError(), ProviderTimeoutError, True),
        (APIConnectionError("refused"), TransientProviderError, True),
        (ConnectionResetError(), TransientProviderError, True),
        (ValueError("bad input"), PermanentProviderError, False),
    ],
)
def test_errors_map_to_transient_or_permanent(exc: Exception, kind: type, transient: bool) -> None:
    provider = LangChainProvider(ScriptedChatModel(script=[exc]))
    with pytest.raises(kind) as info:
        provider.complete(Request.of("q"))
    assert getattr(info.value, "transient", None) is transient
    assert info.value.__cause__ is exc


def test_rate_limit_carries_retry_after_and_request_id() -> None:
    err = map_error(APIStatusError(429, {"retry-after": "3", "x-request-id": "req-1"}))
    assert isinstance(err, RateLimitError)
    assert err.retry_after == 3.0
    assert err.request_id == "req-1"
    assert err.status_code == 429


def test_model_without_tool_support_is_a_permanent_error() -> None:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    provider = LangChainProvider(GenericFakeChatModel(messages=iter(["a"])))
    with pytest.raises(PermanentProviderError, match="does not support tools"):
        provider.complete(Request(Request.of("q").messages, tools=(WEATHER,)))


def test_yaml_policy_names_a_class(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(
        textwrap.dedent(
            """
            name: lc
            tiers:
              - name: only
                provider: langchain
                model: scripted-xl
                free: true
                params: {max_tokens: 64}
                options:
                  class: "cascade.testing:ScriptedChatModel"
                  kwargs: {script: ["hello from yaml"], output_tokens: 3}
            """
        )
    )
    cascade = build(policy)
    result = cascade.run("hi")
    assert result.answer == "hello from yaml"
    assert result.model == "scripted-xl"
    provider = cascade.tiers[0].provider
    assert isinstance(provider, LangChainProvider)
    assert provider.max_usage(Request.of("hi")).output_tokens == 64


def test_yaml_policy_with_a_bad_class_is_a_clear_error(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    base = (
        "name: lc\ntiers:\n  - {name: t, provider: langchain, model: m, free: true, options: {class: %s}}\n"
    )
    policy.write_text(base % '"cascade.nowhere:Chat"')
    with pytest.raises(ConfigurationError, match="cannot import"):
        build(policy)
    policy.write_text(base % '"cascade.types:Usage"')
    with pytest.raises(ConfigurationError, match="not a LangChain chat model"):
        build(policy)
    policy.write_text(base % '"no colon"')
    with pytest.raises(PolicyError):
        build(policy)
    policy.write_text("name: lc\ntiers:\n  - {name: t, provider: langchain, model: m, free: true}\n")
    with pytest.raises(ConfigurationError, match=r"providers=\{tier_name: chat_model\}"):
        build(policy)  # no class, and no chat model passed in Python
    assert build(policy, providers={"t": ScriptedChatModel(script=["ok"])}).run("q").answer == "ok"


def test_a_chat_model_passed_in_python_becomes_a_tier(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "name: py\ntiers:\n  - {name: t, provider: scripted, model: m, free: true, options: {answers: [x]}}\n"
    )
    cascade = build(policy, providers={"t": ScriptedChatModel(model="lc-model", script=["from langchain"])})
    assert cascade.run("q").answer == "from langchain"


def test_import_cascade_does_not_import_langchain() -> None:
    code = "import sys, cascade; sys.exit(any(m.startswith('langchain') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_policy_max_tokens_bounds_a_python_chat_model(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "name: py\ntiers:\n"
        "  - {name: a, provider: langchain, model: m, free: true, params: {max_tokens: 32, stop: [END]},"
        " scorer: {kind: non_empty}, threshold: 1}\n"
        "  - {name: b, provider: langchain, model: m, free: true}\n"
    )
    a, b = ScriptedChatModel(script=["x"]), ScriptedChatModel(script=["y"])
    cascade = build(policy, providers={"a": a, "b": b})
    pa, pb = (t.provider for t in cascade.tiers)
    assert isinstance(pa, LangChainProvider) and isinstance(pb, LangChainProvider)
    assert pa.max_usage(Request.of("q")).output_tokens == 32  # the policy's setting
    assert pb.max_usage(Request.of("q")).output_tokens == 1024  # the model's own (or the default)
    pa.complete(Request.of("q"))
    assert a.calls[0][1]["stop"] == ["END"]


class RetryingChatModel(ScriptedChatModel):
    """Stands in for ChatOpenAI / ChatAnthropic: retries of its own and a ``timeout`` alias."""

    max_retries: int = 2
    request_timeout: float | None = Field(None, alias="timeout")


def test_yaml_built_chat_models_leave_retries_to_cascade_and_take_the_tier_timeout(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "name: lc\ntiers:\n  - {name: t, provider: langchain, model: m, free: true, timeout: 7,"
        ' options: {class: "tests.langchain.test_provider:RetryingChatModel", kwargs: {script: [hi]}}}\n'
    )
    chat_model = build(policy).tiers[0].provider.chat_model  # type: ignore[attr-defined]
    assert chat_model.max_retries == 0 and chat_model.request_timeout == 7


def test_a_chat_model_that_retries_by_itself_is_warned_about() -> None:
    with pytest.warns(UserWarning, match="max_retries=2"):
        LangChainProvider(RetryingChatModel(script=["a"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LangChainProvider(RetryingChatModel(script=["a"], max_retries=0))
