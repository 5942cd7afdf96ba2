"""Helpers for the LangChain tests: tiers over scripted chat models and a recording handler."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from cascade import Price, Tier
from cascade.protocols import Provider, Scorer
from cascade.providers.langchain import LangChainProvider

CHEAP = Price(Decimal("0.1"), Decimal("0.4"))
STRONG = Price(Decimal("2.5"), Decimal("10"))


def tier(
    name: str,
    model: BaseChatModel | Provider,
    scorer: Scorer | None = None,
    threshold: float | None = None,
    price: Price = CHEAP,
) -> Tier:
    provider = LangChainProvider(model) if isinstance(model, BaseChatModel) else model
    kind = "langchain" if isinstance(model, BaseChatModel) else "scripted"
    return Tier(name, provider, price, scorer, threshold, provider_kind=kind)


def call(name: str, args: dict[str, Any], id: str = "") -> AIMessage:
    """An answer that is one tool call."""
    return AIMessage(
        "", tool_calls=[{"name": name, "args": args, "id": id or f"id-{name}", "type": "tool_call"}]
    )


class Recorder(BaseCallbackHandler):
    """Records every chat-model run: start (ids, tags, metadata, name) and end (the message)."""

    def __init__(self) -> None:
        self.starts: list[dict[str, Any]] = []
        self.ends: dict[UUID, AIMessage] = {}
        self.errors: dict[UUID, BaseException] = {}
        self.tokens: list[str] = []

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.starts.append(
            {
                "run_id": run_id,
                "parent_run_id": parent_run_id,
                "tags": list(tags or []),
                "metadata": dict(metadata or {}),
                "name": kwargs.get("name"),
                "messages": messages[0],
            }
        )

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        generation = response.generations[0][0]
        assert isinstance(generation, ChatGeneration)
        assert isinstance(generation.message, AIMessage)
        self.ends[run_id] = generation.message

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self.errors[run_id] = error

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:  # type: ignore[override]
        self.tokens.append(token)

    def runs(self, name: str) -> list[dict[str, Any]]:
        return [s for s in self.starts if s["name"] == name]

    def cascade_runs(self) -> list[dict[str, Any]]:
        return [
            s
            for s in self.starts
            if s["metadata"].get("ls_provider") == "cascade" and "cascade_tier" not in s["metadata"]
        ]
