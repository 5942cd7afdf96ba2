"""The `cascade` CLI: run (single, stdin, batch), validate, schema; one-line errors, exit codes."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from cascade.cli import main

ROOT = Path(__file__).resolve().parent.parent
DEMO = str(ROOT / "policies" / "demo.yaml")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_run_prints_answer(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "run", "--policy", DEMO, "What is 2+2?")
    assert (code, out) == (0, "2 + 2 = 4\n")


def test_run_json_trace(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "run", "-p", DEMO, "--json", "What is 2+2?")
    data = json.loads(out)
    assert code == 0 and data["tier"] == "strong"
    assert [(a["tier"], a["decision"], a["score"]) for a in data["attempts"]] == [
        ("cheap", "escalated", 0.0),
        ("strong", "accepted", None),
    ]
    # cheap: 10 in x $0.15 + 10 out x $0.60 per M; strong: 20 x 2.5 + 8 x 10 per M
    assert data["attempts"][0]["cost"] == "0.0000075"
    assert data["attempts"][1]["cost"] == "0.00013"


def test_run_explain_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "run", "-p", DEMO, "--explain", "hi")
    assert code == 0 and "escalated: score 0.000 < 1.000" in err


def test_run_reads_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("What is 2+2?\n"))
    code, out, _ = run(capsys, "run", "-p", DEMO, "-")
    assert (code, out) == (0, "2 + 2 = 4\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "-p", DEMO, "  "], "cascade: error: empty prompt\n"),
        (["run", "-p", "missing.yaml", "hi"], "cascade: error: missing.yaml: no such policy file\n"),
        (["run", "-p", DEMO], "cascade: error: give a prompt, - to read it from stdin, or --batch FILE\n"),
        (
            ["run", "-p", DEMO, "--batch", "nope.jsonl", "--out", "o.jsonl"],
            "cascade: error: nope.jsonl: no such file\n",
        ),
        (
            ["run", "-p", DEMO, "--batch", "x.jsonl"],
            "cascade: error: --batch needs --out FILE for the results\n",
        ),
        (
            ["run", "-p", DEMO, "--batch", "x.jsonl", "--out", "o.jsonl", "--concurrency", "0"],
            "cascade: error: --concurrency: at least 1 (got 0)\n",
        ),
        (
            ["run", "-p", DEMO, "--out", "o.jsonl", "hi"],
            "cascade: error: --out is for --batch results; a single answer goes to stdout\n",
        ),
        (
            ["run", "-p", DEMO, "--batch", "x.jsonl", "--out", "o.jsonl", "--explain"],
            "cascade: error: --json and --explain are for one prompt; --batch writes each full trace to --out\n",
        ),
    ],
)
def test_bad_input_is_one_line_and_nonzero(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and err == message and "Traceback" not in err


def test_invalid_policy_is_located(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        Path(DEMO)
        .read_text()
        .replace("provider: scripted\n    model: strong", "provider: scripte\n    model: strong")
    )
    code, _, err = run(capsys, "run", "-p", str(bad), "hi")
    assert code == 2
    assert (
        err
        == f"cascade: error: {bad}:16:15: tiers[1].provider: unknown provider 'scripte' (did you mean 'scripted'?)\n"
    )


def test_batch_writes_results_in_order_and_summarises(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        '"one"\n{"prompt": "two", "id": "b"}\n{"messages": [{"role": "user", "content": "three"}]}\n'
    )
    out_file = tmp_path / "o.jsonl"
    code, out, _ = run(capsys, "run", "-p", DEMO, "--batch", str(prompts), "--out", str(out_file))
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert code == 0 and [r["id"] for r in rows] == ["1", "b", "3"]
    assert all(r["tier"] == "strong" for r in rows)
    assert "3 prompts" in out and "  strong                    3 answered (100.0%)" in out
    assert "total cost $0.0004125 ($0.0001375 per prompt)" in out  # exact, not rounded to 6 places


def test_batch_bad_line_is_reported(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('"one"\n{not json}\n')
    code, _, err = run(capsys, "run", "-p", DEMO, "--batch", str(prompts), "--out", str(tmp_path / "o"))
    assert code == 2 and err.startswith(f"cascade: error: {prompts}:2: not JSON")


def test_validate(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "validate", DEMO)
    assert code == 0 and "ok: demo: cheap (scripted:cheap-model) -> strong (scripted:strong-model)" in out
    bad = tmp_path / "b.yaml"
    bad.write_text("name: x\ntiers: []\n")
    code, _, err = run(capsys, "validate", DEMO, str(bad))
    assert code == 2 and f"{bad}:2:8: tiers: List should have at least 1 item after validation" in err


def test_schema_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "schema")
    assert code == 0 and json.loads(out)["title"] == "Policy"


def test_files_that_cannot_be_read_or_written_are_one_line_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('"one"\n')
    nowhere = tmp_path / "no-such-dir" / "o.jsonl"
    code, _, err = run(capsys, "run", "-p", DEMO, "--batch", str(prompts), "--out", str(nowhere))
    assert code == 1 and err == f"cascade: error: {nowhere}: No such file or directory\n"
    code, _, err = run(capsys, "run", "-p", DEMO, "--batch", str(tmp_path), "--out", str(tmp_path / "o"))
    assert code == 1 and err == f"cascade: error: {tmp_path}: Is a directory\n"
    binary = tmp_path / "b.jsonl"
    binary.write_bytes(b"\xff\xfe\n")
    code, _, err = run(capsys, "run", "-p", DEMO, "--batch", str(binary), "--out", str(tmp_path / "o"))
    assert code == 2 and err == f"cascade: error: {binary}:1: not valid UTF-8 (byte 0 of the line)\n"
    assert err.count("\n") == 1


@pytest.mark.parametrize("line", ['{"prompt": 5}', '{"prompt": "  "}', '{"messages": "hi"}', "[1, 2]"])
def test_batch_lines_of_the_wrong_shape_are_located(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, line: str
) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(f'"fine"\n{line}\n')
    code, _, err = run(capsys, "run", "-p", DEMO, "--batch", str(prompts), "--out", str(tmp_path / "o"))
    assert code == 2 and err.startswith(f"cascade: error: {prompts}:2: expected a non-empty string")


def test_missing_credentials_name_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    code, out, err = run(capsys, "run", "-p", str(ROOT / "policies" / "support-bot.yaml"), "hi")
    assert code == 1 and out == ""
    assert err.startswith("cascade: error: tier 'mini': environment variable OPENAI_API_KEY is not set")
    assert err.count("\n") == 1


EXHAUSTED = """\
name: strict
on_exhausted: raise
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


