"""Features, logistic regression, calibration, artifacts, the classifier scorer and train-scorer."""

from __future__ import annotations

import gzip
import itertools
import json
import random
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cascade import outcomes
from cascade.cli import main
from cascade.engine.build import build
from cascade.errors import ConfigurationError
from cascade.learn.features import DENSE, FeatureConfig, dense_features, hashed_features
from cascade.request import Request
from cascade.scorers import metrics
from cascade.scorers.classifier import (
    Calibration,
    Classifier,
    ClassifierScorer,
    Example,
    examples_from_outcomes,
    fit_isotonic,
    fit_platt,
    split_examples,
    train,
    train_and_report,
)
from cascade.types import Completion, Sample, Usage

SMALL = FeatureConfig(bits=12)


def synthetic(n: int, seed: int = 0) -> list[Example]:
    """Right answers are plain; wrong ones hedge ("maybe", "not sure") more often."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        right = rng.random() < 0.6
        value = a + b if right else a + b + rng.choice([-2, -1, 1, 3])
        hedge = rng.random() < (0.15 if right else 0.8)
        text = f"{'Maybe, I am not sure, but ' if hedge else ''}the sum is {value}."
        out.append(Example(f"What is {a} + {b}?", (Sample(text),), 1.0 if right else 0.0, f"q{i}"))
    return out


def test_features_are_stable_and_bounded() -> None:
    samples = (Sample("The answer is 42. I think."),)
    i1, v1 = hashed_features("What is 6*7?", samples, SMALL)
    i2, v2 = hashed_features("What is 6*7?", samples, SMALL)
    assert np.array_equal(i1, i2) and np.array_equal(v1, v2)
    assert i1.max() < SMALL.hashed
    d = dense_features("What is 6*7?", samples)
    assert d.shape == (len(DENSE),)
    assert d[DENSE.index("hedges")] > 0
    assert d[DENSE.index("logprobs_present")] == 0
    with_lp = dense_features("q", (Sample("x", logprobs=(-0.1, -2.0)), Sample("x"), Sample("y")))
    assert with_lp[DENSE.index("logprob_min")] == -2.0
    assert with_lp[DENSE.index("agreement")] == pytest.approx(2 / 3)
    assert hashed_features("", (Sample(""),), SMALL)[0].size == 0


def test_metrics() -> None:
    assert metrics.auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert metrics.auroc([0.5, 0.5], [0, 1]) == pytest.approx(0.5)
    assert np.isnan(metrics.auroc([0.1, 0.2], [1, 1]))
    assert metrics.ece([0.9] * 10, [1] * 9 + [0]) == pytest.approx(0.0)
    assert metrics.ece([1.0, 0.0], [0, 1]) == pytest.approx(1.0)
    rows = metrics.accept_table([0.2, 0.6, 0.9], [0, 1, 1], [0.5, 0.95])
    assert rows[0].accept_rate == pytest.approx(2 / 3)
    assert rows[0].accuracy == 1.0
    assert rows[1].accuracy is None


def test_calibrators() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=2000)
    y = (rng.random(2000) < 1 / (1 + np.exp(-(2 * z - 0.5)))).astype(float)
    a, b = fit_platt(z, y)
    assert a == pytest.approx(2, abs=0.3) and b == pytest.approx(-0.5, abs=0.2)
    x, v = fit_isotonic(z, y)
    assert all(v0 <= v1 for v0, v1 in itertools.pairwise(v))
    iso = Calibration("isotonic", {"x": x, "y": v})
    assert metrics.ece(iso(z), y) < 0.02
    # separable data must not blow Platt up
    a, b = fit_platt(np.array([-3.0, -2, 2, 3]), np.array([0.0, 0, 1, 1]))
    assert np.isfinite(a) and np.isfinite(b)


def test_train_learns_calibrated_probabilities_and_round_trips(tmp_path: Path) -> None:
    clf, report = train_and_report(synthetic(600), synthetic(300, seed=1), config=SMALL)
    assert report.auroc > 0.7  # the best possible here is about 0.82
    assert report.ece < 0.1
    path = tmp_path / "clf.json"
    clf.save(path)
    doc = json.loads(path.read_text())
    assert doc["format"] == "cascade-classifier/1"
    assert doc["meta"]["held_out"]["auroc"] == pytest.approx(report.auroc)
    again = Classifier.load(path)
    p1, _ = clf.predict("What is 2 + 2?", (Sample("Maybe 5, not sure."),))
    p2, _ = again.predict("What is 2 + 2?", (Sample("Maybe 5, not sure."),))
    assert p1 == pytest.approx(p2, abs=1e-5)  # float32 weights
    p_plain, _ = again.predict("What is 2 + 2?", (Sample("The sum is 4."),))
    assert p_plain > p1


def test_isotonic_training() -> None:
    clf = train(synthetic(300), config=SMALL, calibration="isotonic")
    assert clf.calibration.method == "isotonic"
    p, _ = clf.predict("What is 1 + 1?", (Sample("the sum is 2."),))
    assert 0 <= p <= 1


def test_train_refuses_degenerate_data() -> None:
    with pytest.raises(ConfigurationError, match="at least 20"):
        train(synthetic(5), config=SMALL)
    same = [Example("q", (Sample("a"),), 1.0)] * 30
    with pytest.raises(ConfigurationError, match="same"):
        train(same, config=SMALL)


def test_bad_artifacts_are_clear(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    p.write_text('{"format": "something-else"}')
    with pytest.raises(ConfigurationError, match="not a cascade-classifier/1"):
        Classifier.load(p)
    p.write_text("not json")
    with pytest.raises(ConfigurationError, match="not JSON"):
        Classifier.load(p)
    with pytest.raises(ConfigurationError, match="cannot read"):
        Classifier.load(tmp_path / "missing.json")


def test_artifacts_with_wrong_shapes_fail_at_load_not_at_scoring(tmp_path: Path) -> None:
    clf = train(synthetic(120), config=SMALL)
    good = clf.to_json()
    p = tmp_path / "bad.json"
    p.write_text(json.dumps([good]))  # a JSON list
    with pytest.raises(ConfigurationError, match="a JSON list, expected an object"):
        ClassifierScorer.load(p)
    short = json.loads(json.dumps(good))
    short["dense"]["mean"] = short["dense"]["mean"][:-3]
    p.write_text(json.dumps(short))
    with pytest.raises(ConfigurationError, match="feature means"):
        ClassifierScorer.load(p)
    zero = json.loads(json.dumps(good))
    zero["dense"]["std"][0] = 0.0
    p.write_text(json.dumps(zero))
    with pytest.raises(ConfigurationError, match="finite and positive"):
        ClassifierScorer.load(p)
    iso = json.loads(json.dumps(good))
    iso["calibration"] = {"method": "isotonic", "x": [0.0, 1.0], "y": [0.5]}
    p.write_text(json.dumps(iso))
    with pytest.raises(ConfigurationError, match="isotonic"):
        ClassifierScorer.load(p)
    # a verifier or prompt-only artifact is not a classifier scorer's
    other = {**good, "kind": "prompt"}
    p.write_text(json.dumps(other))
    with pytest.raises(ConfigurationError, match="a prompt artifact, not a classifier one"):
        ClassifierScorer.load(p)
    for bad in (good, short):  # every error is one line
        p.write_text(json.dumps([bad]))
        with pytest.raises(ConfigurationError) as info:
            ClassifierScorer.load(p)
        assert "\n" not in str(info.value)


def test_feature_groups_and_extra_inputs(tmp_path: Path) -> None:
    ex = synthetic(300)
    only_prompt = FeatureConfig(bits=12, groups=("prompt",))
    idx, _ = hashed_features("What is 1 + 2?", (Sample("maybe 3"),), only_prompt)
    idx2, _ = hashed_features("What is 1 + 2?", (Sample("surely 4, not 3"),), only_prompt)
    assert sorted(idx.tolist()) == sorted(idx2.tolist())  # the answer is not looked at
    d = dense_features("What is 1 + 2?", (Sample("maybe 3"),), only_prompt)
    assert d[DENSE.index("hedges")] == 0 and d[DENSE.index("prompt_chars")] > 0
    # an extra input that carries the label is learned; the artifact keeps its name
    rng = random.Random(3)
    extra = [Example(e.prompt, e.samples, e.label, e.id, extra=(e.label + rng.random() * 0.5,)) for e in ex]
    clf = train(extra, config=SMALL, extra=("signal",))
    p = tmp_path / "x.json"
    clf.save(p)
    again = Classifier.load(p)
    assert again.extra == ("signal",)
    hi, _ = again.predict("What is 1 + 1?", (Sample("the sum is 2."),), (1.2,))
    lo, _ = again.predict("What is 1 + 1?", (Sample("the sum is 2."),), (0.1,))
    assert hi > 0.9 > 0.1 > lo
    with pytest.raises(ValueError, match="extra inputs"):
        again.predict("q", (Sample("a"),))
    with pytest.raises(ConfigurationError, match="extra inputs"):
        train(ex[:50] + extra[50:], config=SMALL, extra=("signal",))


def _outcomes_file(path: Path, examples: list[Example]) -> None:
    with gzip.open(path, "wt") as fh:
        for e in examples:
            rec = {
                "id": e.id,
                "prompt": e.prompt,
                "reference": None,
                "responses": {
                    "small": [
                        {
                            "text": e.samples[0].text,
                            "answer": None,
                            "quality": e.label,
                            "input_tokens": 10,
                            "output_tokens": 10,
                            "cost_usd": 0.00001,
                        }
                    ],
                    "big": [
                        {
                            "text": "ok",
                            "answer": None,
                            "quality": 1.0,
                            "input_tokens": 10,
                            "output_tokens": 10,
                            "cost_usd": 0.001,
                        }
                    ],
                },
            }
            fh.write(json.dumps(rec) + "\n")


def test_train_scorer_cli_and_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "logs.jsonl.gz"
    examples = synthetic(400)
    _outcomes_file(data, examples)
    artifact = tmp_path / "small.json"
    code = main(["train-scorer", str(data), "--model", "small", "-o", str(artifact), "--bits", "12"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "held-out AUROC" in out and "ECE" in out
    assert artifact.exists()
    assert main(["train-scorer", str(data), "--model", "smal", "-o", str(artifact)]) == 1
    assert "did you mean 'small'" in capsys.readouterr().err

    policy = tmp_path / "p.yaml"
    policy.write_text(
        textwrap.dedent(
            f"""
            name: trained
            tiers:
              - name: small
                provider: replay
                model: small
                free: true
                options: {{path: {data}}}
                scorer: {{kind: classifier, path: small.json}}
                threshold: 0.5
              - name: big
                provider: replay
                model: big
                free: true
                options: {{path: {data}}}
            """
        )
    )
    cascade = build(policy)
    confident = next(e for e in examples if "Maybe" not in e.samples[0].text)
    hedged = next(e for e in examples if "Maybe" in e.samples[0].text)
    high = cascade.run(confident.prompt).attempts[0].score
    low = cascade.run(hedged.prompt).attempts[0].score
    assert high is not None and low is not None and high > low


def test_scorer_scores_a_long_answer_free(tmp_path: Path) -> None:
    # its time per score is in benchmarks/scorer_speed.py, not asserted here
    clf = train(synthetic(200), config=SMALL)
    scorer = ClassifierScorer(clf)
    c = Completion((Sample("The sum is 42. " * 40),), Usage(), "m")
    s = scorer.score(Request.of("What is 20 + 22? " * 20), c)
    assert 0 <= s.value <= 1 and s.cost == 0


def test_examples_from_real_outcomes(data_dir: Path) -> None:
    data = outcomes.load(data_dir / "routerbench-arc.jsonl.gz")
    ex = examples_from_outcomes(data, "mistral-7b-chat")
    tr, te = split_examples(ex)
    assert {e.split for e in tr} == {"train"} and {e.split for e in te} == {"test"}
    with pytest.raises(ConfigurationError, match="did you mean"):
        examples_from_outcomes(data, "mistral-7b-chatt")


def test_a_failed_save_leaves_the_old_artifact_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An artifact a policy names is replaced only when the new one is written whole (a full disk
    mid-write must not leave a truncated artifact behind)."""
    path = tmp_path / "clf.json"
    path.write_text('{"old": true}\n')
    clf = train(synthetic(200), config=SMALL)
    real = Path.write_text

    def disk_full(self: Path, data: str, *args: object, **kwargs: object) -> int:
        real(self, data[: len(data) // 2], encoding="utf-8")
        raise OSError(28, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", disk_full)
    with pytest.raises(OSError, match="No space left"):
        clf.save(path)
    monkeypatch.undo()
    assert path.read_text() == '{"old": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clf.json"]  # no temporary file left
    clf.save(path)
    np.testing.assert_allclose(Classifier.load(path).weights, clf.weights, rtol=1e-6, atol=1e-7)  # float32
