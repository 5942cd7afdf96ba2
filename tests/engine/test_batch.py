"""Cascades over the OpenAI Batch API (cascade.engine.batch), against a local fake of that API."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cascade.engine.batch import BatchStateError, run_batch
from cascade.engine.build import build
from cascade.engine.cascade import Cascade
from cascade.errors import ConfigurationError
from cascade.types import CascadeResult
from tests.batch_server import BatchServer

POLICY = """\
name: batchy
tiers:
  - name: cheap
    provider: openai
    model: gpt-4o-mini
    params: {{max_tokens: 16}}
    options: {{base_url: {url}}}
    scorer: {{kind: self_consistency, k: 3, answer: number}}
    threshold: 1.0
  - name: strong
    provider: openai
    model: gpt-4o
    params: {{max_tokens: 16}}
    options: {{base_url: {url}}}
"""


def _answer(model: str, body: dict[str, Any]) -> str:
    """The cheap model knows even numbers; the strong one knows everything."""
    prompt = body["messages"][-1]["content"]
    if isinstance(prompt, list):  # Anthropic content blocks
        prompt = prompt[-1]["text"]
    number = int(prompt.split()[-1])
    if model == "gpt-4o-mini" and number % 2:
        return "no idea"
    return str(number * 2)


@pytest.fixture
def server() -> Iterator[BatchServer]:
    with BatchServer(_answer) as s:
        yield s


@pytest.fixture
def cascade(server: BatchServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cascade]:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent(POLICY.format(url=json.dumps(server.base_url))))
    c = build(path)
    yield c
    c.close()


PROMPTS = [f"double {i}" for i in range(6)]


def _answers(results: list[Any]) -> list[tuple[str, str]]:
    return [
        (r.tier, r.answer) if isinstance(r, CascadeResult) else ("error", type(r).__name__) for r in results
    ]


def test_each_tier_round_is_one_batch_job(server: BatchServer, cascade: Cascade) -> None:
    report = run_batch(cascade.settings, PROMPTS, poll_interval=0)
    assert _answers(report.results) == [("cheap" if i % 2 == 0 else "strong", str(i * 2)) for i in range(6)]
    assert report.jobs == ["batch_1", "batch_2"]
    first, second = ([x for x in server.lines if x["body"]["model"] == m] for m in ("gpt-4o-mini", "gpt-4o"))
    assert len(first) == 6 and all(x["body"]["n"] == 3 for x in first)  # self-consistency: n samples
    assert len(second) == 3 and all("n" not in x["body"] for x in second)  # only the escalated rows
    assert all(x["url"] == "/v1/chat/completions" for x in server.lines)


def test_batch_prices_are_half_the_live_price(cascade: Cascade) -> None:
    report = run_batch(cascade.settings, PROMPTS, poll_interval=0)
    assert report.cost > 0 and report.live_cost == report.cost * 2
    live = [
        cascade.tiers[0].price.cost(a.usage) for r in report.results for a in r.attempts if a.tier == "cheap"
    ]
    assert sum(live, Decimal(0)) / 2 == sum(
        (a.cost for r in report.results for a in r.attempts if a.tier == "cheap"), Decimal(0)
    )


# -- faults: every row ends answered, escalated with a reason, or in the error output -------------

AFFECTED = {
    "expired": {3, 4, 5},  # the job expired half done: the rest come back as batch_expired errors
    "row_errors": {1, 3, 5},  # error lines
    "partial": {5},  # the result file lacks a line
    "mismatch": {0},  # a result whose custom_id matches no request
    "unhashable": {0},  # a result whose custom_id is no string (a list)
    "cancelled": set(range(6)),
    "failed": set(range(6)),
}


@pytest.mark.parametrize("fault", sorted(AFFECTED))
def test_a_faulty_first_round_escalates_its_rows_with_a_reason(
    server: BatchServer, cascade: Cascade, fault: str
) -> None:
    server.faults = [fault]
    report = run_batch(cascade.settings, PROMPTS, poll_interval=0)
    hit = AFFECTED[fault]
    assert _answers(report.results) == [
        ("cheap" if i % 2 == 0 and i not in hit else "strong", str(i * 2)) for i in range(6)
    ]
    for i, r in enumerate(report.results):
        cheap = r.attempts[0]
        assert cheap.tier == "cheap"
        if i in hit:
            assert cheap.decision == "escalated" and cheap.reason == "error: ProviderError"
            assert cheap.cost == 0
    assert report.unmatched == (1 if fault in ("mismatch", "unhashable") else 0)
    assert len(server.batches) == 2


def test_a_failed_last_round_puts_rows_in_the_error_output(server: BatchServer, cascade: Cascade) -> None:
    server.faults = ["failed", "expired"]
    report = run_batch(cascade.settings, PROMPTS, poll_interval=0)
    assert (
        _answers(report.results)
        == [("strong", "0"), ("strong", "2"), ("strong", "4")] + [("error", "AllTiersFailedError")] * 3
    )
    for r in report.results[3:]:
        assert [a.decision for a in r.attempts] == ["escalated", "failed"]


# -- resumable --------------------------------------------------------------------------------------

LEDGER = """\
budget:
  caps: [{{limit: 100, window: day}}]
  ledger: {{kind: sqlite, path: {path}}}
