"""The simulation reproduces the engine exactly, and its fast paths agree with each other."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cascade import outcomes
from cascade.engine.build import build
from cascade.evaluate import evaluate_file
from cascade.evaluate.data import EvalSet
from cascade.evaluate.evaluate import score_policy
from cascade.evaluate.search import _Arr, _two_tier
from cascade.evaluate.simulate import (
    OUTCOME_NAMES,
    SKIPPED,
    ReplayContext,
    chain_costs,
    run,
    score_tier,
    sweep,
    threshold_grid,
)
from cascade.policy import loader
from tests.evaluate.synth import write_outcomes, write_policy


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    data = write_outcomes(tmp_path, 80)
    return data, write_policy(tmp_path, data)


@pytest.mark.parametrize("billing", ["recorded", "prompt_once"])
@pytest.mark.parametrize("on_exhausted", ["return_best", "return_last"])
def test_simulation_matches_the_engine(tmp_path: Path, billing: str, on_exhausted: str) -> None:
    data_path = write_outcomes(tmp_path, 60, seed=3)
    pol_path = write_policy(tmp_path, data_path, thresholds=(0.9, 0.9), billing=billing)
    pol_path.write_text(pol_path.read_text() + f"on_exhausted: {on_exhausted}\n")
    policy = loader.load(pol_path)
    data = outcomes.load(data_path)
    es = EvalSet.build(data)
    tiers = score_policy(policy, data, es, tmp_path)
    sim = run(tiers, on_exhausted=policy.on_exhausted)
    cascade = build(pol_path)
    for i, record in enumerate(es.records):
        result = cascade.run(record.prompt, metadata={"id": record.id})
        assert result.sample is not None
        assert sim.quality[i] == pytest.approx(result.sample.quality or 0.0)
        assert sim.cost[i] == pytest.approx(float(result.cost), rel=1e-9, abs=1e-15)
        assert [t.name for t in policy.tiers].index(result.tier) == sim.answered[i]


def test_sweep_agrees_with_run(files: tuple[Path, Path], tmp_path: Path) -> None:
    data_path, pol_path = files
    policy = loader.load(pol_path)
    data = outcomes.load(data_path)
    es = EvalSet.build(data)
    tiers = score_policy(policy, data, es, tmp_path)
    grid = threshold_grid(tiers, 6)
    q, c, strong = sweep(tiers, grid)
    for g in range(0, len(grid), 7):
        ths = [None if np.isnan(x) else float(x) for x in grid[g]]
        r = run(tiers, ths)
        assert q[g] == pytest.approx(r.quality)
        assert c[g] == pytest.approx(r.cost)
        assert strong[g] == pytest.approx(r.reached[:, -1].astype(float))


def test_two_tier_fast_path_is_exact(files: tuple[Path, Path], tmp_path: Path) -> None:
    data_path, pol_path = files
    policy = loader.load(pol_path)
    data = outcomes.load(data_path)
    es = EvalSet.build(data)
    first, _, last = score_policy(policy, data, es, tmp_path)
    rows = np.ones(len(es), dtype=bool)
    th, qs, cs = _two_tier(_Arr.of(first), _Arr.of(last), rows, np.zeros(len(es)))
    for t, qsum, csum in zip(th, qs, cs, strict=True):
        r = run([first, last], [float(t), None])
        assert qsum == pytest.approx(r.quality.sum())
        assert csum == pytest.approx(r.cost.sum())


def test_evaluation_figures(files: tuple[Path, Path], tmp_path: Path) -> None:
    data_path, pol_path = files
    ev = evaluate_file(loader.load(pol_path), outcomes.load(data_path), tmp_path, reps=50)
    f = ev.figures
    assert f["records"] == 80
    assert 0 < f["quality"]["value"] <= 1
    assert f["quality"]["low"] <= f["quality"]["value"] <= f["quality"]["high"]
    assert [t["tier"] for t in f["tiers"]] == ["t-tiny", "t-small", "t-big"]
    assert sum(t["accepted"] for t in f["tiers"]) + f["exhausted"] == 80
    assert f["tiers"][0]["reached"] == 80
    assert f["best_single"]["model"] == "big"
    assert f["oracle"]["quality"] >= f["best_single"]["quality"]["value"]
    assert f["pair"]["weak"] == "tiny" and f["pair"]["strong"] == "big"
    assert 0 <= f["pair"]["apgr"]["value"] <= 1.5
    assert f["aiq"]["policy_curve"]["value"] > 0


def test_split_by_seed_and_by_file(tmp_path: Path) -> None:
    data = outcomes.load(write_outcomes(tmp_path, 30, splits=True))
    es = EvalSet.build(data)
    own = es.split("auto")
    assert own.sum() == 10
    seeded = es.split("seed", seed=1)
    assert seeded.sum() == 15
    assert (es.split("seed", seed=1) == seeded).all()
    assert es.split("none").all()


def test_models_missing_answers_are_left_out(tmp_path: Path) -> None:
    path = write_outcomes(tmp_path, 20)
    import gzip
    import json

    with gzip.open(path, "rt") as fh:
        lines = [json.loads(x) for x in fh]
    for i, rec in enumerate(lines):
        if i % 4 == 0:
            del rec["responses"]["small"]
        rec["responses"]["ghost"] = [{"text": "x", "answer": "x", "quality": None}]
    with gzip.open(path, "wt") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in lines)
    es = EvalSet.build(outcomes.read(path))
    assert es.dropped_models == ["ghost"]
    assert len(es) == 15 and es.dropped_records == 5


# -- one call per model per request, and ex-ante skip (issue 9) ----------------------------------


def _reuse_policy(tmp_path: Path, data: Path, k2: int = 1) -> Path:
    """tiny votes with one sample of small; small is also the next tier (k2 samples)."""
    scorer2 = f"\n    scorer: {{kind: self_consistency, k: {k2}, answer: number}}\n    threshold: 1.0"
    p = tmp_path / "reuse.yaml"
    p.write_text(
        f"""name: reuse
