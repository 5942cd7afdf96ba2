"""Self-consistency: agreement, chosen sample, tool calls, free-form, mixtures, costs, policies."""

from __future__ import annotations

import gzip
import json
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from cascade import outcomes
from cascade.engine.build import build
from cascade.errors import ScorerError, TransientProviderError
from cascade.money import Price
from cascade.request import Request
from cascade.retry import RetryPolicy
from cascade.scorers.answers import regex_extractor
from cascade.scorers.self_consistency import SelfConsistencyScorer, Source, agreement, with_template
from cascade.testing import ScriptedProvider
from cascade.types import Completion, Sample, ToolCall, Usage

REQ = Request.of("What is 6 * 7?")


def completion(*texts: str, **kw: object) -> Completion:
    return Completion(tuple(Sample(t, **kw) for t in texts), Usage(10, 10), "m")  # type: ignore[arg-type]


def test_agreement_is_the_majority_share_and_chooses_a_majority_sample() -> None:
    scorer = SelfConsistencyScorer("number", k=5)
    s = scorer.score(REQ, completion("It is 41", "42", "so 42.", "answer: 40", "42!"))
    assert s.value == pytest.approx(3 / 5)
    assert s.chosen == 1
    assert s.detail == {"agreeing": 3, "total": 5, "distinct": 3, "unanswered": 0}
    assert s.cost == 0


def test_unanswered_samples_count_against_agreement() -> None:
    scorer = SelfConsistencyScorer("number", k=4)
    s = scorer.score(REQ, completion("no idea", "42", "hmm", "42"))
    assert s.value == pytest.approx(0.5)
    assert s.chosen == 1
    assert scorer.score(REQ, completion("no", "idea")).value == 0.0


def test_agreement_helper_edge_cases() -> None:
    assert agreement([], 0).value == 0.0
    a = agreement(["x", "y", "y"], 1)  # only the first sample may be returned
    assert a.value == pytest.approx(1 / 3)
    assert a.chosen == 0


def test_recorded_answer_is_used_when_present() -> None:
    scorer = SelfConsistencyScorer(regex_extractor(r"(\d{2}/\d{2}/\d{4})"), k=3)
    c = Completion(
        (
            Sample("print(d)", answer="04/21/2021\n'''"),  # a program: its printed output was recorded
            Sample("A: 04/21/2021"),
            Sample("A: 04/22/2021"),
        ),
        Usage(),
        "m",
    )
    s = scorer.score(REQ, c)
    assert s.value == pytest.approx(2 / 3)
    assert s.chosen == 0


def test_tool_calls_agree_on_name_and_arguments() -> None:
    scorer = SelfConsistencyScorer("text", k=3)
    c = Completion(
        (
            Sample("", tool_calls=(ToolCall("weather", {"city": "Paris", "unit": "C"}, id="a"),)),
            Sample("", tool_calls=(ToolCall("weather", {"unit": "C", "city": "Paris"}, id="b"),)),
            Sample("", tool_calls=(ToolCall("weather", {"city": "Lyon", "unit": "C"}, id="c"),)),
        ),
        Usage(),
        "m",
    )
    s = scorer.score(REQ, c)
    assert s.value == pytest.approx(2 / 3)
    assert s.chosen == 0


def test_free_form_answers_agree_by_similarity() -> None:
    scorer = SelfConsistencyScorer("exact", k=4, similarity="jaccard", similarity_threshold=0.6)
    s = scorer.score(
        REQ,
        completion(
            "Bananas are yellow.",
            "Paris is the capital of France.",
            "The capital of France is Paris.",
            "France's capital is Paris.",
        ),
    )
    assert s.value == pytest.approx(2 / 4)
    assert s.chosen == 1
    strict = SelfConsistencyScorer("exact", k=4)
    assert strict.score(REQ, completion("a b", "b a", "c", "d")).value == pytest.approx(1 / 4)


def test_failing_user_extractor_is_a_scorer_error() -> None:
    def boom(text: str) -> str:
        raise RuntimeError("nope")

    with pytest.raises(ScorerError, match="extractor failed"):
        SelfConsistencyScorer(boom, k=1).score(REQ, completion("x"))


def test_ten_samples_score_their_majority_share() -> None:
    # its time per score is in benchmarks/scorer_speed.py, not asserted here
    scorer = SelfConsistencyScorer("number", k=10)
    c = completion(*[f"The answer is {i % 3}" for i in range(10)])
    s = scorer.score(REQ, c)
    assert s.value == pytest.approx(0.4) and s.cost == 0


# -- mixtures ---------------------------------------------------------------------------------

PRICE = Price(Decimal(1), Decimal(1))  # $1 / M tokens


