"""Hedged escalation through the LangChain front (issue 22 §1): ``invoke``, ``ainvoke``, ``stream``
and ``astream`` go through the engine's drivers, so a tier with ``hedge`` starts the next tier in
parallel there too, and no backup thread or task outlives the call."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessageChunk

from cascade import Cascade
from cascade.langchain import CascadeChatModel
from tests.engine.test_hedge import calls, chained, hedged


def _invoke(model: CascadeChatModel, how: str) -> Any:
    if how == "invoke":
        return model.invoke("q")
    if how == "ainvoke":
        return asyncio.run(model.ainvoke("q"))
    if how == "stream":
        chunks: list[BaseMessageChunk] = list(model.stream("q"))
    else:

        async def collect() -> list[BaseMessageChunk]:
            return [c async for c in model.astream("q")]

        chunks = asyncio.run(collect())
    total = chunks[0]
    for c in chunks[1:]:
        total = total + c
    return total


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream", "astream"])
def test_the_langchain_front_hedges(how: str) -> None:
    tiers = hedged(0.1, cheap_latency=0.5, strong_latency=0.5, score=0.1)
    out = _invoke(CascadeChatModel(cascade=Cascade(tiers)), how)
    assert isinstance(out, AIMessage | BaseMessageChunk) and out.content == "s"
    trace = out.response_metadata["cascade"]
    cheap, strong = trace["attempts"]
    assert (cheap["decision"], strong["decision"]) == ("escalated", "accepted")
    assert "'strong' started at" in cheap["hedge"]
    assert strong["hedge"].startswith("backup: in flight since")
    assert calls(tiers[1]) == 1  # the backup's call, joined: not a second one
    assert [t for t in threading.enumerate() if t.name == "cascade-hedge"] == []


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream", "astream"])
def test_the_langchain_front_chains_hedges(how: str) -> None:
    tiers = chained((0.4, 0.4, 0.05))  # t2, a backup, hedges to t3 in turn
    out = _invoke(CascadeChatModel(cascade=Cascade(tiers)), how)
    assert out.content == "a3"
    t1, t2, t3 = out.response_metadata["cascade"]["attempts"]
    assert "'t3' started at" in t2["hedge"] and t3["hedge"].startswith("backup: in flight since")
    assert [calls(t) for t in tiers] == [1, 1, 1]
    assert [t for t in threading.enumerate() if t.name == "cascade-hedge"] == []
