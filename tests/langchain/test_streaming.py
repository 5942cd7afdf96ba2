"""Streaming: off by default (one chunk, tier calls nested); opt-in live streaming of the last tier."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import UsageMetadataCallbackHandler
from langchain_core.messages import AIMessageChunk

from cascade import Cascade, TransientProviderError
from cascade.langchain import CascadeChatModel, ScriptedChatModel
from cascade.retry import RetryPolicy
from cascade.scorers.basic import RegexScorer
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