def test_mixture_sources_vote_and_their_cost_counts() -> None:
    other = ScriptedProvider([["42", "42", "41"]], model="other", usage=Usage(100, 10))
    scorer = SelfConsistencyScorer("number", k=2, sources=[Source(other, 3, PRICE, name="other")])
    s = scorer.score(REQ, completion("41", "42"))
    assert s.value == pytest.approx(3 / 5)  # "42": 1 own + 2 from the other model
    assert s.chosen == 1
    assert s.usage == Usage(100, 30)
    assert s.cost == PRICE.cost(Usage(100, 30))
    assert s.detail["sources"] == {"other": 3}
    assert other.calls[0][1] == 3
    # the worst case is reserved before the tier runs
    assert scorer.max_cost(REQ, 100) == PRICE.cost(other.max_usage(REQ, 3))


async def test_mixture_async_matches_sync() -> None:
    def make() -> SelfConsistencyScorer:
        return SelfConsistencyScorer(
            "number",
            k=2,
            sources=[
                Source(ScriptedProvider(["42"], model="a"), 2, PRICE, name="a"),
                Source(ScriptedProvider(["7"], model="b"), 1, PRICE, name="b"),
            ],
        )

    c = completion("42", "7")
    sync = make().score(REQ, c)
    asyn = await make().ascore(REQ, c)
    assert (sync.value, sync.chosen, sync.cost) == (asyn.value, asyn.chosen, asyn.cost)
    assert sync.value == pytest.approx(3 / 5)


def test_prompt_template_for_a_variant() -> None:
    seen: list[str] = []

    def program_of_thought(request: Request, n: int) -> list[str]:
        seen.append(request.prompt)
        return ["42"] * n

    pot = ScriptedProvider(program_of_thought, model="m")
    tpl = "Write a Python program that prints the answer.\n{prompt}"
    scorer = SelfConsistencyScorer("number", k=1, sources=[Source(pot, 2, PRICE, template=tpl)])
    assert scorer.score(REQ, completion("42")).value == 1.0
    assert seen == ["Write a Python program that prints the answer.\nWhat is 6 * 7?"]
    assert with_template(REQ, None) is REQ


def test_a_failing_source_is_reported_and_its_votes_count_as_unanswered() -> None:
    bad = ScriptedProvider(TransientProviderError("down", provider="x"), model="bad")
    no_retry = RetryPolicy(attempts=1)
    scorer = SelfConsistencyScorer("number", k=2, sources=[Source(bad, 2, PRICE, name="bad", retry=no_retry)])
    s = scorer.score(REQ, completion("42", "42"))
    assert s.value == 0.5  # 2 of the 4 votes asked for: the missing ones agree with nothing
    assert s.detail["unanswered"] == 2
    assert s.detail["sources"] == {"bad": "error: TransientProviderError"}
    assert s.cost == 0


# -- policies ---------------------------------------------------------------------------------


def _write_outcomes(path: Path) -> None:
    rec = {
        "id": "q1",
        "prompt": "When?",
        "reference": "04/21/2021",
        "responses": {
            "small": [
                {
                    "text": "A: 04/21/2021",
                    "answer": "04/21/2021",
                    "quality": 1,
                    "input_tokens": 100,
                    "output_tokens": 10,
                    "cost_usd": 0.001,
                    "variant": "cot",
                },
                {
                    "text": "A: 04/22/2021",
                    "answer": "04/22/2021",
                    "quality": 0,
                    "input_tokens": 100,
                    "output_tokens": 10,
                    "cost_usd": 0.001,
                    "variant": "cot",
                },
                {
                    "text": "print(x)",
                    "answer": "04/21/2021",
                    "quality": 1,
                    "input_tokens": 100,
                    "output_tokens": 10,
                    "cost_usd": 0.002,
                    "variant": "pot",
                },
                {
                    "text": "print(y)",
                    "answer": "04/21/2021",
                    "quality": 1,
                    "input_tokens": 100,
                    "output_tokens": 10,
                    "cost_usd": 0.002,
                    "variant": "pot",
                },
            ],
            "big": [
                {
                    "text": "A: 04/21/2021",
                    "answer": "04/21/2021",
                    "quality": 1,
                    "input_tokens": 100,
                    "output_tokens": 10,
                    "cost_usd": 0.05,
                }
            ],
        },
    }
    with gzip.open(path, "wt") as fh:
        fh.write(json.dumps(rec) + "\n")