"""


class Crash(KeyboardInterrupt):
    pass


def _ledgered(server: BatchServer, tmp_path: Path, template: str = POLICY) -> Path:
    """``template``'s policy for ``server``, its caps on a SQLite ledger in ``tmp_path``."""
    path = tmp_path / "policy.yaml"
    ledger = tmp_path / "ledger.sqlite3"
    text = template.format(url=json.dumps(server.base_url)) + LEDGER.format(path=json.dumps(str(ledger)))
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("crash_at", [1, 2])
def test_a_killed_job_resumes_without_sending_or_paying_twice(
    server: BatchServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_at: int
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    path = _ledgered(server, tmp_path)
    state = tmp_path / "job.state.json"
    submitted = 0

    def crash(tier: str, n: int) -> None:
        nonlocal submitted
        submitted += 1
        if submitted == crash_at:
            raise Crash

    with build(path) as c:
        with pytest.raises(Crash):
            run_batch(c.settings, PROMPTS, state=state, poll_interval=0, on_round=crash)
        sent = len(server.lines)
        report = run_batch(c.settings, PROMPTS, state=state, poll_interval=0)
        bucket = c.settings.budget.buckets(c.settings.name, None)[0][0]
        spent = c.settings.budget.ledger.spent(bucket)  # type: ignore[union-attr]
    assert _answers(report.results) == [("cheap" if i % 2 == 0 else "strong", str(i * 2)) for i in range(6)]
    assert len(server.batches) == 2 and len(server.lines) == 9  # no request sent twice
    assert sent == (6 if crash_at == 1 else 9)
    assert report.jobs == ["batch_1", "batch_2"]
    assert report.cost > 0 and spent == report.cost  # no tier paid twice


def test_a_state_file_of_another_job_is_refused(cascade: Cascade, tmp_path: Path) -> None:
    state = tmp_path / "job.state.json"
    run_batch(cascade.settings, PROMPTS, state=state, poll_interval=0)
    with pytest.raises(BatchStateError, match="another job"):
        run_batch(cascade.settings, PROMPTS[:3], state=state, poll_interval=0)


def test_only_openai_format_tiers(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        textwrap.dedent("""\
        name: x
        tiers:
          - name: local
            provider: langchain
            model: fake
            free: true
            options:
              class: "langchain_core.language_models.fake_chat_models:FakeListChatModel"
              kwargs: {responses: ["4"]}
        """)
    )
    with pytest.raises(ConfigurationError, match="no batch API"):
        run_batch(build(path).settings, PROMPTS, poll_interval=0)


# -- the CLI and Cascade ---------------------------------------------------------------------------


def _policy(server: BatchServer, tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent(POLICY.format(url=json.dumps(server.base_url))))
    return path


def test_cli_provider_batch(
    server: BatchServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cascade.cli import main

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"id": f"q{i}", "prompt": p}) + "\n" for i, p in enumerate(PROMPTS))
    )
    out = tmp_path / "out.jsonl"
    args = ["run", "-p", str(_policy(server, tmp_path)), "--batch", str(prompts), "--out", str(out)]
    assert main([*args, "--provider-batch", "--poll", "0"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["id"], r["tier"], r["answer"]) for r in rows] == [
        (f"q{i}", "cheap" if i % 2 == 0 else "strong", str(i * 2)) for i in range(6)
    ]
    printed = capsys.readouterr()
    assert "2 batch jobs: batch_1, batch_2" in printed.out and "50% saved" in printed.out
    assert "round cheap: 6 prompts" in printed.err and "round strong: 3 prompts" in printed.err
    # the same command again: everything is in the state file, nothing is sent
    assert main([*args, "--provider-batch", "--poll", "0"]) == 0
    assert len(server.batches) == 2 and "resuming" in capsys.readouterr().err
    again = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["answer"], r["cost"]) for r in again] == [(r["answer"], r["cost"]) for r in rows]


