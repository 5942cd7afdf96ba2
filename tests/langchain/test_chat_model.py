"""CascadeChatModel: invoke, async, batch, chains, structured output, callbacks, usage, budgets."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from langchain_core.callbacks import UsageMetadataCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from pydantic import BaseModel

from cascade import Budget, BudgetExceededError, Cap, Cascade, Price
from cascade.budget.memory import MemoryLedger
from cascade.langchain import CascadeChatModel, ScriptedChatModel
from cascade.scorers.basic import RegexScorer
from cascade.scorers.tools import ToolArgsScorer
from cascade.testing import ScriptedProvider
from tests.langchain.support import STRONG, Recorder, call, tier


def two_tiers(cheap_says: object = "I don't know", strong_says: object = "Paris", **kw: object) -> Cascade:
    cheap = ScriptedChatModel(model="cheap-1", script=[cheap_says])
    strong = ScriptedChatModel(model="strong-1", script=[strong_says], input_tokens=20, output_tokens=5)
    return Cascade(
        [tier("cheap", cheap, RegexScorer("Paris"), 0.5), tier("strong", strong, price=STRONG)],
        name="demo",
        **kw,  # type: ignore[arg-type]
    )


def test_is_a_chat_model_and_answers_with_the_trace() -> None:
    model = CascadeChatModel(cascade=two_tiers())
    assert isinstance(model, BaseChatModel)
    out = model.invoke("What is the capital of France?")
    assert out.content == "Paris"
    trace = out.response_metadata["cascade"]
    assert (trace["tier"], trace["model"], trace["accepted"], trace["reason"]) == (
        "strong",
        "strong-1",
        True,
        "accepted",
    )
    assert [(a["tier"], a["decision"]) for a in trace["attempts"]] == [
        ("cheap", "escalated"),
        ("strong", "accepted"),
    ]
    assert trace["attempts"][0]["threshold"] == 0.5
    assert trace["attempts"][0]["score"] == 0.0
    assert out.response_metadata["model_name"] == "strong-1"
    assert out.response_metadata["finish_reason"] == "stop"
    assert Decimal(trace["cost"]) == Decimal("0.000005") + Decimal("0.0001")


def test_first_tier_accepted() -> None:
    out = CascadeChatModel(cascade=two_tiers(cheap_says="Paris, of course")).invoke("capital?")
    assert out.content == "Paris, of course"
    assert out.response_metadata["cascade"]["tier"] == "cheap"


async def test_async_batch_and_abatch() -> None:
    model = CascadeChatModel(cascade=two_tiers())
    assert (await model.ainvoke("q")).content == "Paris"
    assert [m.content for m in model.batch(["a", "b", "c"])] == ["Paris"] * 3
    assert [m.content for m in await model.abatch(["a", "b"])] == ["Paris"] * 2


def test_in_a_chain() -> None:
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer in one word."), ("human", "Capital of {country}?")]
    )
    cheap = ScriptedChatModel(
        model="cheap-1", script=[lambda msgs, kw: "Paris" if "France" in msgs[-1].text else "?"]
    )
    cascade = Cascade(
        [tier("cheap", cheap, RegexScorer(r"^\w+$"), 0.5), tier("strong", ScriptedChatModel(script=["Rome"]))]
    )
    chain = prompt | CascadeChatModel(cascade=cascade) | StrOutputParser()
    assert chain.invoke({"country": "France"}) == "Paris"
    assert chain.invoke({"country": "Italy"}) == "Rome"
    sent = cheap.calls[0][0]
    assert [m.type for m in sent] == ["system", "human"]


class Answer(BaseModel):
    city: str
    confidence: float


def test_structured_output_escalates_on_invalid_arguments() -> None:
    cheap = ScriptedChatModel(model="cheap-1", script=[call("Answer", {"city": "Paris"})])  # no confidence
    strong = ScriptedChatModel(
        model="strong-1", script=[call("Answer", {"city": "Paris", "confidence": 0.9})]
    )
    cascade = Cascade([tier("cheap", cheap, ToolArgsScorer(), 1.0), tier("strong", strong)])
    structured = CascadeChatModel(cascade=cascade).with_structured_output(Answer, method="function_calling")
    assert structured.invoke("capital of France?") == Answer(city="Paris", confidence=0.9)
    for model in (cheap, strong):
        kwargs = model.calls[0][1]
        assert kwargs["tool_choice"] == "any"
        assert kwargs["tools"][0]["function"]["name"] == "Answer"


def test_structured_output_with_raw_keeps_the_trace() -> None:
    strong = ScriptedChatModel(script=[call("Answer", {"city": "Oslo", "confidence": 1})])
    cascade = Cascade([tier("only", strong)])
    out = (
        CascadeChatModel(cascade=cascade)
        .with_structured_output(Answer, method="function_calling", include_raw=True)
        .invoke("q")
    )
    assert out["parsed"] == Answer(city="Oslo", confidence=1)  # type: ignore[index]
    assert out["raw"].response_metadata["cascade"]["tier"] == "only"  # type: ignore[index]


def test_every_tier_call_is_a_child_run_inheriting_tags_and_metadata() -> None:
    cheap = ScriptedChatModel(model="cheap-1", script=["no"])
    middle = ScriptedProvider("still no", model="mid-1")  # one of our providers, not a LangChain model
    strong = ScriptedChatModel(model="strong-1", script=["Paris"])
    cascade = Cascade(
        [
            tier("cheap", cheap, RegexScorer("Paris"), 0.5),
            tier("middle", middle, RegexScorer("Paris"), 0.5),
            tier("strong", strong),
        ],
        name="nested",
    )
    recorder = Recorder()
    prompt = ChatPromptTemplate.from_messages([("human", "{q}")])
    chain = prompt | CascadeChatModel(cascade=cascade)
    chain.invoke(
        {"q": "capital?"}, config={"callbacks": [recorder], "tags": ["team-a"], "metadata": {"user": "u1"}}
    )
    (top,) = recorder.cascade_runs()
    assert top["parent_run_id"] is not None  # the chain's step
    for name, model in (("cheap", "cheap-1"), ("middle", "mid-1"), ("strong", "strong-1")):
        (run,) = recorder.runs(name)
        assert run["parent_run_id"] == top["run_id"]
        assert {"team-a", "nostream", f"cascade_tier:{name}"} <= set(run["tags"])
        assert run["metadata"]["user"] == "u1"
        assert run["metadata"]["cascade_tier"] == name
        assert run["metadata"]["cascade_policy"] == "nested"
        assert recorder.ends[run["run_id"]].response_metadata["model_name"] == model
        assert run["messages"][0].content == "capital?"


async def test_child_runs_in_async() -> None:
    recorder = Recorder()
    await CascadeChatModel(cascade=two_tiers()).ainvoke("q", config={"callbacks": [recorder], "tags": ["x"]})
    (top,) = recorder.cascade_runs()
    assert [r["parent_run_id"] for r in recorder.runs("cheap") + recorder.runs("strong")] == [
        top["run_id"]
    ] * 2
    assert all("x" in r["tags"] for r in recorder.starts)


def test_usage_is_counted_once_by_the_usage_callback() -> None:
    handler = UsageMetadataCallbackHandler()
    model = CascadeChatModel(cascade=two_tiers())
    out = model.invoke("q", config={"callbacks": [handler]})
    assert handler.usage_metadata == {
        "cheap-1": {"input_tokens": 10, "output_tokens": 10, "total_tokens": 20},
        "strong-1": {"input_tokens": 20, "output_tokens": 5, "total_tokens": 25},
    }
    # the answer carries everything the request spent, as the trace does
    assert out.usage_metadata == {"input_tokens": 30, "output_tokens": 15, "total_tokens": 45}
    total = out.response_metadata["cascade"]["usage"]
    assert (total["input_tokens"], total["output_tokens"]) == (30, 15)
    assert sum(u["total_tokens"] for u in handler.usage_metadata.values()) == 45


def _capped(limit: str) -> tuple[Cascade, MemoryLedger]:
    ledger = MemoryLedger()
    cheap = ScriptedChatModel(model="cheap-1", script=["Paris"])
    cascade = Cascade(
        [tier("only", cheap, price=Price(Decimal(0), Decimal(1000)))],
        name="capped",
        budget=Budget(caps=(Cap(Decimal(limit), "total", "key"),), ledger=ledger),
    )
    return cascade, ledger


def test_budget_key_comes_from_run_metadata() -> None:
    cascade, ledger = _capped("0.025")  # each call: 10 output tokens at $1000/M = $0.01 (worst case too)
    cascade.tiers[0].provider.max_tokens = 10  # type: ignore[attr-defined]
    model = CascadeChatModel(cascade=cascade)
    for _ in range(2):
        model.invoke("q", config={"metadata": {"tenant_id": "acme"}})
    with pytest.raises(BudgetExceededError):
        model.invoke("q", config={"metadata": {"tenant_id": "acme"}})
    model.invoke("q", config={"metadata": {"tenant_id": "globex"}})  # another tenant still has budget
    model.invoke("q", budget_key="initech")  # or pass the key per call
    assert ledger.spent("key:capped:acme|total") == Decimal("0.02")
    assert ledger.spent("key:capped:globex|total") == Decimal("0.01")
    assert ledger.spent("key:capped:initech|total") == Decimal("0.01")


def test_budget_key_metadata_is_configurable() -> None:
    cascade, ledger = _capped("2")
    model = CascadeChatModel(cascade=cascade, budget_key_metadata="user")
    model.invoke("q", config={"metadata": {"user": "u7", "tenant_id": "ignored"}})
    assert ledger.spent("key:capped:u7|total") > 0


def test_budget_stop_returns_the_best_answer_so_far() -> None:
    cascade = two_tiers(budget=Budget(per_request=Decimal("0.001")))
    out = CascadeChatModel(cascade=cascade).invoke("q")
    assert out.content == "I don't know"
    trace = out.response_metadata["cascade"]
    assert (trace["reason"], trace["accepted"]) == ("budget", False)
    assert trace["attempts"][-1]["decision"] == "stopped"


def test_from_policy(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "name: yaml-front\n"
        "tiers:\n"
        "  - {name: cheap, provider: scripted, model: c, free: true, options: {answers: ['?']},"
        " scorer: {kind: regex, pattern: Paris}, threshold: 0.5}\n"
        "  - {name: strong, provider: scripted, model: s, free: true, options: {answers: [x]}}\n"
    )
    model = CascadeChatModel.from_policy(
        policy, providers={"strong": ScriptedChatModel(model="s", script=["Paris"])}
    )
    out = model.invoke("q")
    assert out.content == "Paris"
    assert out.response_metadata["cascade"]["policy"] == "yaml-front"


def test_explain_reads_the_trace() -> None:
    from langchain_core.messages import AIMessage

    from cascade.langchain import explain

    text = explain(CascadeChatModel(cascade=two_tiers()).invoke("q"))
    assert text.splitlines()[0] == "policy 'demo': accepted at tier 'strong' (strong-1)"
    assert "1. cheap [cheap-1] escalated: score 0.000 < 0.500" in text
    assert "total: $0.000105" in text
    assert "not a cascade answer" in explain(AIMessage("hi"))


def test_stop_sequences_reach_langchain_tiers() -> None:
    cheap = ScriptedChatModel(model="cheap-1", script=["Paris"])
    CascadeChatModel(cascade=Cascade([tier("only", cheap)])).invoke("q", stop=["END"])
    assert cheap.calls[0][1]["stop"] == ["END"]


def test_the_fast_trace_equals_to_dict() -> None:
    """``response_metadata["cascade"]`` is built on the hot path without asdict: same content."""
    from cascade.langchain import trace

    cheap = ScriptedChatModel(model="cheap-1", script=[call("get_weather", {"city": "Paris"}, "c1")])
    strong = ScriptedChatModel(model="strong-1", script=["Paris"])
    c = Cascade([tier("cheap", cheap, RegexScorer("Paris"), 0.5), tier("strong", strong, price=STRONG)])
    for result in (c.run("q"), two_tiers().run("What is the capital of France?")):
        assert trace(result) == result.to_dict()
        assert json.loads(json.dumps(trace(result))) == trace(result)


def _runs_in_a_chain(model: CascadeChatModel) -> tuple[list[dict[str, Any]], Any]:
    from langchain_core.runnables import RunnableLambda

    recorder = Recorder()
    chain = RunnableLambda(lambda q: q) | model
    out = chain.invoke(
        "capital?", config={"callbacks": [recorder], "tags": ["mine"], "metadata": {"who": "me"}}
    )
    return recorder.starts, out


def test_the_fast_invoke_reports_the_run_as_the_full_path_does() -> None:
    """``invoke`` skips ``BaseChatModel.generate`` unless a cache, rate limiter, v1 output or live
    streaming needs it; the run it reports (nesting, tags, metadata, output) is the same."""
    from langchain_core.rate_limiters import InMemoryRateLimiter

    fast = CascadeChatModel(cascade=two_tiers())
    full = CascadeChatModel(cascade=two_tiers(), rate_limiter=InMemoryRateLimiter(requests_per_second=1e6))
    assert fast._lean() and not full._lean()
    (fast_starts, fast_out), (full_starts, full_out) = _runs_in_a_chain(fast), _runs_in_a_chain(full)

    def shape(starts: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        ids = {s["run_id"]: i for i, s in enumerate(starts)}
        return [(s["name"], ids.get(s["parent_run_id"]), sorted(s["tags"]), s["metadata"]) for s in starts]

    assert shape(fast_starts) == shape(full_starts)
    assert fast_starts[0]["parent_run_id"] is not None  # nested under the chain, as on the full path
    assert fast_out.usage_metadata == full_out.usage_metadata
    assert fast_out.content == full_out.content == "Paris"


def test_with_no_listener_invoke_returns_what_a_listened_run_returns() -> None:
    """No handler anywhere: no run is reported (nobody would see it), the answer is the same."""
    quiet = CascadeChatModel(cascade=two_tiers())
    heard = CascadeChatModel(cascade=two_tiers())
    recorder = Recorder()
    out_quiet = quiet.invoke("capital?")
    out_heard = heard.invoke("capital?", config={"callbacks": [recorder]})
    assert recorder.starts  # the listened run was reported (the other path)
    assert out_quiet.content == out_heard.content == "Paris"
    assert out_quiet.usage_metadata == out_heard.usage_metadata
    meta_q, meta_h = dict(out_quiet.response_metadata), dict(out_heard.response_metadata)
    for meta in (meta_q, meta_h):
        for a in meta["cascade"]["attempts"]:
            a.pop("latency_s", None)
        meta["cascade"].pop("latency_s", None)
    assert meta_q == meta_h
    assert out_quiet.id is not None and out_quiet.id.startswith("lc_run-")


async def test_with_no_listener_ainvoke_returns_what_a_listened_run_returns() -> None:
    quiet = CascadeChatModel(cascade=two_tiers())
    heard = CascadeChatModel(cascade=two_tiers())
    out_quiet = await quiet.ainvoke("capital?")
    out_heard = await heard.ainvoke("capital?", config={"callbacks": [UsageMetadataCallbackHandler()]})
    assert out_quiet.content == out_heard.content == "Paris"
    assert out_quiet.usage_metadata == out_heard.usage_metadata
    assert out_quiet.response_metadata["cascade"]["cost"] == out_heard.response_metadata["cascade"]["cost"]


def test_with_no_listener_a_tier_model_with_its_own_callbacks_still_gets_the_tier_config() -> None:
    """The unlistened fast path drops the tier runs' tags/metadata only when nobody can see them."""
    recorder = Recorder()
    cheap = ScriptedChatModel(model="cheap-1", script=["Paris"], callbacks=[recorder])
    out = CascadeChatModel(cascade=Cascade([tier("only", cheap)], name="own")).invoke("capital?")
    assert out.content == "Paris"
    (start,) = recorder.starts
    assert start["metadata"]["cascade_tier"] == "only"
    assert "nostream" in start["tags"]


