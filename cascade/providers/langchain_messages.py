"""Conversions between cascade's values and LangChain's: messages, tool choice, samples, usage."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    UsageMetadata,
)
from langchain_core.outputs import ChatGenerationChunk

from cascade.types import Message, Sample, ToolCall, Usage

SDK_DEFAULT_RETRIES = 2  # what the OpenAI and Anthropic SDKs do when max_retries is unset


# -- conversions --------------------------------------------------------------------------------


def model_name(chat_model: BaseChatModel) -> str:
    """The model a LangChain chat model calls (its ``model_name``/``model``), else its type."""
    for attr in ("model_name", "model", "model_id", "deployment_name"):
        value = getattr(chat_model, attr, None)
        if isinstance(value, str) and value:
            return value
    return chat_model._llm_type


def to_langchain_messages(messages: Sequence[Message]) -> list[BaseMessage]:
    """Our messages as LangChain messages."""
    out: list[BaseMessage] = []
    for m in messages:
        if m.role == "system":
            out.append(SystemMessage(m.content))
        elif m.role == "assistant":
            out.append(
                AIMessage(
                    m.content,
                    tool_calls=[
                        {"name": t.name, "args": dict(t.arguments), "id": t.id or None, "type": "tool_call"}
                        for t in m.tool_calls
                    ],
                )
            )
        elif m.role == "tool":
            out.append(ToolMessage(m.content, tool_call_id=m.tool_call_id or "", name=m.name))
        else:
            out.append(HumanMessage(m.content, name=m.name))
    return out


def langchain_tool_choice(choice: str | Mapping[str, Any] | None) -> str | None:
    """Our (OpenAI-style) tool choice as the string LangChain's ``bind_tools`` accepts widely."""
    if choice is None:
        return None
    if isinstance(choice, str):
        return "any" if choice == "required" else choice
    function = choice.get("function")
    if isinstance(function, Mapping) and isinstance(function.get("name"), str):
        return str(function["name"])
    name = choice.get("name")
    return str(name) if isinstance(name, str) else None


def as_ai_message(message: BaseMessage) -> AIMessage:
    if isinstance(message, AIMessage):
        return message
    return AIMessage(message.text)


def to_sample(message: AIMessage) -> Sample:
    """One LangChain answer as a :class:`Sample` (text, tool calls, finish reason, logprobs)."""
    meta = message.response_metadata
    logprobs: tuple[float, ...] | None = None
    top: tuple[Mapping[str, float], ...] | None = None
    content = (meta.get("logprobs") or {}).get("content") if isinstance(meta.get("logprobs"), dict) else None
    if isinstance(content, list) and content:
        logprobs = tuple(float(t.get("logprob", 0.0)) for t in content)
        if any(t.get("top_logprobs") for t in content):
            top = tuple(
                {str(a.get("token")): float(a.get("logprob", 0.0)) for a in t.get("top_logprobs") or []}
                for t in content
            )
    finish = meta.get("finish_reason") or meta.get("stop_reason")
    return Sample(
        text=message.text,
        tool_calls=tuple(
            ToolCall(tc["name"], dict(tc.get("args") or {}), tc.get("id") or "") for tc in message.tool_calls
        ),
        logprobs=logprobs,
        top_logprobs=top,
        finish_reason=str(finish) if finish is not None else None,
    )


def usage_metadata(usage: Usage) -> UsageMetadata:
    """Our usage in LangChain's shape (its ``input_tokens`` include cache reads and writes)."""
    inp = usage.input_tokens + usage.cached_input_tokens + usage.cache_creation_tokens
    um = UsageMetadata(
        input_tokens=inp, output_tokens=usage.output_tokens, total_tokens=inp + usage.output_tokens
    )
    if usage.cached_input_tokens or usage.cache_creation_tokens:
        um["input_token_details"] = {
            "cache_read": usage.cached_input_tokens,
            "cache_creation": usage.cache_creation_tokens,
        }
    return um


def _estimate_output(message: AIMessage) -> int:
    """Output tokens of an answer by the cascade's estimate (chars / 4), tool calls included."""
    size = len(message.text)
    if message.tool_calls:
        size += len(json.dumps([[c["name"], c["args"]] for c in message.tool_calls]))
    return max(1, math.ceil(size / 4))


def _chunk_message(generation: ChatGenerationChunk) -> AIMessageChunk | None:
    message = generation.message
    if not isinstance(message, AIMessageChunk):
        return None
    if generation.generation_info:  # as BaseChatModel.stream does: generation info joins the metadata
        message.response_metadata = {**generation.generation_info, **message.response_metadata}
    return message


def sdk_retries(chat_model: BaseChatModel) -> int:
    """How many times the chat model's own client retries a failed call (unset: the SDK default)."""
    if "max_retries" not in type(chat_model).model_fields:
        return 0
    value = getattr(chat_model, "max_retries", None)
    if value is None:
        return SDK_DEFAULT_RETRIES
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def to_usage(message: AIMessage) -> Usage | None:
    """``usage_metadata`` as our :class:`Usage` (input excludes cache reads and writes); None if absent."""
    um = message.usage_metadata
    if not um:
        return None
    details: Mapping[str, Any] = um.get("input_token_details") or {}
    read = int(details.get("cache_read") or 0)
    write = int(details.get("cache_creation") or 0)
    return Usage(
        max(0, int(um.get("input_tokens") or 0) - read - write),
        int(um.get("output_tokens") or 0),
        read,
        write,
    )


def _constructor_names(cls: type[BaseChatModel]) -> set[str]:
    """The keyword names a chat model class accepts: its fields' names and aliases."""
    names: set[str] = set()
    for name, info in cls.model_fields.items():
        names.add(name)
        if info.alias:
            names.add(info.alias)
    return names
