"""A user's files (issue 17 sections 2 and 3): an output never overwrites an input, writes are
atomic, and bad files or paths are one-line errors before any work."""

from __future__ import annotations

import gzip
import hashlib
import json
from datetime import timedelta
from pathlib import Path

import pytest

from cascade import files
from cascade.cli import main
from tests.clock import now
from tests.evaluate.synth import write_outcomes, write_policy
from tests.observe.support import observed

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "policies" / "demo.yaml"


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def digest(folder: Path) -> dict[str, str]:
    """Every file of ``folder`` and its content hash: what a refused command must leave alone."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def synth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.chdir(tmp_path)
    data = write_outcomes(tmp_path, 200, seed=5)
    return data, write_policy(tmp_path, data)


def refused(err: str, out: str, relation: str, what: str) -> bool:
    return (
        err.count("\n") == 1
        and err.startswith(f"cascade: error: {out} {relation} {what}")
        and ("an output never overwrites an input; write it elsewhere" in err)
    )


# -- section 2: every verb's outputs against its inputs ------------------------------------------


@pytest.mark.parametrize(
    ("argv", "flag", "victim", "what"),
    [
        (["tune", "policy.yaml", "--cost-cap", "0.005", "--out"], "--out", "synth.jsonl.gz", "the data file"),
        (["tune", "policy.yaml", "--cost-cap", "0.005", "--out"], "--out", "policy.yaml", "the skeleton"),
        (["tune", "policy.yaml", "--cost-cap", "0.005", "--json"], "--json", "policy.yaml", "the skeleton"),
        (["tune", "policy.yaml", "--frontier", "3", "--out"], "--out", "policy.yaml", "the skeleton"),
        (["tune", "policy.yaml", "--cost-cap", "0.005", "--json"], "--json", "synth.card.json", "the card"),
        (["eval", "policy.yaml", "--json"], "--json", "policy.yaml", "the policy"),
        (["eval", "policy.yaml", "--json"], "--json", "synth.jsonl.gz", "the data file"),
        (
            ["train-scorer", "synth.jsonl.gz", "--model", "tiny", "-o"],
            "-o",
            "synth.jsonl.gz",
            "the data file",
        ),
    ],
)
def test_an_output_that_is_an_input_is_refused_before_any_work(
    synth: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    flag: str,
    victim: str,
    what: str,
) -> None:
    before = digest(tmp_path)
    code, out, err = run(capsys, *argv, victim)
    assert code == 2 and out == ""
    assert refused(err, f"{flag} {victim}", "is", what), err
    assert digest(tmp_path) == before  # nothing written, nothing replaced


def test_an_input_reached_through_a_link_is_the_same_file(
    synth: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "link.yaml").symlink_to(tmp_path / "policy.yaml")
    before = digest(tmp_path)
    code, _, err = run(capsys, "eval", "policy.yaml", "--json", "link.yaml")
    assert code == 2 and refused(err, "--json link.yaml", "is", "the policy policy.yaml")
    assert digest(tmp_path) == before


def test_two_outputs_on_one_path_are_refused(
    synth: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "eval", "policy.yaml", "--json", "a.png", "--plot", "a.png")
    assert (code, err) == (
        2,
        "cascade: error: --plot a.png and --json a.png are the same file; give each output its own path\n",
    )
    assert not (tmp_path / "a.png").exists()


def test_a_family_member_the_user_did_not_name_is_not_replaced_without_force(
    synth: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "x-2.yaml").write_text("mine\n")
    argv = ["tune", "policy.yaml", "--frontier", "3", "--bootstrap", "10", "--out", "x.yaml"]
    code, _, err = run(capsys, *argv)
    assert (code, err) == (
        2,
        "cascade: error: x-2.yaml exists (--out x.yaml's frontier member); give --force to replace it,"
        " or choose another --out\n",
    )
    assert (tmp_path / "x-2.yaml").read_text() == "mine\n" and not (tmp_path / "x.yaml").exists()
    code, _, err = run(capsys, *argv, "--force")
    assert code == 0, err
    assert (tmp_path / "x-2.yaml").read_text().startswith("# Tuned by `cascade tune`")


def test_report_json_on_the_log_it_reads_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c, _ = observed(tmp_path / "log")
    for i in range(3):
        c.run(f"q{i}")
    c.close()
    (log,) = (tmp_path / "log").glob("out-*.jsonl")
    before = digest(tmp_path)
    code, _, err = run(capsys, "report", log, "--json", log)
    assert code == 2 and refused(err, f"--json {log}", "is", "the log file")
    code, _, err = run(capsys, "report", tmp_path / "log" / "out.jsonl", "--json", log)
    assert code == 2 and refused(err, f"--json {log}", "is a file of", "the log")
    assert digest(tmp_path) == before


def test_a_labelled_file_inside_the_log_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`label log --out log/labelled.jsonl` then `report log` counted the labelled rows twice."""
    logs = tmp_path / "log"
    c, _ = observed(logs, rate=1.0, answers=("x", "y", "y"))
    for i in range(4):
        c.run(f"q{i}")
    c.close()
    before = digest(tmp_path)
    inside = logs / "labelled.jsonl"
    code, _, err = run(capsys, "label", logs, "--reference", "strongest", "--out", inside)
    assert code == 2 and refused(err, f"--out {inside}", "is inside", f"the log folder {logs}")
    dated = logs / f"out-{now() + timedelta(days=1):%Y-%m-%d}.jsonl"  # the same log, another day
    code, _, err = run(capsys, "label", logs / "out.jsonl", "--reference", "strongest", "--out", dated)
    assert code == 2 and refused(err, f"--out {dated}", "is a file of", "the log")
    assert digest(tmp_path) == before
    code, out, _ = run(capsys, "report", logs, "--json", "-")
    assert code == 0 and json.loads(out)["rows"] == 4


