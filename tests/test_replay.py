"""The replay provider over recorded outcomes, and the gsm8k three-tier policy end to end."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path

import pytest

import cascade
from cascade import ConfigurationError, PermanentProviderError, Request
from cascade.cli import main
from cascade.providers.replay import ReplayProvider

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """A synthetic recorded-outcomes file (two queries, two models, samples with variants)."""
    rows = [
        {
            "id": "q1",
            "prompt": "What is 2+2?",
            "reference": "4",
            "responses": {
                "weak": [
                    {
                        "text": "5",
                        "answer": "5",
                        "quality": 0.0,
                        "input_tokens": 100,
                        "output_tokens": 5,
                        "cost_usd": 0.001,
                        "variant": "cot",
                    },
                    {
                        "text": "4",
                        "answer": "4",
                        "quality": 1.0,
                        "input_tokens": 100,
                        "output_tokens": 7,
                        "cost_usd": 0.002,
                        "variant": "pot",
                    },
                ],
                "strong": [
                    {
                        "text": "4",
                        "answer": "4",
                        "quality": 1.0,
                        "input_tokens": 100,
                        "output_tokens": 3,
                        "cost_usd": 0.01,
                    }
                ],
            },
        },
        {
            "id": "q2",
            "prompt": "Capital of France?",
            "reference": "Paris",
            "responses": {
                "strong": [
                    {
                        "text": "Paris",
                        "answer": "Paris",
                        "quality": 1.0,
                        "input_tokens": 10,
                        "output_tokens": 1,
                        "cost_usd": None,
                    }
                ]
            },
        },
    ]
    path = tmp_path / "tiny.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    (tmp_path / "tiny.card.json").write_text(
        json.dumps({"models": {"weak": {"input_usd_per_mtok": 1, "output_usd_per_mtok": 2}}})
    )
    return path


def test_replays_samples_in_order_with_recorded_cost(tiny: Path) -> None:
    p = ReplayProvider(str(tiny), "weak")
    c = p.complete(Request.of("What is 2+2?"), n=2)
    assert [s.text for s in c.samples] == ["5", "4"] and c.samples[1].quality == 1.0
    assert str(c.cost) == "0.003" and c.usage.input_tokens == 200 and c.usage.output_tokens == 12
    assert p.default_price is not None and str(p.default_price.input) == "1"


def test_prompt_once_billing_and_variant_filter(tiny: Path) -> None:
    p = ReplayProvider(str(tiny), "weak", billing="prompt_once", variant="pot")
    c = p.complete(Request.of("What is 2+2?"), n=5)
    assert [s.text for s in c.samples] == ["4"] and c.cost is None
    both = ReplayProvider(str(tiny), "weak", billing="prompt_once").complete(Request.of("What is 2+2?"), n=2)
    assert both.usage.input_tokens == 100  # the prompt billed once for two samples


def test_lookup_by_id_and_missing_cost(tiny: Path) -> None:
    p = ReplayProvider(str(tiny), "strong")
    c = p.complete(Request.of("ignored", metadata={"id": "q2"}))
    assert c.samples[0].text == "Paris" and c.cost is None  # priced by the tier instead


def test_unknown_prompt_and_model_are_clear_errors(tiny: Path) -> None:
    with pytest.raises(PermanentProviderError, match=r"prompt not found in tiny\.jsonl\.gz"):
        ReplayProvider(str(tiny), "strong").complete(Request.of("never recorded"))
    with pytest.raises(PermanentProviderError, match="weak has no recorded answer for record 'q2'"):
        ReplayProvider(str(tiny), "weak").complete(Request.of("Capital of France?"))
    with pytest.raises(
        ConfigurationError, match=r"model 'strnog' is not in the file \(did you mean 'strong'"
    ):
        ReplayProvider(str(tiny), "strnog")


def test_replay_errors_are_in_cascade_own_words_and_never_withheld(tiny: Path) -> None:
    """Provider messages are withheld without include_text (they may quote the prompt); replay's are
    cascade's own (file, model, record id), so a trace still says why."""
    with pytest.raises(PermanentProviderError) as info:
        ReplayProvider(str(tiny), "strong").complete(Request.of("never recorded"))
    assert "replay answers only recorded prompts" in info.value.redacted()
    assert "never recorded" not in info.value.redacted()


def test_bad_file_line_is_located(tmp_path: Path) -> None:
    from cascade.outcomes import read

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "prompt": "p", "responses": {}}\n{"id": 1}\n')
    with pytest.raises(ConfigurationError, match=r"bad.jsonl:2: not a recorded-outcomes record"):
        read(bad)


@pytest.mark.data
def test_gsm8k_three_tier_policy_from_python_and_cli(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cascade import outcomes

    monkeypatch.setenv("CASCADE_DATA", str(data_dir))
    policy = ROOT / "policies" / "gsm8k-replay.yaml"
    c = cascade.load(policy)
    records = outcomes.load(data_dir / "gsm8k-zeroeval.jsonl.gz").records[:40]
    results = [c.run(r.prompt) for r in records]
    assert all(r.accepted for r in results)
    tiers = {r.tier for r in results}
    assert "small" in tiers and len(tiers) >= 2  # some prompts escalate
    escalated = next(r for r in results if r.tier != "small")
    first = escalated.attempts[0]
    assert (first.decision, first.score, first.threshold) == ("escalated", 0.0, 1.0) and first.cost > 0
    assert escalated.cost == sum(a.total_cost for a in escalated.attempts)
    # async gives the same decisions
    again = asyncio.run(c.arun(escalated.attempts and records[results.index(escalated)].prompt))
    assert [(a.tier, a.decision, a.cost) for a in again.attempts] == [
        (a.tier, a.decision, a.cost) for a in escalated.attempts
    ]
    # the CLI prints the same trace
    code = main(["run", "-p", str(policy), "--json", records[results.index(escalated)].prompt])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and [a["decision"] for a in data["attempts"]] == [a.decision for a in escalated.attempts]


def test_a_batch_line_without_an_id_replays_its_own_prompt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A line's number is not a record id: with numeric record ids, line 1 replayed record "1"."""
    sample = {"input_tokens": 10, "output_tokens": 1, "cost_usd": 0.001, "quality": 1.0}
    records = [
        {"id": "1", "prompt": "first?", "reference": "A", "responses": {"m": [{"text": "A", **sample}]}},
        {"id": "2", "prompt": "second?", "reference": "B", "responses": {"m": [{"text": "B", **sample}]}},
    ]
    data = tmp_path / "numeric.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    policy = tmp_path / "p.yaml"
    policy.write_text(
        f"name: p\ntiers:\n  - {{name: only, provider: replay, model: m, options: {{path: '{data}'}}}}\n"
    )
    batch = tmp_path / "batch.jsonl"
    batch.write_text('"second?"\n{"prompt": "first?", "id": "mine"}\n')
    out = tmp_path / "out.jsonl"
    assert main(["run", "-p", str(policy), "--batch", str(batch), "--out", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["answer"] for r in rows] == ["B", "A"]
    assert [r["id"] for r in rows] == ["1", "mine"]  # the line number still names the result
