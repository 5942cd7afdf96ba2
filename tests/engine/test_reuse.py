"""One call per model per request: a later tier, a voter or a partner reuses samples already bought."""

from __future__ import annotations

import asyncio
import textwrap
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from cascade import Budget, Cap, Cascade
from cascade.budget.memory import MemoryLedger
from cascade.engine.build import build
from cascade.engine.reuse import ReusingProvider, SampleCache, call_key, current
from cascade.policy.schema import Policy
from cascade.request import Request
from cascade.testing import ScriptedProvider

# $1 per million tokens in and out; a scripted call is 10 input tokens + 10 output tokens per sample
PRICE = "{input: 1, output: 1}"


def one_sample(samples: int) -> Decimal:
    """What a scripted call of ``samples`` samples costs at PRICE (10 in, 10 out each)."""
    return Decimal(10 + 10 * samples) / 1_000_000


def policy(text: str) -> Policy:
    return Policy.model_validate(yaml.safe_load(textwrap.dedent(text)))


def voter_then_tier(last_k: int = 1, partner_params: str = "") -> Policy:
    """Tier 1 votes with a sample of B (its partner); tier 2 is B itself (k samples)."""
    last_scorer = (
        f"\n            scorer: {{kind: self_consistency, k: {last_k}}}\n            threshold: 0.0"
        if last_k > 1
        else ""
    )
    return policy(
        f"""
        name: reuse
        tiers:
          - name: small
            provider: scripted
            model: a
            price: {PRICE}
            options: {{answers: ["4"]}}
            scorer:
              kind: self_consistency
              k: 3
              mixture:
                - {{provider: scripted, model: b, samples: 1, price: {PRICE},
                   options: {{answers: ["5"]}}{partner_params}}}
            threshold: 0.9
          - name: large
            provider: scripted
            model: b
            price: {PRICE}
            options: {{answers: ["5"]}}{last_scorer}
        """
    )


def partner(c: Cascade) -> ScriptedProvider:
    source = c.tiers[0].scorer.sources[0].provider  # type: ignore[union-attr]
    assert isinstance(source, ReusingProvider)
    inner = source.inner
    assert isinstance(inner, ScriptedProvider)
    return inner


def own(c: Cascade, index: int) -> ScriptedProvider:
    p = c.tiers[index].provider
    assert isinstance(p, ScriptedProvider)
    return p


def run(c: Cascade, mode: str, prompt: str = "q") -> Any:
    return c.run(prompt) if mode == "sync" else asyncio.run(c.arun(prompt))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_later_tier_reuses_its_models_sample_bought_as_a_voter(mode: str) -> None:
    c = build(voter_then_tier())
    result = run(c, mode)
    assert [(a.tier, a.decision) for a in result.attempts] == [("small", "escalated"), ("large", "accepted")]
    assert len(partner(c).calls) == 1 and own(c, 1).calls == []  # model b was called once
    small, large = result.attempts
    assert small.scorer_cost == one_sample(1)  # the voter's sample was paid by tier 1's scorer
    assert (large.cost, large.usage.total_tokens, large.reused_samples, large.samples) == (
        Decimal(0),
        0,
        1,
        1,
    )
    assert result.answer == "5"
    assert result.cost == one_sample(3) + one_sample(1)
    assert "(1 reused)" in result.explain()
    assert result.to_dict()["attempts"][1]["reused_samples"] == 1


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_only_the_missing_samples_are_bought(mode: str) -> None:
    c = build(voter_then_tier(last_k=3))
    result = run(c, mode)
    large = result.attempts[1]
    assert [n for _, n in partner(c).calls] == [1]
    assert [n for _, n in own(c, 1).calls] == [2]  # the top-up: 3 wanted, 1 already bought
    assert (large.samples, large.reused_samples, large.cost) == (3, 1, one_sample(2))


def test_a_different_call_is_not_reused() -> None:
    """Other generation params make another call: both are paid."""
    c = build(voter_then_tier(partner_params=", params: {temperature: 0.5}"))
    result = c.run("q")
    assert len(partner(c).calls) == 1 and len(own(c, 1).calls) == 1
    assert result.attempts[1].reused_samples == 0
    assert result.attempts[1].cost == one_sample(1)


def test_samples_are_reused_within_a_request_only() -> None:
    c = build(voter_then_tier())
    results = c.batch(["q1", "q2", "q1"], concurrency=2)
    assert len(partner(c).calls) == 3 and own(c, 1).calls == []
    assert all(r.attempts[1].reused_samples == 1 for r in results)  # type: ignore[union-attr]


