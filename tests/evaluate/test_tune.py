"""Tuning on synthetic files, the written policy, and the two commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cascade import outcomes
from cascade.cli import main
from cascade.errors import ConfigurationError
from cascade.evaluate import held_out
from cascade.evaluate.tune import Objective, Setting, tune
from cascade.evaluate.write import render, tuned_raw
from cascade.policy import loader
from tests.evaluate.synth import write_outcomes, write_policy


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    data = write_outcomes(tmp_path, 200, seed=5)
    return data, write_policy(tmp_path, data)


def test_tune_for_the_best_model_quality(files: tuple[Path, Path]) -> None:
    data_path, pol_path = files
    t = tune(pol_path, outcomes.load(data_path), Objective(target="best", confidence=0.0), seed=1)
    assert t.choice is not None
    assert t.reference == "big"
    assert t.choice.quality >= (t.target_quality or 0) - 1e-9
    names = [t.candidates[i].name for i in t.choice.tiers]
    big_cost = float(t.evalset.cost[t.train, t.evalset.column("big")].mean())
    assert t.choice.cost < big_cost
    raw = tuned_raw(pol_path, t, t.choice)
    policy = loader.loads(render(raw, ["header"], {}), source="tuned")
    assert [x.name for x in policy.tiers] == names
    ev = held_out(t, t.choice, policy, reps=50)
    assert ev.n == int(t.test.sum())
    # the held-out figures come from the same cascade
    assert ev.figures["tiers"][0]["tier"] == names[0]


def test_tune_under_a_cost_cap(files: tuple[Path, Path]) -> None:
    data_path, pol_path = files
    data = outcomes.load(data_path)
    cheap = tune(pol_path, data, Objective(cost_cap=1e-5, confidence=0.0))
    assert cheap.choice is not None and cheap.choice.cost <= 1e-5
    rich = tune(pol_path, data, Objective(cost_cap=1.0, confidence=0.0))
    assert rich.choice is not None and rich.choice.quality >= cheap.choice.quality
    impossible = tune(pol_path, data, Objective(cost_cap=1e-9))
    assert impossible.choice is None and impossible.notes


def test_tune_widens_candidates_and_agreement(files: tuple[Path, Path]) -> None:
    data_path, pol_path = files
    t = tune(
        pol_path,
        outcomes.load(data_path),
        Objective(target=0.8, confidence=0.0),
        models="all",
        partners=1,
        pool=3,
        depth=4,
    )
    assert any(c.partners for c in t.candidates)
    assert t.choice is not None


def test_objective_needs_exactly_one_goal() -> None:
    from cascade.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        Objective()
    with pytest.raises(ConfigurationError):
        Objective(cost_cap=1.0, target="best")


def test_cli_eval(files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, pol_path = files
    out = tmp_path / "figs.json"
    png = tmp_path / "plot.png"
    assert main(["eval", str(pol_path), "--bootstrap", "30", "--json", str(out), "--plot", str(png)]) == 0
    text = capsys.readouterr().out
    assert "best single model" in text and "AIQ" in text and "t-tiny" in text
    figs = json.loads(out.read_text())
    assert figs["records"] == 200
    assert png.stat().st_size > 10_000
    assert main(["eval", str(pol_path), "--bootstrap", "20", "--split", "seed", "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["records"] == 100


def test_cli_tune_writes_a_policy_and_a_diff(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, pol_path = files
    out = tmp_path / "tuned.yaml"
    code = main(
        [
            "tune",
            str(pol_path),
            "--target-quality",
            "best",
            "--confidence",
            "0",
            "--bootstrap",
            "30",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "--- " in text and "+++ " in text
    written = out.read_text()
    assert written.startswith("# Tuned by `cascade tune`")
    assert "predicted quality" in written
    loader.load(out)  # the written policy is valid
    assert main(["validate", str(out)]) == 0


def test_cli_errors(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, pol_path = files
    assert main(["tune", str(pol_path), "--target-quality", "high"]) == 2
    assert "--target-quality" in capsys.readouterr().err
    assert main(["tune", str(pol_path), "--cost-cap", "1", "--tolerance", "0.01"]) == 2
    assert "tolerance" in capsys.readouterr().err


def test_cli_tune_tolerance(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--tolerance``: the written policy reaches the best model's quality less the tolerance."""
    _, pol_path = files
    out = tmp_path / "tuned.yaml"
    args = ["tune", str(pol_path), "--target-quality", "best", "--bootstrap", "20", "--out", str(out)]
    assert main([*args, "--tolerance", "0.5"]) == 0
    capsys.readouterr()
    loose = loader.load(out)
    out.unlink()
    assert main(args) == 0
    exact = loader.load(out)
    # a cheaper policy passes within half the quality: fewer or other tiers, or other thresholds
    assert [(t.model, t.threshold) for t in loose.tiers] != [(t.model, t.threshold) for t in exact.tiers]
    assert main(["eval", str(pol_path), "--data", "/nonexistent.jsonl.gz"]) == 2
    assert main(["eval", str(pol_path), "--pair", "tiny"]) == 2


