"""Issue 13: CascadeChatModel as a drop-in for ChatOpenAI, with real ChatOpenAI / ChatAnthropic tiers.

Every test talks HTTP to the local wire server (tests/providers/wire_server.py) started on a free
port; each model's answers, tool calls, stream usage and faults are scripted per test.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from uuid import UUID

import openai
import pytest
from langchain.agents import create_agent
from langchain_anthropic import ChatAnthropic
from langchain_core.callbacks import BaseCallbackHandler, UsageMetadataCallbackHandler
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langchain_core.output_parsers import JsonOutputToolsParser
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.runnables import ConfigurableField
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from pydantic import BaseModel

from cascade import AllTiersFailedError, Cascade, ConfigurationError, InvalidRequestError
from cascade.langchain import _JSON_FALLBACK, CascadeChatModel
from cascade.providers.langchain import LangChainProvider
from cascade.request import Request
from cascade.retry import RetryPolicy
from cascade.scorers.basic import JsonScorer, RegexScorer
from cascade.testing import FixedScorer, ScriptedProvider
from cascade.types import Completion, Score, Usage
from tests.langchain.support import CHEAP, STRONG, tier
from tests.providers.wire_server import ModelScript, WireServer

NO_RETRY = RetryPolicy(attempts=1)


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
    return running


def oa(server: WireServer, model: str, **kw: Any) -> ChatOpenAI:
    kw.setdefault("max_retries", 0)
    return ChatOpenAI(model=model, base_url=f"{server.url}/openai/v1", api_key="k", **kw)  # type: ignore[arg-type]


def an(server: WireServer, model: str, **kw: Any) -> ChatAnthropic:
    kw.setdefault("max_retries", 0)
    return ChatAnthropic(model=model, base_url=f"{server.url}/anthropic", api_key="k", **kw)  # type: ignore[arg-type,call-arg]


def two_tiers(server: WireServer, cheap: Any = None, strong: Any = None, **kw: Any) -> CascadeChatModel:
    """cheap-1 (accepted when its answer mentions 4) then strong-1 (final, no scorer)."""
    c = Cascade(
        [
            tier("cheap", cheap or oa(server, "cheap-1"), RegexScorer(r"\b4\b"), 0.5, price=CHEAP),
            tier("strong", strong or oa(server, "strong-1"), price=STRONG),
        ],
        name="dropin",
    )
    return CascadeChatModel(cascade=c, **kw)


class RunUsage(BaseCallbackHandler):
    """Sums usage over every chat-model run of a trace, as a run-tree roll-up would."""

    def __init__(self) -> None:
        self.by_run: dict[UUID, dict[str, int]] = {}

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        generation = response.generations[0][0]
        assert isinstance(generation, ChatGeneration)
        um = getattr(generation.message, "usage_metadata", None) or {}
        self.by_run[run_id] = {k: int(um.get(k, 0)) for k in ("input_tokens", "output_tokens")}  # type: ignore[misc]

    def total(self) -> tuple[int, int]:
        return (
            sum(u["input_tokens"] for u in self.by_run.values()),
            sum(u["output_tokens"] for u in self.by_run.values()),
        )


class Tokens(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:  # type: ignore[override]
        self.tokens.append(token)


def handler_total(handler: UsageMetadataCallbackHandler) -> tuple[int, int]:
    return (
        sum(u["input_tokens"] for u in handler.usage_metadata.values()),
        sum(u["output_tokens"] for u in handler.usage_metadata.values()),
    )


def io(message: AIMessage) -> tuple[int, int]:
    assert message.usage_metadata is not None
    return message.usage_metadata["input_tokens"], message.usage_metadata["output_tokens"]


def merged(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    out = chunks[0]
    for c in chunks[1:]:
        out = out + c
    return out


# -- 1. every token once ------------------------------------------------------------------------


async def test_astream_events_sees_each_token_once(server: WireServer) -> None:
    server.script("cheap-1", ModelScript(answers=["no idea"]))
    server.script("strong-1", ModelScript(answers=["the answer is four"]))
    model = two_tiers(server, stream_final_tier=True)
    streamed = [
        e["data"]["chunk"].text
        async for e in model.astream_events("2+2?", version="v2")
        if e["event"] == "on_chat_model_stream"
    ]
    assert "".join(streamed) == "the answer is four"
    assert len(streamed) > 2  # it did stream


def test_token_callbacks_see_each_token_once_sync(server: WireServer) -> None:
    server.script("cheap-1", ModelScript(answers=["no idea"]))
    server.script("strong-1", ModelScript(answers=["4 is it"]))
    tokens = Tokens()
    chunks = list(two_tiers(server, stream_final_tier=True).stream("2+2?", config={"callbacks": [tokens]}))
    assert merged(chunks).text == "4 is it"
    assert "".join(tokens.tokens) == "4 is it"


# -- 2. structured output -----------------------------------------------------------------------


class Invoice(BaseModel):
    number: str
    total: float


INVOICE = {"number": "A-1", "total": 12.5}


def json_cascade(server: WireServer, cheap: Any = None) -> CascadeChatModel:
    c = Cascade(
        [
            tier("cheap", cheap or oa(server, "cheap-1"), JsonScorer(["number", "total"]), 0.5),
            tier("strong", oa(server, "strong-1"), price=STRONG),
        ]
    )
    return CascadeChatModel(cascade=c)


def test_structured_output_streams_and_a_text_scorer_reads_the_tool_call(server: WireServer) -> None:
    server.script("cheap-1", ModelScript(tool=INVOICE))
    parts = list(
        json_cascade(server).with_structured_output(Invoice, method="function_calling").stream("invoice?")
    )
    assert parts
    assert parts[-1] == Invoice(number="A-1", total=12.5)
    assert server.requests_for("strong-1") == []  # the json scorer accepted the cheap tool call
    assert server.requests_for("cheap-1")[0]["tool_choice"] == "required"  # a forced tool call


async def test_bound_tools_with_a_tools_parser_stream_async(server: WireServer) -> None:
    server.script("cheap-1", ModelScript(tool=INVOICE))
    chain = json_cascade(server).bind_tools([Invoice]) | JsonOutputToolsParser()
    parts = [p async for p in chain.astream("invoice?")]
    assert parts
    assert parts[-1] == [{"type": "Invoice", "args": INVOICE}]


@pytest.mark.parametrize("method", ["json_schema", "json_mode"])
def test_structured_output_method_sends_response_format(server: WireServer, method: str) -> None:
    server.script("cheap-1", ModelScript(answers=[json.dumps(INVOICE)]))
    model = json_cascade(server)
    runnable = model.with_structured_output(Invoice, method=method)  # type: ignore[arg-type]
    assert runnable.invoke("invoice?") == Invoice(number="A-1", total=12.5)
    assert list(runnable.stream("invoice?"))[-1] == Invoice(number="A-1", total=12.5)
    body = server.requests_for("cheap-1")[0]
    assert "tools" not in body
    if method == "json_schema":
        assert body["response_format"]["type"] == "json_schema"
        assert body["response_format"]["json_schema"]["name"] == "Invoice"
        assert set(body["response_format"]["json_schema"]["schema"]["properties"]) == {"number", "total"}
    else:
        assert body["response_format"] == {"type": "json_object"}


def test_json_schema_reaches_anthropic_tiers_in_their_format(server: WireServer) -> None:
    server.script("claude-1", ModelScript(answers=[json.dumps(INVOICE)]))
    model = CascadeChatModel(cascade=Cascade([tier("only", an(server, "claude-1"))]))
    assert model.with_structured_output(Invoice, method="json_schema").invoke("q") == Invoice(**INVOICE)
    body = server.requests_for("claude-1")[0]
    assert body["output_config"]["format"]["type"] == "json_schema"
    assert "tools" not in body


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_json_mode_gives_tiers_without_it_the_schema(server: WireServer, mode: str) -> None:
    """ChatAnthropic has no JSON mode: its tier gets the schema (json_schema), as its own
    ``with_structured_output(method="json_mode")`` does; an OpenAI tier keeps JSON mode."""
    server.script("cheap-1", ModelScript(answers=["no json here"]))
    server.script("claude-1", ModelScript(answers=[json.dumps(INVOICE)]))
    c = Cascade(
        [
            tier("cheap", oa(server, "cheap-1"), JsonScorer(["number", "total"]), 0.5),
            tier("strong", an(server, "claude-1"), price=STRONG),
        ]
    )
    with pytest.warns(UserWarning, match=r"strong \(ChatAnthropic\) have no JSON mode"):
        runnable = CascadeChatModel(cascade=c).with_structured_output(Invoice, method="json_mode")
    got = runnable.invoke("invoice?") if mode == "sync" else asyncio.run(runnable.ainvoke("invoice?"))
    assert got == Invoice(**INVOICE)
    assert server.requests_for("cheap-1")[0]["response_format"] == {"type": "json_object"}
    claude = server.requests_for("claude-1")[0]
    assert claude["output_config"]["format"]["type"] == "json_schema"
    assert set(claude["output_config"]["format"]["schema"]["properties"]) == {"number", "total"}
    assert _JSON_FALLBACK not in server.requests_for("cheap-1")[0]


def test_json_mode_without_a_schema_is_a_clear_error_on_anthropic_tiers(server: WireServer) -> None:
    model = CascadeChatModel(cascade=Cascade([tier("only", an(server, "claude-1"))]))
    with pytest.raises(ConfigurationError, match=r"ChatAnthropic \(claude-1\) has no JSON mode"):
        model.bind(response_format={"type": "json_object"}).invoke("q")
    assert server.requests_for("claude-1") == []


def test_structured_output_include_raw(server: WireServer) -> None:
    server.script("cheap-1", ModelScript(answers=[json.dumps(INVOICE)]))
    out: Any = (
        json_cascade(server)
        .with_structured_output(Invoice, method="json_schema", include_raw=True)
        .invoke("q")
    )
    assert out["parsed"] == Invoice(number="A-1", total=12.5)
    assert out["parsing_error"] is None
    assert isinstance(out["raw"], AIMessage)


# -- 3. money when the final tier streams -------------------------------------------------------

PROMPT = "Summarise the following report for the board. " * 40


def live_only(model: Any) -> CascadeChatModel:
    return CascadeChatModel(cascade=Cascade([tier("strong", model, price=STRONG)]), stream_final_tier=True)


def test_openai_stream_asks_for_usage_and_bills_it(server: WireServer) -> None:
    server.script("strong-1", ModelScript(answers=["a fine summary"]))
    chunks = list(live_only(oa(server, "strong-1")).stream(PROMPT))
    assert len(chunks) > 2
    assert server.requests_for("strong-1")[0]["stream_options"] == {"include_usage": True}
    final = merged(chunks)
    trace = final.response_metadata["cascade"]
    assert trace["usage"]["input_tokens"] > 400  # the server's count of the long prompt
    assert io(final) == (trace["usage"]["input_tokens"], trace["usage"]["output_tokens"])


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_stream_without_input_usage_is_billed_from_an_estimate(server: WireServer, kind: str) -> None:
    # a gateway that sends no usage in streams (OpenAI) / only output tokens (Anthropic-compatible)
    usage = "none" if kind == "openai" else "output"
    server.script("strong-1", ModelScript(answers=["a fine summary"], stream_usage=usage))
    chat = oa(server, "strong-1") if kind == "openai" else an(server, "strong-1")
    final = merged(list(live_only(chat).stream(PROMPT)))
    trace = final.response_metadata["cascade"]
    assert trace["usage"]["input_tokens"] >= len(PROMPT) // 4  # never 0 input tokens
    input_cost = STRONG.input * trace["usage"]["input_tokens"] / 1_000_000
    assert Decimal(trace["cost"]) >= input_cost > Decimal("0.001")


async def test_async_stream_without_usage_is_billed_from_an_estimate(server: WireServer) -> None:
    server.script("strong-1", ModelScript(answers=["ok then"], stream_usage="none"))
    chunks = [c async for c in live_only(oa(server, "strong-1")).astream(PROMPT)]
    assert merged(chunks).response_metadata["cascade"]["usage"]["input_tokens"] >= len(PROMPT) // 4


# -- 4. token counts for both kinds of reader ---------------------------------------------------


class PayingScorer(RegexScorer):
    """A regex scorer that reports tokens of its own (as a judge would)."""

    def score(self, request: Request, completion: Completion) -> Score:
        s = super().score(request, completion)
        return Score(s.value, usage=Usage(7, 3))


def check_accounting(out: AIMessage, handler: UsageMetadataCallbackHandler, runs: RunUsage) -> None:
    spent = out.response_metadata["cascade"]["usage"]
    assert io(out) == (spent["input_tokens"], spent["output_tokens"])  # everything the request spent
    assert handler_total(handler) == io(out)  # UsageMetadataCallbackHandler: each token once
    assert runs.total() == io(out)  # a sum over the run tree: each token once
    assert out.response_metadata["model_name"] == "strong-1"
    assert out.response_metadata["finish_reason"] == "stop"


def test_usage_is_the_whole_request_and_the_trace_counts_it_once(server: WireServer) -> None:
    server.script("cheap-1", ModelScript(answers=["no idea"]))
    server.script("strong-1", ModelScript(answers=["it is 4"]))
    model = two_tiers(server)
    handler, runs = UsageMetadataCallbackHandler(), RunUsage()
    out = model.invoke("2+2?", config={"callbacks": [handler, runs]})
    check_accounting(out, handler, runs)
    assert set(handler.usage_metadata) == {"cheap-1", "strong-1"}
    assert len(runs.by_run) == 3  # cascade + two tiers


async def test_usage_async_with_a_scorer_that_spends(server: WireServer) -> None:
    server.script("cheap-1", ModelScript(answers=["no idea"]))
    server.script("strong-1", ModelScript(answers=["it is 4"]))
    c = Cascade(
        [
            tier("cheap", oa(server, "cheap-1"), PayingScorer(r"\b4\b"), 0.5),
            tier("strong", oa(server, "strong-1"), price=STRONG),
        ]
    )
    handler, runs = UsageMetadataCallbackHandler(), RunUsage()
    out = await CascadeChatModel(cascade=c).ainvoke("2+2?", config={"callbacks": [handler, runs]})
    check_accounting(out, handler, runs)
    assert io(out) == tuple(a + b for a, b in zip(handler_total_of_tiers(runs, out), (7, 3), strict=True))


def handler_total_of_tiers(runs: RunUsage, out: AIMessage) -> tuple[int, int]:
    """What the tier runs reported (the cascade run reports the scorer's 7 + 3 on top)."""
    tiers = [u for u in runs.by_run.values() if u != {"input_tokens": 7, "output_tokens": 3}]
    return sum(u["input_tokens"] for u in tiers), sum(u["output_tokens"] for u in tiers)


def test_usage_when_the_final_tier_streams(server: WireServer) -> None:
    server.script("cheap-1", ModelScript(answers=["no idea"]))
    server.script("strong-1", ModelScript(answers=["it is 4"], stream_usage="none"))
    handler, runs = UsageMetadataCallbackHandler(), RunUsage()
    chunks = list(
        two_tiers(server, stream_final_tier=True).stream("2+2?", config={"callbacks": [handler, runs]})
    )
    final = merged(chunks)
    assert final.text == "it is 4"
    check_accounting(
        AIMessage(final.text, **final.model_dump(include={"usage_metadata", "response_metadata"})),
        handler,
        runs,
    )


# -- 5. retries and timeouts owned by cascade ----------------------------------------------------


def test_default_sdk_retries_warn(server: WireServer) -> None:
    with pytest.warns(UserWarning, match="SDK retries 2x"):
        LangChainProvider(oa(server, "m", max_retries=None))
    with pytest.warns(UserWarning, match="max_retries=2"):
        LangChainProvider(an(server, "m", max_retries=2))


POLICY = """
name: timed
tiers:
  - name: only
    provider: langchain
    model: slow-1
    free: true
    timeout: 0.5
    retry: {attempts: 1}
"""


@pytest.fixture
def slow(server: WireServer) -> WireServer:
    server.script("slow-1", ModelScript(answers=["late"], sleep=5.0))  # the bounds below: far under it
    return server


@pytest.mark.slow
def test_tier_timeout_applies_to_a_passed_in_model(slow: WireServer, tmp_path: Any) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY)
    with pytest.warns(UserWarning, match="SDK retries"):
        model = CascadeChatModel.from_policy(path, providers={"only": oa(slow, "slow-1", max_retries=None)})
    start = time.perf_counter()
    with pytest.raises(AllTiersFailedError) as info:
        model.invoke("q")
    # sync: the 0.5 s is the SDK's per-request timeout, split over its 3 attempts (no thread per
    # call); the SDK's backoff waits between them (at most 0.5 + 1 s) come on top; 2 s of room for load
    assert time.perf_counter() - start < 0.5 + 1.5 + 2.0
    assert "timeout" in str(info.value).lower()


