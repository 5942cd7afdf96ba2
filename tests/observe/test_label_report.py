"""Labels without humans, their agreement, and the live report with drift flags."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cascade.cli import main
from cascade.observe import label as lab
from cascade.observe.report import predictions, report, wilson
from tests.observe.support import observed


def row(
    answers: dict[str, list[str | None]], *, shadow: bool = True, answered: str = "t0", **extra: Any
) -> dict[str, Any]:
    tiers = {
        f"t{i}": {"model": m, "decision": "escalated", "reason": "score 0.1 < 0.5", "chosen": 0}
        for i, m in enumerate(answers)
    }
    tiers[answered]["decision"] = "accepted"
    tiers[answered]["reason"] = "score 0.9 >= 0.5"
    return {
        "id": extra.pop("id", "r"),
        "prompt": "sha256:x",
        "responses": {m: [{"answer": a, "quality": None} for a in ans] for m, ans in answers.items()},
        "cascade": {
            "tiers": tiers,
            "strongest": f"t{len(answers) - 1}",
            "shadow": shadow,
            "answered": answered,
            "accepted": True,
            "cost": "0.001",
            "shadow_cost": "0",
            **extra,
        },
    }


def test_strongest_labels_by_agreement_with_the_strongest_majority() -> None:
    r = row({"a": ["1", "2", None], "b": ["2", "2", "3"]})
    assert lab.strongest(r) == {"a": [0.0, 1.0, 0.0], "b": [1.0, 1.0, 0.0]}


def test_no_strongest_label_when_the_strongest_tier_was_not_called() -> None:
    r = row({"a": ["1"], "b": ["1"]})
    del r["responses"]["b"]
    assert lab.strongest(r) is None


def test_file_labels_by_reference_or_by_model(tmp_path: Path) -> None:
    refs = tmp_path / "refs.csv"
    refs.write_text("id,reference\nq1,2\n")
    by_model = tmp_path / "m.csv"
    by_model.write_text("id,model,quality\nq1,a,1\n")
    r = row({"a": ["1"], "b": ["2"]}, request_id="q1")
    assert lab.from_file(refs)(r) == {"a": [0.0], "b": [1.0]}
    assert lab.from_file(by_model)(r) == {"a": [1.0]}
    assert lab.from_file(refs)(row({"a": ["1"]}, id="other")) is None
    bad = tmp_path / "bad.csv"
    bad.write_text("name,score\n")
    with pytest.raises(Exception, match="columns"):
        lab.from_file(bad)


def test_agreement_between_sources() -> None:
    a: list[lab.Labels | None] = [{"m": [1.0]}, {"m": [0.0]}, None]
    b: list[lab.Labels | None] = [{"m": [1.0]}, {"m": [1.0]}, {"m": [1.0]}]
    [p] = lab.agreement({"x": a, "y": b})
    assert (p.compared, p.agreed, p.rate) == (2, 1, 0.5)


def test_apply_first_source_wins_per_sample() -> None:
    r = row({"a": ["1", "2"]})
    complete = lab.apply(r, [{"a": [None, 0.0]}, {"a": [1.0, 1.0]}])
    assert [s["quality"] for s in r["responses"]["a"]] == [1.0, 0.0] and complete


TUNED = """\
# predicted quality     0.9000  (95% CI 0.8500 .. 0.9500)
# predicted cost/query  $0.0010  (95% CI $0.0009 .. $0.0011)
name: p
tiers:
# held-out: reached by 100 records, accepts 60.0% at quality 0.9; $0.0001 per call
- name: t0
  provider: scripted
# held-out: reached by 40 records, accepts 100.0% at quality 1.0; $0.002 per call
- name: t1
"""


SMALL = """\
- name: small
  provider: scripted
  model: s
  options: {answers: [x]}
  scorer: {kind: fixed, value: 0.5}
  threshold: 0.5
"""
LARGE = """\
- name: large
  provider: scripted
  model: l
  options: {answers: [y]}
