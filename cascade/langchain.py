"""The LangChain front: :class:`CascadeChatModel`, a chat model that runs a cascade.

Swap any chat model for a cascade with one line, in chains and in agents::

    from cascade.langchain import CascadeChatModel

    model = CascadeChatModel.from_policy("support.yaml", providers={"cheap": ChatOpenAI(...)})
    agent = create_agent(model, tools=[search, lookup])

- ``bind_tools`` binds the tools on every tier (they travel on the request) and returns a copy;
  ``with_structured_output`` is built on it. Tool calls flow through to the caller.
- Every tier call is a child run of the cascade's run (callbacks, tags and metadata inherited),
  tagged ``nostream`` so rejected candidates never reach an agent's message stream.
- The answer keeps the accepted call's ``usage_metadata`` but not its ``model_name`` (the tier
  runs already report usage, so ``UsageMetadataCallbackHandler`` counts each call once);
  ``response_metadata["cascade"]`` holds the decision trace (:meth:`CascadeResult.to_dict`):
  tiers tried, scores, thresholds, reasons, costs, and which tier and model answered.
- Streaming is off by default (``disable_streaming=True``: stream calls run the cascade and yield
  one chunk). With ``stream_final_tier=True`` the last tier streams live when it is reached and its
  answer is final (no scorer on it, or ``on_exhausted: return_last``); earlier tiers never stream.
- The budget key (per-tenant caps) comes from the ``budget_key`` call argument or from the run's
  metadata under ``budget_key_metadata`` (default ``"tenant_id"``).
- Messages reach LangChain tiers as given (images and content blocks included) and other tiers as
  text; ``stop`` reaches LangChain tiers. A budget stop with no answer yet raises
  :class:`~cascade.errors.BudgetExceededError` (in an agent, prefer ``on_exceeded: raise``, so a
  rejected tool call is never handed back).

:class:`~cascade.langchain_testing.ScriptedChatModel` (re-exported here) is a scripted LangChain
chat model for tests and offline demos. Importing this module imports LangChain; ``import cascade``
does not.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import reduce
from operator import add
from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    BaseCallbackManager,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
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
from langchain_core.messages.utils import message_chunk_to_message
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, LLMResult
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, PrivateAttr, model_validator

from cascade.engine.cascade import Cascade, _aexecute, _execute
from cascade.engine.loop import Call, CallOutcome, Outcome, steps
from cascade.errors import ProviderError
from cascade.langchain_testing import ScriptedChatModel
from cascade.protocols import Provider
from cascade.providers.langchain import CallContext, LangChainProvider, tier_call, to_langchain_messages
from cascade.types import CascadeResult, Completion, Message, Request, ToolCall, Usage, show

_PARENT_KWARG = "_cascade_parent"


# -- the run scope: what tier calls need to become child runs --------------------------------------


@dataclass(frozen=True, slots=True)
class _Scope:
    """The cascade run a tier call belongs to: child callbacks plus the caller's messages."""

    callbacks: BaseCallbackManager | None
    request: Request
    messages: Sequence[BaseMessage]
    policy: str
    stop: list[str] | None = None

    def context(self, tier: str) -> CallContext:
        config = RunnableConfig(
            tags=["nostream", f"cascade_tier:{tier}"],
            metadata={"cascade_policy": self.policy, "cascade_tier": tier},
            run_name=tier,
        )
        if self.callbacks is not None:
            config["callbacks"] = self.callbacks
        return CallContext(config, self.request, self.messages, self.stop)


_scope: ContextVar[_Scope | None] = ContextVar("cascade_langchain_scope", default=None)


@dataclass(frozen=True, slots=True)
class _Parent:
    """The cascade run's id and config, passed to ``_stream`` (which gets no run manager)."""

    run_id: uuid.UUID
    config: RunnableConfig


def _child_callbacks(
    parent: BaseCallbackManager | CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun,
    run_id: uuid.UUID | None,
) -> CallbackManager:
    return CallbackManager(
        handlers=list(parent.inheritable_handlers),
        inheritable_handlers=list(parent.inheritable_handlers),
        parent_run_id=run_id,
        tags=list(parent.inheritable_tags),
        inheritable_tags=list(parent.inheritable_tags),
        metadata=dict(parent.inheritable_metadata),
        inheritable_metadata=dict(parent.inheritable_metadata),
    )


