"""`cascade report` reads outcome logs only, of one policy at a time (issue 17 §4, §5)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cascade import Cascade
from cascade.cli import main
from tests.observe.support import observed

POLICY = """\
name: {name}
tiers:
  - name: cheap
    provider: scripted
    model: cheap-model
    price: {{input: 1, output: 1}}
    options: {{answers: ["4"]}}
    scorer: {{kind: fixed, value: 0.9}}
    threshold: {threshold}
  - name: strong
    provider: scripted
    model: strong-model
    price: {{input: 2, output: 2}}
    options: {{answers: ["4"]}}
logging:
  outcomes: {{path: "{log}"}}
"""


def _policy(tmp_path: Path, name: str = "p", threshold: float = 0.5, file: str = "p.yaml") -> Path:
    path = tmp_path / file
    path.write_text(POLICY.format(name=name, threshold=threshold, log=tmp_path / "logs" / "out.jsonl"))
    return path


def _run(policy: Path, n: int) -> None:
    c = Cascade.from_policy(str(policy))
    for i in range(n):
        c.run(f"q{i}")
    c.close()


def _log(tmp_path: Path) -> Path:
    c, _ = observed(tmp_path)
    for i in range(3):
        c.run(f"q{i}")
    c.close()
    return next(tmp_path.glob("out-*.jsonl"))


def _edit_first(log: Path, change: Any) -> None:
    lines = log.read_text().splitlines()
    row = json.loads(lines[0])
    change(row)
    log.write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("cascade"), "a recorded-outcomes record, not an outcome-log row"),
        (lambda r: r["cascade"].update(format="cascade-outcomes/99"), "'cascade-outcomes/99' is not one"),
        (lambda r: r["cascade"].pop("format"), "has no `format`"),
        (lambda r: r.update(cascade=[r["cascade"]]), "`cascade` block is a list"),
        (lambda r: r["cascade"].update(tiers="che"), "`cascade.tiers` is a string"),
    ],
    ids=["recorded-outcomes", "format-99", "no-format", "cascade-list", "tiers-string"],
)
def test_report_refuses_what_is_not_an_outcome_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: Any, message: str
) -> None:
    log = _log(tmp_path)
    _edit_first(log, change)
    capsys.readouterr()
    assert main(["report", str(log)]) == 1
    err = capsys.readouterr().err
    assert message in err and f"{log}:1:" in err and len(err.strip().splitlines()) == 1


def test_a_recorded_outcomes_data_set_is_not_a_log(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(data_dir / "gsm8k-zeroeval.jsonl.gz")]) == 1
    assert "not an outcome-log row" in capsys.readouterr().err


def test_since_counts_the_rows_without_a_readable_ts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = _log(tmp_path)
    _edit_first(log, lambda r: r["cascade"].update(ts="yesterday-ish"))
    capsys.readouterr()
    assert main(["report", str(log), "--since", "1d", "--json", "-"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["rows"] == 2
    assert "--since left out 1 row(s) without a readable `ts`" in out.err


def test_rows_carry_the_policy_identity_and_mixed_logs_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, tuned = _policy(tmp_path), _policy(tmp_path, threshold=0.95, file="p.tuned.yaml")
    _run(first, 3)
    logs = tmp_path / "logs"
    ids = {
        json.loads(x)["cascade"]["policy_id"]
        for f in logs.glob("*.jsonl")
        for x in f.read_text().splitlines()
    }
    assert len(ids) == 1
    capsys.readouterr()
    # the old policy's log against the tuned policy's prediction: refused, not a DRIFT by construction
    assert main(["report", str(logs), "--policy", str(tuned)]) == 1
    assert "no row of the log was written by this policy" in capsys.readouterr().err
    _run(tuned, 2)  # the same log path: the folder now holds two policies
    assert main(["report", str(logs)]) == 1
    assert "the log mixes 2 policies: p@" in capsys.readouterr().err
    assert main(["report", str(logs), "--policy", str(tuned), "--json", "-"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["rows"] == 2 and "left out the rows of other policies: p@" in out.err
    assert main(["report", str(logs), "--policy", str(first), "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 3


def test_a_policy_of_another_name_is_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = _log(tmp_path)  # an Observer built by hand: rows name policy 'obs' without an identity
    other = _policy(tmp_path, name="support")
    capsys.readouterr()
    assert main(["report", str(log), "--policy", str(other)]) == 0
    assert "warning: the log's rows are of policy obs, not 'support'" in capsys.readouterr().err


def _label(tmp_path: Path, csv: str) -> int:
    log = _log(tmp_path)
    rid = json.loads(log.read_text().splitlines()[0])["id"]
    labels = tmp_path / "labels.csv"
    labels.write_text(csv.format(id=rid))
    return main(
        [
            "label",
            str(log),
            "--reference",
            f"file:{labels}",
            "--rows",
            "all",
            "--out",
            str(tmp_path / "l.jsonl"),
        ]
    )


def test_label_refuses_a_csv_naming_a_model_the_log_does_not_have(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _label(tmp_path, "id,model,quality\n{id},gpt-9,1\n") == 1
    err = capsys.readouterr().err
    assert "model(s) gpt-9 not in the log (its models: large-model, medium-model, small-model)" in err
    assert not (tmp_path / "l.jsonl").exists()


def test_label_warns_of_conflicting_duplicate_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        _label(tmp_path, "id,model,quality\n{id},small-model,1\n{id},small-model,0\n{id},small-model,0\n")
        == 0
    )
    captured = capsys.readouterr()
    assert captured.err.count("warning:") == 1 and "labelled 1.0 before, now 0.0" in captured.err
    assert "file:" in captured.out and "labels 1 rows" in captured.out


def test_an_outcome_log_that_cannot_be_written_fails_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cascade.errors import ConfigurationError
    from cascade.observe import OutcomeLog

    (tmp_path / "taken").write_text("a file where the log's folder should be")
    with pytest.raises(ConfigurationError, match=r"cannot write the outcome log \(File exists"):
        OutcomeLog(tmp_path / "taken" / "out.jsonl")
    (tmp_path / "x-day.jsonl").mkdir()  # today's file is a folder
    with pytest.raises(ConfigurationError, match="not a file"):
        OutcomeLog(tmp_path / "x.jsonl", clock=lambda: "day")
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY.format(name="p", threshold=0.5, log=tmp_path / "taken" / "out.jsonl"))
    with pytest.raises(ConfigurationError, match="cannot write the outcome log"):
        Cascade.from_policy(str(policy))
    capsys.readouterr()
    assert main(["run", "-p", str(policy), "q"]) == 1
    err = capsys.readouterr().err
    assert "cannot write the outcome log" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_the_documented_production_loop_gives_no_false_drift(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """policies/production-loop.yaml's header, command by command: the tuned policy's report
    compares its own rows (DRIFT by construction before), and every file it makes is under out/."""
    import shlex

    root = Path(__file__).resolve().parents[2]
    text = (root / "policies" / "production-loop.yaml").read_text()
    commands = [
        shlex.split(line.split("#", 2)[1].strip())
        for line in text.splitlines()
        if line.startswith("#   cascade ")
    ]
    assert [c[1] for c in commands] == ["run", "label", "tune", "run", "report"]
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "production-loop.yaml").write_text(text)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "prompts.jsonl").write_text(
        "".join(json.dumps(f"What is {i}+2?") + "\n" for i in range(5000))
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CASCADE_LOG_DIR", str(tmp_path / "out" / "logs"))
    for command in commands:
        capsys.readouterr()
        assert main(command[1:]) == 0, capsys.readouterr().err
    report = capsys.readouterr()
    assert "drift: none" in report.out and "5000 requests" in report.out
    assert "left out the rows of other policies: production-loop@" in report.err
    made = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*") if p.is_file()}
    assert made == {"policies", "out"}  # out/ is in .gitignore: nothing left untracked
    assert "/out/" in (root / ".gitignore").read_text().splitlines()
    # the old way, the log before tuning against the tuned prediction, is refused, not DRIFT
    before = tmp_path / "before"
    before.mkdir()
    untuned = '"policy_id": "' + _identity(tmp_path) + '"'  # once: each load parses the YAML again
    for f in (tmp_path / "out" / "logs").glob("*.jsonl"):
        rows = [x for x in f.read_text().splitlines() if untuned in x]
        (before / f.name).write_text("\n".join(rows) + "\n")
    assert main(["report", str(before), "--policy", "out/production-loop.tuned.yaml"]) == 1
    assert "no row of the log was written by this policy" in capsys.readouterr().err


def _identity(tmp_path: Path) -> str:
    from cascade.policy import load

    return load(tmp_path / "policies" / "production-loop.yaml").identity()
