"""Streaming: off by default (one chunk, tier calls nested); opt-in live streaming of the last tier."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncGenerator, Generator
from dataclasses import replace
from decimal import Decimal
from typing import Any, cast

import pytest
from langchain_core.callbacks import UsageMetadataCallbackHandler
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langchain_core.outputs import ChatGenerationChunk

from cascade import Budget, Cap, Cascade, Price, TransientProviderError
from cascade.budget.memory import MemoryLedger
from cascade.engine.reuse import ReusingProvider
from cascade.langchain import CascadeChatModel, ScriptedChatModel, explain
from cascade.request import Request
from cascade.retry import RetryPolicy
from cascade.scorers.basic import RegexScorer
from cascade.testing import ScriptedProvider
from cascade.types import Completion, Score
from tests.langchain.support import STRONG, Recorder, tier

ANSWER = "The capital of France is Paris."


def cascade(cheap_says: str = "no idea", strong_script: list[Any] | None = None) -> Cascade:
    cheap = ScriptedChatModel(model="cheap-1", script=[cheap_says])
    strong = ScriptedChatModel(model="strong-1", script=strong_script or [ANSWER], output_tokens=7)
    return Cascade(
        [tier("cheap", cheap, RegexScorer("Paris"), 0.5), tier("strong", strong, price=STRONG)],
        name="streamy",
    )


def merged(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    out = chunks[0]
    for c in chunks[1:]:
        out = out + c
    return out


def check_nesting(recorder: Recorder) -> None:
    (top,) = recorder.cascade_runs()
    tiers = [s for s in recorder.starts if "cascade_tier" in s["metadata"]]
    assert [t["name"] for t in tiers] == ["cheap", "strong"]
    assert all(t["parent_run_id"] == top["run_id"] for t in tiers)
    assert all("nostream" in t["tags"] and "mine" in t["tags"] for t in tiers)


def test_off_by_default_one_chunk_and_nested_tier_runs() -> None:
    model = CascadeChatModel(cascade=cascade())
    recorder = Recorder()
    chunks = list(model.stream("capital?", config={"callbacks": [recorder], "tags": ["mine"]}))
    assert len(chunks) == 1
    assert chunks[0].content == ANSWER
    assert chunks[0].response_metadata["cascade"]["tier"] == "strong"
    check_nesting(recorder)


def test_final_tier_streams_live() -> None:
    model = CascadeChatModel(cascade=cascade(), stream_final_tier=True)
    recorder = Recorder()
    chunks: list[AIMessageChunk] = []
    strong_ended_before_first_chunk = None
    for chunk in model.stream("capital?", config={"callbacks": [recorder], "tags": ["mine"]}):
        if not chunks:
            (strong_run,) = recorder.runs("strong")
            strong_ended_before_first_chunk = strong_run["run_id"] in recorder.ends
        chunks.append(chunk)
    assert strong_ended_before_first_chunk is False  # the first words arrived while the tier was running
    assert len([c for c in chunks if c.content]) == len(ANSWER.split(" "))
    final = merged(chunks)
    assert final.content == ANSWER
    assert final.response_metadata["cascade"]["tier"] == "strong"
    # everything the request spent: the rejected cheap call and the streamed one
    assert final.usage_metadata == {"input_tokens": 20, "output_tokens": 17, "total_tokens": 37}
    check_nesting(recorder)
    # nothing from the rejected cheap answer reached the caller's token stream
    assert "no idea" not in "".join(recorder.tokens)


def test_accepted_early_tier_comes_as_one_chunk() -> None:
    model = CascadeChatModel(cascade=cascade(cheap_says="Paris"), stream_final_tier=True)
    chunks = list(model.stream("capital?"))
    assert [c.content for c in chunks] == ["Paris"]
    assert chunks[0].response_metadata["cascade"]["tier"] == "cheap"


async def test_final_tier_streams_live_async() -> None:
    model = CascadeChatModel(cascade=cascade(), stream_final_tier=True)
    recorder = Recorder()
    chunks = [c async for c in model.astream("capital?", config={"callbacks": [recorder], "tags": ["mine"]})]
    assert len(chunks) > 2
    assert merged(chunks).content == ANSWER
    check_nesting(recorder)
    default = CascadeChatModel(cascade=cascade())
    assert len([c async for c in default.astream("capital?")]) == 1


def test_usage_counted_once_while_streaming() -> None:
    handler = UsageMetadataCallbackHandler()
    model = CascadeChatModel(cascade=cascade(), stream_final_tier=True)
    list(model.stream("capital?", config={"callbacks": [handler]}))
    assert handler.usage_metadata == {
        "cheap-1": {"input_tokens": 10, "output_tokens": 10, "total_tokens": 20},
        "strong-1": {"input_tokens": 10, "output_tokens": 7, "total_tokens": 17},
    }


def test_error_before_the_first_chunk_falls_back_to_a_retried_call() -> None:
    c = cascade(strong_script=[TransientProviderError("overloaded"), ANSWER])
    strong_tier = c.tiers[-1]
    assert strong_tier.retry == RetryPolicy()
    chunks = list(CascadeChatModel(cascade=c, stream_final_tier=True).stream("capital?"))
    assert merged(chunks).content == ANSWER
    assert merged(chunks).response_metadata["cascade"]["tier"] == "strong"


def test_last_tier_with_a_scorer_is_not_streamed_live() -> None:
    cheap = ScriptedChatModel(model="cheap-1", script=["no"])
    strong = ScriptedChatModel(model="strong-1", script=["also no"])
    c = Cascade(
        [tier("cheap", cheap, RegexScorer("Paris"), 0.5), tier("strong", strong, RegexScorer("Paris"), 0.5)],
        on_exhausted="return_best",
    )
    chunks = list(CascadeChatModel(cascade=c, stream_final_tier=True).stream("q"))
    assert len(chunks) == 1  # the best answer may be an earlier tier's: it cannot be streamed before scoring
    assert chunks[0].response_metadata["cascade"]["reason"] == "exhausted"


async def test_event_listeners_never_see_a_rejected_candidates_tokens() -> None:
    """``astream_events`` makes child chat models stream; tier calls stay whole-answer calls."""
    model = CascadeChatModel(cascade=cascade())
    streamed: list[str] = []
    ended: list[str] = []
    async for event in model.astream_events("Capital of France?", version="v2"):
        if event["event"] == "on_chat_model_stream":
            streamed.append(event["data"]["chunk"].text)
        elif event["event"] == "on_chat_model_end":
            ended.append(event["name"])
    assert not any("no idea" in text for text in streamed)
    assert "".join(streamed) in ("", ANSWER)
    assert {"cheap", "strong"} <= set(ended)  # the tier runs still show up, whole


class _ThreadLedger(MemoryLedger):
    """A memory ledger that records the thread of every settle (and, like a third-party sync-only
    ledger, has no native async settle and no non-blocking try_reserve/try_settle)."""

    asettle = None  # type: ignore[assignment]
    try_reserve = None  # type: ignore[assignment]
    try_settle = None  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.settled_in: list[int] = []

    def settle(self, hold_id: str, actual: Decimal) -> None:
        self.settled_in.append(threading.get_ident())
        super().settle(hold_id, actual)


BUCKET = "policy:capped|total"


def _capped_streamer(ledger: MemoryLedger) -> Cascade:
    strong = ScriptedChatModel(model="strong-1", script=[ANSWER], output_tokens=7)
    only = tier("only", strong, price=Price(Decimal(0), Decimal(1000)))
    budget = Budget(caps=(Cap(Decimal(100), "total"),), ledger=ledger)
    return Cascade([only], name="capped", budget=budget)


async def test_an_abandoned_async_stream_settles_its_hold_off_the_event_loop() -> None:
    ledger = _ThreadLedger()
    model = CascadeChatModel(cascade=_capped_streamer(ledger), stream_final_tier=True)
    stream = cast(AsyncGenerator[ChatGenerationChunk, None], model._astream([HumanMessage("capital?")]))
    first = await anext(stream)
    assert first.message.content  # the live tier is mid-answer, its hold open
    assert ledger.held(BUCKET) > 0
    await stream.aclose()  # the consumer walks away
    assert ledger.held(BUCKET) == 0
    assert ledger.spent(BUCKET) > 0  # charged at the worst case: never undercounted
    assert ledger.settled_in and threading.get_ident() not in ledger.settled_in  # not on the event loop


def test_an_abandoned_stream_settles_its_hold() -> None:
    ledger = MemoryLedger()
    model = CascadeChatModel(cascade=_capped_streamer(ledger), stream_final_tier=True)
    stream = cast(Generator[AIMessageChunk, None, None], model.stream("capital?"))
    next(stream)
    stream.close()
    assert ledger.held(BUCKET) == 0
    assert ledger.spent(BUCKET) > 0


class _AsksStrong:
    """A scorer that consults the strong model (through the run's sample cache) and rejects."""

    samples = 1

    def __init__(self, strong: ReusingProvider) -> None:
        self.strong = strong

    def score(self, request: Request, completion: Completion) -> Score:
        self.strong.complete(request, 1)
        return Score(0.0)

    async def ascore(self, request: Request, completion: Completion) -> Score:
        await self.strong.acomplete(request, 1)
        return Score(0.0)

    def max_cost(self, request: Request, max_output_tokens: int) -> Decimal:
        return Decimal(0)


def _strong_consulted_first() -> tuple[Cascade, ScriptedChatModel]:
    cheap = ScriptedChatModel(model="cheap-1", script=["no idea"])
    strong = ScriptedChatModel(model="strong-1", script=[ANSWER], output_tokens=7)
    strong_tier = replace(tier("strong", strong, price=STRONG), call_key="strong-key")
    judge = _AsksStrong(ReusingProvider(strong_tier.provider, "strong-key"))
    cheap_tier = tier("cheap", cheap, judge, 0.5)  # type: ignore[arg-type]
    return Cascade([cheap_tier, strong_tier], name="reuse"), strong


def test_a_live_last_tier_already_bought_in_the_run_is_reused_not_bought_again() -> None:
    c, strong = _strong_consulted_first()
    chunks = list(CascadeChatModel(cascade=c, stream_final_tier=True).stream("capital?"))
    final = merged(chunks)
    assert final.content == ANSWER
    assert len(strong.calls) == 1  # the judge's call; the last tier reused its answer
    strong_attempt = final.response_metadata["cascade"]["attempts"][1]
    assert (strong_attempt["reused_samples"], strong_attempt["cost"]) == (1, "0")
    assert "(1 reused)" in explain(AIMessage(final.content, response_metadata=final.response_metadata))


async def test_a_live_last_tier_already_bought_in_the_run_is_reused_async() -> None:
    c, strong = _strong_consulted_first()
    chunks = [c async for c in CascadeChatModel(cascade=c, stream_final_tier=True).astream("capital?")]
    assert merged(chunks).content == ANSWER
    assert len(strong.calls) == 1


def test_explain_shows_skips_and_reuse_as_cascade_result_explain_does() -> None:
    c, _ = _strong_consulted_first()
    skip = replace(c.tiers[0], skip=_Never(), skip_threshold=0.5)
    skipping = Cascade([skip, c.tiers[1]], name="skips")
    message = CascadeChatModel(cascade=skipping).invoke("capital?")
    text = explain(message)
    assert "1. cheap [cheap-1] skipped:" in text
    reused_c, _ = _strong_consulted_first()
    reused = CascadeChatModel(cascade=reused_c).invoke("capital?")
    assert "samples 1 (1 reused)" in explain(reused)
    # the text of CascadeResult.explain, latencies and the provider prefix aside
    again, _ = _strong_consulted_first()
    expected = re.sub(r"\d+ ms", "ms", again.run("capital?").explain()).replace("[langchain:", "[")
    assert re.sub(r"\d+ ms", "ms", explain(reused)) == expected


class _Never:
    """A skip estimator that predicts certain failure."""

    def predict(self, request: Request) -> float:
        return 0.0


class _Announcing(ScriptedProvider):
    """A scripted provider that says when a call has gone out (its ``started`` event)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started = asyncio.Event()

    async def acomplete(self, request: Request, n: int = 1) -> Completion:
        self.started.set()
        return await super().acomplete(request, n)


async def test_a_cancelled_async_stream_mid_call_settles_its_hold_off_the_event_loop() -> None:
    ledger = _ThreadLedger()
    slow = _Announcing(["Paris"], model="slow-1", latency=5.0)
    only = tier("only", slow, price=Price(Decimal(0), Decimal(1000)))
    budget = Budget(caps=(Cap(Decimal(100), "total"),), ledger=cast(MemoryLedger, ledger))
    model = CascadeChatModel(cascade=Cascade([only], name="capped", budget=budget), stream_final_tier=True)

    async def consume() -> None:
        async for _ in model._astream([HumanMessage("capital?")]):
            pass

    task = asyncio.create_task(consume())
    # until the call is in flight: a hold alone is not enough (cancelled before the call went out,
    # nothing was spent, which is right, and the check below would fail by a race)
    await asyncio.wait_for(slow.started.wait(), 10)
    assert ledger.held(BUCKET) > 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ledger.held(BUCKET) == 0 and ledger.spent(BUCKET) > 0
    assert ledger.settled_in and threading.get_ident() not in ledger.settled_in
