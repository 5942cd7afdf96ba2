"""``response_format`` (json_schema) reaches ``openai`` and ``openai_compatible`` tiers: in the request
body they send (a live local wire server), and from a client of the gateway (the ``openai`` SDK)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel
from structlog.testing import capture_logs

from cascade import Cascade, Tier
from cascade.providers.openai import OpenAICompatibleProvider, OpenAIProvider
from cascade.request import Request
from cascade.testing import ScriptedProvider
from tests.providers.wire_server import ModelScript, WireServer
from tests.serve.support import NO_WAIT, PRICE, scripted, serve

SCHEMA = {
    "name": "city",
    "strict": True,
    "schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
}
FORMAT = {"type": "json_schema", "json_schema": SCHEMA}


class City(BaseModel):
    city: str


@pytest.fixture
def wire() -> Iterator[WireServer]:
    server = WireServer().start()
    yield server
    server.stop()


@pytest.mark.parametrize("cls", [OpenAIProvider, OpenAICompatibleProvider])
def test_the_provider_sends_the_requests_response_format(wire: WireServer, cls: type[OpenAIProvider]) -> None:
    p = cls("gpt-x", api_key="k", base_url=f"{wire.url}/openai/v1")
    try:
        p.complete(Request.of("where?"))
        p.complete(Request(Request.of("where?").messages, response_format=FORMAT))
    finally:
        p.close()
    plain, structured = wire.requests_for("gpt-x")
    assert "response_format" not in plain
    assert structured["response_format"] == FORMAT


def _openai_tier(wire: WireServer, name: str, model: str) -> Tier:
    provider = OpenAIProvider(model, api_key="k", base_url=f"{wire.url}/openai/v1")
    return Tier(name, provider, PRICE, None, None, NO_WAIT, provider_kind="openai")


def test_structured_output_through_the_gateway_reaches_openai_tiers(wire: WireServer) -> None:
    wire.script("json-model", ModelScript(answers=['{"city": "Paris"}']))
    cascade = Cascade([_openai_tier(wire, "json", "json-model")], name="json")
    with serve({"cascade/json": cascade}) as s, capture_logs() as logs:
        parsed = s.client().chat.completions.parse(
            model="cascade/json", messages=[{"role": "user", "content": "where?"}], response_format=City
        )
        raw = s.client().chat.completions.create(
            model="cascade/json",
            messages=[{"role": "user", "content": "where?"}],
            response_format=FORMAT,  # type: ignore[arg-type]
        )
    assert parsed.choices[0].message.parsed == City(city="Paris")
    assert json.loads(raw.choices[0].message.content or "") == {"city": "Paris"}
    sdk, plain = wire.requests_for("json-model")
    sent: dict[str, Any] = sdk["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "City"
    assert sent["json_schema"]["schema"]["properties"] == {"city": {"title": "City", "type": "string"}}
    assert plain["response_format"] == FORMAT
    assert not [e for e in logs if e["event"] == "cascade.serve.response_format_ignored"]


def test_only_the_tiers_that_cannot_take_it_are_named(wire: WireServer) -> None:
    wire.script("json-model", ModelScript(answers=['{"city": "Paris"}']))
    tiers = [
        scripted("local", ScriptedProvider("x", model="m"), 0.1, 0.5),
        _openai_tier(wire, "json", "json-model"),
    ]
    with serve({"cascade/mixed": Cascade(tiers, name="mixed")}) as s, capture_logs() as logs:
        s.client().chat.completions.create(
            model="cascade/mixed",
            messages=[{"role": "user", "content": "where?"}],
            response_format=FORMAT,  # type: ignore[arg-type]
        )
    (event,) = [e for e in logs if e["event"] == "cascade.serve.response_format_ignored"]
    assert event["tiers"] == ["local"]
    assert wire.requests_for("json-model")[0]["response_format"] == FORMAT
