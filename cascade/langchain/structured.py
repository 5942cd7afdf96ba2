"""Structured output: ``response_format`` as ChatOpenAI makes it, the schema gate's checks, refusals."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import LanguageModelInput
from langchain_core.runnables import (
    Runnable,
    RunnableGenerator,
    RunnableMap,
    RunnablePassthrough,
)
from langchain_core.utils.function_calling import convert_to_openai_function, convert_to_openai_tool
from pydantic import BaseModel

from cascade.types import (
    Sample,
)


@dataclass(frozen=True, slots=True)
class _Structured:
    """A ``with_structured_output`` request: its method and schema (pydantic model, TypedDict, dict)."""

    method: str
    schema: Any

    def problem(self, sample: Sample) -> str | None:
        """Why ``sample`` does not parse against the schema (None: it does)."""
        if self.method == "function_calling":
            name = convert_to_openai_tool(self.schema)["function"]["name"]
            calls = [c for c in sample.tool_calls if c.name == name]
            if not calls:
                return f"no call of {name}"
            value: Any = dict(calls[0].arguments)
        else:
            try:
                value = json.loads(sample.text)
            except ValueError:
                return "not JSON"
        return _misfit(value, self.schema)

    def parsed(self, text: str) -> Any:
        """The pydantic answer ``text`` parses to (``additional_kwargs["parsed"]``), else None."""
        if self.method != "json_schema" or not (
            isinstance(self.schema, type) and issubclass(self.schema, BaseModel)
        ):
            return None
        try:
            return self.schema.model_validate_json(text)
        except ValueError:
            return None


def _misfit(value: Any, schema: Any) -> str | None:
    """Why ``value`` does not fit ``schema`` (a pydantic model; a TypedDict or a JSON schema:
    checked against its JSON schema)."""
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        from pydantic import ValidationError

        try:
            schema.model_validate(value)
        except ValidationError as exc:
            return f"{exc.error_count()} validation error(s)"
        return None
    return _json_misfit(value, convert_to_openai_function(schema).get("parameters", {}))


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def _json_misfit(value: Any, schema: Mapping[str, Any], at: str = "$") -> str | None:
    """A small JSON-schema check (type, required, properties, items, closed objects, enum)."""
    kind = schema.get("type")
    kinds = [kind] if isinstance(kind, str) else list(kind or [])
    if kinds and not any(
        isinstance(value, _JSON_TYPES.get(k, object))
        and not (k in ("integer", "number") and isinstance(value, bool))
        for k in kinds
    ):
        return f"{at}: not {'/'.join(kinds)}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{at}: not one of {schema['enum']}"
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        missing = [k for k in schema.get("required") or () if k not in value]
        if missing:
            return f"{at}: missing {missing}"
        if schema.get("additionalProperties") is False and set(value) - set(props):
            return f"{at}: unexpected {sorted(set(value) - set(props))}"
        for k, sub in props.items():
            if k in value and isinstance(sub, Mapping):
                problem = _json_misfit(value[k], sub, f"{at}.{k}")
                if problem:
                    return problem
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i, item in enumerate(value):
            problem = _json_misfit(item, schema["items"], f"{at}[{i}]")
            if problem:
                return problem
    return None


def _response_format(schema: dict[str, Any] | type, strict: bool | None) -> dict[str, Any]:
    """``schema`` as an OpenAI ``response_format`` of type ``json_schema``, as ChatOpenAI makes it:
    a ready ``response_format`` (or ``{"name", "schema"}``) as given, else the schema converted;
    ``strict`` (default: true for a pydantic model, as OpenAI's parse API sends) closes every
    object (``additionalProperties: false``)."""
    if isinstance(schema, dict) and schema.get("type") == "json_schema" and "json_schema" in schema:
        return schema
    if isinstance(schema, dict) and "name" in schema and "schema" in schema:
        return {"type": "json_schema", "json_schema": schema}
    if strict is None:
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            strict = True
        else:
            strict = schema.get("strict") is True if isinstance(schema, dict) else False
    function = convert_to_openai_function(schema, strict=strict)
    function["schema"] = function.pop("parameters", {})
    return {"type": "json_schema", "json_schema": function}


def _raise_on_refusal(message: Any) -> None:
    refusal = getattr(message, "additional_kwargs", {}).get("refusal")
    if not refusal:
        return
    from langchain_core.exceptions import ModelRefusalError

    refused: type[ModelRefusalError] = ModelRefusalError  # without langchain-openai: the neutral error
    with contextlib.suppress(ImportError):
        from langchain_openai.chat_models.base import OpenAIRefusalError

        refused = OpenAIRefusalError
    raise refused(str(refusal), raw_message=message)


def _check_refusal(messages: Iterator[Any]) -> Iterator[Any]:
    for message in messages:
        _raise_on_refusal(message)
        yield message


async def _acheck_refusal(messages: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for message in messages:
        _raise_on_refusal(message)
        yield message


def _with_parser(
    llm: Runnable[LanguageModelInput, Any], parser: Runnable[Any, Any], include_raw: bool
) -> Runnable[LanguageModelInput, Any]:
    """``llm | parser``, or with ``include_raw`` the ``{"raw", "parsed", "parsing_error"}`` map; a
    refusal raises ``OpenAIRefusalError`` (``ModelRefusalError`` without langchain-openai), as
    ChatOpenAI's does."""
    parser = RunnableGenerator(_check_refusal, _acheck_refusal) | parser
    if not include_raw:
        return llm | parser
    parsed = RunnablePassthrough.assign(
        parsed=lambda x: parser.invoke(x["raw"]), parsing_error=lambda _: None
    )
    failed = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=llm) | parsed.with_fallbacks([failed], exception_key="parsing_error")