def test_a_partner_in_a_later_tier_reuses_the_earlier_tiers_samples() -> None:
    c = build(
        policy(
            f"""
            name: partner
            tiers:
              - name: small
                provider: scripted
                model: a
                price: {PRICE}
                options: {{answers: [["4", "3"]]}}
                scorer: {{kind: self_consistency, k: 2}}
                threshold: 1.0
              - name: medium
                provider: scripted
                model: b
                price: {PRICE}
                options: {{answers: ["4"]}}
                scorer:
                  kind: self_consistency
                  k: 1
                  mixture:
                    - {{provider: scripted, model: a, samples: 2, price: {PRICE},
                       options: {{answers: [["4", "3"]]}}}}
                threshold: 0.6
              - name: large
                provider: scripted
                model: c
                free: true
                options: {{answers: ["x"]}}
            """
        )
    )
    result = c.run("q")
    medium = result.attempts[1]
    assert (result.tier, medium.decision) == ("medium", "accepted")
    assert len(own(c, 0).calls) == 1
    source = c.tiers[1].scorer.sources[0].provider  # type: ignore[union-attr]
    assert isinstance(source, ReusingProvider) and source.inner.calls == []  # type: ignore[attr-defined]
    assert (medium.reused_samples, medium.scorer_cost) == (2, Decimal(0))
    assert medium.score == pytest.approx(2 / 3)  # "4" from b, "4" and "3" reused from a


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_ledger_counts_each_paid_call_once(mode: str) -> None:
    ledger = MemoryLedger()
    c = build(voter_then_tier(last_k=3), ledger=ledger)
    c.settings = replace(c.settings, budget=Budget(caps=(Cap(Decimal(1), "total"),), ledger=ledger))
    result = run(c, mode)
    assert ledger.spent("policy:reuse|total") == result.cost == one_sample(3) + one_sample(1) + one_sample(2)
    assert ledger._holds == {}


def test_concurrent_voters_of_one_call_pay_once() -> None:
    """Two mixture sources of the same call, asked at once (async gather): one pays, one reuses."""
    c = build(
        policy(
            f"""
            name: twins
            tiers:
              - name: small
                provider: scripted
                model: a
                price: {PRICE}
                options: {{answers: ["4"]}}
                scorer:
                  kind: self_consistency
                  k: 1
                  mixture:
                    - {{provider: scripted, model: b, samples: 1, price: {PRICE}, options: {{answers: ["4"], latency: 0.01}}}}
                    - {{provider: scripted, model: b, samples: 1, price: {PRICE}, options: {{answers: ["4"], latency: 0.01}}}}
                threshold: 0.5
              - name: large
                provider: scripted
                model: c
                free: true
                options: {{answers: ["x"]}}
            """
        )
    )
    result = asyncio.run(c.arun("q"))
    sources = [s.provider.inner for s in c.tiers[0].scorer.sources]  # type: ignore[union-attr]
    assert sorted(len(p.calls) for p in sources) == [0, 1]
    assert (result.attempts[0].reused_samples, result.attempts[0].scorer_cost) == (1, one_sample(1))


def test_the_langchain_front_reuses_too() -> None:
    from cascade.langchain import CascadeChatModel

    c = build(voter_then_tier())
    model = CascadeChatModel(cascade=c)
    message = model.invoke("q")
    assert message.content == "5"
    assert len(partner(c).calls) == 1 and own(c, 1).calls == []


def test_the_wrapper_calls_through_outside_a_run_and_forwards_attributes() -> None:
    inner = ScriptedProvider("x", model="m")
    wrapped = ReusingProvider(inner, call_key("scripted", "m", {}, {}))
    assert current.get() is None
    wrapped.complete(Request.of("q"))
    wrapped.complete(Request.of("q"))
    assert len(inner.calls) == 2 and wrapped.free is True and wrapped.model == "m"
    cache = SampleCache()
    token = current.set(cache)
    try:
        first = wrapped.complete(Request.of("q"), 2)
        again = wrapped.complete(Request.of("q"), 1)
        other = wrapped.complete(Request.of("another"), 1)
    finally:
        current.reset(token)
    assert len(inner.calls) == 4  # the first and the other prompt; the second was served again
    assert (len(first.samples), again.cost, again.usage.total_tokens, cache.reused) == (2, Decimal(0), 0, 1)
    assert other.usage.total_tokens > 0


