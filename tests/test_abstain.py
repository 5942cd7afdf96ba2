"""Abstention (``on_unverified: abstain``): no answer rather than one no tier accepted."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from cascade import AbstainedError, Budget, Cascade, CascadeError, PolicyError, ScorerError
from cascade.cli import main
from cascade.evaluate.abstain import GRID, Selective, selective, selective_pvalue, tune_abstain
from cascade.langchain import CascadeChatModel
from cascade.policy.loader import loads
from cascade.testing import FixedScorer
from tests.helpers import cost_of, tier


def _abstaining(last_score: float = 0.2, **kw: object) -> Cascade:
    return Cascade(
        [tier("small", "s", 0.4, 0.5), tier("large", "l", last_score, 0.5)],
        name="t",
        on_unverified="abstain",
        **kw,  # type: ignore[arg-type]
    )


def test_a_last_tier_below_its_threshold_abstains_with_reason_and_cost() -> None:
    result = _abstaining().run("q")
    assert result.abstained and result.reason == "abstained" and not result.accepted
    assert result.answer == ""
    assert result.abstention == "tier 'large': score 0.200 < 0.500"
    assert [a.decision for a in result.attempts] == ["escalated", "rejected"]
    assert result.cost == cost_of(2)  # everything spent, both tiers
    d = result.to_dict()
    assert d["abstained"] is True and d["abstention"] == result.abstention
    assert "abstained" in result.explain().splitlines()[0]


def test_an_accepted_last_tier_answers_and_async_agrees() -> None:
    result = _abstaining(last_score=0.9).run("q")
    assert (result.answer, result.abstained, result.to_dict()["abstained"]) == ("l", False, False)
    assert asyncio.run(_abstaining().arun("q")).abstained


def test_without_abstain_the_unverified_answer_is_returned() -> None:
    c = Cascade([tier("small", "s", 0.4, 0.5), tier("large", "l", 0.2, 0.5)])
    result = c.run("q")
    assert (result.answer, result.abstained, result.reason) == ("s", False, "exhausted")


def test_a_failed_last_scorer_abstains() -> None:
    def broken(request: object, completion: object) -> float:
        raise ScorerError("no verdict")

    c = _abstaining()
    scorer = c.tiers[-1].scorer
    assert isinstance(scorer, FixedScorer)
    scorer.value = broken
    result = c.run("q")
    assert result.abstained and "scorer error" in (result.abstention or "")


def test_a_budget_stop_abstains_instead_of_an_unverified_answer() -> None:
    c = _abstaining(budget=Budget(per_request=cost_of(1) * Decimal("1.5")))
    result = c.run("q")
    assert result.abstained and (result.abstention or "").startswith("budget: per-request cap")
    assert [a.decision for a in result.attempts] == ["escalated", "stopped"]


def test_the_last_scorer_is_reserved_under_a_cap() -> None:
    """A cap that covers the last call but not its scoring refuses it: the scorer is reserved."""
    capped = _abstaining(budget=Budget(per_request=cost_of(2) + Decimal("0.0005")))
    scorer = capped.tiers[-1].scorer
    assert isinstance(scorer, FixedScorer)
    scorer.cost = Decimal("0.001")  # its max_cost too
    result = capped.run("q")
    assert result.attempts[-1].decision == "stopped" and result.abstained


def test_abstaining_is_an_event() -> None:
    with capture_logs() as logs:
        _abstaining().run("q")
    event = next(e for e in logs if e["event"] == "cascade.abstained")
    assert event["reason"] == "tier 'large': score 0.200 < 0.500" and event["cost"] == str(cost_of(2))
    assert "cascade.finished" not in [e["event"] for e in logs]


def test_abstain_without_a_last_scorer_is_refused() -> None:
    with pytest.raises(ValueError, match="on_unverified: abstain needs a scorer"):
        Cascade([tier("small", "s", 0.4, 0.5), tier("large", "l")], on_unverified="abstain")


POLICY = """\
name: careful
on_unverified: abstain
tiers:
  - name: cheap
    provider: scripted
    model: cheap-model
    price: {input: 1, output: 1}
    options: {answers: ["not sure"]}
    scorer: {kind: regex, pattern: '\\d'}
    threshold: 1.0
  - name: strong
    provider: scripted
    model: strong-model
    price: {input: 1, output: 1}
    options: {answers: ["still not sure"]}
    scorer: {kind: regex, pattern: '\\d'}
    threshold: 1.0