def test_fewer_samples_are_tried(files: tuple[Path, Path]) -> None:
    data_path, pol_path = files
    t = tune(pol_path, outcomes.load(data_path), Objective(target="best", confidence=0.0), samples=[1, 3, 9])
    names = {c.name for c in t.candidates}
    assert {"t-tiny-k1", "t-tiny-k3", "t-small-k3"} <= names
    assert not any(n.endswith("-k9") for n in names)  # never more samples than the skeleton asks
    k3 = next(c for c in t.candidates if c.name == "t-tiny-k3")
    k5 = next(c for c in t.candidates if c.name == "t-tiny")
    assert k3.scored is not None and k5.scored is not None
    assert k3.scored.cost[t.train].mean() < k5.scored.cost[t.train].mean()


def test_classifier_candidates_are_trained_on_the_training_part(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    data_path, pol_path = files
    t = tune(
        pol_path,
        outcomes.load(data_path),
        Objective(cost_cap=1.0, confidence=0.0),
        classifiers=1,
        artifacts=tmp_path / "clf",
    )
    clf = [c for c in t.candidates if c.name.endswith("-clf")]
    assert len(clf) == 1 and clf[0].scored is not None
    assert (tmp_path / "clf" / f"{clf[0].spec.model}.classifier.json").exists()
    # out-of-fold scores on the training part, nothing yet on the held-out part
    assert not np.isnan(clf[0].scored.score[t.train]).any()
    assert np.isnan(clf[0].scored.score[t.test]).all()
    big = next(i for i, c in enumerate(t.candidates) if c.name == "t-big")
    setting = Setting((t.candidates.index(clf[0]), big), (0.5,), 0.0, 0.0)
    t.ensure(setting)
    assert not np.isnan(clf[0].scored.score[t.test]).any()


@pytest.mark.parametrize("depth", [1, 2])
def test_depth_limits_the_cascade(files: tuple[Path, Path], depth: int) -> None:
    data_path, pol_path = files
    t = tune(pol_path, outcomes.load(data_path), Objective(cost_cap=1.0, confidence=0.0), depth=depth)
    assert t.choice is not None
    assert len(t.choice.tiers) <= depth
    assert all(len(s.tiers) <= depth for s in t.frontier)


def test_tune_states_what_the_margin_costs(files: tuple[Path, Path]) -> None:
    data_path, pol_path = files
    data = outcomes.load(data_path)
    free = tune(pol_path, data, Objective(target="best", confidence=0.0), seed=1)
    assert free.choice is not None and free.unmargined is None
    strict = tune(pol_path, data, Objective(target="best", confidence=2.0), seed=1)
    # the margin's own choice without the margin is the zero-confidence choice
    assert strict.unmargined == free.choice
    # on this file the margin buys a costlier, better setting, and the notes say what it costs
    assert strict.choice is not None and strict.choice != free.choice
    assert strict.choice.cost > free.choice.cost and strict.choice.quality > free.choice.quality
    assert any("without the margin of 2 standard errors" in n for n in strict.notes)


def test_cli_tune_refuses_too_few_records_and_prints_the_interval(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_outcomes(tmp_path, 2, seed=5)
    pol_path = write_policy(tmp_path, data)
    out = tmp_path / "tuned.yaml"
    args = ["tune", str(pol_path), "--target-quality", "0.1", "--bootstrap", "30", "--out", str(out)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "1 training and 1 held-out records; at least 30 in each part" in err and "--min-records" in err
    assert not out.exists()
    assert main([*args, "--min-records", "1", "--json", "-"]) == 0  # overridden: written, interval said
    assert "predicted quality" in capsys.readouterr().err and "(95% CI " in out.read_text()
    assert main([*args, "--min-records", "0"]) == 2


@pytest.mark.slow
def test_more_candidates_never_make_an_objective_infeasible(data_dir: Path, tmp_path: Path) -> None:
    """Each candidate flag alone met the objective, all together did not: only the 3,000 cheapest
    settings were checked with the margin, and more candidates put more near misses first."""
    data_file = data_dir / "gsm8k-zeroeval.jsonl.gz"
    policy = tmp_path / "gsm.yaml"
    policy.write_text(
        Path("policies/gsm8k-replay.yaml")
        .read_text()
        .replace("${CASCADE_DATA:-../../shared/data}", str(data_dir))
    )
    data = outcomes.load(data_file)
    goal = Objective(None, "best", 1.5)
    alone = tune(policy, data, goal, models="all")
    together = tune(policy, data, goal, models="all", classifiers=2, partners=2, artifacts=tmp_path / "a")
    assert alone.choice is not None and together.choice is not None
    assert together.choice.cost <= alone.choice.cost + 1e-12  # the wider search finds one at most as dear


def test_tune_writes_artifacts_only_where_it_is_told(
    files: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No cascade-tune-* folder left in the temp dir on every run (22 after an afternoon)."""
    import tempfile

    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    data_path, pol_path = files
    data = outcomes.load(data_path)
    for kw in ({"classifiers": 1}, {"skip": 1}):
        with pytest.raises(ConfigurationError, match="give artifacts=FOLDER"):
            tune(pol_path, data, Objective(target="best"), **kw)  # type: ignore[arg-type]
    assert list(temp.iterdir()) == []


def test_the_written_classifier_is_cross_fit_and_reproduces_the_out_of_fold_scores(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    """Issue 20 §2: the deployed artifact scores a training prompt exactly as the tuner's
    out-of-fold score did (the fold model that never saw it), so a threshold chosen on those scores
    accepts the same share of new traffic; a refit model alone scored them otherwise."""
    from cascade.errors import ConfigurationError
    from cascade.learn.classifier import Classifier, examples_from_outcomes

    data_path, pol_path = files
    data = outcomes.load(data_path)
    t = tune(
        pol_path, data, Objective(cost_cap=1.0, confidence=0.0), classifiers=1, artifacts=tmp_path / "clf"
    )
    cand = next(c for c in t.candidates if c.name.endswith("-clf"))
    assert cand.scored is not None
    path = tmp_path / "clf" / f"{cand.spec.model}.classifier.json"
    clf = Classifier.load(path, kind="classifier")
    assert len(clf.members) == 2
    by_id = {e.id: e for e in examples_from_outcomes(data, cand.spec.model)}
    rows = [i for i, keep in enumerate(t.train) if keep and t.evalset.records[i].id in by_id]
    got = [
        clf.predict(by_id[t.evalset.records[i].id].prompt, by_id[t.evalset.records[i].id].samples)[0]
        for i in rows
    ]
    assert np.allclose(got, cand.scored.score[rows], atol=1e-12)
    # a cross-fit artifact round-trips, and a malformed one is refused when loaded
    assert len(Classifier.from_json(clf.to_json()).members) == 2
    bad = {**clf.to_json(), "cross_fit": [clf.members[0].to_json()]}
    with pytest.raises(ConfigurationError, match="at least two fold models"):
        Classifier.from_json(bad)


def test_a_learned_verifier_costs_its_partners_calls_on_the_training_part(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    """A verifier candidate calls its partner models when it scores: the tuner chooses on the
    training part with that cost (what the written policy spends), not the bare tier's alone."""
    from cascade.evaluate.simulate import ReplayContext, score_tier

    data_path, pol_path = files
    data = outcomes.load(data_path)
    t = tune(
        pol_path, data, Objective(cost_cap=1.0, confidence=0.0), classifiers=2, artifacts=tmp_path / "clf"
    )
    ver = next(c for c in t.candidates if c.name.endswith("-ver") and c.spec.scorer.options["partners"])
    assert ver.scored is not None and ver.bare is not None
    real = score_tier(ver.spec, t.evalset.records, ReplayContext(pol_path.parent, data, "auto"), rows=t.train)
    train = t.train
    assert (real.cost[train] > ver.bare.cost[train]).any()  # the partners' calls cost something
    assert np.allclose(ver.scored.cost[train], real.cost[train])
    assert np.allclose(ver.scored.scorer_cost[train], real.scorer_cost[train])
    assert set(ver.scored.calls) == set(real.calls)  # the partners' samples, for later tiers to reuse
