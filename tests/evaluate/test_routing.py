"""The tuner's side of issue 9: costs that count each call once, and skip thresholds searched with
the accept thresholds."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

import pytest

from cascade import outcomes
from cascade.evaluate.routing import skip_levels
from cascade.evaluate.simulate import run
from cascade.evaluate.tune import Objective, Setting, _Search, tune
from tests.evaluate.synth import write_outcomes


def routing_data(folder: Path, n: int = 400, seed: int = 0) -> Path:
    """``weak`` is right on easy topics and wrong on hard ones; ``strong`` is right 93% of the time.
    Neither leaves a signal in its answer (one sample, always an answer): only the prompt tells."""
    rng = random.Random(seed)
    path = folder / "route.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for i in range(n):
            hard = rng.random() < 0.5
            topic = rng.choice(["topology", "measure theory"] if hard else ["arithmetic", "spelling"])
            responses = {}
            for model, p, price in (("weak", 0.1 if hard else 0.97, 1.0), ("strong", 0.93, 30.0)):
                right = rng.random() < p
                responses[model] = [
                    {
                        "text": f"The answer is {7 if right else 8}.",
                        "answer": "7" if right else "8",
                        "quality": 1.0 if right else 0.0,
                        "input_tokens": 50,
                        "output_tokens": 10,
                        "cost_usd": 60 * price / 1e6,
                    }
                ]
            rec = {"id": f"r{i}", "prompt": f"A question about {topic}, number {i}?", "responses": responses}
            fh.write(json.dumps(rec) + "\n")
    card = {"name": "route", "models": {"weak": {}, "strong": {}}}
    (folder / "route.card.json").write_text(json.dumps(card))
    return path


def skeleton(folder: Path, data: Path) -> Path:
    p = folder / "skeleton.yaml"
    p.write_text(
        f"""name: route
tiers:
  - name: weak
    provider: replay
    model: weak
    options: {{path: "{data}"}}
    scorer: {{kind: self_consistency, k: 1, answer: number}}
    threshold: 0.5
  - name: strong
    provider: replay
    model: strong
    options: {{path: "{data}"}}
"""
    )
    return p


@pytest.mark.slow
def test_tuner_finds_a_skip_rule_where_only_the_prompt_helps(tmp_path: Path) -> None:
    data_path = routing_data(tmp_path)
    data = outcomes.load(data_path)
    sk = skeleton(tmp_path, data_path)
    plain = tune(sk, data, Objective(target="best"), seed=1)
    routed = tune(sk, data, Objective(target="best"), seed=1, skip=1, artifacts=tmp_path / "art")
    assert plain.choice is not None and routed.choice is not None
    # without skip the weak tier cannot help (its score is always 1): the strong model alone
    assert [plain.candidates[i].spec.model for i in plain.choice.tiers] == ["strong"]
    first = routed.candidates[routed.choice.tiers[0]]
    assert "skip" in first.raw and Path(first.raw["skip"]["artifact"]).exists()
    assert first.scored is not None and first.scored.skip_threshold == first.raw["skip"]["threshold"]
    assert first.scored.skip_score is not None
    assert len(skip_levels(first.scored.skip_score, routed.train, 8)) >= 3
    test = routed.test
    held = run(routed.arrays(routed.choice, test), routed.thresholds(routed.choice))
    strong = routed.evalset.models.index("strong")
    q_strong = routed.evalset.quality[test, strong].mean()
    c_strong = routed.evalset.cost[test, strong].mean()
    assert held.quality.mean() >= q_strong - 0.02
    assert held.cost.mean() < 0.75 * c_strong  # most easy prompts never reach the strong model
    assert any("skip estimator" in n for n in routed.notes)


def test_search_costs_count_each_call_once(tmp_path: Path) -> None:
    """The search's own figures for every frontier setting equal the simulator's (which counts a
    partner that is also the next tier once)."""
    data_path = write_outcomes(tmp_path, 120, seed=2)
    sk = tmp_path / "sk.yaml"
    sk.write_text(
        f"""name: votes
tiers:
  - name: tiny-votes
    provider: replay
    model: tiny
    options: {{path: "{data_path}"}}
    scorer:
      kind: self_consistency
      k: 1
      answer: number
      mixture: [{{samples: 1, model: small}}]
    threshold: 0.9
  - name: small
    provider: replay
    model: small
    options: {{path: "{data_path}"}}
    scorer: {{kind: self_consistency, k: 1, answer: number}}
    threshold: 0.9
  - name: big
    provider: replay
    model: big
    options: {{path: "{data_path}"}}