@pytest.mark.slow
async def test_tier_timeout_applies_async(slow: WireServer, tmp_path: Any) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY)
    model = CascadeChatModel.from_policy(path, providers={"only": oa(slow, "slow-1")})
    start = time.perf_counter()
    with pytest.raises(AllTiersFailedError):
        await model.ainvoke("q")
    assert time.perf_counter() - start < 3.0  # the 0.5 s deadline, not the 5 s answer (room for load)
    await asyncio.sleep(0)


# -- the smaller items ----------------------------------------------------------------------------


def test_bound_call_options_reach_the_tiers(server: WireServer) -> None:
    server.script("strong-1", ModelScript(answers=["ok"]))
    model = two_tiers(server)
    model.bind(temperature=0.25, max_tokens=7).invoke("hi")
    body = server.requests_for("cheap-1")[0]
    assert (body["temperature"], body.get("max_completion_tokens", body.get("max_tokens"))) == (0.25, 7)
    model.bind_tools([Invoice], parallel_tool_calls=False).invoke("hi")
    assert server.requests_for("cheap-1")[-1]["parallel_tool_calls"] is False


def test_call_options_warn_for_tiers_that_ignore_them(server: WireServer) -> None:
    c = Cascade(
        [
            tier("cheap", ScriptedProvider(["4"]), RegexScorer("4"), 0.5),
            tier("strong", oa(server, "strong-1")),
        ]
    )
    with pytest.warns(UserWarning, match="temperature"):
        CascadeChatModel(cascade=c).bind(temperature=0.2).invoke("hi")