class _TierRun:
    """A tier's provider, made to run as a child run of the cascade's LangChain run.

    LangChain tiers get the child config through :data:`tier_call` and make their own run; other
    providers get a chat-model run reported here (messages in, answer and usage out).
    """

    def __init__(self, inner: Provider, tier: str, kind: str) -> None:
        self.inner = inner
        self.tier = tier
        self.kind = kind
        self.model = inner.model

    def max_usage(self, request: Request, n: int = 1) -> Usage:
        return self.inner.max_usage(request, n)

    @property
    def streams(self) -> bool:
        return isinstance(self.inner, LangChainProvider)

    def complete(self, request: Request, n: int = 1) -> Completion:
        scope = _scope.get()
        if scope is None:
            return self.inner.complete(request, n)
        ctx = scope.context(self.tier)
        if isinstance(self.inner, LangChainProvider):
            token = tier_call.set(ctx)
            try:
                return self.inner.complete(request, n)
            finally:
                tier_call.reset(token)
        manager = CallbackManager.configure(
            ctx.config.get("callbacks"), None, False, ctx.config.get("tags"), None, self._metadata(ctx)
        )
        (run,) = manager.on_chat_model_start(*self._start(request, scope), **self._start_kwargs(n))
        try:
            completion = self.inner.complete(request, n)
        except BaseException as exc:
            run.on_llm_error(exc)
            raise
        run.on_llm_end(_llm_result(completion))
        return completion

    async def acomplete(self, request: Request, n: int = 1) -> Completion:
        scope = _scope.get()
        if scope is None:
            return await self.inner.acomplete(request, n)
        ctx = scope.context(self.tier)
        if isinstance(self.inner, LangChainProvider):
            token = tier_call.set(ctx)
            try:
                return await self.inner.acomplete(request, n)
            finally:
                tier_call.reset(token)
        manager = AsyncCallbackManager.configure(
            ctx.config.get("callbacks"), None, False, ctx.config.get("tags"), None, self._metadata(ctx)
        )
        (run,) = await manager.on_chat_model_start(*self._start(request, scope), **self._start_kwargs(n))
        try:
            completion = await self.inner.acomplete(request, n)
        except BaseException as exc:
            await run.on_llm_error(exc)
            raise
        await run.on_llm_end(_llm_result(completion))
        return completion

    def stream(self, request: Request, scope: _Scope) -> Iterator[AIMessageChunk]:
        assert isinstance(self.inner, LangChainProvider)
        return self.inner.stream(request, scope.context(self.tier))

    def astream(self, request: Request, scope: _Scope) -> AsyncIterator[AIMessageChunk]:
        assert isinstance(self.inner, LangChainProvider)
        return self.inner.astream(request, scope.context(self.tier))

    def _metadata(self, ctx: CallContext) -> dict[str, Any]:
        return {
            **(ctx.config.get("metadata") or {}),
            "ls_provider": self.kind or "cascade",
            "ls_model_name": self.model,
            "ls_model_type": "chat",
        }

    def _start(self, request: Request, scope: _Scope) -> tuple[dict[str, Any], list[list[BaseMessage]]]:
        messages = (
            list(scope.messages) if scope.request is request else to_langchain_messages(request.messages)
        )
        return {"name": self.tier, "id": ["cascade", "tier", self.kind or "provider"]}, [messages]

    def _start_kwargs(self, n: int) -> dict[str, Any]:
        return {
            "name": self.tier,
            "invocation_params": {"_type": self.kind or "provider", "model": self.model, "n": n},
            "batch_size": 1,
        }

    def __repr__(self) -> str:
        return f"_TierRun({self.tier!r}, {self.inner!r})"


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


