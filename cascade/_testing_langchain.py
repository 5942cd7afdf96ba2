"""The scripted LangChain chat model of :mod:`cascade.testing`, in its own module so that importing
the other test doubles does not load LangChain (``cascade.testing.ScriptedChatModel`` loads it on
first use)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import PrivateAttr


class ScriptedChatModel(BaseChatModel):
    """A LangChain chat model that answers from a script (tests, offline demos).

    Steps are used in order and the last one repeats: a string, an :class:`AIMessage` (say, with
    tool calls), an exception (raised) or a callable ``(messages, call_kwargs) -> str | AIMessage``.
    It reports ``usage_metadata`` (``input_tokens``/``output_tokens`` per call, at most
    ``max_tokens`` when set: a capped cascade sets it, as on a real model) and its ``model``
    name, supports ``bind_tools`` (the tools arrive in ``call_kwargs["tools"]``) and streams word by
    word. ``calls`` records ``(messages, call_kwargs)`` of every call (with ``stop`` when given).
    """

    model: str = "scripted"
    script: list[Any]
    input_tokens: int = 10
    output_tokens: int = 10
    max_tokens: int | None = None  # as a real model's limit: reported output tokens never exceed it

    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _calls: list[tuple[list[BaseMessage], dict[str, Any]]] = PrivateAttr(default_factory=list)
    _position: int = PrivateAttr(0)

    @property
    def calls(self) -> list[tuple[list[BaseMessage], dict[str, Any]]]:
        return self._calls

    @property
    def _llm_type(self) -> str:
        return "scripted-chat-model"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return LangSmithParams(ls_provider="scripted", ls_model_name=self.model, ls_model_type="chat")

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | Any],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        formatted = [convert_to_openai_tool(t) for t in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=formatted, **kwargs)

    def _output_tokens(self) -> int:
        return self.output_tokens if self.max_tokens is None else min(self.output_tokens, self.max_tokens)

    def _answer(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        with self._lock:
            self._calls.append((list(messages), dict(kwargs)))
            step = self.script[min(self._position, len(self.script) - 1)]
            self._position += 1
        if isinstance(step, BaseException):
            raise step
        if callable(step) and not isinstance(step, AIMessage):
            step = step(messages, kwargs)
        message = AIMessage(step) if isinstance(step, str) else step
        return message.model_copy(
            update={
                "usage_metadata": message.usage_metadata
                or UsageMetadata(
                    input_tokens=self.input_tokens,
                    output_tokens=self._output_tokens(),
                    total_tokens=self.input_tokens + self._output_tokens(),
                ),
                "response_metadata": {"model_name": self.model, **message.response_metadata},
            }
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(
            generations=[
                ChatGeneration(message=self._answer(messages, {**kwargs, "stop": stop} if stop else kwargs))
            ]
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        message = self._answer(messages, {**kwargs, "stop": stop} if stop else kwargs)
        words = message.text.split(" ")
        for i, word in enumerate(words):
            yield ChatGenerationChunk(message=AIMessageChunk(content=word if i == 0 else " " + word))
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                tool_call_chunks=[
                    {
                        "name": c["name"],
                        "args": json.dumps(c["args"]),
                        "id": c["id"],
                        "index": i,
                        "type": "tool_call_chunk",
                    }
                    for i, c in enumerate(message.tool_calls)
                ],
                usage_metadata=message.usage_metadata,
                response_metadata=message.response_metadata,
                chunk_position="last",
            )
        )


__all__ = ["ScriptedChatModel"]