def test_constructor_callbacks_and_tags_reach_tier_runs(server: WireServer) -> None:
    server.script("cheap-1", ModelScript(answers=["no"]))
    handler = UsageMetadataCallbackHandler()
    tags: list[list[str]] = []

    class Tags(BaseCallbackHandler):
        def on_chat_model_start(self, serialized: Any, messages: Any, **kw: Any) -> None:
            tags.append(list(kw.get("tags") or []))

    model = two_tiers(server, callbacks=[handler, Tags()], tags=["mine"])
    model.invoke("q")
    assert set(handler.usage_metadata) == {"cheap-1", "strong-1"}
    assert all("mine" in t for t in tags) and len(tags) == 3


def test_all_tiers_failed_has_the_sdk_error_as_cause_and_with_retry_fires(server: WireServer) -> None:
    server.script("cheap-1", ModelScript(fail=[500] * 6))
    server.script("strong-1", ModelScript(fail=[500] * 6))
    c = Cascade(
        [
            tier("cheap", oa(server, "cheap-1"), RegexScorer("4"), 0.5),
            tier("strong", oa(server, "strong-1")),
        ]
    )
    c = Cascade([replace_retry(t) for t in c.tiers])
    model = CascadeChatModel(cascade=c)
    with pytest.raises(AllTiersFailedError) as info:
        model.invoke("q")
    assert isinstance(info.value.__cause__, openai.InternalServerError)
    retried = model.with_retry(
        retry_if_exception_type=(openai.InternalServerError,),
        stop_after_attempt=2,
        wait_exponential_jitter=False,
    )
    with pytest.raises(AllTiersFailedError):
        retried.invoke("q")
    assert len(server.requests_for("strong-1")) == 3  # one call, then two from with_retry