def _traced(cascade: Cascade) -> Cascade:
    """A copy of ``cascade`` whose tier calls report as child runs of the LangChain run."""
    tiers = tuple(replace(t, provider=_TierRun(t.provider, t.name, t.provider_kind)) for t in cascade.tiers)
    traced = copy.copy(cascade)
    traced.settings = replace(cascade.settings, tiers=tiers)
    return traced


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
        if isinstance(m, SystemMessage):
            out.append(Message("system", text))
        elif isinstance(m, AIMessage):
            calls = tuple(ToolCall(tc["name"], dict(tc["args"]), tc.get("id") or "") for tc in m.tool_calls)
            out.append(Message("assistant", text, tool_calls=calls))
        elif isinstance(m, ToolMessage):
            out.append(Message("tool", text, tool_call_id=m.tool_call_id, name=m.name))
        elif isinstance(m, HumanMessage):
            out.append(Message("user", text, name=m.name))
        elif isinstance(m, ChatMessage):
            out.append(Message(_ROLES.get(m.role, "user"), text))
        else:
            out.append(Message(_ROLES.get(m.type, "user"), text))
    return tuple(out)


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
    text: str,
    calls: Sequence[ToolCall],
    *,
    usage: Usage | None,
    response_metadata: dict[str, Any],
) -> AIMessage:
    return AIMessage(
        content=text,
        tool_calls=_tool_calls(calls),
        usage_metadata=usage_metadata(usage) if usage is not None else None,
        response_metadata=response_metadata,
    )


def _answer_usage(result: CascadeResult) -> Usage:
    """The usage of the call whose answer was returned."""
    for attempt in reversed(result.attempts):
        if attempt.tier == result.tier and attempt.samples:
            return attempt.usage
    return Usage()


def trace(result: CascadeResult) -> dict[str, Any]:
    """The decision trace put in ``response_metadata["cascade"]``."""
    return result.to_dict()


def explain(message: BaseMessage) -> str:
    """A readable account of the decisions behind a cascade answer (from its trace)."""
    t = message.response_metadata.get("cascade")
    if not isinstance(t, dict):
        return "not a cascade answer (no response_metadata['cascade'])"
    lines = [f"policy {t['policy']!r}: {t['reason']} at tier {t['tier']!r} ({t['model']})"]
    for i, a in enumerate(t["attempts"], 1):
        score = "-" if a["score"] is None else f"{a['score']:.2f}"
        threshold = "-" if a["threshold"] is None else f"{a['threshold']:.2f}"
        lines.append(
            f"  {i}. {a['tier']} [{a['model']}] {a['decision']}: {a['reason']}"
            f" | score {score} / threshold {threshold} | ${show(Decimal(a['total_cost']))}"
        )
    lines.append(f"  total: ${show(Decimal(t['cost']))}")
    return "\n".join(lines)


def to_ai_message(result: CascadeResult) -> AIMessage:
    """The cascade's answer as the message a LangChain caller gets."""
    return _ai_message(
        result.answer,
        result.tool_calls,
        usage=_answer_usage(result),
        response_metadata={"cascade": trace(result)},
    )


def _final_chunk(result: CascadeResult, streamed: bool, list_content: bool) -> AIMessageChunk:
    meta = {"cascade": trace(result)}
    usage = usage_metadata(_answer_usage(result))
    if streamed:
        return AIMessageChunk(
            content=[] if list_content else "",
            usage_metadata=usage,
            response_metadata=meta,
            chunk_position="last",
        )
    return AIMessageChunk(
        content=result.answer,
        tool_call_chunks=[
            {
                "name": c["name"],
                "args": json.dumps(c["args"]),
                "id": c["id"],
                "index": i,
                "type": "tool_call_chunk",
            }
            for i, c in enumerate(_tool_calls(result.tool_calls))
        ],
        usage_metadata=usage,
        response_metadata=meta,
        chunk_position="last",
    )


def _public(chunk: AIMessageChunk) -> AIMessageChunk:
    """A live tier chunk without the tier's id, usage and metadata (reported on its own run)."""
    return AIMessageChunk(content=chunk.content, tool_call_chunks=list(chunk.tool_call_chunks))


# -- the chat model ------------------------------------------------------------------------------


