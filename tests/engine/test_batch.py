"""Cascades over the OpenAI Batch API (cascade.engine.batch), against a local fake of that API."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cascade.engine.batch import run_batch
from cascade.engine.build import build
from cascade.engine.cascade import Cascade
from cascade.errors import CascadeError
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


def _answers(results: list[CascadeResult | CascadeError]) -> list[tuple[str, str]]:
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