def test_errors_keep_their_trace_and_cost(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    policy = tmp_path / "strict.yaml"
    policy.write_text(EXHAUSTED)
    code, out, err = run(capsys, "run", "-p", str(policy), "--json", "q")
    trace = json.loads(out)
    assert code == 1 and err.startswith("cascade: error: ")
    assert trace["error"].startswith("CascadeExhaustedError") and len(trace["attempts"]) == 2
    assert trace["cost"] == str(sum(Decimal(a["total_cost"]) for a in trace["attempts"])) != "0"

    prompts = tmp_path / "p.jsonl"
    prompts.write_text('"a"\n"b"\n')
    out_file = tmp_path / "o.jsonl"
    code, out, _ = run(capsys, "run", "-p", str(policy), "--batch", str(prompts), "--out", str(out_file))
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert code == 1 and all(len(r["attempts"]) == 2 for r in rows)
    spent = sum((Decimal(r["cost"]) for r in rows), Decimal(0))
    assert spent > 0 and f"total cost ${format(spent.normalize(), 'f')} (" in out


def test_an_answer_nobody_accepted_says_so(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    policy = tmp_path / "lenient.yaml"
    policy.write_text(EXHAUSTED.replace("on_exhausted: raise", "on_exhausted: return_last"))
    code, out, err = run(capsys, "run", "-p", str(policy), "q")
    assert code == 0 and out == "still not sure\n"
    assert err == "cascade: note: no tier accepted (exhausted); --explain says why\n"


# -- batches never lose paid answers; bad input is refused before any money moves ----------------

FAULTY = """\
name: faulty
tiers:
  - name: small
    provider: openai
    model: gpt-4o-mini
    params: {max_tokens: 32}
    options: {base_url: "URL/openai/v1"}
    retry: {attempts: 1}
budget:
  caps: [{limit: 1, window: day}]
  ledger: {kind: sqlite, path: LEDGER}
"""


@pytest.fixture
def faulty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    from tests.faults.fault_server import FaultServer

    server = FaultServer().start()
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    ledger = tmp_path / "ledger.sqlite3"
    policy = tmp_path / "faulty.yaml"
    policy.write_text(FAULTY.replace("URL", server.url).replace("LEDGER", str(ledger)))
    yield policy, ledger
    server.stop()


def test_one_bad_body_does_not_abort_the_batch(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, faulty: tuple[Path, Path]
) -> None:
    policy, _ = faulty
    prompts = tmp_path / "p.jsonl"
    lines = [f'"q{i}"' for i in range(8)]
    lines[2] = '"q2 !faults=html"'
    lines[5] = '"q5 !faults=malformed"'
    prompts.write_text("\n".join(lines) + "\n")
    out_file = tmp_path / "o.jsonl"
    code, out, _ = run(capsys, "run", "-p", str(policy), "--batch", str(prompts), "--out", str(out_file))
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert code == 0 and len(rows) == 8 and [r["id"] for r in rows] == [str(i) for i in range(1, 9)]
    failed = [i for i, r in enumerate(rows) if "error" in r]
    assert failed == [2, 5] and "InvalidResponseError" in rows[2]["attempts"][0]["reason"]
    assert all(Decimal(r["cost"]) > 0 for i, r in enumerate(rows) if i not in failed)
    assert "errors                    2" in out


def test_an_unexpected_error_in_one_row_keeps_the_others(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cascade.engine.cascade import Cascade

    real = Cascade.arun

    async def flaky(self: Cascade, prompt: object, **kw: object) -> object:
        if prompt == "boom":
            raise RuntimeError("a bug somewhere")
        return await real(self, prompt, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Cascade, "arun", flaky)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('"a"\n"boom"\n"c"\n')
    out_file = tmp_path / "o.jsonl"
    code, out, _ = run(capsys, "run", "-p", DEMO, "--batch", str(prompts), "--out", str(out_file))
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert code == 0 and len(rows) == 3 and "answer" in rows[0] and "answer" in rows[2]
    assert rows[1]["error"] == "RuntimeError: a bug somewhere" and rows[1]["cost"] is None


def test_out_may_not_be_an_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('"a"\n')
    for out_path, name in (
        (str(prompts), f"the --batch file {prompts}"),
        (str(tmp_path / "." / "p.jsonl"), f"the --batch file {prompts}"),
        (DEMO, f"the --policy file {DEMO}"),
    ):
        code, _, err = run(capsys, "run", "-p", DEMO, "--batch", str(prompts), "--out", out_path)
        assert code == 2 and err == (
            f"cascade: error: --out {out_path} is {name}: an output never overwrites an input;"
            " write it elsewhere\n"
        )
    assert prompts.read_text() == '"a"\n'


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "a", "budget_key": {"t": 1}}', "budget_key must be a string, not dict"),
        ('{"prompt": "a", "budget_key": 7}', "budget_key must be a string, not int"),
        ('{"prompt": "a", "id": [1]}', "id must be a string or an integer"),
        ('"caf\\udce9"', "not valid Unicode"),
        ('{"messages": [{"role": "robot", "content": "x"}]}', "message role must be one of"),
        ('{"messages": [{"role": "assistant", "tool_calls": [{}]}]}', "a tool call needs a name"),
    ],
)
def test_bad_batch_lines_are_refused_before_any_call(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, faulty: tuple[Path, Path], line: str, message: str
) -> None:
    policy, ledger = faulty
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(f'"fine"\n{line}\n')
    out_file = tmp_path / "o.jsonl"
    code, _, err = run(capsys, "run", "-p", str(policy), "--batch", str(prompts), "--out", str(out_file))
    assert code == 2 and err.startswith(f"cascade: error: {prompts}:2: ") and message in err
    assert not out_file.exists() and not ledger.exists()  # nothing reserved, nothing written


