"""OpenAI's chat-completions wire format: the one owner of request parsing and response shaping.

:func:`parse` turns a request body into a :class:`ChatCall` (messages, tools and ``tool_choice``
through :meth:`cascade.types.Request.of`, which already reads OpenAI's message format);
:func:`completion` and :func:`chunks` shape a :class:`~cascade.types.CascadeResult` as a
``chat.completion`` body or as ``chat.completion.chunk`` events. Tool calls take the shape
:func:`cascade.providers.openai.to_openai_messages` gives them (no second copy here).

Each tier's generation parameters (``temperature``, ``max_tokens``, ...) belong to the policy: a
request that sets one is refused with the parameter named, as is any parameter OpenAI does not know.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from cascade.errors import InvalidRequestError
from cascade.providers.openai import to_openai_messages
from cascade.request import Request
from cascade.serve.errors import ApiError
from cascade.types import CascadeResult, Message, ToolCall

ACCEPTED = frozenset(
    {
        "metadata",
        "model",
        "messages",
        "n",
        "response_format",
        "stream",
        "stream_options",
        "tool_choice",
        "tools",
        "user",
    }
)
"""Parameters the gateway takes (``n`` only as 1; ``user`` is accepted and not used; ``metadata``,
strings, becomes :attr:`Request.metadata <cascade.types.Request.metadata>`: replay tiers find a
recorded prompt by its ``id``)."""
POLICY_OWNED = frozenset(
    {
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "modalities",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "reasoning_effort",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "store",
        "temperature",
        "top_logprobs",
        "top_p",
        "verbosity",
        "web_search_options",
    }
)
"""OpenAI parameters the gateway does not take: each tier's are set in the policy (null is ignored)."""
_FORMATS = ("text", "json_object", "json_schema")
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}


@dataclass(frozen=True, slots=True)
class ChatCall:
    """One parsed ``POST /v1/chat/completions``."""

    model: str
    request: Request
    stream: bool = False
    include_usage: bool = False
    response_format: Mapping[str, Any] | None = None


def bad(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", param=param, code=code)


def parse(body: Any, budget_key: str | None = None) -> ChatCall:
    """A :class:`ChatCall` from a decoded JSON body; :class:`ApiError` (400) names what is wrong."""
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object")
    for name, value in body.items():
        if name in ACCEPTED:
            continue
        if name in POLICY_OWNED:
            if value is None:
                continue
            raise bad(
                f"Unsupported parameter: '{name}': each tier's generation parameters are set by the policy",
                name,
                "unsupported_parameter",
            )
        raise bad(f"Unrecognized request argument supplied: {name}", name, "unknown_parameter")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("you must provide a model parameter (a string)", "model", "missing_required_parameter")
    if body.get("n") not in (None, 1):
        raise bad("'n' must be 1: a cascade returns one answer", "n", "unsupported_value")
    stream = _flag(body, "stream")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, dict) or set(options) - {"include_usage"}:
            raise bad("stream_options takes only include_usage", "stream_options", "invalid_value")
        if not stream:
            raise bad("stream_options is only allowed when stream is true", "stream_options", "invalid_value")
        include_usage = _flag(options, "include_usage", "stream_options.include_usage")
    request = _request(body.get("messages"), budget_key)
    tools = body.get("tools")
    if tools is not None:
        request = replace(request, tools=_tools(tools))
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise bad("'metadata' must be an object of strings", "metadata", "invalid_type")
        request = replace(request, metadata=metadata)
    choice = body.get("tool_choice")
    if choice is not None:
        request = replace(request, tool_choice=_tool_choice(choice, request))
    fmt = _response_format(body.get("response_format"))
    if fmt is not None:  # openai and openai_compatible tiers send it (LangChain tiers: see app.py)
        request = replace(request, response_format=fmt)
    return ChatCall(model, request, stream, include_usage, fmt)


def _flag(body: Mapping[str, Any], name: str, param: str | None = None) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad(f"'{param or name}' must be a boolean", param or name, "invalid_type")
    return value


def _request(messages: Any, budget_key: str | None) -> Request:
    if not isinstance(messages, list) or not messages:
        raise bad("'messages' must be a non-empty array", "messages", "invalid_value")
    shaped: list[Any] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise bad(f"messages[{i}] must be an object", f"messages[{i}]", "invalid_type")
        for key in ("name", "tool_call_id"):
            if m.get(key) is not None and not isinstance(m[key], str):
                raise bad(f"messages[{i}].{key} must be a string", f"messages[{i}].{key}", "invalid_type")
        if m.get("role") == "developer":  # OpenAI's newer name for the system role
            m = {**m, "role": "system"}
        content = m.get("content")
        if isinstance(content, list):
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text":
                    kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                    raise bad(
                        f"messages[{i}]: content part {kind!r} is not supported (text only)",
                        f"messages[{i}].content",
                        "unsupported_value",
                    )
        shaped.append(m)
    try:
        return Request.of(shaped, budget_key=budget_key)
    except InvalidRequestError as exc:
        raise bad(str(exc), "messages", "invalid_value") from None


def _tools(tools: Any) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(tools, list):
        raise bad("'tools' must be an array", "tools", "invalid_type")
    for i, t in enumerate(tools):
        fn = t.get("function") if isinstance(t, dict) else None
        if not isinstance(t, dict) or t.get("type") != "function" or not isinstance(fn, dict):
            raise bad(f"tools[{i}] must be {{'type': 'function', 'function': {{...}}}}", f"tools[{i}]")
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            raise bad(f"tools[{i}].function.name is required", f"tools[{i}].function.name")
    return tuple(tools)