"""


def test_policy_abstain_needs_a_last_scorer() -> None:
    last_unscored = POLICY.rsplit("    scorer:", 1)[0]
    with pytest.raises(PolicyError, match="on_unverified: abstain needs a scorer and a threshold"):
        loads(last_unscored, source="p.yaml")
    with pytest.raises(PolicyError, match="disagree"):
        loads(POLICY.replace("on_unverified: abstain", "on_unverified: abstain\non_exhausted: raise"))
    assert loads(POLICY).on_unverified == "abstain"


def test_cli_marks_abstentions(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    policy = tmp_path / "careful.yaml"
    policy.write_text(POLICY)
    assert main(["run", "-p", str(policy), "q"]) == 0
    out, err = capsys.readouterr()
    assert out == "\n" and err.startswith("cascade: note: abstained (tier 'strong': score 0.000 < 1.000)")
    prompts, rows = tmp_path / "p.jsonl", tmp_path / "o.jsonl"
    prompts.write_text('"a"\n"b"\n')
    assert main(["run", "-p", str(policy), "--batch", str(prompts), "--out", str(rows)]) == 0
    out, _ = capsys.readouterr()
    got = [json.loads(line) for line in rows.read_text().splitlines()]
    assert [(r["abstained"], r["reason"], r["answer"]) for r in got] == [(True, "abstained", "")] * 2
    assert "reason abstained" in out and "strong                    0 answered" in out


def test_langchain_raises_a_typed_error_or_answers_the_message() -> None:
    with pytest.raises(AbstainedError) as info:
        CascadeChatModel(cascade=_abstaining()).invoke("q")
    assert isinstance(info.value, CascadeError) and info.value.spent == cost_of(2)
    assert info.value.reason == "tier 'large': score 0.200 < 0.500"
    model = CascadeChatModel(cascade=_abstaining(), abstain_message="I am not sure.")
    assert model.invoke("q").content == "I am not sure."
    assert "".join(str(c.content) for c in model.stream("q")) == "I am not sure."
    assert asyncio.run(model.ainvoke("q")).content == "I am not sure."
    with pytest.raises(AbstainedError):
        asyncio.run(CascadeChatModel(cascade=_abstaining()).ainvoke("q"))


# -- tuning the abstain threshold (selective risk, Learn-then-Test) -------------------------------


def _scored(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores in [0, 1]; a record is right with probability score ** 0.25."""
    rng = np.random.default_rng(seed)
    s = rng.random(n)
    return s, (rng.random(n) < s**0.25).astype(np.float64)


def test_tuned_threshold_meets_the_target_on_fresh_records() -> None:
    met = found = 0
    for seed in range(20):
        s, c = _scored(4000, seed)
        t = tune_abstain(s, c, target=0.05, delta=0.1, seed=seed)
        if t.threshold is None or t.calibration is None:
            continue
        found += 1
        assert t.calibration.risk <= 0.05 and t.tested[0].rejected
        fresh_s, fresh_c = _scored(20000, 1000 + seed)
        met += selective(fresh_s, fresh_c, t.threshold).risk <= 0.05
        # the lowest threshold rejected before the fixed sequence stopped
        assert t.threshold == min(GRID[x.index] for x in t.tested if x.rejected)
    assert (
        found >= 15 and met >= found - 2
    )  # the guarantee holds with probability >= 0.9 (fresh records add their noise)


def test_too_few_records_prove_nothing() -> None:
    s, c = _scored(60, 0)
    t = tune_abstain(s, c, target=0.02, delta=0.05)
    assert t.threshold is None and t.calibration is None


def test_the_pvalue_is_the_exact_binomial_tail() -> None:
    assert selective_pvalue(0, 150, 0.02) == pytest.approx(0.98**150)
    assert selective_pvalue(0, 0, 0.02) == 1.0
    assert selective(np.array([0.1, 0.5, 0.9]), np.array([1.0, 0.0, 1.0]), 0.5) == Selective(
        0.5, 2 / 3, 0.5, 2, 1
    )