@pytest.mark.parametrize(
    "scenario",
    ["nothing", "config_callbacks", "own_callbacks", "verbose", "debug", "collect_runs", "tracing"],
)
def test_the_cheap_listener_check_never_misses_a_handler_configure_would_attach(scenario: str) -> None:
    """``invoke`` skips ``CallbackManager.configure`` only when the cheap check says nobody listens:
    it must say "maybe" wherever configure attaches a handler."""
    from contextlib import ExitStack

    from langchain_core.callbacks import BaseCallbackHandler, CallbackManager
    from langchain_core.globals import set_debug
    from langchain_core.tracers.context import collect_runs, tracing_v2_callback_var

    from cascade.langchain import _lc

    assert _lc is not None and _lc.nobody_listens is not None
    config_callbacks: list[BaseCallbackHandler] | None = (
        [Recorder()] if scenario == "config_callbacks" else None
    )
    own: list[BaseCallbackHandler] | None = [Recorder()] if scenario == "own_callbacks" else None
    verbose = scenario == "verbose"
    with ExitStack() as stack:
        if scenario == "debug":
            set_debug(True)
            stack.callback(set_debug, False)
        if scenario == "collect_runs":
            stack.enter_context(collect_runs())
        if scenario == "tracing":  # as tracing_v2_enabled() does, without a LangSmith client (offline)
            token = tracing_v2_callback_var.set(Recorder())  # type: ignore[arg-type]
            stack.callback(tracing_v2_callback_var.reset, token)
        manager = CallbackManager.configure(config_callbacks, own, verbose)
        attached = bool(manager.handlers or manager.inheritable_handlers)
        assert _lc.nobody_listens(config_callbacks, own, verbose) is (not attached)
    assert attached is (scenario != "nothing")


def test_collect_runs_sees_the_cascade_run() -> None:
    from langchain_core.tracers.context import collect_runs

    with collect_runs() as collected:
        CascadeChatModel(cascade=two_tiers()).invoke("capital?")
    assert [r.name for r in collected.traced_runs] == ["CascadeChatModel"]
    assert {c.name for c in collected.traced_runs[0].child_runs} == {"cheap", "strong"}
