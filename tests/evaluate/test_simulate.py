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
from cascade.evaluate.simulate import run, sweep, threshold_grid
from cascade.evaluate.tune import _Arr, _two_tier
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