def test_policy_with_cot_pot_mixture_through_replay(tmp_path: Path) -> None:
    _write_outcomes(tmp_path / "dates.jsonl.gz")
    policy = tmp_path / "p.yaml"
    policy.write_text(
        textwrap.dedent(
            """
            name: mot
            tiers:
              - name: small
                provider: replay
                model: small
                free: true
                options: {path: dates.jsonl.gz, variant: cot}
                scorer:
                  kind: self_consistency
                  k: 2
                  answer: regex
                  pattern: '(\\d{2}/\\d{2}/\\d{4})'
                  mixture:
                    - samples: 2
                      options: {variant: pot}
                threshold: 0.7
              - name: big
                provider: replay
                model: big
                free: true
                options: {path: dates.jsonl.gz}
            """
        )
    )
    cascade = build(policy)
    result = cascade.run("When?")
    assert result.accepted and result.tier == "small"
    first = result.attempts[0]
    assert first.score == pytest.approx(3 / 4)
    assert first.cost == Decimal("0.002")  # two cot samples, recorded cost
    assert first.scorer_cost == Decimal("0.004")  # two pot samples, recorded cost
    assert result.cost == Decimal("0.006")


def test_policy_rejects_bad_options(tmp_path: Path) -> None:
    from cascade.errors import PolicyError
    from cascade.policy import loader

    policy = tmp_path / "p.yaml"
    policy.write_text(
        "name: x\ntiers:\n  - name: a\n    provider: scripted\n    model: m\n    options: {answers: ['1']}\n"
        "    scorer: {kind: self_consistency, answer: regex}\n    threshold: 0.5\n"
    )
    with pytest.raises(PolicyError, match="pattern"):
        loader.load(policy)


# -- real data --------------------------------------------------------------------------------


def test_crux_majority_vote_on_recorded_samples(data_dir: Path) -> None:
    data = outcomes.load(data_dir / "crux-o-samples.jsonl.gz")
    scorer = SelfConsistencyScorer("literal", k=10)
    record = data.records[3]
    recorded = record.responses["codellama-13b"]
    c = Completion(tuple(Sample(s.text or "", answer=s.answer) for s in recorded), Usage(), "codellama-13b")
    s = scorer.score(Request.of(record.prompt), c)
    assert 0 < s.value <= 1
    assert s.detail["total"] == len(recorded)


def test_policy_agreement_between_different_models(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(
        textwrap.dedent(
            """
            name: crowd
            tiers:
              - name: cheap
                provider: scripted
                model: cheap-a
                free: true
                options: {answers: ["The answer is 42."]}
                scorer:
                  kind: self_consistency
                  k: 1
                  answer: number
                  mixture:
                    - {provider: scripted, model: cheap-b, samples: 1,
                       price: {input: 1, output: 1}, options: {answers: ["42"], input_tokens: 500}}
                    - {provider: scripted, model: cheap-c, samples: 2, free: true,
                       options: {answers: [["41", "42"]]}}
                threshold: 0.7
              - name: strong
                provider: scripted
                model: strong
                free: true
                options: {answers: ["42"]}
            """
        )
    )
    result = build(policy).run("What is 6 * 7?")
    first = result.attempts[0]
    assert result.tier == "cheap" and result.accepted
    assert first.score == pytest.approx(3 / 4)
    assert first.scorer_cost == Decimal("0.00051")  # cheap-b: 500 in + 10 out at $1/M
    assert first.score_detail["sources"] == {"mixture0:cheap-b": 1, "mixture1:cheap-c": 2}


def test_mixture_outside_a_tier_needs_a_provider() -> None:
    from cascade.engine.build import BuildContext
    from cascade.errors import ConfigurationError

    options = SelfConsistencyScorer.Options.model_validate({"k": 2, "mixture": [{"samples": 2}]})
    with pytest.raises(ConfigurationError, match="needs `provider`"):
        SelfConsistencyScorer.from_config(options, BuildContext(Path(".")))


def test_samples_that_never_came_back_count_against_agreement() -> None:
    """One surviving sample of five (four parallel calls failed) must not claim full agreement."""
    from cascade.request import Request
    from cascade.types import Completion, Sample, Usage

    scorer = SelfConsistencyScorer("number", k=5)
    partial = Completion((Sample("41"),), Usage(10, 2), model="m", failed_calls=4)
    got = scorer.score(Request.of("q"), partial)
    assert got.value == pytest.approx(0.2)
    assert got.detail["unanswered"] == 4
    full = Completion(tuple(Sample("41") for _ in range(5)), Usage(10, 10), model="m")
    assert scorer.score(Request.of("q"), full).value == 1.0
    # a provider that just has fewer (a recorded file) loses none
    recorded = Completion((Sample("41"), Sample("41")), Usage(10, 4), model="m")
    assert scorer.score(Request.of("q"), recorded).value == 1.0
