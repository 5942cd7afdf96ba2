"""The cascade loop: acceptance, escalation, thresholds, exhaustion, errors, retries, sync = async."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from cascade import (
    AllTiersFailedError,
    Cascade,
    CascadeExhaustedError,
    InvalidRequestError,
    PermanentProviderError,
    RateLimitError,
    RetryPolicy,
    Tier,
    TransientProviderError,
)
from cascade.testing import FixedScorer, ScriptedProvider
from cascade.types import CascadeResult
from tests.helpers import PRICE, cost_of, three, tier


def test_first_tier_accepted_when_score_clears_threshold() -> None:
    result = three(scores=(0.9, 0.9)).run("q")
    assert (result.answer, result.tier, result.accepted, result.reason) == ("s", "small", True, "accepted")
    assert [a.decision for a in result.attempts] == ["accepted"]
    assert result.cost == cost_of(1)


def test_escalates_until_a_tier_accepts() -> None:
    result = three(scores=(0.1, 0.7)).run("q")
    assert result.tier == "medium"
    assert [(a.tier, a.decision) for a in result.attempts] == [("small", "escalated"), ("medium", "accepted")]
    assert result.attempts[0].reason == "score 0.100 < 0.500"
    assert result.cost == cost_of(2)


def test_last_tier_without_scorer_is_accepted() -> None:
    result = three().run("q")
    assert (result.tier, result.answer, result.accepted) == ("large", "l", True)
    assert result.attempts[-1].reason == "last tier, no scorer"
    assert len(result.attempts) == 3


@pytest.mark.parametrize(("score", "accepted"), [(0.5, True), (0.4999999, False), (0.5000001, True)])
def test_threshold_boundary_is_inclusive(score: float, accepted: bool) -> None:
    result = three(scores=(score, 0.0)).run("q")
    assert (result.tier == "small") is accepted


def test_scorer_cost_counts() -> None:
    c = Cascade(
        [
            tier("a", "x", None, None) if False else tier("a", "x"),
        ]
    )
    assert c.run("q").cost == cost_of(1)
    scored = Cascade(
        [
            tier("a", "x", 0.9, 0.5),
            tier("b", "y"),
        ]
    )
    scored.tiers[0].scorer.cost = Decimal("0.001")  # type: ignore[union-attr]
    result = scored.run("q")
    assert result.attempts[0].scorer_cost == Decimal("0.001")
    assert result.cost == cost_of(1) + Decimal("0.001")


def _low_last(on_exhausted: str) -> Cascade:
    return Cascade(
        [
            tier("small", "s", 0.4, 0.5),
            tier("medium", "m", 0.3, 0.5),
            tier("large", "l", 0.2, 0.5),
        ],
        on_exhausted=on_exhausted,  # type: ignore[arg-type]
    )


def test_exhausted_return_best_picks_highest_score() -> None:
    result = _low_last("return_best").run("q")
    assert (result.answer, result.accepted, result.reason) == ("s", False, "exhausted")
    assert [a.decision for a in result.attempts] == ["escalated", "escalated", "rejected"]


def test_exhausted_return_last() -> None:
    result = _low_last("return_last").run("q")
    assert (result.answer, result.tier, result.reason) == ("l", "large", "exhausted")


def test_exhausted_raise_carries_attempts() -> None:
    with pytest.raises(CascadeExhaustedError) as info:
        _low_last("raise").run("q")
    assert [a.tier for a in info.value.attempts] == ["small", "medium", "large"]


def test_return_best_tie_goes_to_later_tier() -> None:
    c = Cascade([tier("a", "x", 0.3, 0.5), tier("b", "y", 0.3, 0.5)], on_exhausted="return_best")
    assert c.run("q").answer == "y"


def test_error_escalates_with_reason_error() -> None:
    c = Cascade([tier("a", PermanentProviderError("bad request", status_code=400), 0.9, 0.5), tier("b", "y")])
    result = c.run("q")
    assert result.answer == "y"
    first = result.attempts[0]
    assert (first.decision, first.reason) == ("escalated", "error: PermanentProviderError")
    assert (
        first.error == "provider: PermanentProviderError (message withheld: include_text is off) | status 400"
    )
    assert first.cost == 0
    texts = Cascade(
        [tier("a", PermanentProviderError("bad request", status_code=400), 0.9, 0.5), tier("b", "y")],
        include_text=True,
    )
    assert texts.run("q").attempts[0].error == "bad request | status 400"  # messages shown when texts are


def test_every_tier_failing_raises_with_all_attempts() -> None:
    c = Cascade(
        [
            tier("a", PermanentProviderError("a down"), 0.9, 0.5),
            tier(
                "b",
                TransientProviderError("b down"),
                retry=RetryPolicy(attempts=2, initial=0, max_wait=0, jitter=0),
            ),
        ],
        include_text=True,
    )
    with pytest.raises(AllTiersFailedError) as info:
        c.run("q")
    attempts = info.value.attempts
    assert [a.decision for a in attempts] == ["escalated", "failed"]
    assert attempts[1].retries == 1
    assert "a down" in str(info.value) and "b down" in str(info.value)


def test_failed_last_tier_falls_back_to_best_earlier_answer() -> None:
    c = Cascade([tier("a", "x", 0.2, 0.5), tier("b", PermanentProviderError("gone"))])
    result = c.run("q")
    assert (result.answer, result.accepted, result.reason) == ("x", False, "exhausted")


def test_transient_errors_are_retried_then_succeed() -> None:
    p = ScriptedProvider([RateLimitError("slow down", retry_after=0), TransientProviderError("503"), "fine"])
    c = Cascade([tier("a", p)])
    result = c.run("q")
    assert result.answer == "fine"
    assert result.attempts[0].retries == 2
    assert len(p.calls) == 3


def test_retry_attempts_cap_the_calls() -> None:
    p = ScriptedProvider(TransientProviderError("down"))
    c = Cascade(
        [
            tier("a", p, 0.9, 0.5, retry=RetryPolicy(attempts=4, initial=0, max_wait=0, jitter=0)),
            tier("b", "y"),
        ]
    )
    result = c.run("q")
    assert len(p.calls) == 4
    assert result.attempts[0].retries == 3 and result.answer == "y"


def test_permanent_errors_are_not_retried() -> None:
    p = ScriptedProvider(PermanentProviderError("no"))
    c = Cascade([tier("a", p, 0.9, 0.5), tier("b", "y")])
    c.run("q")
    assert len(p.calls) == 1


def test_retry_after_is_honoured_and_capped() -> None:
    from cascade.retry import call_with_retry

    waits: list[float] = []
    errors = [RateLimitError("r", retry_after=120.0), RateLimitError("r", retry_after=0.25)]

    def fn() -> str:
        if errors:
            raise errors.pop(0)
        return "ok"

    policy = RetryPolicy(attempts=3, initial=0, max_wait=0, jitter=0, max_retry_after=5.0)
    assert call_with_retry(fn, policy, sleep=waits.append) == ("ok", 2)
    assert waits == [5.0, 0.25]


def test_timeout_escalates() -> None:
    slow = ScriptedProvider("late", latency=0.05, timeout=0.01)
    c = Cascade([tier("a", slow, 0.9, 0.5, retry=RetryPolicy(attempts=1)), tier("b", "y")])
    result = c.run("q")
    assert result.attempts[0].reason == "error: ProviderTimeoutError"
    assert result.answer == "y"


def test_scorer_error_escalates_with_reason() -> None:
    from cascade.errors import ScorerError

    def boom(*_: object) -> float:
        raise ScorerError("judge returned no verdict")

    c = Cascade([tier("a", "x"), tier("b", "y")][:1])
    c = Cascade(
        [
            tier("a", "x", 0.0, 0.5),
            tier("b", "y"),
        ]
    )
    c.tiers[0].scorer.value = boom  # type: ignore[union-attr]
    result = c.run("q")
    assert result.answer == "y"
    assert result.attempts[0].reason.startswith("scorer error: ScorerError: judge returned no verdict")


def test_self_consistency_style_chosen_sample_and_samples_drawn() -> None:
    provider = ScriptedProvider([["7", "8", "8"]])
    scorer = FixedScorer(0.9, samples=3)
    scorer_score = scorer.score

    def pick_second(request, completion):  # type: ignore[no-untyped-def]
        s = scorer_score(request, completion)
        return type(s)(s.value, chosen=1)

    scorer.score = pick_second  # type: ignore[method-assign]
    from cascade import Tier

    c = Cascade([Tier("a", provider, PRICE, scorer, 0.5), tier("b", "y")])
    result = c.run("q")
    assert provider.calls[0][1] == 3
    assert result.answer == "8" and result.attempts[0].samples == 3


def test_empty_prompt_is_rejected() -> None:
    with pytest.raises(InvalidRequestError):
        three().run("   ")
    with pytest.raises(InvalidRequestError):
        three().run([])


def test_chat_messages_are_accepted() -> None:
    c = Cascade([tier("a", "x")])
    result = c.run([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
    request = c.tiers[0].provider.calls[0][0]  # type: ignore[attr-defined]
    assert [m.role for m in request.messages] == ["system", "user"] and result.answer == "x"


def _trace(result: CascadeResult) -> tuple[Any, ...]:
    return [
        (a.tier, a.decision, a.reason, a.score, a.samples, a.cost, a.scorer_cost, a.retries, a.error)
        for a in result.attempts
    ], (result.answer, result.tier, result.accepted, result.reason, result.cost)


@pytest.mark.parametrize(
    "scores",
    [(0.9, 0.9), (0.1, 0.9), (0.1, 0.1)],
)
def test_sync_and_async_give_identical_results(scores: tuple[float, float]) -> None:
    sync = three(scores=scores).run("q")
    async_ = asyncio.run(three(scores=scores).arun("q"))
    assert _trace(sync) == _trace(async_)


def test_sync_and_async_identical_with_errors_and_retries() -> None:
    def make() -> Cascade:
        return Cascade(
            [
                tier("a", [TransientProviderError("x"), "a1"], 0.2, 0.5),
                tier("b", PermanentProviderError("b"), 0.9, 0.5),
                tier("c", "c1"),
            ]
        )

    assert _trace(make().run("q")) == _trace(asyncio.run(make().arun("q")))


def test_batch_and_abatch_keep_order_and_capture_errors() -> None:
    def answer(request, n):  # type: ignore[no-untyped-def]
        if request.prompt == "bad":
            return PermanentProviderError("no")
        return request.prompt.upper()

    c = Cascade([tier("a", ScriptedProvider(answer))])
    prompts = ["a", "b", "bad", "c"]
    sync = c.batch(prompts, concurrency=3, return_exceptions=True)
    asy = asyncio.run(c.abatch(prompts, concurrency=2, return_exceptions=True))
    for out in (sync, asy):
        assert [getattr(r, "answer", None) for r in out] == ["A", "B", None, "C"]
        assert isinstance(out[2], AllTiersFailedError)
    with pytest.raises(AllTiersFailedError):
        c.batch(prompts)


def test_result_serialises_and_explains() -> None:
    import json

    result = three(scores=(0.1, 0.9)).run("q")
    data = json.loads(result.to_json())
    assert data["tier"] == "medium" and data["cost"] == str(result.cost)
    assert [a["decision"] for a in data["attempts"]] == ["escalated", "accepted"]
    assert data["attempts"][0]["total_cost"] == str(result.attempts[0].total_cost)
    text = result.explain()
    assert "small" in text and "escalated" in text and "escalated: score 0.100 < 0.500 | samples 1" in text


def test_cascade_rejects_unscored_middle_tier() -> None:
    with pytest.raises(ValueError, match="needs a scorer"):
        Cascade([tier("a", "x"), tier("b", "y")])


class _Closing(ScriptedProvider):
    def __init__(self) -> None:
        super().__init__("ok")
        self.closed: list[str] = []

    def close(self) -> None:
        self.closed.append("sync")

    async def aclose(self) -> None:
        self.closed.append("async")


def test_close_releases_every_providers_clients() -> None:
    a, b = _Closing(), _Closing()
    c = Cascade(
        [
            Tier("a", a, PRICE, FixedScorer(0.0), 0.5),
            Tier("b", b, PRICE),
        ]
    )
    with c:
        assert c.run("q").tier == "b"
    assert a.closed == b.closed == ["sync"]

    async def use() -> None:
        async with c:
            await c.arun("q")

    asyncio.run(use())
    assert a.closed == ["sync", "async", "sync"]