class CascadeChatModel(BaseChatModel):
    """A LangChain chat model that answers through a :class:`~cascade.Cascade`.

    Build it from a policy (``CascadeChatModel.from_policy("policy.yaml", providers={...})``) or
    a cascade (``CascadeChatModel(cascade=cascade)``). Tiers may be our providers or any
    LangChain chat models.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    cascade: Cascade
    tools: tuple[dict[str, Any], ...] = ()
    """Tools bound with :meth:`bind_tools` (OpenAI format), sent to every tier."""
    tool_choice: str | dict[str, Any] | None = None
    stream_final_tier: bool = False
    """Stream the last tier live when it is reached (its answer being final)."""
    budget_key_metadata: str | None = "tenant_id"
    """Run-metadata key whose value scopes per-key budget caps."""
    disable_streaming: bool | Literal["tool_calling"] = True

    _traced: Cascade = PrivateAttr()

    @model_validator(mode="before")
    @classmethod
    def _streaming_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("stream_final_tier") and "disable_streaming" not in data:
            data = {**data, "disable_streaming": False}
        return data

    def model_post_init(self, context: Any, /) -> None:
        self._traced = _traced(self.cascade)

    @classmethod
    def from_policy(
        cls,
        policy: Any,
        *,
        providers: dict[str, Any] | None = None,
        ledger: Any = None,
        **kwargs: Any,
    ) -> CascadeChatModel:
        """Build from a policy file (or :class:`~cascade.policy.Policy`); ``providers`` maps tier
        names to provider objects or LangChain chat models; other arguments set fields."""
        overrides: dict[str, Any] = {}
        if providers is not None:
            overrides["providers"] = providers
        if ledger is not None:
            overrides["ledger"] = ledger
        return cls(cascade=Cascade.from_policy(policy, **overrides), **kwargs)

    # -- LangChain plumbing ---------------------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "cascade"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "policy": self.cascade.name,
            "tiers": [f"{t.name}:{t.provider.model}" for t in self.cascade.tiers],
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return LangSmithParams(ls_provider="cascade", ls_model_name=self.cascade.name, ls_model_type="chat")

    def _get_invocation_params(self, stop: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
        kwargs.pop(_PARENT_KWARG, None)
        return super()._get_invocation_params(stop=stop, **kwargs)

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | Any],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """A copy whose every tier gets ``tools`` (and ``tool_choice``) with each request."""
        choice: str | dict[str, Any] | None
        if tool_choice is True:
            choice = "any"
        elif tool_choice is False:
            choice = None
        else:
            choice = tool_choice
        formatted = tuple(convert_to_openai_tool(t) for t in tools)
        bound = self.model_copy(update={"tools": formatted, "tool_choice": choice})
        return bound.bind(**kwargs) if kwargs else bound

    # streaming paths call ``_stream`` without a run manager: hand it the run's id and config
    def invoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        config = self._parent(config, kwargs)
        return super().invoke(input, config, stop=stop, **kwargs)

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        config = self._parent(config, kwargs)
        return await super().ainvoke(input, config, stop=stop, **kwargs)

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        config = self._parent(config, kwargs)
        return super().stream(input, config, stop=stop, **kwargs)

    def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        config = self._parent(config, kwargs)
        return super().astream(input, config, stop=stop, **kwargs)

    def _parent(self, config: RunnableConfig | None, kwargs: dict[str, Any]) -> RunnableConfig | None:
        if not self.stream_final_tier or _PARENT_KWARG in kwargs:
            return config
        config = ensure_config(config)
        run_id = config.get("run_id") or uuid.uuid4()
        config["run_id"] = run_id
        inner = RunnableConfig(**config)
        inner.pop("run_id", None)
        kwargs[_PARENT_KWARG] = _Parent(run_id, inner)
        return config

    # -- building the request -------------------------------------------------------------------

    def _prepare(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
        kwargs: dict[str, Any],
    ) -> _Scope:
        parent: _Parent | None = kwargs.pop(_PARENT_KWARG, None)
        callbacks: BaseCallbackManager | None = None
        metadata: dict[str, Any] = {}
        if run_manager is not None:
            callbacks = _child_callbacks(run_manager, run_manager.run_id)
            metadata = dict(run_manager.metadata)
        elif parent is not None:
            cfg = parent.config
            run = CallbackManager.configure(
                cfg.get("callbacks"),
                self.callbacks,
                self.verbose,
                cfg.get("tags"),
                self.tags,
                {**(cfg.get("metadata") or {}), **(self.metadata or {})},
            )
            callbacks = _child_callbacks(run, parent.run_id)
            metadata = dict(run.inheritable_metadata)
        key = kwargs.get("budget_key")
        if key is None and self.budget_key_metadata:
            key = metadata.get(self.budget_key_metadata)
        tools = kwargs.get("tools")
        tool_dicts = tuple(convert_to_openai_tool(t) for t in tools) if tools else self.tools
        request = Request.of(
            from_langchain_messages(messages),
            budget_key=None if key is None else str(key),
            metadata={k: v for k, v in metadata.items() if not k.startswith("ls_")},
        )
        request = replace(request, tools=tool_dicts, tool_choice=kwargs.get("tool_choice", self.tool_choice))
        return _Scope(callbacks, request, list(messages), self.cascade.name, stop)

    # -- generation -------------------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        scope = self._prepare(messages, stop, run_manager, kwargs)
        token = _scope.set(scope)
        try:
            result = self._traced.run(scope.request)
        finally:
            _scope.reset(token)
        return ChatResult(generations=[ChatGeneration(message=to_ai_message(result))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        scope = self._prepare(messages, stop, run_manager, kwargs)
        token = _scope.set(scope)
        try:
            result = await self._traced.arun(scope.request)
        finally:
            _scope.reset(token)
        return ChatResult(generations=[ChatGeneration(message=to_ai_message(result))])

    def _live(self, action: Any) -> _TierRun | None:
        """The tier to stream live for ``action``, if any: the last tier, when its answer is final."""
        if not isinstance(action, Call) or action.n != 1:
            return None
        settings = self._traced.settings
        last = settings.tiers[-1]
        if action.tier is not last or not isinstance(last.provider, _TierRun) or not last.provider.streams:
            return None
        if last.scorer is not None and settings.on_exhausted != "return_last":
            return None
        return last.provider

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        scope = self._prepare(messages, stop, run_manager, kwargs)
        gen = steps(self._traced.settings, scope.request)
        streamed: list[AIMessageChunk] = []
        try:
            action = next(gen)
            while True:
                live = self._live(action)
                outcome: Outcome | None = None
                if live is not None:
                    start = time.perf_counter()
                    try:
                        for chunk in live.stream(scope.request, scope):
                            streamed.append(chunk)
                            yield ChatGenerationChunk(message=_public(chunk))
                    except ProviderError:
                        if streamed:
                            raise
                    if streamed:
                        outcome = _streamed_outcome(live, streamed, time.perf_counter() - start)
                if outcome is None:
                    token = _scope.set(scope)
                    try:
                        outcome = _execute(action)
                    finally:
                        _scope.reset(token)
                action = gen.send(outcome)
        except StopIteration as stop_:
            result: CascadeResult = stop_.value
        finally:
            gen.close()  # an abandoned stream or a crash: the loop settles its budget hold
        yield ChatGenerationChunk(message=_final_chunk(result, bool(streamed), _list_content(streamed)))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        scope = self._prepare(messages, stop, run_manager, kwargs)
        gen = steps(self._traced.settings, scope.request)
        streamed: list[AIMessageChunk] = []
        try:
            action = next(gen)
            while True:
                live = self._live(action)
                outcome: Outcome | None = None
                if live is not None:
                    start = time.perf_counter()
                    try:
                        async for chunk in live.astream(scope.request, scope):
                            streamed.append(chunk)
                            yield ChatGenerationChunk(message=_public(chunk))
                    except ProviderError:
                        if streamed:
                            raise
                    if streamed:
                        outcome = _streamed_outcome(live, streamed, time.perf_counter() - start)
                if outcome is None:
                    token = _scope.set(scope)
                    try:
                        outcome = await _aexecute(action)
                    finally:
                        _scope.reset(token)
                action = gen.send(outcome)
        except StopIteration as stop_:
            result: CascadeResult = stop_.value
        finally:
            gen.close()  # an abandoned stream or a crash: the loop settles its budget hold
        yield ChatGenerationChunk(message=_final_chunk(result, bool(streamed), _list_content(streamed)))


def _list_content(chunks: list[AIMessageChunk]) -> bool:
    return bool(chunks) and not isinstance(chunks[0].content, str)


def _streamed_outcome(live: _TierRun, chunks: list[AIMessageChunk], latency: float) -> CallOutcome:
    message = message_chunk_to_message(reduce(add, chunks))
    assert isinstance(message, AIMessage)
    assert isinstance(live.inner, LangChainProvider)
    return CallOutcome(live.inner.completion([message], latency), None, 0, latency)


__all__ = [
    "CascadeChatModel",
    "ScriptedChatModel",
    "explain",
    "from_langchain_messages",
    "to_ai_message",
    "usage_metadata",
]
