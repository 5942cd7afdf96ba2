"""Conversions between LangChain messages and ours, and the messages a cascade answer becomes."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    UsageMetadata,
)
from langchain_core.utils.uuid import uuid7

from cascade.langchain.calls import _ai_message, _call_chunks, _tool_calls
from cascade.langchain.lean import _lc
from cascade.langchain.trace import trace
from cascade.providers.langchain import (
    usage_metadata,
)
from cascade.types import (
    CascadeResult,
    Message,
    ToolCall,
    Usage,
)

if TYPE_CHECKING:
    from cascade.langchain.runs import _Scope, _Tally

_MEDIA = frozenset({"image", "image_url", "input_image", "audio", "input_audio", "file", "video", "document"})


# -- conversions ---------------------------------------------------------------------------------


def _text(content: str | list[str | dict[str, Any]]) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif block.get("type") == "text" and isinstance(block.get("text"), str):
            parts.append(block["text"])
    return "".join(parts)


def _has_media(messages: Sequence[BaseMessage]) -> bool:
    return any(
        isinstance(m.content, list)
        and any(isinstance(b, dict) and b.get("type") in _MEDIA for b in m.content)
        for m in messages
    )


_ROLES: dict[str, Literal["system", "user", "assistant", "tool"]] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "tool": "tool",
}


def from_langchain_messages(messages: Sequence[BaseMessage]) -> tuple[Message, ...]:
    """LangChain messages as ours (text content; other content blocks are dropped)."""
    out: list[Message] = []
    for m in messages:
        text = _text(m.content)
        if isinstance(m, HumanMessage):
            out.append(Message("user", text, name=m.name))
        elif isinstance(m, AIMessage):
            calls = tuple(ToolCall(tc["name"], dict(tc["args"]), tc.get("id") or "") for tc in m.tool_calls)
            out.append(Message("assistant", text, tool_calls=calls))
        elif isinstance(m, SystemMessage):
            out.append(Message("system", text))
        elif isinstance(m, ToolMessage):
            out.append(Message("tool", text, tool_call_id=m.tool_call_id, name=m.name))
        elif isinstance(m, ChatMessage):
            out.append(Message(_ROLES.get(m.role, "user"), text))
        else:
            out.append(Message(_ROLES.get(m.type, "user"), text))
    return tuple(out)


_THEIRS = frozenset({"model_name", "model", "finish_reason", "model_provider", "token_usage", "usage"})


@dataclass(frozen=True, slots=True)
class _Extras:
    """What the answering LangChain tier's message adds to the cascade's answer: its content
    (text and tool_use blocks of ChatAnthropic), ``additional_kwargs`` (``refusal``, and
    ``parsed`` for a pydantic json_schema request), metadata (``logprobs``...), reasoning tokens."""

    content: str | list[Any] | None = None
    additional_kwargs: dict[str, Any] = field(default_factory=dict)
    response_metadata: dict[str, Any] = field(default_factory=dict)
    reasoning: int = 0


def _extras(result: CascadeResult, scope: _Scope) -> _Extras:
    message = scope.tally.message(result.sample)
    kwargs: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    content: str | list[Any] | None = None
    if message is not None:
        kwargs = dict(message.additional_kwargs)
        meta = {k: v for k, v in message.response_metadata.items() if k not in _THEIRS}
        if isinstance(message.content, list):
            content = message.content
    if scope.structured is not None:
        parsed = scope.structured.parsed(result.answer)
        if parsed is not None:
            kwargs["parsed"] = parsed
    return _Extras(content, kwargs, meta, scope.tally.reasoning)


def _metadata(result: CascadeResult, extras: _Extras | None = None) -> dict[str, Any]:
    """``response_metadata`` of a cascade answer: the answering tier's (``logprobs``...), then the
    answering model, finish reason and trace."""
    finish = result.sample.finish_reason if result.sample is not None else None
    t = trace(result)
    if extras is not None and extras.reasoning:
        t["reasoning_tokens"] = extras.reasoning
    return {
        **(extras.response_metadata if extras is not None else {}),
        "model_name": result.model,
        "finish_reason": finish or ("tool_calls" if result.tool_calls else "stop"),
        "model_provider": "cascade",
        "cascade": t,
    }


def _own_usage(result: CascadeResult, tally: _Tally | None) -> Usage | None:
    """What the cascade's own run reports: the usage no child run reported (None when nothing)."""
    total, seen = result.usage, tally.reported if tally is not None else Usage()
    own = Usage(
        max(0, total.input_tokens - seen.input_tokens),
        max(0, total.output_tokens - seen.output_tokens),
        max(0, total.cached_input_tokens - seen.cached_input_tokens),
        max(0, total.cache_creation_tokens - seen.cache_creation_tokens),
    )
    return own if own.total_tokens else None