def test_text_that_is_not_utf8_is_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, faulty: tuple[Path, Path]
) -> None:
    policy, ledger = faulty
    code, _, err = run(capsys, "run", "-p", str(policy), "caf\udce9")  # how Python passes argv bytes
    assert code == 2 and err == "cascade: error: the prompt is not valid UTF-8\n"
    code, _, err = run(capsys, "run", "-p", str(policy), "--budget-key", "t\udcff", "q")
    assert code == 2 and err == "cascade: error: --budget-key is not valid UTF-8\n"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"caf\xe9 au lait")))
    code, _, err = run(capsys, "run", "-p", str(policy), "-")
    assert code == 2 and err == "cascade: error: stdin is not valid UTF-8 (byte 3)\n"
    assert not ledger.exists()


def test_a_bad_body_on_a_single_run_is_one_line_with_its_trace(
    capsys: pytest.CaptureFixture[str], faulty: tuple[Path, Path]
) -> None:
    policy, _ = faulty
    code, out, err = run(capsys, "run", "-p", str(policy), "--json", "q !faults=html")
    trace = json.loads(out)
    assert (
        code == 1
        and err.startswith("cascade: error: every tier of policy 'faulty' failed")
        and err.count("\n") == 1
    )
    (attempt,) = trace["attempts"]
    assert (
        attempt["reason"] == "error: InvalidResponseError"
        and "invalid response: not a chat completion" in attempt["error"]
    )
    assert Decimal(trace["cost"]) > 0  # a 200 whose body was read: charged at least its prompt (issue 18)


