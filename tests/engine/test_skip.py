"""Ex-ante skip: a tier whose prompt-only estimate is below its skip threshold is not called."""

from __future__ import annotations

import asyncio
import textwrap
import threading
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from cascade import Budget, Cap, Cascade, ProviderError, Request
from cascade.budget.memory import MemoryLedger
from cascade.engine.build import build
from cascade.protocols import SkipEstimator
from tests.helpers import cost_of, tier


class Fixed:
    """Predicts ``value`` (or raises it), and counts its calls."""

    def __init__(self, value: Any, delay: float = 0.0) -> None:
        self.value = value
        self.delay = delay
        self.calls = 0
        self.threads: set[int] = set()

    def predict(self, request: Request) -> float:
        self.calls += 1
        self.threads.add(threading.get_ident())
        time.sleep(self.delay)
        if isinstance(self.value, BaseException):
            raise self.value
        return self.value  # type: ignore[no-any-return]


def two(estimator: Any, threshold: float = 0.3, **kw: Any) -> Cascade:
    small = replace(tier("small", "s", 0.9, 0.5), skip=estimator, skip_threshold=threshold)
    return Cascade([small, tier("large", "l")], name="p", **kw)


def run(c: Cascade, mode: str) -> Any:
    return c.run("q") if mode == "sync" else asyncio.run(c.arun("q"))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_tier_predicted_to_fail_is_skipped_at_no_cost(mode: str) -> None:
    estimator = Fixed(0.1234)
    c = two(estimator)
    with capture_logs() as logs:
        result = run(c, mode)
    skipped, large = result.attempts
    assert (skipped.tier, skipped.decision, skipped.reason) == (
        "small",
        "skipped",
        "skipped: predicted 0.123 < 0.300",
    )
    assert (skipped.cost, skipped.samples, skipped.usage.total_tokens) == (Decimal(0), 0, 0)
    assert skipped.score_detail == {"predicted": 0.1234, "skip_threshold": 0.3}
    assert c.tiers[0].provider.calls == []  # type: ignore[attr-defined]
    assert (result.tier, result.answer, result.cost) == ("large", "l", cost_of(1))
    assert estimator.calls == 1
    event = next(e for e in logs if e["event"] == "cascade.tier_skipped")
    assert (event["tier"], event["predicted"], event["threshold"]) == ("small", 0.1234, 0.3)
    assert "prompt" not in event


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_tier_predicted_to_do_well_is_called(mode: str) -> None:
    c = two(Fixed(0.3))  # at the threshold: called
    result = run(c, mode)
    assert [(a.tier, a.decision) for a in result.attempts] == [("small", "accepted")]


def test_the_trace_shows_the_skip() -> None:
    result = two(Fixed(0.05)).run("q")
    text = result.explain()
    assert "1. small [scripted:small-model] skipped: skipped: predicted 0.050 < 0.300" in text
    assert "samples" not in text.splitlines()[1]
    assert result.to_dict()["attempts"][0]["decision"] == "skipped"


def test_a_skipped_tier_reserves_nothing() -> None:
    ledger = MemoryLedger()
    budget = Budget(caps=(Cap(cost_of(1), "total"),), ledger=ledger)  # room for exactly one call
    result = two(Fixed(0.0), budget=budget).run("q")
    assert result.tier == "large" and ledger.spent("policy:p|total") == cost_of(1)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("bad", [ProviderError("embeddings down"), float("nan"), 1.5, "0.1"])
def test_a_failing_estimator_means_no_skip(mode: str, bad: Any) -> None:
    with capture_logs() as logs:
        result = run(two(Fixed(bad)), mode)
    assert [(a.tier, a.decision) for a in result.attempts] == [("small", "accepted")]
    assert any(e["event"] == "cascade.skip_failed" for e in logs)


def test_an_estimator_bug_propagates() -> None:
    with pytest.raises(ZeroDivisionError):
        two(Fixed(ZeroDivisionError("bug"))).run("q")


def test_async_never_blocks_the_event_loop_on_the_estimator() -> None:
    estimator = Fixed(0.9, delay=0.1)
    c = two(estimator)

    async def main() -> float:
        worst, done = 0.0, False

        async def tick() -> None:
            nonlocal worst
            last = time.perf_counter()
            while not done:
                await asyncio.sleep(0.005)
                now = time.perf_counter()
                worst, last = max(worst, now - last), now

        ticker = asyncio.create_task(tick())
        await c.arun("q")
        done = True
        await ticker
        return worst

    assert asyncio.run(main()) < 0.08
    assert threading.get_ident() not in estimator.threads


def test_a_native_async_estimator_is_awaited() -> None:
    class Native(Fixed):
        async def apredict(self, request: Request) -> float:
            return 0.0

    estimator = Native(0.9)
    result = asyncio.run(two(estimator).arun("q"))
    assert result.attempts[0].decision == "skipped" and estimator.calls == 0


def test_the_last_tier_cannot_be_skipped() -> None:
    with pytest.raises(ValueError, match="last tier"):
        Cascade([replace(tier("only", "x"), skip=Fixed(0.0), skip_threshold=0.5)])


def test_the_fake_and_the_real_estimator_fit_the_protocol() -> None:
    from cascade.learn.estimator import PromptEstimator

    assert isinstance(Fixed(0.5), SkipEstimator)
    assert hasattr(PromptEstimator, "predict")


def test_a_policy_skip_loads_the_estimator_artifact(tmp_path: Path) -> None:
    """A real prompt-only estimator (trained here on a toy task) skips the prompts it finds hard."""
    from cascade.learn.classifier import Example
    from cascade.learn.estimator import train_prompt_estimator

    examples = [
        Example(
            f"{kind} question number {i} about {topic}", (), 1.0 if kind == "easy" else 0.0, id=f"{kind}{i}"
        )
        for i in range(40)
        for kind, topic in (("easy", "sums"), ("hard", "proofs"))
    ]
    estimator = train_prompt_estimator(examples)
    estimator.classifier.save(tmp_path / "skip.json")
    (tmp_path / "p.yaml").write_text(
        textwrap.dedent(
            """
            name: skipper
            tiers:
              - name: small
                provider: scripted
                model: s
                free: true
                options: {answers: ["s"]}
                scorer: {kind: fixed, value: 1.0}
                threshold: 0.5
                skip: {artifact: skip.json, threshold: 0.5}
              - name: large
                provider: scripted
                model: l
                free: true
                options: {answers: ["l"]}
            """
        )
    )
    c = build(tmp_path / "p.yaml")
    hard = c.run("hard question number 99 about proofs")
    easy = c.run("easy question number 99 about sums")
    assert hard.attempts[0].decision == "skipped" and hard.tier == "large"
    assert hard.attempts[0].reason.startswith("skipped: predicted 0.")
    assert easy.tier == "small" and easy.attempts[0].decision == "accepted"
    assert asyncio.run(c.arun("hard question number 7 about proofs")).attempts[0].decision == "skipped"


def test_batch_and_the_langchain_front_skip_too() -> None:
    from cascade.langchain import CascadeChatModel

    c = two(Fixed(0.0))
    assert {r.attempts[0].decision for r in c.batch(["a", "b"])} == {"skipped"}  # type: ignore[union-attr]
    assert {r.attempts[0].decision for r in asyncio.run(c.abatch(["a", "b"]))} == {"skipped"}  # type: ignore[union-attr]
    assert CascadeChatModel(cascade=c).invoke("q").content == "l"
    assert c.tiers[0].provider.calls == []  # type: ignore[attr-defined]