"""


def test_predictions_are_read_from_the_tuned_header() -> None:
    p = predictions(TUNED)
    assert p["quality"] == {"value": 0.9, "low": 0.85, "high": 0.95}
    assert p["cost_per_request"]["high"] == 0.0011
    assert p["tiers"] == {
        "t0": {"reached": 100, "accept_rate": 0.6},
        "t1": {"reached": 40, "accept_rate": 1.0},
    }


def _traffic(accept_share: float, n: int = 200) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        answered = "t0" if i < accept_share * n else "t1"
        shadow = i % 10 == 0
        r = row({"a": ["1"], "b": ["1"]}, answered=answered, shadow=shadow)
        if answered == "t0" and shadow:  # the strongest tier called in the background
            r["cascade"]["tiers"]["t1"].update(decision="shadow", reason="shadow", shadow=True)
        elif answered == "t0":
            del r["cascade"]["tiers"]["t1"], r["responses"]["b"]
        out.append(r)
    return out


def test_report_flags_drift_only_when_a_figure_leaves_its_interval() -> None:
    pred = predictions(TUNED)
    steady = report(_traffic(0.6), ["t0", "t1"], pred)
    t0 = steady["tiers"][0]
    assert (t0["reached"], t0["accepted"], t0["accept_rate"]) == (200, 120, 0.6)
    assert t0["drift"] is False and steady["cost_per_request"]["drift"] is False
    drifted = report(_traffic(0.3), ["t0", "t1"], pred)
    assert drifted["tiers"][0]["drift"] is True and drifted["drift"] is True
    assert drifted["tiers"][0]["escalations"] == {"low_score": 140}


def test_report_estimates_quality_on_labelled_shadow_rows() -> None:
    rows = _traffic(0.6)
    for r in rows:
        lab.apply(r, [lab.strongest(r)])
    rows[0]["responses"]["a"][0]["quality"] = 0.0  # one shadow row where the returned answer is wrong
    fig = report(rows, ["t0", "t1"], {})
    assert fig["quality"]["n"] == 20 and fig["quality"]["value"] == pytest.approx(19 / 20)
    assert fig["quality"]["low"] == pytest.approx(wilson(19, 20)[0])


@pytest.mark.slow
def test_label_and_report_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c, _ = observed(tmp_path, rate=0.5, answers=("x", "y", "y"))
    for i in range(40):
        c.run(f"q{i}")
    c.close()
    out = tmp_path / "labelled.jsonl"
    assert main(["label", str(tmp_path / "out.jsonl"), "--reference", "strongest", "--out", str(out)]) == 0
    kept = [json.loads(x) for x in out.read_text().splitlines()]
    assert kept and all(r["cascade"]["shadow"] for r in kept)
    assert all(r["responses"]["medium-model"][0]["quality"] == 1.0 for r in kept)  # Y agrees with large's y?
    assert json.loads((tmp_path / "labelled.card.json").read_text())["models"]
    policy = tmp_path / "p.yaml"
    policy.write_text(
        TUNED.replace("- name: t0\n  provider: scripted\n", SMALL).replace("- name: t1\n", LARGE)
    )
    capsys.readouterr()
    code = main(
        ["report", str(tmp_path / "out.jsonl"), "--policy", str(policy), "--json", str(tmp_path / "r.json")]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "40 requests" in text and "small" in text and "60.0% (50.4%..69.6%)" in text
    assert json.loads((tmp_path / "r.json").read_text())["rows"] == 40


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["label", str(tmp_path / "nope.jsonl"), "--reference", "strongest", "--out", "x"]) == 1
    assert "no such log file" in capsys.readouterr().err
    one = {
        "id": "1",
        "prompt": "p",
        "responses": {},
        "cascade": {"format": "cascade-outcomes/1", "tiers": {}},
    }
    (tmp_path / "o-2026-01-01.jsonl").write_text(json.dumps(one) + '\n{"cut off\n')
    assert main(["label", str(tmp_path), "--reference", "nonsense", "--out", str(tmp_path / "l.jsonl")]) == 2
    assert "--reference" in capsys.readouterr().err
    log = str(tmp_path / "o-2026-01-01.jsonl")
    assert main(["label", log, "--reference", "strongest", "--out", log]) == 2
    assert (
        f"--out {log} is the log file {log}: an output never overwrites an input" in capsys.readouterr().err
    )
    assert main(["report", str(tmp_path), "--since", "soon"]) == 2
    assert main(["report", str(tmp_path)]) == 0
    assert "skipped 1 line" in capsys.readouterr().err


JUDGE = """\
kind: judge
provider: scripted
model: judge-model
price: {input: 1, output: 1}
options: {answers: ["[[9]]"], input_tokens: 1000, output_tokens: 20}
retry: {attempts: 1}
"""


def test_judge_labels_within_a_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = tmp_path / "logs"
    c, _ = observed(logs, include_text=True)
    for i in range(3):
        c.run(f"question {i}")
    c.close()
    (tmp_path / "judge.yaml").write_text(JUDGE)
    out = tmp_path / "judged.jsonl"
    args = ["label", str(logs), "--reference", "judge", "--judge", str(tmp_path / "judge.yaml")]
    assert main([*args, "--judge-budget", "0.003", "--rows", "all", "--out", str(out)]) == 0
    labels = [
        s["quality"]
        for line in out.read_text().splitlines()
        for m in json.loads(line)["responses"].values()
        for s in m
    ]
    assert labels.count(None) == 3 and all(q == pytest.approx(8 / 9) for q in labels if q is not None)
    assert "judge: 3 calls, $0.00306 spent, 3 samples left unlabelled (budget)" in capsys.readouterr().out


def test_judge_needs_texts(tmp_path: Path) -> None:
    c, _ = observed(tmp_path)
    c.run("q")
    c.close()
    from cascade.observe.logfile import read_log

    [row] = read_log([str(tmp_path)]).rows
    budget = lab.JudgeBudget(Decimal(1))
    assert lab.from_judge(object(), budget)(row) is None  # a hashed prompt cannot be judged


@pytest.mark.slow
def test_report_plot_and_since(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c, _ = observed(tmp_path)
    for i in range(5):
        c.run(f"q{i}")
    c.close()
    old = tmp_path / "out-2020-01-01.jsonl"  # a day long gone
    line = (next(tmp_path.glob("out-2*.jsonl"))).read_text().splitlines()[0]
    old.write_text(line.replace('"ts": "20', '"ts": "2020-01-01T00:00:00.000+00:00", "was": "20') + "\n")
    png = tmp_path / "r.png"
    capsys.readouterr()
    assert (
        main(["report", str(tmp_path / "out.jsonl"), "--since", "1d", "--plot", str(png), "--json", "-"]) == 0
    )
    fig = json.loads(capsys.readouterr().out)
    assert fig["rows"] == 5  # the 2020 row is older than a day
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_an_abstention_is_logged_as_one_and_never_read_as_an_answer(tmp_path: Path) -> None:
    from cascade import Cascade
    from cascade.observe import Observer, OutcomeLog
    from tests.helpers import tier
    from tests.observe.support import rows

    obs = Observer(log=OutcomeLog(tmp_path / "out.jsonl"))
    tiers = [tier("small", "s", 0.4, 0.5), tier("large", "l", 0.2, 0.5)]
    result = Cascade(tiers, name="t", on_unverified="abstain", observer=obs).run("q")
    obs.log.close()  # type: ignore[union-attr]
    assert result.abstained
    (logged,) = rows(tmp_path)
    m = logged["cascade"]
    assert m["answered"] is None and m["reason"] == "abstained" and m["accepted"] is False
    assert m["abstained"] == {"tier": "large", "why": result.abstention}
    old = json.loads(json.dumps(logged))  # a row written before: `answered` named the last tier
    old["cascade"]["answered"] = "large"
    del old["cascade"]["abstained"]
    for r in (logged, old):
        r["responses"][m["tiers"]["large"]["model"]][0]["quality"] = 1.0  # labelled: no answer's quality
        r["cascade"]["shadow"] = True
        fig = report([r], ["small", "large"], {})
        assert [t["answered"] for t in fig["tiers"]] == [0, 0] and fig["abstained"] == 1
        assert fig["quality"] is None