def test_train_scorer_bad_seed_and_positive_at_are_usage_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = str(ROOT / "cascade" / "demo" / "gsm8k-demo.jsonl.gz")
    base = ["train-scorer", data, "--model", "gemini-1.5-flash", "-o", str(tmp_path / "a.json")]
    code, _, err = run(capsys, *base, "--seed", "-1")
    assert (code, err) == (2, "cascade: error: --seed must be a non-negative integer (got -1)\n")
    code, _, err = run(capsys, *base, "--positive-at", "2")
    assert (code, err) == (
        2,
        "cascade: error: --positive-at must be in (0, 1]: qualities are 0..1 (got 2.0)\n",
    )
    assert not (tmp_path / "a.json").exists()


@pytest.mark.parametrize(
    ("spec", "extra", "message"),
    [
        (None, ["--judge-budget", "-1"], "--judge-budget: a positive number of USD (got '-1')"),
        ("name: demo\ntiers: []\n", [], "kind: Field required"),
        ("kind: judge\n", [], "provider: Field required"),
        (
            "kind: judge\nprovider: scripted\nmodel: m\nrubrik: x\n",
            [],
            "rubrik: Extra inputs are not permitted",
        ),
        ("kind: [\n", [], "cannot read the judge spec"),
        ("- kind: judge\n", [], "a judge spec is one scorer"),
    ],
)
def test_label_bad_judge_spec_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, spec: str | None, extra: list[str], message: str
) -> None:
    judge = tmp_path / "judge.yaml"
    judge.write_text(spec if spec is not None else "kind: judge\n", encoding="utf-8")
    logs = tmp_path / "logs"
    logs.mkdir()
    argv = [
        "label",
        str(logs),
        "--reference",
        "judge",
        "--judge",
        str(judge),
        "--out",
        str(tmp_path / "l.jsonl"),
    ]
    code, _, err = run(capsys, *argv, *extra)
    assert code == 2 and err.count("\n") == 1 and err.startswith("cascade: error: ") and message in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", [["report"], ["label", "--reference", "strongest", "--out", "OUT"]])
def test_report_and_label_of_a_file_that_is_not_a_log_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str]
) -> None:
    text = tmp_path / "notes.md"
    text.write_text("# not a log\n\nsome text\n", encoding="utf-8")
    argv = [str(tmp_path / "l.jsonl") if a == "OUT" else a for a in command]
    code, out, err = run(capsys, *argv, str(text))
    assert code == 2 and out == ""
    assert err == (
        f"cascade: error: {text}: no outcome-log rows (2 line(s) that are not rows); give the files or"
        " folder of the policy's logging.outcomes path\n"
    )


def test_label_csv_that_is_not_utf8_names_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_bytes(b"\xff\xfeid,reference\n")
    logs = tmp_path / "logs"
    logs.mkdir()
    argv = ["label", str(logs), "--reference", f"file:{labels}", "--out", str(tmp_path / "l.jsonl")]
    code, _, err = run(capsys, *argv)
    assert (code, err) == (
        2,
        f"cascade: error: {labels}: not a UTF-8 CSV file (invalid start byte at byte 0)\n",
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "hi", "budget-key": "acme"}', "unknown field 'budget-key' (did you mean 'budget_key'?)"),
        ('{"promt": "hi", "prompt": "x"}', "unknown field 'promt' (did you mean 'prompt'?)"),
        ('{"prompt": "hi", "ID": "a"}', "unknown field 'ID' (did you mean 'id'?)"),
    ],
)
def test_batch_line_field_typo_is_caught(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, line: str, message: str
) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('"fine"\n' + line + "\n", encoding="utf-8")
    out_file = tmp_path / "o.jsonl"
    code, _, err = run(capsys, "run", "-p", DEMO, "--batch", str(prompts), "--out", str(out_file))
    assert (code, err) == (2, f"cascade: error: {prompts}:2: {message}\n") and not out_file.exists()


def test_batch_line_keeps_the_callers_own_fields(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hi", "expected": "4", "source": "faq"}\n', encoding="utf-8")
    out_file = tmp_path / "o.jsonl"
    code, _, _ = run(capsys, "run", "-p", DEMO, "--batch", str(prompts), "--out", str(out_file))
    assert code == 0 and json.loads(out_file.read_text())["answer"] == "2 + 2 = 4"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "cascade/demo/demo.yaml", "--seed", "-1"], "--seed"),
        (["tune", "cascade/demo/demo.yaml", "--target-quality", "best", "--seed", "-1"], "--seed"),
        (["tune", "cascade/demo/demo.yaml", "--target-quality", "best", "--samples", "0"], "--samples"),
        (["tune", "cascade/demo/demo.yaml", "--target-quality", "best", "--samples", "3,-2"], "--samples"),
    ],
)
def test_bad_seed_and_sample_counts_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2  # was a numpy traceback (--seed -1) or silently accepted (--samples 0)
    err = capsys.readouterr().err
    assert err.startswith("cascade: error: ") and message in err
    assert "Traceback" not in err