"""
    )
    data = outcomes.load(data_path)
    tuning = tune(sk, data, Objective(target="best", confidence=0.0), depth=3, seed=0)
    for s in tuning.frontier:
        r = run(tuning.arrays(s, tuning.train), tuning.thresholds(s))
        assert r.cost.mean() == pytest.approx(s.cost, rel=1e-9, abs=1e-15)
        assert r.quality.mean() == pytest.approx(s.quality)
    names = [c.name for c in tuning.candidates]
    i, j = names.index("tiny-votes"), names.index("small")
    search = _Search(tuning.candidates, tuning.train)
    search.pairs()
    search.deeper([(i,)], [names.index("big")], [i, j], 4)
    checked = 0
    for tiers, ths, qs, cs in search.settings:
        if tiers[:2] != (i, j):
            continue
        for row in range(len(ths)):
            s = Setting(tiers, tuple(float(x) for x in ths[row]), 0.0, 0.0)
            r = run(tuning.arrays(s, tuning.train), tuning.thresholds(s))
            assert cs[row] == pytest.approx(r.cost.mean(), rel=1e-9, abs=1e-15)
            assert qs[row] == pytest.approx(r.quality.mean())
            checked += 1
    assert checked >= 2
    a, b = tuning.candidates[i].scored, tuning.candidates[j].bare
    assert a is not None and b is not None
    both = run([a.take(tuning.train), b.take(tuning.train)], [1.1, None])  # never accept: both called
    assert both.cost.mean() == pytest.approx(a.take(tuning.train).cost.mean())  # small was bought by the vote


@pytest.mark.slow
def test_cli_tune_skip_writes_a_policy_that_skips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cascade.cli import main
    from cascade.engine.build import build
    from cascade.policy import loader

    data_path = routing_data(tmp_path)
    sk = skeleton(tmp_path, data_path)
    out = tmp_path / "tuned.yaml"
    code = main(
        [
            "tune",
            str(sk),
            "--data",
            str(data_path),
            "--target-quality",
            "best",
            "--skip",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    policy = loader.load(out)
    first = policy.tiers[0]
    assert first.skip is not None and Path(first.skip.artifact).exists()
    cascade = build(out)  # the engine loads the estimator the tuner wrote
    data = outcomes.load(data_path)
    hard = next(r for r in data.records if "topology" in r.prompt)
    result = cascade.run(hard.prompt, metadata={"id": hard.id})
    assert result.attempts[0].decision == "skipped" and result.attempts[0].cost == 0
    assert main(["tune", str(sk), "--data", str(data_path), "--target-quality", "best", "--skip", "-1"]) == 2


@pytest.mark.slow
def test_no_skip_level_at_which_the_written_estimator_skips_every_prompt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # issue 20: the final estimator (the one the policy runs) can sit lower than the out-of-fold
    # estimates the levels come from; a level above all of its training estimates is never offered
    from cascade.evaluate import routing

    real = routing.oof_estimates

    class Lower:
        def __init__(self, final: Any) -> None:
            self.final = final

        def predict_many(self, prompts: list[str]) -> Any:
            return self.final.predict_many(prompts) - 10.0

        def save(self, path: Path) -> None:
            self.final.save(path)

    def lowered(*args: Any, **kw: Any) -> Any:
        got = real(*args, **kw)
        return None if got is None else (got[0], Lower(got[1]))

    monkeypatch.setattr(routing, "oof_estimates", lowered)
    data_path = routing_data(tmp_path)
    t = tune(
        skeleton(tmp_path, data_path),
        outcomes.load(data_path),
        Objective(target="best"),
        seed=1,
        skip=1,
        artifacts=tmp_path / "art",
    )
    assert not [c for c in t.candidates if "skip" in c.raw]
    assert any("the final estimator skips every prompt" in n for n in t.notes)


@pytest.mark.slow
def test_benchmark_reports_cascade_routing_where_it_wins_on_the_training_half(tmp_path: Path) -> None:
    """``benchmarks/run_all.py``'s weak/strong figures (issue 20, item 5): where only the prompt
    tells, cascade routing (the start tier from the prompt, then the scorer) beats the plain
    two-tier cascade on the training half, so it is what the default table and row report."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import run_all

    data_path = routing_data(tmp_path)
    data = outcomes.load(data_path)
    sk = skeleton(tmp_path, data_path)
    t = tune(sk, data, Objective(target="best"), seed=1, skip=1, artifacts=tmp_path / "art")
    pair = ("weak", "strong")
    plain = run_all.pair_figures(t, sk, pair, seed=1)
    route = run_all.route_figures(t, pair, seed=1)
    assert plain is not None and route is not None and route["routed"] and not plain["routed"]
    assert route["train_cpt50"] < plain["train_cpt50"]
    chosen = run_all.routed_pair(plain, route)
    assert chosen is route
    # the weak model's score is always 1: the plain cascade cannot route; the start tier can
    assert route["cpt50"]["value"] < 0.6 < (plain["cpt50"]["value"] or 1.0)
    assert route["cpt50"]["low"] <= route["cpt50"]["value"] <= route["cpt50"]["high"]
    # the other way round, the plain cascade stays
    assert run_all.routed_pair(plain, {**route, "train_cpt50": 1.0}) is plain
    row = {"set": "route", "tune_seconds": 0, "policy": "-", "quality": {"value": 1, "low": 1, "high": 1}}
    row |= {"best_single": "strong", "best_quality": 1, "cost_share": None, "cost_at_matched_quality": None}
    row |= {"aiq_tuned": 0, "aiq_best_single": 0, "aiq_best_mix": 0, "pair": chosen}
    assert "| cascade routing: " in run_all.markdown([row])


def test_tolerance_accepts_a_cheaper_setting_within_it_of_the_best_model(tmp_path: Path) -> None:
    """``Objective(target="best", tolerance=...)`` (issue 20's "within 0.5 points of the best"):
    a setting that far under the best model, paired margin included, reaches the target."""
    from cascade.errors import ConfigurationError

    data_path = routing_data(tmp_path)
    data = outcomes.load(data_path)
    sk = skeleton(tmp_path, data_path)
    exact = tune(sk, data, Objective(target="best"), seed=1)
    loose = tune(sk, data, Objective(target="best", tolerance=0.6), seed=1)
    assert exact.choice is not None and loose.choice is not None
    assert [exact.candidates[i].spec.model for i in exact.choice.tiers] == ["strong"]
    assert loose.choice.cost < 0.2 * exact.choice.cost  # the weak model alone is within 0.6
    assert loose.target_quality is not None and exact.target_quality is not None
    assert loose.target_quality == pytest.approx(exact.target_quality - 0.6)
    with pytest.raises(ConfigurationError, match="tolerance"):
        Objective(cost_cap=1.0, tolerance=0.1)
    with pytest.raises(ConfigurationError, match="tolerance"):
        Objective(target="best", tolerance=-0.1)