def replace_retry(t: Any) -> Any:
    from dataclasses import replace

    return replace(t, retry=NO_RETRY)


IMAGE = HumanMessage(
    content=[
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
)


def test_images_reach_langchain_tiers_and_fail_loudly_for_text_only_ones(server: WireServer) -> None:
    server.script("cheap-1", ModelScript(answers=["a 4"]))
    assert two_tiers(server).invoke([IMAGE]).text == "a 4"
    content = server.requests_for("cheap-1")[0]["messages"][0]["content"]
    assert [b["type"] for b in content] == ["text", "image_url"]
    c = Cascade(
        [
            tier("cheap", ScriptedProvider(["4"]), RegexScorer("4"), 0.5),
            tier("strong", oa(server, "strong-1")),
        ]
    )
    with pytest.raises(InvalidRequestError, match="cheap"):
        CascadeChatModel(cascade=c).invoke([IMAGE])


def test_token_counts_need_no_tokenizer(server: WireServer) -> None:
    model = two_tiers(server)
    assert model.get_num_tokens("hello world, how are you?") > 5
    assert model.get_num_tokens_from_messages([HumanMessage("hi")]) > 1


def test_configurable_stream_final_tier(server: WireServer) -> None:
    server.script("cheap-1", ModelScript(answers=["no idea"]))
    server.script("strong-1", ModelScript(answers=["the answer is four"]))
    model = two_tiers(server).configurable_fields(stream_final_tier=ConfigurableField(id="live"))
    assert len(list(model.stream("q"))) == 1
    chunks = list(model.stream("q", config={"configurable": {"live": True}}))
    assert len(chunks) > 2
    assert "".join(c.text for c in chunks) == "the answer is four"


TWO_TIERS = """
name: dropin
tiers:
  - {name: cheap, provider: langchain, model: cheap-1, free: true, scorer: {kind: regex, pattern: "4"}, threshold: 0.5}
  - {name: strong, provider: langchain, model: strong-1, free: true}
"""


def test_init_chat_model_builds_a_cascade(server: WireServer, tmp_path: Any) -> None:
    from langchain.chat_models import init_chat_model

    from cascade.langchain import register_init_chat_model

    server.script("cheap-1", ModelScript(answers=["it is 4"]))
    path = tmp_path / "dropin.yaml"
    path.write_text(TWO_TIERS)
    register_init_chat_model()
    providers = {"cheap": oa(server, "cheap-1"), "strong": oa(server, "strong-1")}
    model = init_chat_model(f"cascade:{path}", providers=providers)
    assert isinstance(model, CascadeChatModel)
    assert model.invoke("2+2?").response_metadata["cascade"]["tier"] == "cheap"
    assert isinstance(
        init_chat_model(str(path), model_provider="cascade", providers=providers), CascadeChatModel
    )


def test_a_refused_key_on_a_cheap_tier_is_not_silent(server: WireServer) -> None:
    server.script("cheap-1", ModelScript(fail=[401]))
    with pytest.warns(UserWarning, match="HTTP 401"):
        out = two_tiers(server).invoke("q")
    assert out.response_metadata["cascade"]["tier"] == "strong"


def test_anthropic_tiers_sync_and_async(server: WireServer) -> None:
    server.script("claude-cheap", ModelScript(answers=["no idea"]))
    server.script("claude-strong", ModelScript(answers=["it is 4"]))
    model = two_tiers(server, an(server, "claude-cheap"), an(server, "claude-strong"))
    handler, runs = UsageMetadataCallbackHandler(), RunUsage()
    out = model.invoke("2+2?", config={"callbacks": [handler, runs]})
    assert out.text == "it is 4"
    assert handler_total(handler) == runs.total() == io(out)
    out2 = asyncio.run(model.ainvoke("2+2?"))
    assert io(out2) == io(out)


# -- agents: create_agent and a LangGraph StateGraph with ToolNode over real clients ---------------


@tool
def get_weather(city: str) -> str:
    """Current weather in a city."""
    return f"{city}: 20C, sunny"


QUESTION: Any = {"messages": [("user", "Weather in Paris?")]}


def tool_or_sunny(request: Request, completion: Completion) -> float:
    """Accepts a tool call, or an answer that uses the tool's result."""
    sample = completion.samples[0]
    return 1.0 if sample.tool_calls or "sunny" in sample.text else 0.0


def agent_model(server: WireServer, chat: Any = oa, **kw: Any) -> CascadeChatModel:
    server.script("cheap-1", ModelScript(answers=["no idea"], turns=[{"city": "Paris"}, None]))
    server.script("strong-1", ModelScript(answers=["It is sunny in Paris."]))
    c = Cascade(
        [
            tier("cheap", chat(server, "cheap-1"), FixedScorer(tool_or_sunny), 0.5),
            tier("strong", chat(server, "strong-1"), price=STRONG),
        ],
        name="agent",
    )
    return CascadeChatModel(cascade=c, **kw)


def check_agent_usage(messages: list[Any], handler: UsageMetadataCallbackHandler, runs: RunUsage) -> None:
    answers = [m for m in messages if isinstance(m, AIMessage)]
    assert [bool(m.tool_calls) for m in answers] == [True, False]
    assert answers[-1].text == "It is sunny in Paris."
    spent = tuple(map(sum, zip(*(io(m) for m in answers), strict=True)))
    assert handler_total(handler) == runs.total() == spent  # each token once, whoever sums


def test_create_agent_over_chatopenai_tiers(server: WireServer) -> None:
    agent = create_agent(agent_model(server), tools=[get_weather])
    handler, runs = UsageMetadataCallbackHandler(), RunUsage()
    state = agent.invoke(QUESTION, config={"callbacks": [handler, runs]})
    check_agent_usage(state["messages"], handler, runs)
    assert len(server.requests_for("cheap-1")) == 2 and len(server.requests_for("strong-1")) == 1


async def test_state_graph_with_tool_node_streams_each_token_once(server: WireServer) -> None:
    model = agent_model(server, stream_final_tier=True).bind_tools([get_weather])

    async def call_model(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("model", call_model)
    graph.add_node("tools", ToolNode([get_weather]))
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", tools_condition)
    graph.add_edge("tools", "model")
    app = graph.compile()
    handler, runs = UsageMetadataCallbackHandler(), RunUsage()
    streamed: list[str] = []
    final: Any = None
    async for event in app.astream_events(QUESTION, config={"callbacks": [handler, runs]}, version="v2"):
        if event["event"] == "on_chat_model_stream":
            streamed.append(event["data"]["chunk"].text)
        elif event["event"] == "on_chain_end" and event["name"] == "LangGraph":
            final = event["data"]["output"]
    assert "".join(streamed) == "It is sunny in Paris."
    check_agent_usage(final["messages"], handler, runs)


async def test_create_agent_over_chatanthropic_tiers_async(server: WireServer) -> None:
    agent = create_agent(agent_model(server, an), tools=[get_weather])
    handler, runs = UsageMetadataCallbackHandler(), RunUsage()
    state = await agent.ainvoke(QUESTION, config={"callbacks": [handler, runs]})
    check_agent_usage(state["messages"], handler, runs)
