"""Issue 19 §1 and §3: a LangChain model passed in as a tier keeps the policy's caps and deadline.

Real ``ChatOpenAI`` / ``ChatAnthropic`` talk HTTP to the local wire server (which cuts an answer at
the request's ``max_tokens``, as the APIs do); generic models stand in for any other chat model.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import structlog
from langchain_anthropic import ChatAnthropic
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_openai import ChatOpenAI
from structlog.testing import capture_logs

from cascade import Cascade, ConfigurationError, Request
from cascade.errors import ProviderTimeoutError
from cascade.langchain import CascadeChatModel
from cascade.policy.schema import Policy
from cascade.providers.langchain import LangChainProvider
from tests.providers.wire_server import ModelScript, WireServer

LONG = "word " * 10_000  # 12,500 tokens by the wire server's count: $0.50 at $40 per million


@pytest.fixture(scope="module")
def running() -> Iterator[WireServer]:
    server = WireServer().start()
    server.keep_alive = False  # async clients keep no pooled sockets past their event loop
    yield server
    server.stop()


@pytest.fixture
def server(running: WireServer) -> WireServer:
    with running.lock:
        running.scripts.clear()
        running.bodies.clear()
    running.script("big", ModelScript(answers=[LONG]))
    return running


def oa(server: WireServer, **kw: Any) -> ChatOpenAI:
    kw.setdefault("max_retries", 0)
    return ChatOpenAI(model="big", base_url=f"{server.url}/openai/v1", api_key="k", **kw)  # type: ignore[arg-type]


def an(server: WireServer, **kw: Any) -> ChatAnthropic:
    kw.setdefault("max_retries", 0)
    return ChatAnthropic(model="big", base_url=f"{server.url}/anthropic", api_key="k", **kw)  # type: ignore[arg-type,call-arg]


def policy(params: dict[str, Any] | None = None, cap: str = "0.01", **tier: Any) -> Policy:
    """One priced tier ($10 / $40 per million) under a per-request cap ($0.01)."""
    spec: dict[str, Any] = {"name": "only", "provider": "langchain", "model": "big"}
    spec |= {"price": {"input": "10", "output": "40"}, "retry": {"attempts": 1}, **tier}
    if params is not None:
        spec["params"] = params
    return Policy.model_validate({"name": "cap", "budget": {"per_request": cap}, "tiers": [spec]})


def sent_limit(server: WireServer) -> Any:
    body = server.requests_for("big")[-1]
    return body.get("max_completion_tokens", body.get("max_tokens"))


calls_on: list[int] = []  # the thread of every sync call of a Plain model


class Plain(BaseChatModel):
    """A chat model with no output-token limit and no timeout of its own; ``sleep`` per call."""

    sleep: float = 0.0

    @property
    def _llm_type(self) -> str:
        return "plain"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        calls_on.append(threading.get_ident())
        time.sleep(self.sleep)
        return ChatResult(generations=[ChatGeneration(message=AIMessage("4"))])

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        await asyncio.sleep(self.sleep)
        return ChatResult(generations=[ChatGeneration(message=AIMessage("4"))])


# -- §1 money -------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [oa, an], ids=["ChatOpenAI", "ChatAnthropic"])
def test_the_policy_max_tokens_reaches_the_model_and_the_cap_holds(server: WireServer, make: Any) -> None:
    chat_model = make(server)
    result = Cascade.from_policy(policy({"max_tokens": 64}), providers={"only": chat_model}).run("hi")
    assert sent_limit(server) == 64
    assert result.usage.output_tokens == 64
    assert result.cost <= Decimal("0.01")  # was $0.50 (ChatOpenAI) and $0.16 (ChatAnthropic's 4096)
    assert chat_model.max_tokens in (None, 4096)  # the caller's own object is left as it was


def test_a_model_without_a_bound_gets_the_policy_default(server: WireServer) -> None:
    cascade = Cascade.from_policy(policy(cap="0.1"), providers={"only": oa(server)})
    result = cascade.run("hi")
    assert sent_limit(server) == 1024
    assert result.cost <= Decimal("0.1")
    assert cascade.tiers[0].provider.max_usage(Request.of("hi")).output_tokens == 1024


def test_the_model_own_bound_is_kept_and_reserved_when_the_policy_sets_none(server: WireServer) -> None:
    cascade = Cascade.from_policy(policy(), providers={"only": an(server, max_tokens=200)})
    cascade.run("hi")
    assert sent_limit(server) == 200
    assert cascade.tiers[0].provider.max_usage(Request.of("hi")).output_tokens == 200
    assert cascade.tiers[0].max_tokens == 200  # what a judge scorer's reservation counts on too


def test_a_caller_cannot_raise_the_bound_through_call_options(server: WireServer) -> None:
    model = CascadeChatModel.from_policy(policy({"max_tokens": 64}), providers={"only": oa(server)})
    model.bind(max_tokens=5000).invoke("hi")
    assert sent_limit(server) == 64
    model.bind(max_tokens=20).invoke("hi")
    assert sent_limit(server) == 20  # asking for less is fine


def test_a_model_with_no_limit_field_is_refused_under_caps() -> None:
    with pytest.raises(ConfigurationError, match=r"tier 'only': Plain has no output-token limit"):
        Cascade.from_policy(policy({"max_tokens": 64}), providers={"only": Plain()})
    free = Policy.model_validate(
        {
            "name": "free",
            "budget": {"per_request": "0.01"},
            "tiers": [{"name": "only", "provider": "langchain", "model": "m", "free": True}],
        }
    )
    assert Cascade.from_policy(free, providers={"only": Plain()}).run("q").answer == "4"
    uncapped = policy().model_copy(
        update={"budget": policy().budget.model_copy(update={"per_request": None})}
    )
    assert Cascade.from_policy(uncapped, providers={"only": Plain()}).run("q").answer == "4"
    built_from_yaml = {"class": "tests.langchain.test_tier_limits:Plain", "model_kwarg": None}
    with pytest.raises(ConfigurationError, match=r"tier 'only': Plain has no output-token limit"):
        Cascade.from_policy(policy(options=built_from_yaml))


# -- §3 deadlines without a thread per call -------------------------------------------------------


def test_a_sync_call_runs_on_the_calling_thread_and_an_overrun_is_logged() -> None:
    calls_on.clear()
    provider = LangChainProvider(Plain(sleep=0.2), timeout=0.05)
    try:
        with capture_logs() as logs:
            completion = provider.complete(Request.of("q"))
    finally:
        structlog.reset_defaults()  # capture_logs leaves structlog "configured"
    assert calls_on == [threading.get_ident()]  # no thread per call
    assert completion.samples[0].text == "4"  # paid for: kept
    (event,) = [e for e in logs if e["event"] == "cascade.langchain.deadline_overrun"]
    assert event["timeout"] == 0.05 and event["latency_s"] >= 0.2


@pytest.mark.slow
@pytest.mark.parametrize("make", [oa, an], ids=["ChatOpenAI", "ChatAnthropic"])
def test_a_sync_sdk_model_gets_the_tier_timeout_per_request(running: WireServer, make: Any) -> None:
    running.script("big", ModelScript(answers=["late"], sleep=5.0))
    provider = LangChainProvider(make(running), timeout=0.4)
    start = time.perf_counter()
    with pytest.raises(ProviderTimeoutError):
        provider.complete(Request.of("q"))
    assert time.perf_counter() - start < 3.0  # ended by the deadline, not the 5 s answer (room for load)


@pytest.mark.slow
async def test_an_async_call_is_cancelled_at_the_deadline() -> None:
    provider = LangChainProvider(Plain(sleep=5.0), timeout=0.1)
    start = time.perf_counter()
    with pytest.raises(ProviderTimeoutError, match="tier timeout"):
        await provider.acomplete(Request.of("q"), n=2)
    assert time.perf_counter() - start < 3.0  # ended by the deadline, not the 5 s sleep (room for load)


# -- §3 tier calls nobody listens to skip BaseChatModel.generate ------------------------------------


@pytest.fixture
def generate_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The chat models whose ``BaseChatModel.generate`` / ``agenerate`` ran."""
    seen: list[str] = []
    sync, async_ = BaseChatModel.generate, BaseChatModel.agenerate

    def generate(self: BaseChatModel, *args: Any, **kwargs: Any) -> Any:
        seen.append(type(self).__name__)
        return sync(self, *args, **kwargs)

    async def agenerate(self: BaseChatModel, *args: Any, **kwargs: Any) -> Any:
        seen.append(type(self).__name__)
        return await async_(self, *args, **kwargs)

    monkeypatch.setattr(BaseChatModel, "generate", generate)
    monkeypatch.setattr(BaseChatModel, "agenerate", agenerate)
    return seen