def test_cli_provider_batch_counts_abstentions_apart(
    server: BatchServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``on_unverified: abstain``: rows no tier accepted are marked and not counted as answered."""
    from cascade.cli import main

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    path = tmp_path / "policy.yaml"
    text = textwrap.dedent(POLICY.format(url=json.dumps(server.base_url)))
    path.write_text(
        text.replace("name: batchy", "name: batchy\non_unverified: abstain")
        + "    scorer: {kind: regex, pattern: '^10$'}\n    threshold: 1.0\n"
    )
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"id": f"q{i}", "prompt": p}) + "\n" for i, p in enumerate(PROMPTS))
    )
    out = tmp_path / "out.jsonl"
    args = [
        "run",
        "-p",
        str(path),
        "--batch",
        str(prompts),
        "--out",
        str(out),
        "--provider-batch",
        "--poll",
        "0",
    ]
    assert main(args) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["id"], r["abstained"], r["answer"]) for r in rows if r["tier"] == "strong"] == [
        ("q1", True, ""),
        ("q3", True, ""),
        ("q5", False, "10"),
    ]
    printed = capsys.readouterr().out
    assert "abstained                 2 (33.3%)" in printed
    assert "strong                    1 answered" in printed


def test_cli_state_needs_provider_batch(tmp_path: Path) -> None:
    from cascade.cli import main

    assert main(["run", "-p", "x.yaml", "--batch", "p.jsonl", "--out", "o.jsonl", "--state", "s"]) == 2


def test_cascade_provider_batch(server: BatchServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with build(_policy(server, tmp_path)) as c:
        report = c.provider_batch(PROMPTS, poll_interval=0)
    assert _answers(report.results)[:2] == [("cheap", "0"), ("strong", "2")]
    assert report.jobs == ["batch_1", "batch_2"]


def test_batch_price_halves_openai_and_anthropic_only() -> None:
    from cascade.money import Price
    from cascade.price_table import batch_price

    p = Price(Decimal("1.00"), Decimal("4.00"), Decimal("0.10"), Decimal("1.25"))
    assert batch_price("openai", p) == Price(Decimal("0.5"), Decimal("2"), Decimal("0.05"), Decimal("0.625"))
    assert batch_price("anthropic", p).output == Decimal("2")
    assert batch_price("openai_compatible", p) == p


def test_window_caps_hold_across_rounds(
    server: BatchServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cascade.engine.batch import batch_settings
    from cascade.request import Request

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with build(_policy(server, tmp_path)) as c:
        worst = batch_settings(c.settings).tiers[0].worst_case(Request.of(PROMPTS[0]))
        listed = c.settings.tiers[0].worst_case(Request.of(PROMPTS[0]))
    assert worst * 2 == listed  # reservations are at batch prices too
    limit = worst * 3 + worst / 2  # three rows' first calls fit, not four
    path = tmp_path / "capped.yaml"
    path.write_text(
        _policy(server, tmp_path).read_text() + f"budget:\n  caps: [{{limit: {limit}, window: day}}]\n"
    )
    with build(path) as c:
        report = run_batch(c.settings, PROMPTS, poll_interval=0)
        bucket = c.settings.budget.buckets(c.settings.name, None)[0][0]
        spent = c.settings.budget.ledger.spent(bucket)  # type: ignore[union-attr]
    assert len([x for x in server.lines if x["body"]["model"] == "gpt-4o-mini"]) == 3
    assert [type(r).__name__ for r in report.results[3:]] == ["BudgetExceededError"] * 3
    assert spent == report.cost <= limit


# -- Anthropic Message Batches ----------------------------------------------------------------------

MIXED = """\
name: mixed
tiers:
  - name: cheap
    provider: anthropic
    model: claude-haiku-4-5
    params: {{max_tokens: 16}}
    options: {{base_url: {url}}}
    scorer: {{kind: self_consistency, k: 3, answer: number}}
    threshold: 1.0
  - name: strong
    provider: openai
    model: gpt-4o
    params: {{max_tokens: 16}}
    options: {{base_url: {openai}}}
"""


def _haiku_answer(model: str, body: dict[str, Any]) -> str:
    return _answer("gpt-4o-mini" if model.startswith("claude") else model, body)


@pytest.mark.parametrize(
    "fault", [None, "expired", "row_errors", "partial", "mismatch", "unhashable", "cancelled"]
)
def test_anthropic_message_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str | None
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    with BatchServer(_haiku_answer) as server:
        server.faults = [fault]
        path = tmp_path / "mixed.yaml"
        text = MIXED.format(url=json.dumps(server.url), openai=json.dumps(server.base_url))
        path.write_text(textwrap.dedent(text))
        with build(path) as c:
            report = run_batch(c.settings, PROMPTS, poll_interval=0)
        first = [x for x in server.lines if x["body"]["model"] == "claude-haiku-4-5"]
    # a sample that failed fails its row's call: rows with any affected sample escalate
    hit = {
        None: set(),
        "expired": {3, 4, 5},  # 18 sample requests, the second half expired: rows 3..5
        "row_errors": set(range(6)),  # every other sample request: each row has one
        "partial": {5},
        "mismatch": {0},
        "unhashable": {0},
        "cancelled": set(range(6)),
    }[fault]
    assert _answers(report.results) == [
        ("cheap" if i % 2 == 0 and i not in hit else "strong", str(i * 2)) for i in range(6)
    ]
    assert len(first) == 18 and "n" not in first[0]["body"]  # three samples, one request each
    assert report.jobs[0] == "msgbatch_1"
    assert report.unmatched == (1 if fault in ("mismatch", "unhashable") else 0)
    if fault is None:
        assert report.live_cost == 2 * report.cost
    for i in hit:
        assert report.results[i].attempts[0].reason == "error: ProviderError"


@pytest.mark.parametrize("crash_at_save", [1, 2, 3, 6])
def test_a_crash_around_batch_creation_sends_no_job_twice(
    server: BatchServer, cascade: Cascade, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_at_save: int
) -> None:
    """Saves: 1 uploaded, 2 batch created, 3 results, 4 round over; round two: 5, 6, ... A crash
    before save 2 is written (the batch exists, the state does not name it) adopts that batch."""
    from cascade.engine import batch as module

    state = tmp_path / "job.state.json"
    saves = 0
    real = module._State.save

    def save(self: Any) -> None:
        nonlocal saves
        saves += 1
        if saves == crash_at_save:
            raise Crash
        real(self)

    monkeypatch.setattr(module._State, "save", save)
    with pytest.raises(Crash):
        run_batch(cascade.settings, PROMPTS, state=state, poll_interval=0)
    monkeypatch.setattr(module._State, "save", real)
    report = run_batch(cascade.settings, PROMPTS, state=state, poll_interval=0)
    assert _answers(report.results) == [("cheap" if i % 2 == 0 else "strong", str(i * 2)) for i in range(6)]
    assert len(server.batches) == 2 and len(server.lines) == 9
    assert report.jobs == ["batch_1", "batch_2"]


@pytest.mark.parametrize("crash_at_save", [1, 2, 3, 5])
def test_a_crash_around_message_batch_creation_sends_no_job_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_at_save: int
) -> None:
    """Anthropic saves: 1 intent (nonce), 2 batch created, 3 results, 4 round over; 5 the OpenAI
    round's upload. A crash before save 2 is written (the batch exists, the state does not name it)
    finds that batch by the nonce in its custom_ids and adopts it."""
    from cascade.engine import batch as module

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    state = tmp_path / "job.state.json"
    saves = 0
    real = module._State.save

    def save(self: Any) -> None:
        nonlocal saves
        saves += 1
        if saves == crash_at_save:
            raise Crash
        real(self)

    with BatchServer(_haiku_answer) as server:
        path = tmp_path / "mixed.yaml"
        path.write_text(
            textwrap.dedent(MIXED.format(url=json.dumps(server.url), openai=json.dumps(server.base_url)))
        )
        with build(path) as c:
            monkeypatch.setattr(module._State, "save", save)
            with pytest.raises(Crash):
                run_batch(c.settings, PROMPTS, state=state, poll_interval=0)
            monkeypatch.setattr(module._State, "save", real)
            report = run_batch(c.settings, PROMPTS, state=state, poll_interval=0)
        assert _answers(report.results) == [
            ("cheap" if i % 2 == 0 else "strong", str(i * 2)) for i in range(6)
        ]
        assert len(server.batches) == 2 and len(server.lines) == 18 + 3  # no request sent twice
        assert report.jobs == ["msgbatch_1", "batch_2"]


JUDGED = """\
name: judged
tiers:
  - name: cheap
    provider: openai
    model: gpt-4o-mini
    params: {{max_tokens: 16}}
    options: {{base_url: {url}}}
    scorer:
      kind: judge
      provider: openai
      model: judge-1
      price: {{input: 1, output: 2}}
      options: {{base_url: {url}}}
    threshold: 0.5
  - name: strong
    provider: openai
    model: gpt-4o
    params: {{max_tokens: 16}}
    options: {{base_url: {url}}}
"""


def _judged_answer(model: str, body: dict[str, Any]) -> str:
    if model == "judge-1":  # rates an answer "no idea" low
        return "Rating: [[2]]" if "no idea" in json.dumps(body["messages"]) else "Rating: [[9]]"
    return _answer(model, body)


def _judged(tmp_path: Path, server: BatchServer, ledger: Path | None = None) -> Path:
    path = tmp_path / "judged.yaml"
    text = JUDGED.format(url=json.dumps(server.base_url))
    if ledger is not None:
        text += LEDGER.format(path=json.dumps(str(ledger)))
    path.write_text(textwrap.dedent(text))
    return path


def test_judge_calls_go_in_a_batch_job_of_their_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with BatchServer(_judged_answer) as server, build(_judged(tmp_path, server)) as c:
        report = run_batch(c.settings, PROMPTS, poll_interval=0)
        batched = len(server.lines)
        live = [c.run(p) for p in PROMPTS]  # the same cascade, live (the fake's chat completions)
    expected = [("cheap" if i % 2 == 0 else "strong", str(i * 2)) for i in range(6)]
    assert _answers(report.results) == expected == _answers(live)
    assert len(server.batches) == 3 and batched == 6 + 6 + 3  # answers, their verdicts, the escalated
    assert [x["body"]["model"] for x in server.lines[6:12]] == ["judge-1"] * 6
    assert server.live == 6 + 6 + 3  # only the live run called live: no judge call of the batch run
    assert report.live_cost == sum((r.cost for r in live), Decimal(0))
    assert report.cost * 2 == report.live_cost
    ratings = [r.attempts[0].score for r in report.results if isinstance(r, CascadeResult)]
    assert ratings == [pytest.approx(8 / 9), pytest.approx(1 / 9)] * 3


def test_an_anthropic_judge_goes_in_a_message_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")

    def answer(model: str, body: dict[str, Any]) -> str:
        return _judged_answer("judge-1" if model.startswith("claude") else model, body)

    with BatchServer(answer) as server:
        path = _judged(tmp_path, server)
        text = path.read_text().replace(
            "      provider: openai\n      model: judge-1\n      price: {input: 1, output: 2}\n"
            f"      options: {{base_url: {json.dumps(server.base_url)}}}",
            f"      provider: anthropic\n      model: claude-haiku-4-5\n      options: {{base_url: {json.dumps(server.url)}}}",
        )
        assert "claude" in text
        path.write_text(text)
        with build(path) as c:
            report = run_batch(c.settings, PROMPTS, poll_interval=0)
        assert server.live == 0 and list(server.batches) == ["batch_1", "msgbatch_2", "batch_3"]
    assert _answers(report.results) == [("cheap" if i % 2 == 0 else "strong", str(i * 2)) for i in range(6)]
    assert report.live_cost == 2 * report.cost


@pytest.mark.parametrize("crash_at", [1, 2, 3])
def test_a_judged_job_killed_in_each_round_resumes_without_sending_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_at: int
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    state = tmp_path / "job.state.json"
    submitted = 0

    def crash(tier: str, n: int) -> None:
        nonlocal submitted
        submitted += 1
        if submitted == crash_at:
            raise Crash

    with BatchServer(_judged_answer) as server:
        with build(_judged(tmp_path, server, tmp_path / "ledger.sqlite3")) as c:
            with pytest.raises(Crash):
                run_batch(c.settings, PROMPTS, state=state, poll_interval=0, on_round=crash)
            report = run_batch(c.settings, PROMPTS, state=state, poll_interval=0)
            bucket = c.settings.budget.buckets(c.settings.name, None)[0][0]
            spent = c.settings.budget.ledger.spent(bucket)  # type: ignore[union-attr]
        assert len(server.batches) == 3 and len(server.lines) == 15 and server.live == 0
    assert _answers(report.results) == [("cheap" if i % 2 == 0 else "strong", str(i * 2)) for i in range(6)]
    assert report.cost > 0 and spent == report.cost  # no tier nor verdict paid twice


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"fingerprint": "x"}',
        '{"fingerprint": "F", "jobs": [{"tier": 1}], "settled": {}}',
        '{"fingerprint": "F", "jobs": [], "settled": {}, "scores": {"row-0-tier-0-score": {"value": 1}}}',
        '{"fingerprint": "F", "jobs": [{"tier": "cheap", "ids": ["row-0-tier-0"], "batch_id": "b",'
        ' "status": "completed", "results": {"row-0-tier-0": "ok"}}], "settled": {}}',
        '{"fingerprint": "F", "jobs": [{"tier": "cheap", "ids": ["row-0-tier-0"], "batch_id": "b",'
        ' "status": "ended", "results": {}, "samples": {"row-0-tier-0": "3"}}], "settled": {}}',
        '{"fingerprint": "F", "jobs": [{"tier": "cheap", "ids": ["row-0-tier-0"], "batch_id": "b",'
        ' "status": "completed"}], "settled": {}}',
        '{"fingerprint": "F", "jobs": [], "settled": {}, "scores": {"r": {"error": "x", "kind": "K",'
        ' "cost": "abc", "latency_s": 0}}}',
    ],
)
def test_a_broken_state_file_is_one_clear_error(cascade: Cascade, tmp_path: Path, text: str) -> None:
    from cascade.engine.batch import _fingerprint, batch_settings
    from cascade.request import Request

    state = tmp_path / "job.state.json"
    fingerprint = _fingerprint(batch_settings(cascade.settings), [Request.of(p) for p in PROMPTS])
    state.write_text(text.replace('"F"', json.dumps(fingerprint)))
    with pytest.raises(BatchStateError, match="not a batch state file"):
        run_batch(cascade.settings, PROMPTS, state=state, poll_interval=0)


def test_samples_need_a_server_that_honours_n(server: BatchServer, tmp_path: Path) -> None:
    path = tmp_path / "compat.yaml"
    text = POLICY.format(url=json.dumps(server.base_url)).replace(
        "provider: openai", "provider: openai_compatible"
    )
    path.write_text(textwrap.dedent(text))
    with build(path) as c, pytest.raises(ConfigurationError, match="does not honour n"):
        run_batch(c.settings, PROMPTS, poll_interval=0)
    path.write_text(textwrap.dedent(text.replace("{base_url:", "{supports_n: true, base_url:")))
    with build(path) as c:
        assert run_batch(c.settings, PROMPTS, poll_interval=0).cost == 0  # a local server: free


@pytest.mark.parametrize("after", ["0s", "p90"])
def test_a_hedged_tier_is_not_called_live_in_a_batch_run(
    server: BatchServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, after: str
) -> None:
    """A batch job has no latency to hedge: a tier's ``hedge`` must not turn its calls into live
    calls (paid at list price, but charged at the batch price)."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    path = tmp_path / "policy.yaml"
    text = POLICY.format(url=json.dumps(server.base_url)).replace(
        "    threshold: 1.0\n", f"    threshold: 1.0\n    hedge: {{after: {after}}}\n"
    )
    path.write_text(textwrap.dedent(text))
    with build(path) as c:
        report = run_batch(c.settings, PROMPTS, poll_interval=0)
    assert server.live == 0  # every call went in a batch job
    assert _answers(report.results) == [("cheap" if i % 2 == 0 else "strong", str(i * 2)) for i in range(6)]
    assert len(server.batches) == 2 and report.cost * 2 == report.live_cost


VOTED = POLICY.replace(
    "    scorer: {{kind: self_consistency, k: 3, answer: number}}\n",
    "    scorer:\n"
    "      kind: self_consistency\n"
    "      k: 1\n"
    "      answer: number\n"
    "      mixture:\n"
    "        - {{samples: 1, provider: openai, model: gpt-4o-mini, price: {{input: 1, output: 2}},\n"
    "           options: {{base_url: {url}}}}}\n",
)


def test_a_resumed_job_does_not_pay_a_live_scorer_twice(
    server: BatchServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scorer that calls a model live (a mixture's votes) is paid once per row: a resumed run
    replays the recorded verdicts of the rows' earlier rounds instead of scoring them again."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    path = _ledgered(server, tmp_path, VOTED)
    state = tmp_path / "job.state.json"

    def crash(tier: str, n: int) -> None:
        if tier == "strong":
            raise Crash

    with build(path) as c:
        with pytest.raises(Crash):
            run_batch(c.settings, PROMPTS, state=state, poll_interval=0, on_round=crash)
        assert server.live == 6  # the mixture's votes on round one's answers
        report = run_batch(c.settings, PROMPTS, state=state, poll_interval=0)
        bucket = c.settings.budget.buckets(c.settings.name, None)[0][0]
        spent = c.settings.budget.ledger.spent(bucket)  # type: ignore[union-attr]
    assert _answers(report.results) == [("cheap" if i % 2 == 0 else "strong", str(i * 2)) for i in range(6)]
    assert server.live == 6  # not voted again on resume
    assert all(r.attempts[0].scorer_cost > 0 for r in report.results if isinstance(r, CascadeResult))
    assert report.cost > 0 and spent == report.cost


def test_a_billed_unusable_result_is_charged_once_under_a_cap(
    server: BatchServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 200 result line with usage but no usable answer is billed once by the provider: a batch
    row has no retry (a retry would replay the same line), so it is charged once, not per try."""
    from cascade.price_table import batch_price
    from cascade.types import Usage

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    path = _ledgered(server, tmp_path)
    server.faults = ["empty_choices"]
    with build(path) as c:
        report = run_batch(c.settings, PROMPTS, poll_interval=0)
        bucket = c.settings.budget.buckets(c.settings.name, None)[0][0]
        spent = c.settings.budget.ledger.spent(bucket)  # type: ignore[union-attr]
        price = batch_price("openai", c.settings.tiers[0].price)
    first = report.results[0]
    assert isinstance(first, CascadeResult) and first.tier == "strong"
    cheap = first.attempts[0]
    assert cheap.decision == "escalated" and cheap.reason.startswith("error: InvalidResponseError")
    assert cheap.cost == price.cost(Usage(input_tokens=10, output_tokens=3))  # "0" x 3 samples, once
    assert spent == report.cost


def test_a_resumed_run_settles_the_holds_of_the_jobs_in_flight(
    server: BatchServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round's holds count against the caps for as long as its job may run (24 h, not the live
    ``hold_ttl``), and a resumed run settles those very holds: none is left held, none doubled."""
    from cascade.engine.batch import batch_settings

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    path = _ledgered(server, tmp_path)
    state = tmp_path / "job.state.json"

    def crash(tier: str, n: int) -> None:
        raise Crash

    with build(path) as c:
        assert batch_settings(c.settings).budget.hold_ttl >= 24 * 3600 > c.settings.budget.hold_ttl
        bucket = c.settings.budget.buckets(c.settings.name, None)[0][0]
        book = c.settings.budget.ledger
        assert book is not None
        with pytest.raises(Crash):
            run_batch(c.settings, PROMPTS, state=state, poll_interval=0, on_round=crash)
        in_flight = book.held(bucket)
        assert in_flight > 0  # the submitted round's worst case, while its job runs
        report = run_batch(c.settings, PROMPTS, state=state, poll_interval=0)
        assert book.held(bucket) == 0  # the crashed run's holds settled, not left to expire
        assert report.cost > 0 and book.spent(bucket) == report.cost


def test_an_interrupted_round_keeps_its_holds_and_verdicts_for_the_resumed_run(
    server: BatchServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while a round's results are being scored (a live scorer's calls): the rows done so
    far keep their holds and verdicts, so the resumed run neither votes again nor holds twice."""
    from cascade.engine import batch as module

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    path = _ledgered(server, tmp_path, VOTED)
    state = tmp_path / "job.state.json"
    real, rated = module.execute, 0

    def interrupted(action: Any) -> Any:
        nonlocal rated
        if isinstance(action, module.Rate):
            rated += 1
            if rated == 4:  # rows 0-2 scored (row 1 escalated and holds its next call), then Ctrl-C
                raise Crash
        return real(action)

    with build(path) as c:
        monkeypatch.setattr(module, "execute", interrupted)
        with pytest.raises(Crash):
            run_batch(c.settings, PROMPTS, state=state, poll_interval=0)
        monkeypatch.setattr(module, "execute", real)
        assert server.live == 3
        report = run_batch(c.settings, PROMPTS, state=state, poll_interval=0)
        bucket = c.settings.budget.buckets(c.settings.name, None)[0][0]
        book = c.settings.budget.ledger
        assert book is not None
        held, spent = book.held(bucket), book.spent(bucket)
    assert _answers(report.results) == [("cheap" if i % 2 == 0 else "strong", str(i * 2)) for i in range(6)]
    assert server.live == 6  # each row voted on once
    assert held == 0 and spent == report.cost


def test_a_batch_that_finished_while_the_run_was_down_is_adopted_and_read(
    server: BatchServer, cascade: Cascade, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash between the batch's creation and its recording, resumed after the batch completed,
    and that resumed run stopped before the results came down: the batch is adopted, recorded as
    not yet read, and the next run reads it (a terminal status recorded before the results left a
    job with none: a KeyError on every later resume)."""
    from cascade.engine import batch as module

    state = tmp_path / "job.state.json"
    saves = 0
    real = module._State.save

    def crash_at(n: int) -> Any:
        def save(self: Any) -> None:
            nonlocal saves
            saves += 1
            if saves == n:
                raise Crash
            real(self)

        return save

    monkeypatch.setattr(module._State, "save", crash_at(2))  # the batch exists; the state names its file
    with pytest.raises(Crash):
        run_batch(cascade.settings, PROMPTS, state=state, poll_interval=0)
    for b in server.batches.values():  # it ran to its end meanwhile
        b["status"] = b["_final"]
    saves = 0
    monkeypatch.setattr(module._State, "save", crash_at(2))  # adopted (save 1), not read yet (save 2)
    with pytest.raises(Crash):
        run_batch(cascade.settings, PROMPTS, state=state, poll_interval=0)
    monkeypatch.setattr(module._State, "save", real)
    report = run_batch(cascade.settings, PROMPTS, state=state, poll_interval=0)
    assert _answers(report.results) == [("cheap" if i % 2 == 0 else "strong", str(i * 2)) for i in range(6)]
    assert len(server.batches) == 2 and len(server.lines) == 9


@pytest.mark.parametrize("where", ["/v1/files", "/v1/batches"])
def test_a_job_the_provider_refused_releases_its_rounds_holds(
    server: BatchServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """An authentication error at the upload or at batch creation: no job exists, so the round's holds are released
    at once (not left on the caps for a day) and the state names none; a rerun holds afresh."""
    from cascade.errors import PermanentProviderError

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    state = tmp_path / "job.state.json"
    server.refusals = {where: [401]}
    with build(_ledgered(server, tmp_path)) as c:
        bucket = c.settings.budget.buckets(c.settings.name, None)[0][0]
        book = c.settings.budget.ledger
        assert book is not None
        with pytest.raises(PermanentProviderError, match="no job was created") as caught:
            run_batch(c.settings, PROMPTS, state=state, poll_interval=0)
        assert caught.value.status_code == 401
        assert book.held(bucket) == 0 and book.spent(bucket) == 0
        assert json.loads(state.read_text())["holds"] == {}
        assert server.batches == {}
        report = run_batch(c.settings, PROMPTS, state=state, poll_interval=0)
        assert book.held(bucket) == 0 and book.spent(bucket) == report.cost
    assert _answers(report.results) == [("cheap" if i % 2 == 0 else "strong", str(i * 2)) for i in range(6)]


@pytest.mark.parametrize("where", ["/v1/files", "/v1/batches"])
def test_a_submission_that_may_have_created_a_job_keeps_its_holds_for_the_resumed_run(
    server: BatchServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A 500 at the upload or at batch creation may hide a created job: the holds stay recorded (the caps count
    them), the error says to run the command again, and that run settles them."""
    from cascade.errors import TransientProviderError

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    state = tmp_path / "job.state.json"
    server.refusals = {where: [500]}
    with build(_ledgered(server, tmp_path)) as c:
        bucket = c.settings.budget.buckets(c.settings.name, None)[0][0]
        book = c.settings.budget.ledger
        assert book is not None
        with pytest.raises(TransientProviderError, match="run the same command again"):
            run_batch(c.settings, PROMPTS, state=state, poll_interval=0)
        held = book.held(bucket)
        assert held > 0 and len(json.loads(state.read_text())["holds"]) == len(PROMPTS)
        report = run_batch(c.settings, PROMPTS, state=state, poll_interval=0)
        assert book.held(bucket) == 0 and book.spent(bucket) == report.cost
    assert _answers(report.results) == [("cheap" if i % 2 == 0 else "strong", str(i * 2)) for i in range(6)]


# -- a submitted job that could not be read --------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "where", "status", "job"),
    [
        pytest.param(POLICY, "/v1/batches/batch_1", 500, "batch_1", id="openai-poll-500"),
        pytest.param(POLICY, "/v1/batches/batch_1", 0, "batch_1", id="openai-poll-dropped"),
        pytest.param(POLICY, "/v1/files/file-2/content", 401, "batch_1", id="openai-results-401"),
        pytest.param(POLICY, "/v1/files/file-2/content", 404, "batch_1", id="openai-results-404"),
        pytest.param(POLICY, "/v1/batches/batch_2", 503, "batch_2", id="openai-round-two-poll-503"),
        pytest.param(MIXED, "/v1/messages/batches/msgbatch_1", 500, "msgbatch_1", id="anthropic-poll-500"),
        pytest.param(MIXED, "/v1/messages/batches/msgbatch_1", 0, "msgbatch_1", id="anthropic-poll-dropped"),
        pytest.param(
            MIXED, "/v1/messages/batches/msgbatch_1/results", 401, "msgbatch_1", id="anthropic-results-401"
        ),
        pytest.param(
            MIXED, "/v1/messages/batches/msgbatch_1/results", 404, "msgbatch_1", id="anthropic-results-404"
        ),
    ],
)
def test_a_job_that_could_not_be_read_is_read_by_the_same_command_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, template: str, where: str, status: int, job: str
) -> None:
    """A poll or a results download that fails (a 5xx, a dropped connection, a 401, a 404) raises
    cascade's error, not the SDK's: the job stays in the state and its holds stay held, and the
    same command run again reads that job (the same answers, nothing sent twice, paid once)."""
    import structlog
    from structlog.testing import capture_logs

    from cascade.errors import PermanentProviderError, TransientProviderError

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    state = tmp_path / "job.state.json"
    kind = PermanentProviderError if status in (401, 404) else TransientProviderError
    with BatchServer(_haiku_answer) as server:
        first = server.url if template is MIXED else server.base_url
        text = template.format(url=json.dumps(first), openai=json.dumps(server.base_url))
        path = tmp_path / "policy.yaml"
        path.write_text(textwrap.dedent(text) + LEDGER.format(path=json.dumps(str(tmp_path / "l.sqlite3"))))
        server.refusals = {where: [status]}
        with build(path) as c:
            bucket = c.settings.budget.buckets(c.settings.name, None)[0][0]
            book = c.settings.budget.ledger
            assert book is not None
            try:
                with (
                    capture_logs() as logs,
                    pytest.raises(kind, match="run the same command again") as caught,
                ):
                    run_batch(c.settings, PROMPTS, state=state, poll_interval=0)
            finally:
                structlog.reset_defaults()  # capture_logs leaves structlog "configured"
            assert caught.value.status_code == (status or None)
            assert str(state) in str(caught.value)
            assert [e["batch_id"] for e in logs if e["event"] == "cascade.batch_not_read"] == [job]
            saved = json.loads(state.read_text())
            assert book.held(bucket) > 0 and saved["holds"]  # the job may still run: its worst case held
            assert all(job["batch_id"] for job in saved["jobs"])
            report = run_batch(c.settings, PROMPTS, state=state, poll_interval=0)
            assert book.held(bucket) == 0 and book.spent(bucket) == report.cost
        assert _answers(report.results) == [
            ("cheap" if i % 2 == 0 else "strong", str(i * 2)) for i in range(6)
        ]
        assert len(server.batches) == 2  # no job sent twice, no request either:
        assert len(server.lines) == (18 if template is MIXED else 6) + 3
        assert server.refusals[where] == []  # the failure did happen where meant


def test_a_message_batch_the_provider_refused_releases_its_rounds_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anthropic's refusal at batch creation is mapped like OpenAI's: no job, holds released."""
    from cascade.errors import PermanentProviderError

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    with BatchServer(_haiku_answer) as server:
        text = MIXED.format(url=json.dumps(server.url), openai=json.dumps(server.base_url))
        path = tmp_path / "policy.yaml"
        path.write_text(textwrap.dedent(text) + LEDGER.format(path=json.dumps(str(tmp_path / "l.sqlite3"))))
        server.refusals = {"/v1/messages/batches": [401]}
        with build(path) as c:
            bucket = c.settings.budget.buckets(c.settings.name, None)[0][0]
            book = c.settings.budget.ledger
            assert book is not None
            with pytest.raises(PermanentProviderError, match="no job was created") as caught:
                run_batch(c.settings, PROMPTS, state=tmp_path / "job.state.json", poll_interval=0)
            assert caught.value.status_code == 401 and caught.value.provider == "anthropic"
            assert book.held(bucket) == 0 and server.batches == {}


def test_a_refused_listing_while_adopting_keeps_the_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resumed run looking for the batch an earlier run created (its nonce) whose listing is refused
    (a 401) does not know that batch is absent: its holds stay held, and the next run adopts it."""
    from cascade.engine import batch as module
    from cascade.errors import PermanentProviderError

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    state = tmp_path / "job.state.json"
    real, saves = module._State.save, 0

    def save(self: Any) -> None:
        nonlocal saves
        saves += 1
        if saves == 2:  # the batch created, the state not naming it
            raise Crash
        real(self)

    with BatchServer(_haiku_answer) as server:
        text = MIXED.format(url=json.dumps(server.url), openai=json.dumps(server.base_url))
        path = tmp_path / "policy.yaml"
        path.write_text(textwrap.dedent(text) + LEDGER.format(path=json.dumps(str(tmp_path / "l.sqlite3"))))
        with build(path) as c:
            bucket = c.settings.budget.buckets(c.settings.name, None)[0][0]
            book = c.settings.budget.ledger
            assert book is not None
            monkeypatch.setattr(module._State, "save", save)
            with pytest.raises(Crash):
                run_batch(c.settings, PROMPTS, state=state, poll_interval=0)
            monkeypatch.setattr(module._State, "save", real)
            server.refusals = {"/v1/messages/batches": [401]}  # the listing (GET) of the resumed run
            with pytest.raises(PermanentProviderError, match="may have been created"):
                run_batch(c.settings, PROMPTS, state=state, poll_interval=0)
            assert book.held(bucket) > 0 and json.loads(state.read_text())["holds"]
            report = run_batch(c.settings, PROMPTS, state=state, poll_interval=0)
            assert book.held(bucket) == 0 and book.spent(bucket) == report.cost
        assert _answers(report.results) == [
            ("cheap" if i % 2 == 0 else "strong", str(i * 2)) for i in range(6)
        ]
        assert len(server.batches) == 2 and len(server.lines) == 18 + 3  # adopted, not sent again