def test_batch_results_on_the_outcome_log_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(DEMO.read_text() + "logging:\n  outcomes:\n    path: logs/o.jsonl\n")
    batch = tmp_path / "b.jsonl"
    batch.write_text('"a"\n"b"\n')
    for out in (tmp_path / "logs" / f"o-{now():%Y-%m-%d}.jsonl", tmp_path / "logs" / "o.jsonl"):
        code, _, err = run(capsys, "run", "-p", policy, "--batch", batch, "--out", out)
        assert code == 2 and refused(
            err, f"--out {out}", "is a file of", "the outcome log of the --policy file"
        )
    assert not (tmp_path / "logs").exists()  # refused before anything ran (or was logged)


def test_an_artifact_the_policy_names_is_an_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(
        DEMO.read_text().replace(
            "    scorer: {kind: regex, pattern: '\\d'}", "    scorer: {kind: classifier, path: clf.json}"
        )
    )
    assert "kind: classifier" in policy.read_text()
    names = {i.path: i.what for i in files.policy_inputs(policy)}
    assert names[tmp_path / "clf.json"] == "a file the policy names (path:)"


# -- atomic writes ---------------------------------------------------------------------------------


def test_a_failed_write_leaves_the_old_file_whole(
    synth: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    figs = tmp_path / "figs.json"
    figs.write_text('{"old": true}\n')
    real = Path.write_text

    def disk_full(self: Path, data: str, *args: object, **kwargs: object) -> int:
        real(self, data[: len(data) // 2], encoding="utf-8")
        raise OSError(28, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", disk_full)
    code, _, err = run(capsys, "eval", "policy.yaml", "--bootstrap", "10", "--json", figs)
    assert code == 1 and "No space left on device" in err
    assert figs.read_text() == '{"old": true}\n'
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_a_labelled_file_is_replaced_only_when_complete(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    logs = tmp_path / "log"
    c, _ = observed(logs)
    for i in range(3):
        c.run(f"q{i}")
    c.close()
    out = tmp_path / "labelled.jsonl.gz"
    out.write_bytes(gzip.compress(b'{"old": 1}\n'))
    calls = 0
    real = json.dumps

    def fail_on_the_second_row(obj: object, **kw: object) -> str:
        nonlocal calls
        if isinstance(obj, dict) and "responses" in obj:
            calls += 1
            if calls == 2:
                raise KeyboardInterrupt
        return real(obj, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr("cascade.cli.label.json.dumps", fail_on_the_second_row)
    code = main(["label", str(logs), "--reference", "strongest", "--rows", "all", "--out", str(out)])
    assert code == 130 and calls == 2
    assert gzip.decompress(out.read_bytes()) == b'{"old": 1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labelled.jsonl.gz", "log"]


def test_replacing_keeps_partial_rows_only_when_asked(tmp_path: Path) -> None:
    target = tmp_path / "r.jsonl"
    target.write_text("old\n")
    for keep in (False, True):
        with pytest.raises(RuntimeError), files.replacing(target, keep_partial=keep) as tmp:  # noqa: PT012
            tmp.write_text("paid row\n")
            raise RuntimeError
        assert tmp.parent == tmp_path and tmp.name.endswith(".jsonl")
        assert target.read_text() == "old\n"
        assert tmp.exists() is keep
    assert tmp.read_text() == "paid row\n"
    files.write_text(target, "new\n")
    assert target.read_text() == "new\n" and (target.stat().st_mode & 0o777) != 0o600


# -- section 3: one-line errors instead of tracebacks -------------------------------------------


def test_wilson_interval_holds_its_estimate() -> None:
    from cascade.observe.report import wilson

    for n in range(1, 2000):
        assert wilson(n, n)[1] == 1.0 and wilson(0, n)[0] == 0.0
    for n in range(1, 200):
        for k in range(n + 1):
            low, high = wilson(k, n)
            assert 0.0 <= low <= k / n <= high <= 1.0


def test_report_plot_of_a_tier_that_accepts_everything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Six rows all accepted by the medium tier: the Wilson upper bound was 0.9999999999999999."""
    c, _ = observed(tmp_path)
    for i in range(6):
        c.run(f"q{i}")
    c.close()
    png = tmp_path / "r.png"
    code, _, err = run(capsys, "report", tmp_path / "out.jsonl", "--plot", png)
    assert code == 0, err
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("argv", "plot"),
    [
        (["eval", "policy.yaml", "--plot"], "policy.yaml"),
        (["tune", "policy.yaml", "--cost-cap", "0.005", "--plot"], "synth.jsonl.gz"),
        (["tune", "policy.yaml", "--cost-cap", "0.005", "--plot"], "new.yaml"),
        (["report", "log", "--plot"], "log/out.jsonl"),
        (["report", "log", "--plot"], "r.txt"),
    ],
)
def test_plot_that_is_not_an_image_is_refused_before_the_work(
    synth: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], plot: str
) -> None:
    (tmp_path / "log").mkdir()
    before = digest(tmp_path)
    code, out, err = run(capsys, *argv, plot)
    assert (code, out) == (2, "")
    assert (
        err == f"cascade: error: --plot {plot}: not an image file name; end it in .png, .svg, .pdf or .jpg\n"
    )
    assert digest(tmp_path) == before  # no tuned policy, no figures: nothing was done


def test_tune_and_eval_on_one_record_are_one_line(
    synth: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = synth
    with gzip.open(data, "rt") as fh:
        (tmp_path / "one.jsonl").write_text(fh.readline())
    code, _, err = run(capsys, "tune", "policy.yaml", "--data", "one.jsonl", "--cost-cap", "0.005")
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(f"cascade: error: {tmp_path / 'one.jsonl'}: 1 training and 0 held-out records;")
    code, _, err = run(capsys, "eval", "policy.yaml", "--data", "one.jsonl", "--split", "seed")
    assert code == 1 and err.count("\n") == 1 and "no records to evaluate" in err
    assert not (tmp_path / "policy.tuned.yaml").exists()


def test_a_truncated_gzip_is_one_line_for_every_reader(
    synth: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c, _ = observed(tmp_path / "log")
    for i in range(40):
        c.run(f"question number {i}")
    c.close()
    (log,) = (tmp_path / "log").glob("out-*.jsonl")
    packed = gzip.compress(log.read_bytes())
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(packed[: len(packed) // 2])
    code, _, err = run(capsys, "report", cut)
    assert code == 1 and err.startswith(f"cascade: error: {cut}: cannot read it as gzip after ")
    assert err.endswith("lines (truncated); recompress it or give the uncompressed file\n")
    data, _ = synth
    packed = data.read_bytes()
    data.write_bytes(packed[: len(packed) // 2])
    code, _, err = run(capsys, "eval", "policy.yaml", "--bootstrap", "10")
    assert code == 1 and err.count("\n") == 1 and "cannot read it as gzip after" in err


def test_plot_without_matplotlib_is_refused_before_the_work(
    synth: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib.backend_bases", None)  # import fails
    code, out, err = run(capsys, "tune", "policy.yaml", "--cost-cap", "0.005", "--plot", "p.png")
    assert (code, out) == (2, "")
    assert err == (
        "cascade: error: --plot needs matplotlib: pip install 'cascade-llm[plot]'"
        " (pip install -e '.[plot]' in a checkout)\n"
    )
    assert not (tmp_path / "policy.tuned.yaml").exists()


def test_label_out_on_its_labels_file_and_eval_json_on_a_family_member(
    synth: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("id,model,quality\n")
    (tmp_path / "log").mkdir()
    code, _, err = run(capsys, "label", "log", "--reference", f"file:{labels}", "--out", labels)
    assert code == 2 and refused(err, f"--out {labels}", "is", "the labels file")
    assert labels.read_text() == "id,model,quality\n"
    family = tmp_path / "fam.yaml"
    family.write_text("family: [policy.yaml]\n")
    code, _, err = run(capsys, "eval", family, "--json", "policy.yaml")
    assert code == 2 and refused(err, "--json policy.yaml", "is", "the policy")
    code, _, err = run(capsys, "eval", family, "--json", family)
    assert code == 2 and refused(err, f"--json {family}", "is", "the family file")


def test_tune_never_rewrites_an_artifact_its_skeleton_names(
    synth: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--classifiers`` writes its artifacts into ``--out``'s ``.classifiers`` folder: a skeleton
    naming an artifact in that folder (a tuned policy taken as the next skeleton) is refused
    before any work, not overwritten."""
    argv = ["policy.yaml", "--cost-cap", "0.005", "--classifiers", "2", "--bootstrap", "10"]
    code, _, _ = run(capsys, "tune", *argv)
    assert code == 0
    folder = tmp_path / "policy.tuned.classifiers"
    learned = [p.name.removesuffix(".classifier.json") for p in sorted(folder.glob("*.classifier.json"))]
    model = next(m for m in learned if m != "big")  # a tier with a scorer (big is the last)
    skeleton = (tmp_path / "policy.yaml").read_text()
    tier = f"    model: {model}\n"
    head, tail = skeleton.split(tier)
    scorer = "    scorer: {kind: self_consistency, k: 5, answer: number}\n"
    clf = f"    scorer: {{kind: classifier, path: policy.tuned.classifiers/{model}.classifier.json}}\n"
    (tmp_path / "again.yaml").write_text(head + tier + tail.replace(scorer, clf, 1))
    assert "kind: classifier" in (tmp_path / "again.yaml").read_text()
    before = digest(folder)
    code, _, err = run(capsys, "tune", "again.yaml", *argv[1:], "--out", "policy.tuned.yaml")
    assert code == 2
    assert "the learned scorers' folder policy.tuned.classifiers holds a file the skeleton names" in err
    assert "an output never overwrites an input" in err
    assert digest(folder) == before
    code, _, _ = run(
        capsys, "tune", "again.yaml", "--cost-cap", "0.005", "--bootstrap", "10", "--out", "x.yaml"
    )
    assert code == 0  # without learned scorers nothing is written there: no refusal
