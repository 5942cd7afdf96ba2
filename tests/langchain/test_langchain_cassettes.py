"""CascadeChatModel over our real OpenAI and Anthropic providers, against recorded cassettes.

Cassettes live in ``cassettes/langchain_cassettes/``; record them again with
``CASCADE_RECORD=local`` (the local wire server) or ``CASCADE_RECORD=real`` (see cassettes/README.md).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from langchain_core.callbacks import UsageMetadataCallbackHandler
from pydantic import BaseModel

from cascade import Cascade, Price
from cascade.langchain import CascadeChatModel
from cascade.scorers.tools import ToolArgsScorer
from cascade.testing import FixedScorer
from tests.langchain.support import Recorder, tier
from tests.providers import helpers as h
from tests.providers.conftest import Endpoints, _close_providers, cassette, endpoints, wire

__all__ = ["_close_providers", "cassette", "endpoints", "wire"]  # fixtures shared with tests/providers

MINI = Price(Decimal("0.15"), Decimal("0.60"))
HAIKU = Price(Decimal("1"), Decimal("5"))


def two_real_tiers(endpoints: Endpoints) -> Cascade:
    return Cascade(
        [
            tier("mini", h.openai(endpoints.openai), FixedScorer(0.0), 0.5, price=MINI),  # always escalates
            tier("haiku", h.anthropic(endpoints.anthropic), price=HAIKU),
        ],
        name="real",
    )


def test_chat_model_over_openai_then_anthropic(endpoints: Endpoints, cassette: Any) -> None:
    model = CascadeChatModel(cascade=two_real_tiers(endpoints))
    usage = UsageMetadataCallbackHandler()
    recorder = Recorder()
    out = model.invoke("Capital of France? One word. !answers=Paris", config={"callbacks": [usage, recorder]})
    assert out.text.strip() == "Paris"
    trace = out.response_metadata["cascade"]
    assert [(a["tier"], a["decision"]) for a in trace["attempts"]] == [
        ("mini", "escalated"),
        ("haiku", "accepted"),
    ]
    assert trace["model"].startswith("claude-haiku")
    # both tier calls were child runs; the usage callback saw each real model once, the cascade not at all
    (top,) = recorder.cascade_runs()
    assert [r["parent_run_id"] for r in recorder.runs("mini") + recorder.runs("haiku")] == [top["run_id"]] * 2
    models = sorted(usage.usage_metadata)
    assert models[0].startswith("claude-haiku") and models[1].startswith("gpt-4o-mini")
    total = sum(u["total_tokens"] for u in usage.usage_metadata.values())
    assert total == trace["usage"]["input_tokens"] + trace["usage"]["output_tokens"] > 0
    assert Decimal(trace["cost"]) > 0


async def test_async_chat_model_over_openai_then_anthropic(endpoints: Endpoints, cassette: Any) -> None:
    out = await CascadeChatModel(cascade=two_real_tiers(endpoints)).ainvoke("Capital of Italy? !answers=Rome")
    assert out.text.strip() == "Rome"
    assert out.response_metadata["cascade"]["tier"] == "haiku"


class Weather(BaseModel):
    city: str


def test_structured_output_over_openai(endpoints: Endpoints, cassette: Any) -> None:
    cascade = Cascade(
        [
            tier("mini", h.openai(endpoints.openai), ToolArgsScorer(), 1.0, price=MINI),
            tier("haiku", h.anthropic(endpoints.anthropic), price=HAIKU),
        ]
    )
    structured = CascadeChatModel(cascade=cascade).with_structured_output(Weather, method="function_calling")
    assert structured.invoke('Weather where? !tool={"city":"Paris"}') == Weather(city="Paris")
    (sent,) = [json.loads(r.body) for r in cassette.requests]  # accepted at the first tier
    assert sent["tool_choice"] == "required"
    assert sent["tools"][0]["function"]["name"] == "Weather"