def test_call_keys_differ_by_kind_model_options_and_params() -> None:
    base = call_key("openai", "m", {"base_url": "x"}, {"temperature": 0.0})
    assert base == call_key("openai", "m", {"base_url": "x"}, {"temperature": 0.0})
    others = {
        call_key("anthropic", "m", {"base_url": "x"}, {"temperature": 0.0}),
        call_key("openai", "n", {"base_url": "x"}, {"temperature": 0.0}),
        call_key("openai", "m", {"base_url": "y"}, {"temperature": 0.0}),
        call_key("openai", "m", {"base_url": "x"}, {"temperature": 0.5}),
    }
    assert base not in others and len(others) == 4


def test_replayed_top_ups_are_the_next_recorded_samples(tmp_path: Path) -> None:
    from cascade.providers.replay import ReplayProvider

    data = tmp_path / "o.jsonl"
    data.write_text(
        '{"id": "q1", "prompt": "q", "responses": {"m": ['
        '{"text": "a", "input_tokens": 5, "output_tokens": 1, "cost_usd": 0.1},'
        '{"text": "b", "input_tokens": 5, "output_tokens": 2, "cost_usd": 0.2},'
        '{"text": "c", "input_tokens": 5, "output_tokens": 3, "cost_usd": 0.3}]}}\n'
    )
    replay = ReplayProvider(str(data), "m")
    cache = SampleCache()
    first = cache.complete("k", replay, Request.of("q"), 1)
    more = cache.complete("k", replay, Request.of("q"), 3)
    assert [s.text for s in first.samples] == ["a"]
    assert [s.text for s in more.samples] == ["a", "b", "c"]
    assert (more.cost, more.usage.output_tokens, more.raw["reused_samples"]) == (Decimal("0.5"), 5, 1)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_caps_reserve_only_what_is_not_bought_yet(mode: str) -> None:
    """Tier 2 is all reuse: a per-request cap that tier 1 used up entirely still lets it answer."""
    c = build(voter_then_tier())
    spent_by_small = one_sample(3) + one_sample(1)
    c.settings = replace(c.settings, budget=Budget(per_request=spent_by_small))
    result = run(c, mode)
    assert [a.decision for a in result.attempts] == ["escalated", "accepted"]
    assert result.cost == spent_by_small


def test_more_votes_of_the_tiers_own_call_are_new_samples() -> None:
    """A mixture source identical to its tier asks for other votes, not the tier's own again."""
    c = build(
        policy(
            f"""
            name: more
            tiers:
              - name: small
                provider: scripted
                model: a
                price: {PRICE}
                options: {{answers: ["4", "5"]}}
                scorer:
                  kind: self_consistency
                  k: 1
                  mixture:
                    - {{samples: 1}}
                threshold: 0.9
              - name: large
                provider: scripted
                model: a
                price: {PRICE}
                options: {{answers: ["4", "5"]}}
            """
        )
    )
    result = c.run("q")
    small = result.attempts[0]
    source = c.tiers[0].scorer.sources[0].provider  # type: ignore[union-attr]
    assert isinstance(source, ReusingProvider) and source.key != c.tiers[0].call_key
    assert len(source.inner.calls) == 1 and len(own(c, 0).calls) == 1  # type: ignore[attr-defined]
    assert (small.reused_samples, small.scorer_cost) == (0, one_sample(1))


PARTNER_LATER = f"""
name: partner-cap
tiers:
  - name: small
    provider: scripted
    model: a
    price: {PRICE}
    options: {{answers: [["4", "3"]]}}
    scorer: {{kind: self_consistency, k: 2}}
    threshold: 1.0
  - name: medium
    provider: scripted
    model: b
    price: {PRICE}
    options: {{answers: ["4"]}}
    scorer:
      kind: self_consistency
      k: 1
      mixture:
        - {{provider: scripted, model: a, samples: 2, price: {PRICE}, options: {{answers: [["4", "3"]]}}}}
    threshold: 0.6
"""


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_scorers_reservation_leaves_out_the_samples_it_will_reuse(mode: str) -> None:
    """The medium tier's voter reuses both of small's samples: its cap needs only b's call."""
    c = build(policy(PARTNER_LATER))
    request = Request.of("q")
    medium_call = c.tiers[1].call_worst(request)
    assert c.tiers[1].worst_case(request) > medium_call  # outside a run, the voter's samples count
    c.settings = replace(c.settings, budget=Budget(per_request=one_sample(2) + medium_call))
    result = run(c, mode)
    # was: the reservation counted a's two samples again, so the cap stopped the medium tier
    assert [(a.tier, a.decision) for a in result.attempts] == [("small", "escalated"), ("medium", "accepted")]
    assert result.cost <= one_sample(2) + medium_call