def test_benchmark_rows_carry_abstention(tmp_path: Path) -> None:
    """``run_all``'s rows and table carry the abstention figures (synthetic outcomes, no data needed)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import run_all
    from abstain_splits import abstain_row

    from cascade import outcomes

    rng = np.random.default_rng(0)
    lines = []
    for i in range(2000):
        agree = int(rng.integers(3, 6))  # of 5 samples give the majority answer; more agreement, fewer errors
        right = rng.random() < (0.999 if agree == 5 else 0.7)
        good = {"answer": "a", "quality": 1.0 if right else 0.0, "input_tokens": 1, "output_tokens": 1}
        other = {"answer": "b", "quality": 0.0, "input_tokens": 1, "output_tokens": 1}
        samples = [good] * agree + [other] * (5 - agree)
        lines.append(
            json.dumps({"id": str(i), "prompt": f"p{i}", "reference": "a", "responses": {"m": samples}})
        )
    path = tmp_path / "synthetic.jsonl"
    path.write_text("\n".join(lines) + "\n")
    row = abstain_row("synthetic", outcomes.load(path), splits=4, target=0.05)
    assert row["proven"] == 4 and row["within_target"] == 1.0 and 0 < row["coverage_mean"] < 1
    table = run_all.markdown([{"set": "synthetic", "error": "-", "tune_seconds": 0, "abstain": row}])
    assert "Abstention (`on_unverified: abstain`)" in table and "| synthetic | m (4) | 4/4 |" in table
    single = tmp_path / "single.jsonl"
    single.write_text(
        json.dumps({"id": "0", "prompt": "p", "reference": "a", "responses": {"m": [good]}}) + "\n"
    )
    assert "no last-tier score" in abstain_row("single", outcomes.load(single), splits=1)["error"]


def test_langchain_never_streams_an_answer_it_may_withhold() -> None:
    """With abstain, the last tier is scored before anything reaches the caller, even when
    ``stream_final_tier`` and ``on_exhausted: return_last`` would stream it live."""
    from cascade.langchain import ScriptedChatModel
    from cascade.scorers.basic import RegexScorer
    from tests.langchain.support import tier as lc_tier

    cheap = ScriptedChatModel(model="cheap-1", script=["no idea"])
    strong = ScriptedChatModel(model="strong-1", script=["maybe Lyon"])
    c = Cascade(
        [
            lc_tier("cheap", cheap, RegexScorer("Paris"), 0.5),
            lc_tier("strong", strong, RegexScorer("Paris"), 0.5),
        ],
        on_exhausted="return_last",
        on_unverified="abstain",
    )
    model = CascadeChatModel(cascade=c, stream_final_tier=True, abstain_message="I am not sure.")
    chunks = list(model.stream("capital?"))
    assert "".join(str(x.content) for x in chunks) == "I am not sure."


# -- cascade eval --------------------------------------------------------------------------------------


def _eval_files(tmp_path: Path, on_unverified: str) -> Path:
    from tests.evaluate.synth import write_outcomes

    data = write_outcomes(tmp_path, 120, seed=3)
    tiers = "".join(
        f"""  - name: t-{m}
    provider: replay
    model: {m}
    options: {{path: "{data}", billing: recorded}}
    scorer: {{kind: self_consistency, k: 5, answer: number}}
    threshold: 0.8