tiers:
  - name: tiny-votes
    provider: replay
    model: tiny
    options: {{path: "{data}"}}
    scorer:
      kind: self_consistency
      k: 1
      answer: number
      mixture: [{{samples: 1, model: small}}]
    threshold: 0.9
  - name: small
    provider: replay
    model: small
    options: {{path: "{data}"}}{scorer2}
  - name: big
    provider: replay
    model: big
    options: {{path: "{data}"}}
"""
    )
    return p


def test_a_model_voting_in_one_tier_and_answering_the_next_is_paid_once(tmp_path: Path) -> None:
    data_path = write_outcomes(tmp_path, 60, seed=4)
    policy = loader.load(_reuse_policy(tmp_path, data_path))
    data = outcomes.load(data_path)
    es = EvalSet.build(data)
    tiers = score_policy(policy, data, es, tmp_path)
    first, second, _ = tiers
    small_key = next(k for k in first.calls if ":small:" in k)
    assert set(second.calls) == {small_key}  # the same call: provider, model, options, prompt
    r = run(tiers, [0.9, 1.1, None], on_exhausted="return_last")  # small never accepts: on to big
    reached_second = r.reached[:, 1]
    assert reached_second.any()
    # tier 2 costs nothing where it was reached: small's one sample was bought by tier 1's vote
    standalone = first.cost + second.cost
    assert (r.cost[reached_second] < standalone[reached_second] + tiers[2].cost[reached_second]).all()
    assert chain_costs(tiers)[1][reached_second] == pytest.approx(0.0)
    assert r.cost[reached_second] == pytest.approx(first.cost[reached_second] + tiers[2].cost[reached_second])
    q, c, _ = sweep(tiers, np.array([[0.9, 1.1, np.nan]]), "return_last")
    assert c[0] == pytest.approx(r.cost)


def test_a_later_tier_tops_up_only_the_missing_samples(tmp_path: Path) -> None:
    data_path = write_outcomes(tmp_path, 40, seed=6)
    policy = loader.load(_reuse_policy(tmp_path, data_path, k2=3))
    data = outcomes.load(data_path)
    tiers = score_policy(policy, data, EvalSet.build(data), tmp_path)
    first, second, _ = tiers
    eff = chain_costs(tiers)[1]
    key = next(iter(second.calls))
    k, c = second.calls[key]
    assert (k == 3).all()
    # one of three samples was bought by tier 1: two thirds of tier 2's call remain (plus nothing else)
    assert eff == pytest.approx(c * 2 / 3)


def test_skip_is_free_and_reported(tmp_path: Path, files: tuple[Path, Path]) -> None:
    data_path, pol_path = files
    policy = loader.load(pol_path)
    data = outcomes.load(data_path)
    es = EvalSet.build(data)
    tiers = score_policy(policy, data, es, tmp_path)
    estimate = np.linspace(0, 1, len(es))
    skipped = tiers[0].with_skip(estimate, 0.5)
    r = run([skipped, *tiers[1:]])
    skip_rows = estimate < 0.5
    assert (r.outcome[skip_rows, 0] == SKIPPED).all()
    assert OUTCOME_NAMES[SKIPPED] == "skipped"
    assert not r.accepted[skip_rows & (r.answered == 0)].any()
    assert (r.answered[skip_rows] != 0).all()
    plain = run(tiers[1:])  # a skipped record runs as if the tier were not there
    assert r.cost[skip_rows] == pytest.approx(plain.cost[skip_rows])
    assert r.quality[skip_rows] == pytest.approx(plain.quality[skip_rows])
    kept = run(tiers)
    assert r.cost[~skip_rows] == pytest.approx(kept.cost[~skip_rows])
    # held-out rows scored later keep the rule (the tuner's path)
    half = np.arange(len(es)) % 2 == 0
    part = score_tier(policy.tiers[0], es.records, ReplayContext(tmp_path, data), rows=half)
    part = part.with_skip(estimate, 0.5)
    full = score_tier(policy.tiers[0], es.records, ReplayContext(tmp_path, data), rows=~half, into=part)
    assert full.skipped is not None
    assert np.array_equal(full.skipped, skip_rows) and (full.cost[skip_rows] == 0).all()


def test_simulated_reuse_matches_the_engine(tmp_path: Path) -> None:
    """The live engine also buys small's sample once: the simulation and the engine agree."""
    data_path = write_outcomes(tmp_path, 40, seed=8)
    pol_path = _reuse_policy(tmp_path, data_path)
    policy = loader.load(pol_path)
    data = outcomes.load(data_path)
    es = EvalSet.build(data)
    tiers = score_policy(policy, data, es, tmp_path)
    sim = run(tiers, on_exhausted=policy.on_exhausted)
    cascade = build(pol_path)
    escalated = 0
    for i, record in enumerate(es.records):
        result = cascade.run(record.prompt, metadata={"id": record.id})
        assert sim.cost[i] == pytest.approx(float(result.cost), rel=1e-9, abs=1e-15)
        assert [t.name for t in policy.tiers].index(result.tier) == sim.answered[i]
        escalated += sim.reached[i, 1]
    assert escalated > 0


def test_a_one_tier_policy_reads_the_aiq_of_its_model(files: tuple[Path, Path], tmp_path: Path) -> None:
    """Issue 20: a policy that is one model alone is a single point, read by the rule of the single
    models' AIQ (the costliest model alone: 0.0), and the report prints it."""
    from cascade.evaluate.metrics import aiq
    from cascade.evaluate.report import table

    data_path, _ = files
    pol = tmp_path / "one.yaml"
    pol.write_text(
        f'name: one\ntiers:\n  - name: t-big\n    provider: replay\n    model: big\n    options: {{path: "{data_path}"}}\n',
        encoding="utf-8",
    )
    ev = evaluate_file(loader.load(pol), outcomes.load(data_path), tmp_path, reps=20)
    f = ev.figures
    lo, hi = f["aiq"]["cost_range_usd"]
    big = next(s for s in f["single_models"] if s["model"] == "big")
    want = aiq(np.array([big["cost_per_query_usd"]]), np.array([big["quality"]]), lo, hi)
    assert big["cost_per_query_usd"] == hi and want == 0.0
    assert f["aiq"]["policy_curve"]["value"] == pytest.approx(want, abs=1e-12)
    assert "policy curve 0.0000" in table(ev) and "a single point" in table(ev)
