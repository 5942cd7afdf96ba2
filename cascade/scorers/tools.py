"""Scorers for answers that are tool calls.

``tool_args`` checks each call against the request's tools: the tool exists, its arguments are a
JSON object valid under the tool's ``parameters`` schema, and a call is present when the
request's ``tool_choice`` demands one. A text answer to a request where tools are optional scores
``no_call`` (1 by default: answering without a tool is allowed).

With several samples the value is the share of valid samples, and the first valid one is chosen.
The schema check covers what tool schemas use (types, properties, required, additionalProperties,
enum, const, items, anyOf/oneOf/allOf, numeric and length bounds, local ``$ref``); unknown
keywords are ignored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cascade.request import Request
from cascade.types import ZERO, Completion, Sample, Score


class ToolArgsScorer:
    """1 when the answer's tool calls are valid under the tools' JSON schemas, else 0."""

    samples = 1

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        no_call: float = Field(1.0, ge=0, le=1, description="Score of a text answer when tools are optional.")

    def __init__(self, no_call: float = 1.0) -> None:
        self.no_call = no_call

    @classmethod
    def from_config(cls, options: ToolArgsScorer.Options, ctx: Any) -> ToolArgsScorer:
        return cls(no_call=options.no_call)

    def check(self, request: Request, sample: Sample, invalid: Sequence[Any] = ()) -> tuple[float, list[str]]:
        """The score of one sample and the problems found."""
        required, named = _demand(request.tool_choice)
        if invalid:
            names = ", ".join(str(c.get("name")) for c in invalid if isinstance(c, Mapping))
            return 0.0, [f"unparseable tool call arguments ({names or 'unnamed'})"]
        if not sample.tool_calls:
            if required:
                return 0.0, ["no tool call, but the request requires one"]
            return self.no_call, []
        tools = {_name(t): _parameters(t) for t in request.tools}
        errors: list[str] = []
        for call in sample.tool_calls:
            if named is not None and call.name != named:
                errors.append(f"called {call.name!r}, but the request requires {named!r}")
            elif call.name not in tools:
                errors.append(f"unknown tool {call.name!r}")
            else:
                schema = tools[call.name]
                errors += [f"{call.name}: {e}" for e in validate(dict(call.arguments), schema, schema)]
        return (0.0 if errors else 1.0), errors

    def score(self, request: Request, completion: Completion) -> Score:
        invalid_all = completion.raw.get("invalid_tool_calls") or []
        values: list[float] = []
        problems: list[list[str]] = []
        for i, sample in enumerate(completion.samples):
            invalid = invalid_all[i] if i < len(invalid_all) else ()
            value, errors = self.check(request, sample, invalid)
            values.append(value)
            problems.append(errors)
        if not values:
            return Score(0.0, detail={"errors": ["no answer"]})
        chosen = next((i for i, v in enumerate(values) if v >= 1.0), 0)
        detail: dict[str, Any] = {"errors": problems[0] if len(values) == 1 else problems}
        return Score(sum(values) / len(values), chosen=chosen, detail=detail)

    async def ascore(self, request: Request, completion: Completion) -> Score:
        return self.score(request, completion)

    def max_cost(self, request: Request, max_output_tokens: int) -> Decimal:
        return ZERO


def _demand(choice: str | Mapping[str, Any] | None) -> tuple[bool, str | None]:
    """(a call is required, the tool it must be) for an OpenAI- or LangChain-style tool choice."""
    if choice is None or choice in ("auto", "none"):
        return False, None
    if choice in ("required", "any"):
        return True, None
    if isinstance(choice, str):
        return True, choice
    function = choice.get("function")
    if isinstance(function, Mapping) and isinstance(function.get("name"), str):
        return True, str(function["name"])
    name = choice.get("name")
    return True, name if isinstance(name, str) else None


def _name(tool: Mapping[str, Any]) -> str:
    function = tool.get("function")
    if isinstance(function, Mapping):
        return str(function.get("name", ""))
    return str(tool.get("name", ""))


def _parameters(tool: Mapping[str, Any]) -> Mapping[str, Any]:
    function = tool.get("function")
    source = function if isinstance(function, Mapping) else tool
    schema = source.get("parameters") or source.get("input_schema") or {"type": "object"}
    return schema if isinstance(schema, Mapping) else {"type": "object"}


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list, tuple),
    "string": (str,),
    "boolean": (bool,),
    "null": (type(None),),
}


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES.get(name, (object,)))


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    node: Any = root
    for part in ref[2:].split("/"):
        node = node.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else {}


def validate(value: Any, schema: Mapping[str, Any], root: Mapping[str, Any], path: str = "") -> list[str]:
    """Problems with ``value`` under JSON ``schema`` (empty when valid)."""
    schema = _resolve(schema, root)
    where = f"{path}: " if path else ""
    errors: list[str] = []
    expected = schema.get("type")
    if expected is not None:
        names = [expected] if isinstance(expected, str) else list(expected)
        if not any(_is_type(value, n) for n in names):
            return [f"{where}expected {'/'.join(names)}, got {json.dumps(value, default=str)[:60]}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}{value!r} is not one of {schema['enum']!r}")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{where}must be {schema['const']!r}")
    for key in ("allOf",):
        for sub in schema.get(key) or []:
            errors += validate(value, sub, root, path)
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if options and not any(not validate(value, sub, root, path) for sub in options):
            errors.append(f"{where}matches none of the {key} alternatives")
    if isinstance(value, dict):
        props: Mapping[str, Any] = schema.get("properties") or {}
        for name in schema.get("required") or []:
            if name not in value:
                errors.append(f"{where}missing required property {name!r}")
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            if name in props:
                errors += validate(item, props[name], root, f"{path}.{name}" if path else name)
            elif extra is False:
                errors.append(f"{where}unexpected property {name!r}")
            elif isinstance(extra, Mapping):
                errors += validate(item, extra, root, f"{path}.{name}" if path else name)
    elif isinstance(value, (list, tuple)):
        items = schema.get("items")
        if isinstance(items, Mapping):
            for i, item in enumerate(value):
                errors += validate(item, items, root, f"{path}[{i}]")
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{where}fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{where}more than {schema['maxItems']} items")
    elif isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{where}shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{where}longer than {schema['maxLength']}")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        for key, bound in _bounds(schema):
            broken = (
                (key == "minimum" and value < bound)
                or (key == "maximum" and value > bound)
                or (key == "exclusiveMinimum" and value <= bound)
                or (key == "exclusiveMaximum" and value >= bound)
            )
            if broken:
                errors.append(f"{where}{value} violates {key} {bound}")
    return errors


def _bounds(schema: Mapping[str, Any]) -> list[tuple[str, float]]:
    keys = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
    return [
        (k, float(schema[k]))
        for k in keys
        if isinstance(schema.get(k), (int, float)) and not isinstance(schema.get(k), bool)
    ]


__all__ = ["ToolArgsScorer", "validate"]