def test_an_unheard_tier_call_skips_generate_and_keeps_its_metadata(
    server: WireServer, generate_calls: list[str]
) -> None:
    model = CascadeChatModel.from_policy(policy({"max_tokens": 64}), providers={"only": oa(server)})
    answer = model.invoke("hi")
    assert generate_calls == []  # nobody listens: no run machinery around the tier's _generate
    assert answer.response_metadata["finish_reason"] == "length"  # ChatOpenAI's generation info
    assert asyncio.run(model.ainvoke("hi")).response_metadata["finish_reason"] == "length"
    assert generate_calls == []


def test_a_heard_or_rate_limited_tier_call_keeps_the_full_path(
    server: WireServer, generate_calls: list[str]
) -> None:
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.rate_limiters import InMemoryRateLimiter

    model = CascadeChatModel.from_policy(policy({"max_tokens": 64}), providers={"only": oa(server)})
    model.invoke("hi", config={"callbacks": [BaseCallbackHandler()]})
    assert generate_calls == ["ChatOpenAI"]  # a listener gets the tier's run
    limited = oa(server, rate_limiter=InMemoryRateLimiter(requests_per_second=1000))
    model = CascadeChatModel.from_policy(policy({"max_tokens": 64}), providers={"only": limited})
    model.invoke("hi")
    assert generate_calls == ["ChatOpenAI", "ChatOpenAI"]  # the limiter is honoured
