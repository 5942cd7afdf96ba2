"""A tier's completion as LangChain messages: its samples' text, tool calls and usage."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from cascade.providers.langchain import usage_metadata
from cascade.types import Completion, ToolCall, Usage


def _llm_result(completion: Completion) -> LLMResult:
    """A tier's completion as a LangChain result: usage and model name on the first generation."""
    generations = []
    for i, sample in enumerate(completion.samples or ()):
        generations.append(
            ChatGeneration(
                message=_ai_message(
                    sample.text,
                    sample.tool_calls,
                    usage=completion.usage if i == 0 else None,
                    response_metadata={"model_name": completion.model} if i == 0 else {},
                )
            )
        )
    return LLMResult(generations=[generations])


def _tool_calls(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    return [
        {
            "name": c.name,
            "args": dict(c.arguments),
            "id": c.id or f"call_{uuid.uuid4().hex[:24]}",
            "type": "tool_call",
        }
        for c in calls
    ]


def _ai_message(
    text: str | list[Any],
    calls: Sequence[ToolCall],
    *,
    usage: Usage | None,
    response_metadata: dict[str, Any],
    additional_kwargs: dict[str, Any] | None = None,
) -> AIMessage:
    return AIMessage(
        content=text,
        tool_calls=_tool_calls(calls),
        usage_metadata=usage_metadata(usage) if usage is not None else None,
        response_metadata=response_metadata,
        additional_kwargs=additional_kwargs or {},
    )


def _call_chunks(calls: Sequence[Mapping[str, Any]]) -> list[Any]:
    return [
        {
            "name": c["name"],
            "args": json.dumps(c["args"]),
            "id": c["id"],
            "index": i,
            "type": "tool_call_chunk",
        }
        for i, c in enumerate(calls)
    ]
