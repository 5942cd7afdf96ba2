"""CascadeChatModel inside ``langchain.agents.create_agent`` with two tools over several turns."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool

from cascade import Budget, BudgetExceededError, Cap, Cascade, Price
from cascade.budget.memory import MemoryLedger
from cascade.langchain import CascadeChatModel, ScriptedChatModel
from cascade.providers.langchain import LangChainProvider
from cascade.scorers.tools import ToolArgsScorer
from tests.langchain.support import STRONG, Recorder, call, tier


@tool
def get_weather(city: str) -> str:
    """Current weather in a city, in Celsius."""
    return f"{city}: 20C, sunny"


@tool
def convert(celsius: float, unit: str) -> str:
    """Convert a Celsius temperature to F or K."""
    return f"{celsius * 9 / 5 + 32:.0f}F" if unit == "F" else f"{celsius + 273.15:.2f}K"


QUESTION: Any = {"messages": [("user", "What is the weather in Paris, in Fahrenheit?")]}
FINAL = "It is 68F and sunny in Paris."


def models() -> tuple[ScriptedChatModel, ScriptedChatModel]:
    cheap = ScriptedChatModel(
        model="cheap-1",
        script=[
            call("get_weather", {"town": "Paris"}, "c1"),  # wrong argument name: rejected
            call("convert", {"celsius": 20, "unit": "F"}, "c2"),
            FINAL,
        ],
    )
    strong = ScriptedChatModel(model="strong-1", script=[call("get_weather", {"city": "Paris"}, "s1")])
    return cheap, strong


def agent_cascade(**kw: Any) -> tuple[Any, ScriptedChatModel, ScriptedChatModel]:
    cheap, strong = models()
    c = Cascade(
        [tier("cheap", cheap, ToolArgsScorer(), 1.0), tier("strong", strong, price=STRONG)],
        name="agent",
        **kw,
    )
    return c, cheap, strong


def check_conversation(messages: list[Any], cheap: ScriptedChatModel, strong: ScriptedChatModel) -> None:
    ai = [m for m in messages if isinstance(m, AIMessage)]
    tools = [m for m in messages if isinstance(m, ToolMessage)]
    assert [m.response_metadata["cascade"]["tier"] for m in ai] == ["strong", "cheap", "cheap"]
    assert ai[0].tool_calls[0]["args"] == {"city": "Paris"}  # the strong tier's call, not the rejected one
    assert [t.content for t in tools] == ["Paris: 20C, sunny", "68F"]
    assert ai[-1].content == FINAL
    first = ai[0].response_metadata["cascade"]["attempts"][0]
    assert first["decision"] == "escalated"
    assert "missing required property 'city'" in " ".join(first["score_detail"]["errors"])
    assert (len(cheap.calls), len(strong.calls)) == (3, 1)
    for model in (cheap, strong):  # the tools were bound on every tier
        assert {t["function"]["name"] for t in model.calls[0][1]["tools"]} == {"get_weather", "convert"}


def test_agent_with_two_tools_over_several_turns() -> None:
    c, cheap, strong = agent_cascade()
    recorder = Recorder()
    agent = create_agent(CascadeChatModel(cascade=c), tools=[get_weather, convert])
    out = agent.invoke(QUESTION, config={"callbacks": [recorder], "metadata": {"session": "s-1"}})
    check_conversation(out["messages"], cheap, strong)
    # every tier call nested under one of the three cascade runs, with the agent's metadata
    tops = {r["run_id"] for r in recorder.cascade_runs()}
    tier_runs = [s for s in recorder.starts if "cascade_tier" in s["metadata"]]
    assert len(tops) == 3
    assert len(tier_runs) == 4
    assert all(r["parent_run_id"] in tops and r["metadata"]["session"] == "s-1" for r in tier_runs)


async def test_agent_async() -> None:
    c, cheap, strong = agent_cascade()
    agent = create_agent(CascadeChatModel(cascade=c), tools=[get_weather, convert])
    out = await agent.ainvoke(QUESTION)
    check_conversation(out["messages"], cheap, strong)


@pytest.mark.parametrize("live", [False, True])
def test_rejected_candidates_never_reach_the_message_stream(live: bool) -> None:
    c, _, _ = agent_cascade()
    agent = create_agent(CascadeChatModel(cascade=c, stream_final_tier=live), tools=[get_weather, convert])
    streamed: list[Any] = list(agent.stream(QUESTION, stream_mode="messages"))
    calls = [tc for chunk, _ in streamed for tc in getattr(chunk, "tool_calls", [])]
    assert {"name": "get_weather", "args": {"town": "Paris"}} not in [
        {"name": t["name"], "args": t["args"]} for t in calls
    ]
    assert [t["args"] for t in calls if t["name"] == "get_weather"] == [{"city": "Paris"}]
    assert all(meta.get("cascade_tier") is None for _, meta in streamed)  # no tier run streams
    text = "".join(chunk.text for chunk, meta in streamed if meta["langgraph_node"] == "model")
    assert text == FINAL


def test_budget_stop_inside_an_agent() -> None:
    ledger = MemoryLedger()
    cheap = ScriptedChatModel(
        model="cheap-1",
        script=[call("get_weather", {"city": "Paris"}), call("convert", {"celsius": 20, "unit": "F"}), FINAL],
    )
    # 10 output tokens at $1000/M: each call costs (and reserves) exactly $0.01; a tenant may spend $0.025
    c = Cascade(
        [tier("cheap", LangChainProvider(cheap, max_tokens=10), price=Price(Decimal(0), Decimal(1000)))],
        name="metered",
        budget=Budget(caps=(Cap(Decimal("0.025"), "total", "key"),), ledger=ledger),
    )
    agent = create_agent(CascadeChatModel(cascade=c), tools=[get_weather, convert])
    with pytest.raises(BudgetExceededError) as info:
        agent.invoke(QUESTION, config={"metadata": {"tenant_id": "acme"}})
    assert info.value.attempts[-1].decision == "stopped"
    assert ledger.spent("key:metered:acme|total") == Decimal("0.02")  # two turns paid, the third refused
    assert len(cheap.calls) == 2
    out = agent.invoke(
        QUESTION, config={"metadata": {"tenant_id": "globex"}}
    )  # another tenant is not affected
    assert out["messages"][-1].content == FINAL


@pytest.mark.parametrize("live", [False, True])
async def test_async_agent_stream_nests_every_tier_call(live: bool) -> None:
    c, _, _ = agent_cascade()
    recorder = Recorder()
    agent = create_agent(CascadeChatModel(cascade=c, stream_final_tier=live), tools=[get_weather, convert])
    streamed: list[Any] = [
        x async for x in agent.astream(QUESTION, stream_mode="messages", config={"callbacks": [recorder]})
    ]
    assert "".join(chunk.text for chunk, meta in streamed if meta["langgraph_node"] == "model") == FINAL
    tops = {r["run_id"] for r in recorder.cascade_runs()}
    tier_runs = [s for s in recorder.starts if "cascade_tier" in s["metadata"]]
    assert len(tier_runs) == 4
    assert all(r["parent_run_id"] in tops for r in tier_runs)