def _tool_choice(choice: Any, request: Request) -> str | Mapping[str, Any]:
    if choice in ("auto", "none", "required"):
        return str(choice)
    fn = choice.get("function") if isinstance(choice, dict) else None
    if not isinstance(fn, dict) or choice.get("type") != "function" or not isinstance(fn.get("name"), str):
        raise bad(
            "tool_choice must be 'auto', 'none', 'required' or a function: {'type': 'function',"
            " 'function': {'name': ...}}",
            "tool_choice",
            "invalid_value",
        )
    if fn["name"] not in {t["function"]["name"] for t in request.tools}:
        raise bad(f"tool_choice names {fn['name']!r}, which is not in tools", "tool_choice", "invalid_value")
    return {"type": "function", "function": {"name": fn["name"]}}


def _response_format(fmt: Any) -> Mapping[str, Any] | None:
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") not in _FORMATS:
        raise bad(f"response_format.type must be one of {', '.join(_FORMATS)}", "response_format.type")
    if fmt["type"] == "text":
        return None
    if fmt["type"] == "json_schema":
        schema = fmt.get("json_schema")
        if not isinstance(schema, dict) or not isinstance(schema.get("name"), str):
            raise bad(
                "response_format.json_schema needs a name (and a schema)", "response_format.json_schema"
            )
    return dict(fmt)


# -- responses --------------------------------------------------------------------------------------


def completion_id() -> str:
    return f"chatcmpl-{secrets.token_hex(12)}"


def usage(result: CascadeResult) -> dict[str, Any]:
    """Everything the request spent (every tier tried and every scorer), in OpenAI's usage shape."""
    u = result.usage
    prompt = u.input_tokens + u.cached_input_tokens + u.cache_creation_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": u.output_tokens,
        "total_tokens": prompt + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_input_tokens},
    }


def _answer(result: CascadeResult) -> tuple[str, tuple[ToolCall, ...], str]:
    """The answer's text, its tool calls (each with an id) and OpenAI's finish reason."""
    text = result.sample.text if result.sample is not None else result.answer
    calls = tuple(c if c.id else replace(c, id=f"call_{secrets.token_hex(12)}") for c in result.tool_calls)
    raw = result.sample.finish_reason if result.sample is not None else None
    finish = _FINISH.get(raw or "", raw or "stop")
    if calls:
        finish = "tool_calls"
    elif finish not in ("stop", "length", "content_filter"):
        finish = "stop"
    return text, calls, finish


def message(result: CascadeResult) -> tuple[dict[str, Any], str]:
    """The assistant message of ``result`` in OpenAI's shape, and its finish reason."""
    text, calls, finish = _answer(result)
    (msg,) = to_openai_messages((Message("assistant", text, calls),))
    if not calls:
        msg["content"] = text
    msg["refusal"] = None
    return msg, finish


def trace(result: CascadeResult) -> dict[str, Any]:
    """The decision trace in brief (no prompt or answer text): the ``cascade`` extension field."""
    return {
        "policy": result.policy,
        "tier": result.tier,
        "accepted": result.accepted,
        "reason": result.reason,
        "cost_usd": str(result.cost),
        **abstention(result),
        "attempts": [
            {
                "tier": a.tier,
                "model": a.model,
                "decision": a.decision,
                "reason": a.reason,
                "score": a.score,
                "cost_usd": str(a.total_cost),
            }
            for a in result.attempts
        ],
    }


def abstention(result: CascadeResult) -> dict[str, Any]:
    """An abstention's marker (``on_unverified: abstain``): ``abstained`` and why; {} for an answer."""
    return {"abstained": True, "abstention": result.abstention} if result.abstained else {}


def extension(result: CascadeResult, with_trace: bool) -> dict[str, Any]:
    """The ``cascade`` extension field: the trace if asked; an abstention's marker always."""
    if with_trace:
        return {"cascade": trace(result)}
    return {"cascade": abstention(result)} if result.abstained else {}


def completion(
    result: CascadeResult, model: str, cid: str, created: int | None = None, with_trace: bool = False
) -> dict[str, Any]:
    """A ``chat.completion`` body for ``result`` (with the ``cascade`` field: the trace if asked,
    an abstention's marker always)."""
    msg, finish = message(result)
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [{"index": 0, "message": msg, "logprobs": None, "finish_reason": finish}],
        "usage": usage(result),
        **extension(result, with_trace),
    }


def chunks(
    result: CascadeResult, model: str, cid: str, include_usage: bool, created: int | None = None
) -> Iterator[dict[str, Any]]:
    """The ``chat.completion.chunk`` events of ``result``: the role, the content or the tool
    calls, the finish reason (with the ``cascade`` marker of an abstention), then (with
    ``include_usage``) a usage chunk with no choices."""
    msg, finish = message(result)
    base: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()) if created is None else created,
        "model": model,
    }
    tail = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        return {**base, "choices": [choice], **tail}

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    if msg.get("tool_calls"):
        yield chunk({"tool_calls": [{"index": i, **tc} for i, tc in enumerate(msg["tool_calls"])]})
    elif msg["content"]:
        yield chunk({"content": msg["content"]})
    yield {**chunk({}, finish), **extension(result, False)}
    if include_usage:
        yield {**base, "choices": [], "usage": usage(result)}


def sse(event: Mapping[str, Any] | str) -> bytes:
    """One server-sent event (``data: ...`` and a blank line)."""
    data = event if isinstance(event, str) else json.dumps(event, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


__all__ = [
    "ACCEPTED",
    "POLICY_OWNED",
    "ChatCall",
    "abstention",
    "chunks",
    "completion",
    "extension",
    "message",
    "parse",
    "sse",
    "trace",
    "usage",
]