"""
        for m in ("tiny", "small")
    )
    policy = tmp_path / f"{on_unverified}.yaml"
    policy.write_text(f"name: careful\non_unverified: {on_unverified}\ntiers:\n{tiers}")
    return policy


def test_eval_reports_coverage_and_error_among_answered_not_abstentions_as_answers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figs = {}
    for mode in ("answer", "abstain"):
        out = tmp_path / f"{mode}.json"
        args = ["eval", str(_eval_files(tmp_path, mode)), "--bootstrap", "20", "--split", "none"]
        assert main([*args, "--json", str(out)]) == 0
        figs[mode] = json.loads(out.read_text())
    text = capsys.readouterr().out
    ab, plain = figs["abstain"], figs["answer"]
    n, refused = ab["records"], plain["exhausted"]
    assert 0 < refused < n and "abstention" not in plain
    a = ab["abstention"]
    assert (a["abstained"], a["answered"]) == (refused, n - refused)
    assert a["coverage"]["value"] == pytest.approx((n - refused) / n)
    # the answered records are those a tier accepted: their errors over their count
    accepted_right = sum(t["accuracy_accepted"] * t["accepted"] for t in ab["tiers"] if t["accepted"])
    assert a["error_among_answered"]["value"] == pytest.approx(1 - accepted_right / (n - refused))
    # an abstention scores nothing (quality counts it 0) and still costs what it spent
    assert ab["quality"]["value"] == pytest.approx(accepted_right / n)
    assert ab["quality"]["value"] < plain["quality"]["value"]
    assert ab["cost_per_query_usd"]["value"] == pytest.approx(plain["cost_per_query_usd"]["value"])
    assert f"abstained on {refused} records" in text and "coverage" in text


# -- cascade tune --abstain-error --------------------------------------------------------------------


def test_tune_abstain_error_writes_the_threshold_with_its_guarantee_from_the_training_part(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cascade import outcomes
    from cascade.evaluate.abstain import cascade_scores
    from cascade.evaluate.data import EvalSet
    from cascade.evaluate.evaluate import score_policy
    from cascade.policy.loader import load
    from tests.evaluate.synth import write_outcomes

    skeleton = _eval_files(tmp_path, "answer")
    data = write_outcomes(tmp_path, 600, seed=3)  # replaces the skeleton's 120 records
    out = tmp_path / "tuned.yaml"
    args = ["tune", str(skeleton), "--data", str(data), "--abstain-error", "0.1", "--risk", "0.05"]
    assert main([*args, "--out", str(out), "--bootstrap", "20"]) == 0
    printed = capsys.readouterr()
    written = load(out)
    assert written.on_unverified == "abstain" and out.read_text().startswith("# Tuned by `cascade tune")
    assert "guarantee: error among answered requests <= 0.1 with probability >= 0.95" in out.read_text()
    assert "held-out (300 records): coverage" in out.read_text() and "coverage" in printed.out
    # the threshold is tune_abstain's on the training half only (the held-out half only measures)
    policy = load(skeleton)
    es = EvalSet.build(outcomes.load(data), [t.model for t in policy.tiers])
    train = ~es.split("auto", seed=0, test_fraction=0.5)
    scores, correct = cascade_scores(score_policy(policy, outcomes.load(data), es, tmp_path))
    expected = tune_abstain(scores[train], correct[train], 0.1, 0.05, seed=0).threshold
    assert expected is not None and written.tiers[-1].threshold == expected
    assert expected != tune_abstain(scores, correct, 0.1, 0.05, seed=0).threshold
    # cascade eval of the written policy measures the same held-out part
    figs = tmp_path / "figs.json"
    assert main(["eval", str(out), "--bootstrap", "20", "--json", str(figs)]) == 0
    ab = json.loads(figs.read_text())["abstention"]
    assert ab["answered"] + ab["abstained"] == 300
    assert f"coverage {ab['coverage']['value']:.1%}" in out.read_text()


def test_tune_abstain_error_says_infeasible_with_the_records_needed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    skeleton = _eval_files(tmp_path, "answer")
    out = tmp_path / "tuned.yaml"
    assert main(["tune", str(skeleton), "--abstain-error", "0.01", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "infeasible" in err and "needs at least 299 answered calibration records with no error" in err
    assert "(30 calibration records here)" in err and not out.exists()
    assert main(["tune", str(skeleton), "--abstain-error", "1.5"]) == 2


# -- session pinning -----------------------------------------------------------------------------------


def test_an_abstention_pins_its_session_at_the_tier_whose_answer_it_withheld() -> None:
    """An abstention paid for the last tier that answered after the earlier ones were rejected: the
    session starts there next time (as an answer from that tier would); the pin never changes the
    abstain decision itself. A budget abstention at the first tier pins nothing."""
    from cascade.observe import Observer, SessionPins

    c = _abstaining()
    c.observer = Observer(pins=SessionPins(60))
    first = c.run("q", session="s")
    second = c.run("q", session="s")
    assert first.abstained and second.abstained and first.tier == "large"
    assert second.attempts[0].reason == "pinned: session 's' starts at tier 'large'"
    assert [a.tier for a in second.attempts if a.decision != "escalated"] == ["large"]
    assert second.cost == cost_of(2) - cost_of(1)  # the small tier was not called again

    broke = _abstaining(budget=Budget(per_request=cost_of(1) * Decimal("1.5")))
    broke.observer = Observer(pins=SessionPins(60))
    assert broke.run("q", session="s").abstained and broke.run("q", session="s").tier == "small"


def test_tune_other_goals_refuse_an_abstaining_skeleton_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    skeleton = _eval_files(tmp_path, "abstain")
    assert main(["tune", str(skeleton), "--target-quality", "best"]) == 2
    assert "tune its abstain threshold with --abstain-error" in capsys.readouterr().err


def test_prometheus_counts_an_abstention_as_no_answer() -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry

    from cascade.observe import PrometheusMetrics

    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    metrics.run("t", _abstaining().run("q"), None)
    metrics.run("t", _abstaining(last_score=0.9).run("q"), None)

    def value(name: str, **labels: str) -> float:
        v = registry.get_sample_value(name, labels)
        return 0.0 if v is None else v

    assert value("cascade_requests_total", policy="t", outcome="abstained") == 1
    assert value("cascade_answers_total", policy="t", tier="large") == 1  # the accepted one only
    assert value("cascade_accepts_total", policy="t", tier="large") == 1
