"""Request building: strings, Message objects and OpenAI-style dicts, and clear errors."""

from __future__ import annotations

from typing import Any

import pytest

from cascade import InvalidRequestError
from cascade.request import Request
from cascade.types import Message, ToolCall


def test_request_from_openai_style_dicts_keeps_tool_turns() -> None:
    req = Request.of(
        [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Weather in "}, {"type": "text", "text": "Oslo?"}],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "content": "4 C", "tool_call_id": "c1"},
        ]
    )
    assert req.messages[1].content == "Weather in Oslo?"
    assert req.messages[2].tool_calls == (ToolCall("weather", {"city": "Oslo"}, "c1"),)
    assert req.messages[3].tool_call_id == "c1"


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"role": "robot", "content": "hi"}, "message role must be one of"),
        ("hi", "a message must be a dict"),
        (
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}],
            },
            "arguments are not JSON",
        ),
    ],
)
def test_request_rejects_malformed_messages(message: Any, error: str) -> None:
    with pytest.raises(InvalidRequestError, match=error):
        Request.of([message])


def test_request_from_a_string_and_from_messages() -> None:
    assert Request.of("hi").messages == (Message("user", "hi"),)
    assert Request.of([Message("user", "hi")]).prompt == "hi"


@pytest.mark.parametrize("prompt", ["", "   ", [], [{"role": "user", "content": ""}]])
def test_empty_prompts_are_rejected(prompt: Any) -> None:
    with pytest.raises(InvalidRequestError, match="empty prompt"):
        Request.of(prompt)


@pytest.mark.parametrize(
    ("prompt", "error"),
    [
        (5, "not int"),
        (None, "not NoneType"),
        (b"hi", "not bytes"),
        ({"role": "user", "content": "hi"}, "wrap one message in a list"),
    ],
)
def test_prompts_of_the_wrong_type_are_invalid_requests(prompt: Any, error: str) -> None:
    with pytest.raises(InvalidRequestError, match=error):
        Request.of(prompt)


@pytest.mark.parametrize(
    ("prompt", "kw", "message"),
    [
        ("caf\udce9", {}, "not valid Unicode"),
        ([{"role": "user", "content": "ok \ud800"}], {}, "not valid Unicode"),
        ("fine", {"budget_key": {"tenant": 1}}, "budget_key must be a string, not dict"),
        ("fine", {"budget_key": "t\udcff"}, "not valid Unicode"),
        ([{"role": "assistant", "content": "", "tool_calls": [{"id": "x"}]}], {}, "a tool call needs a name"),
        ([{"role": "assistant", "content": "", "tool_calls": ["x"]}], {}, "a tool call needs a name"),
        (
            [
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}],
                }
            ],
            {},
            "arguments must be an object",
        ),
    ],
)
def test_requests_that_cannot_be_sent_are_refused(prompt: Any, kw: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        Request.of(prompt, **kw)


BAD_TOOL = {"type": "function", "function": {"name": "f", "description": "\ud800", "parameters": {}}}


@pytest.mark.parametrize(
    "build",
    [
        lambda: Request((Message("user", "caf\udce9"),)),
        lambda: Request((Message("user", "hi"),), tools=(BAD_TOOL,)),
        lambda: Request((Message("user", "hi"),), budget_key="t\udcff"),
        lambda: Request((Message("assistant", "", (ToolCall("f", {"q": "\udce9"}),)),)),
        lambda: Request((Message("user", "hi"),), tool_choice={"function": {"name": "\ud800"}}),
        lambda: Request((Message("user", "hi"),), tools=({(1, 2): "a tuple key"},)),
    ],
    ids=["content", "tool-schema", "budget-key", "tool-call-arguments", "tool-choice", "not-json"],
)
def test_a_request_built_directly_is_validated_at_construction(build: Any) -> None:
    """Python callers build Request(...) themselves: refused here, before any reservation."""
    with pytest.raises(InvalidRequestError, match=r"not valid Unicode|not JSON"):
        build()


def test_unicode_that_is_valid_passes() -> None:
    assert Request.of("caf\u00e9 \U0001f600", budget_key="t\u00e9").prompt == "caf\u00e9 \U0001f600"


def test_usage_source_is_in_the_trace_and_the_explanation() -> None:
    from dataclasses import replace
    from decimal import Decimal

    from cascade.types import Attempt, CascadeResult, Usage

    a = Attempt("t", "m", "openai", "accepted", "ok", samples=1, usage=Usage(3, 4), cost=Decimal("0.01"))
    est = replace(a, usage_source="estimated")
    assert a.to_dict()["usage_source"] == "reported" and est.to_dict()["usage_source"] == "estimated"
    result = CascadeResult("x", "t", "m", True, "accepted", (est,))
    assert "tokens 3+4 (estimated)" in result.explain()
    assert "(reported)" not in CascadeResult("x", "t", "m", True, "accepted", (a,)).explain()


def _reference(v: Any) -> Any:
    """The former ``to_dict``: ``dataclasses.asdict``, then Decimals as strings, tuples as lists."""
    from collections.abc import Mapping
    from dataclasses import asdict, is_dataclass
    from decimal import Decimal

    if is_dataclass(v) and not isinstance(v, type):
        return _reference(asdict(v))
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, Mapping):
        return {k: _reference(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_reference(x) for x in v]
    return v


def test_to_dict_is_asdict_made_json_ready_without_its_copies() -> None:
    import json
    from decimal import Decimal
    from types import MappingProxyType

    from cascade.types import Attempt, CascadeResult, Sample, Usage

    call = ToolCall("weather", {"city": "Oslo", "days": (1, 2), "max": Decimal("1.5")}, "c1")
    detail = {"votes": [{"answer": "a", "n": 2}], "cost": Decimal("0.001"), "calls": (call,)}
    attempts = (
        Attempt(
            "small",
            "m-1",
            "openai",
            "escalated",
            "score 0.2 < 0.5",
            3,
            0.2,
            0.5,
            Usage(10, 5, 2),
            Decimal("0.00001"),
            Decimal("0.000002"),
            0.1,
            1,
            None,
            "a",
            (call,),
            detail,
            "estimated",
            1,
        ),
        Attempt(
            "large",
            "m-2",
            "anthropic",
            "accepted",
            "last tier",
            1,
            usage=Usage(7, 3),
            cost=Decimal("0.3"),
            charged="cut off in flight: worst case",
        ),
    )
    result = CascadeResult("b", "large", "m-2", True, "accepted", attempts, (call,), "p", 0.25, Sample("b"))
    expected = {k: _reference(getattr(result, k)) for k in ("answer", "tier", "model", "accepted", "reason")}
    expected |= {"attempts": [{**_reference(a), "total_cost": str(a.total_cost)} for a in attempts]}
    expected |= {"tool_calls": _reference(result.tool_calls), "policy": "p", "latency_s": 0.25}
    expected |= {"abstention": None, "cost": str(result.cost), "usage": _reference(result.usage)}
    expected |= {"abstained": False}
    got = result.to_dict()
    assert got == expected and list(got) == list(expected)
    assert json.loads(json.dumps(got)) == got
    assert got["attempts"][0]["tool_calls"][0]["arguments"] is not call.arguments  # a copy, not a view
    frozen = ToolCall("weather", MappingProxyType({"city": "Oslo"}), "c2")  # asdict could not copy it
    assert CascadeResult("b", "large", "m-2", True, "accepted", (), (frozen,)).to_dict()["tool_calls"] == [
        {"name": "weather", "arguments": {"city": "Oslo"}, "id": "c2"}
    ]