def _total(message: BaseMessage) -> BaseMessage:
    """``message`` with ``usage_metadata`` = everything its cascade run spent (from its trace)."""
    t = message.response_metadata.get("cascade")
    if not isinstance(message, AIMessage) or not isinstance(t, dict) or not isinstance(t.get("usage"), dict):
        return message
    return message.model_copy(
        update={"usage_metadata": _usage(Usage(**t["usage"]), t.get("reasoning_tokens"))}
    )


def _usage(usage: Usage, reasoning: Any = None) -> UsageMetadata:
    """``usage_metadata`` with the tiers' reasoning tokens (``output_token_details``), if any."""
    um = usage_metadata(usage)
    if isinstance(reasoning, int) and reasoning:
        um["output_token_details"] = {"reasoning": reasoning}
    return um


def to_ai_message(result: CascadeResult, extras: _Extras | None = None) -> AIMessage:
    """The cascade's answer as the message a LangChain caller gets (usage: the whole run's)."""
    message = _ai_message(
        extras.content if extras is not None and extras.content is not None else result.answer,
        result.tool_calls,
        usage=None,
        response_metadata=_metadata(result, extras),
        additional_kwargs=extras.additional_kwargs if extras is not None else None,
    )
    message.usage_metadata = _usage(result.usage, extras.reasoning if extras is not None else None)
    return message


def _unreported(result: CascadeResult, run_id: uuid.UUID | None, scope: _Scope) -> AIMessage:
    """What ``invoke`` returns when no handler listens: the answer, its id as LangChain makes it."""
    assert _lc is not None
    message = to_ai_message(result, _extras(result, scope))
    message.id = f"{_lc.LC_ID_PREFIX}-{run_id or uuid7()}-0"
    return message


def _reported_message(result: CascadeResult, scope: _Scope) -> AIMessage:
    """The answer as the cascade's own run reports it (usage: only what no tier run reported)."""
    extras = _extras(result, scope)
    return _ai_message(
        extras.content if extras.content is not None else result.answer,
        result.tool_calls,
        usage=_own_usage(result, scope.tally),
        response_metadata=_metadata(result, extras),
        additional_kwargs=extras.additional_kwargs,
    )


def _final_chunk(result: CascadeResult, streamed: bool, list_content: bool, scope: _Scope) -> AIMessageChunk:
    extras = _extras(result, scope)
    meta = _metadata(result, extras)
    own = _own_usage(result, scope.tally)
    usage = usage_metadata(own) if own is not None else None
    if streamed:
        return AIMessageChunk(
            content=[] if list_content else "",
            usage_metadata=usage,
            response_metadata=meta,
            chunk_position="last",
        )
    return AIMessageChunk(
        content=extras.content if extras.content is not None else result.answer,
        tool_call_chunks=_call_chunks(_tool_calls(result.tool_calls)),
        usage_metadata=usage,
        response_metadata=meta,
        additional_kwargs=extras.additional_kwargs,
        chunk_position="last",
    )


def _as_chunk(message: BaseMessage) -> AIMessageChunk:
    """What ``stream`` yields: chunks always (a parser downstream needs them), usage = the total."""
    if isinstance(message, AIMessageChunk):
        if message.chunk_position == "last" and "cascade" in message.response_metadata:
            total = _total(message)
            assert isinstance(total, AIMessageChunk)
            return total
        return message
    assert isinstance(message, AIMessage)
    return AIMessageChunk(
        content=message.content,
        tool_call_chunks=_call_chunks(message.tool_calls),
        usage_metadata=message.usage_metadata,
        response_metadata=message.response_metadata,
        id=message.id,
        chunk_position="last",
    )


def _public(chunk: AIMessageChunk) -> AIMessageChunk:
    """A live tier chunk without the tier's id, usage and metadata (reported on its own run)."""
    return AIMessageChunk(content=chunk.content, tool_call_chunks=list(chunk.tool_call_chunks))


def _list_content(chunks: list[AIMessageChunk]) -> bool:
    return bool(chunks) and not isinstance(chunks[0].content, str)
