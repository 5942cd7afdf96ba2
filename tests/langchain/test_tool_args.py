"""The ``tool_args`` scorer: tool calls checked against the tools' JSON schemas."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel

from cascade import Completion, Request, Sample, ToolCall, Usage
from cascade.registry import SCORERS
from cascade.scorers.tools import ToolArgsScorer, validate

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "minLength": 1}, "unit": {"enum": ["C", "F"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


class Stop(BaseModel):
    name: str
    minutes: int


class Route(BaseModel):
    mode: Literal["bus", "train"]
    stops: list[Stop]


def request(tool_choice: Any = None, tools: tuple[Any, ...] = (WEATHER,)) -> Request:
    return Request(Request.of("q").messages, tools=tools, tool_choice=tool_choice)


def completion(*samples: Sample, raw: dict[str, Any] | None = None) -> Completion:
    return Completion(samples, Usage(), "m", raw=raw or {})


def calling(name: str, **args: Any) -> Sample:
    return Sample("", tool_calls=(ToolCall(name, args, "id"),))


@pytest.mark.parametrize(
    ("sample", "value", "error"),
    [
        (calling("get_weather", city="Oslo"), 1.0, None),
        (calling("get_weather", city="Oslo", unit="F"), 1.0, None),
        (calling("get_weather", town="Oslo"), 0.0, "missing required property 'city'"),
        (calling("get_weather", city=3), 0.0, "city: expected string"),
        (calling("get_weather", city=""), 0.0, "city: shorter than 1"),
        (calling("get_weather", city="Oslo", unit="K"), 0.0, "'K' is not one of"),
        (calling("get_weather", city="Oslo", when="now"), 0.0, "unexpected property 'when'"),
        (calling("get_time", city="Oslo"), 0.0, "unknown tool 'get_time'"),
    ],
)
def test_arguments_against_the_schema(sample: Sample, value: float, error: str | None) -> None:
    score = ToolArgsScorer().score(request(), completion(sample))
    assert score.value == value
    if error:
        assert error in " ".join(score.detail["errors"])


def test_text_answers_and_tool_choice() -> None:
    text = completion(Sample("It is sunny."))
    assert ToolArgsScorer().score(request(), text).value == 1.0
    assert ToolArgsScorer(no_call=0.3).score(request(), text).value == 0.3
    for choice in (
        "required",
        "any",
        "get_weather",
        {"type": "function", "function": {"name": "get_weather"}},
    ):
        assert ToolArgsScorer().score(request(choice), text).value == 0.0
    assert ToolArgsScorer().score(request("auto"), text).value == 1.0
    other = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
    wrong = completion(calling("get_time"))
    assert ToolArgsScorer().score(request("get_weather", (WEATHER, other)), wrong).value == 0.0


def test_pydantic_schemas_with_refs() -> None:
    tool = convert_to_openai_tool(Route)
    ok = calling("Route", mode="bus", stops=[{"name": "A", "minutes": 3}])
    bad = calling("Route", mode="tram", stops=[{"name": "A", "minutes": "soon"}])
    assert ToolArgsScorer().score(request(tools=(tool,)), completion(ok)).value == 1.0
    errors = " ".join(ToolArgsScorer().score(request(tools=(tool,)), completion(bad)).detail["errors"])
    assert "mode" in errors
    assert "stops[0].minutes: expected integer" in errors
    refs = {
        "$defs": {"S": {"type": "object", "required": ["x"]}},
        "type": "array",
        "items": {"$ref": "#/$defs/S"},
    }
    assert validate([{"x": 1}], refs, refs) == []
    assert validate([{}], refs, refs) == ["[0]: missing required property 'x'"]


def test_unparseable_arguments_score_zero() -> None:
    raw = {"invalid_tool_calls": [[{"name": "get_weather", "args": "{city: Oslo", "error": "bad json"}]]}
    score = ToolArgsScorer().score(request(), completion(Sample(""), raw=raw))
    assert score.value == 0.0
    assert "unparseable" in score.detail["errors"][0]


def test_several_samples_share_and_choice() -> None:
    score = ToolArgsScorer().score(
        request(), completion(calling("get_weather", town="x"), calling("get_weather", city="Oslo"))
    )
    assert score.value == 0.5
    assert score.chosen == 1


def test_registered_and_configurable() -> None:
    cls = SCORERS.get("tool_args")
    assert cls is ToolArgsScorer
    scorer = cls.from_config(cls.Options.model_validate({"no_call": 0.0}), None)
    assert scorer.score(request(), completion(Sample("text"))).value == 0.0
