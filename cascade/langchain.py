"""The LangChain front: :class:`CascadeChatModel`, a chat model that runs a cascade.

Swap any chat model for a cascade with one line, in chains and in agents::

    from cascade.langchain import CascadeChatModel

    model = CascadeChatModel.from_policy("support.yaml", providers={"cheap": ChatOpenAI(...)})
    agent = create_agent(model, tools=[search, lookup])

- ``bind_tools`` binds the tools on every tier (they travel on the request) and returns a copy, as
  ``ChatOpenAI.bind_tools`` (``strict``, ``response_format``); ``with_structured_output`` asks as
  ChatOpenAI's (default ``json_schema``, strict for pydantic; ``function_calling``; ``json_mode``:
  tiers with no JSON mode, ChatAnthropic, get the schema as ``json_schema`` instead) and streams.
  Tool calls flow through to the caller; a scorer reads a tool-call answer's arguments as its text
  (JSON); an answer that does not fit the requested schema is never accepted (checked first).
- Call options (``bind(temperature=..., max_tokens=...)``, ``parallel_tool_calls``,
  ``response_format``) reach LangChain tiers; tiers of other providers warn that they ignore them.
- Every tier call is a child run of the cascade's run (callbacks, tags and metadata inherited,
  the constructor's ``callbacks=``/``tags=`` too), tagged ``nostream`` so rejected candidates never
  reach an agent's message stream.
- Token accounting: the returned message's ``usage_metadata`` is everything the request spent
  (every tier tried and every scorer). In the run tree each token is reported once: tier runs
  report their own calls, and the cascade's run reports only what no child run did (scorer
  calls, estimates), so ``UsageMetadataCallbackHandler`` or a sum over runs equals the total.
  ``response_metadata`` has ``model_name`` and ``finish_reason`` of the answer and, under
  ``"cascade"``, the decision trace (:meth:`CascadeResult.to_dict`).
- Streaming: ``stream`` yields one chunk by default. With ``stream_final_tier=True`` the last
  tier streams live when it is reached and its answer is final (no scorer on it, or
  ``on_exhausted: return_last``); earlier tiers never stream. Each token reaches listeners once,
  from the cascade's run. A stream without usage is billed from an estimate (prompt included).
  A last tier whose model already answered in the run is reused, not streamed again; a stream
  closed or cancelled mid-call settles its budget hold through the driver (awaited in ``astream``).
- With no callback handler anywhere (no callbacks, tracing or hooks), ``invoke``/``ainvoke``
  report no run (nobody would receive it) and return the same message, at less cost.
- The budget key (per-tenant caps) comes from the ``budget_key`` call argument or from the run's
  metadata under ``budget_key_metadata`` (default ``"tenant_id"``).
- Messages reach LangChain tiers as given (images and content blocks included) and other tiers as
  text; a request with images or files fails with :class:`~cascade.errors.InvalidRequestError`
  when a tier takes text only. ``stop`` reaches LangChain tiers. A budget stop with no answer yet
  raises :class:`~cascade.errors.BudgetExceededError`. When every tier fails, the error is an
  :class:`~cascade.errors.AllTiersFailedError` that is also an instance of the last tier's error
  type (``openai.InternalServerError``...), with its attributes and as ``__cause__``, so a
  caller's ``except``, ``with_fallbacks`` and ``with_retry`` for the SDK error catch it.

:class:`~cascade.testing.ScriptedChatModel` (re-exported here) is a scripted LangChain chat model
for tests and offline demos. Importing this module imports LangChain; ``import cascade`` does not.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, fields, is_dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, TypeVar

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    BaseCallbackHandler,
    BaseCallbackManager,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.callbacks.manager import ahandle_event, handle_event
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
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, LLMResult
from langchain_core.runnables import (
    Runnable,
    RunnableConfig,
    RunnableGenerator,
    RunnableMap,
    RunnablePassthrough,
    ensure_config,
)
from langchain_core.runnables.config import var_child_runnable_config
from langchain_core.runnables.retry import RunnableRetry
from langchain_core.tracers._streaming import _StreamingCallbackHandler
from langchain_core.utils.function_calling import convert_to_openai_function, convert_to_openai_tool
from langchain_core.utils.uuid import uuid7
from pydantic import BaseModel, ConfigDict, PrivateAttr, field_serializer

from cascade.engine.cascade import Cascade, _aexecute, _execute
from cascade.engine.drive import Steps
from cascade.engine.loop import Action, Call, CallOutcome, Outcome
from cascade.errors import AllTiersFailedError, ConfigurationError, InvalidRequestError, ProviderError
from cascade.logging import get_logger
from cascade.protocols import Provider, Scorer
from cascade.providers._sdk import estimate_input_tokens
from cascade.providers.langchain import (
    CallContext,
    LangChainProvider,
    has_json_mode,
    tier_call,
    to_langchain_messages,
    usage_metadata,
)
from cascade.testing import ScriptedChatModel
from cascade.types import (
    CascadeResult,
    Completion,
    Message,
    Request,
    Sample,
    Score,
    ToolCall,
    Usage,
    show,
)

_PARENT_KWARG = "_cascade_parent"
_Manager = TypeVar("_Manager", CallbackManager, AsyncCallbackManager)


class _LangChainInternals:
    """The pieces of ``BaseChatModel.generate`` the lean ``invoke`` reuses (None if they moved)."""

    def __init__(self) -> None:
        from langchain_core.globals import get_llm_cache
        from langchain_core.language_models import chat_models as cm
        from langchain_core.utils.utils import LC_ID_PREFIX

        self.get_llm_cache = get_llm_cache
        self.format_for_tracing = cm._format_for_tracing
        self.format_ls_structured_output = cm._format_ls_structured_output
        self.filter_invocation_params_for_tracing = getattr(cm, "_filter_invocation_params_for_tracing")  # noqa: B009
        self.LC_ID_PREFIX = LC_ID_PREFIX
        self.nobody_listens: Callable[[Any, Any, bool], bool] | None = None
        with contextlib.suppress(ImportError, AttributeError):  # moved: ask CallbackManager.configure
            self.nobody_listens = _listener_check()


def _listener_check() -> Callable[[Any, Any, bool], bool]:
    """A cheap, conservative "will ``CallbackManager.configure`` attach no handler" (it costs ~20 us):
    every way it adds one (callbacks, verbose, debug, LangSmith tracing, registered hooks such as
    ``collect_runs``) is checked; anything set means "maybe", and configure decides."""
    from langchain_core.globals import get_debug
    from langchain_core.tracers.context import _configure_hooks, _tracing_v2_is_enabled
    from langchain_core.utils.env import env_var_is_set

    hooks = _configure_hooks  # a list LangChain appends to: read at call time

    def nobody_listens(callbacks: Any, own_callbacks: Any, verbose: bool) -> bool:
        if callbacks or own_callbacks or verbose or get_debug() or _tracing_v2_is_enabled():
            return False
        for var, _inheritable, handler_class, env_var in hooks:
            if var.get() is not None or (
                env_var is not None and handler_class is not None and env_var_is_set(env_var)
            ):
                return False
        return True

    return nobody_listens


try:
    _lc: _LangChainInternals | None = _LangChainInternals()
except (ImportError, AttributeError):  # pragma: no cover - a LangChain that moved them: the full path
    _lc = None
_JSON_FALLBACK = "cascade_json_schema_fallback"  # json_mode's schema format, for tiers with no JSON mode
_STRUCTURED = "cascade_structured_output"  # with_structured_output's method and schema, for the front only
_NOT_OPTIONS = (
    _JSON_FALLBACK,
    _STRUCTURED,
    "budget_key",
    "tools",
    "tool_choice",
    "ls_structured_output_format",
    "structured_output_format",
)
_MEDIA = frozenset({"image", "image_url", "input_image", "audio", "input_audio", "file", "video", "document"})


# -- the run scope: what tier calls need to become child runs --------------------------------------


@dataclass(slots=True)
class _Tally:
    """What one cascade run's child runs reported, and the tier errors seen (for ``__cause__``)."""

    reported: Usage = field(default_factory=Usage)
    errors: list[ProviderError] = field(default_factory=list)
    streamed: Completion | None = None
    """The completion of a live-streamed tier that is not a LangChain model (its provider's)."""
    held: dict[str, _HeldRun] = field(default_factory=dict)
    """Scored tiers' runs, held back until their scorer decides (tier name -> its events)."""
    answers: dict[int, tuple[Sample, AIMessage]] = field(default_factory=dict)
    """LangChain tiers' answers by ``id`` of their sample (content blocks, refusal, logprobs...)."""
    reasoning: int = 0
    """Reasoning tokens the tiers' answers report (``output_token_details``)."""

    def keep(self, completion: Completion, messages: Sequence[AIMessage]) -> None:
        for sample, message in zip(completion.samples, messages, strict=False):
            self.answers[id(sample)] = (sample, message)
            usage: Mapping[str, Any] = message.usage_metadata or {}
            details: Mapping[str, Any] = usage.get("output_token_details") or {}
            self.reasoning += int(details.get("reasoning") or 0)

    def message(self, sample: Sample | None) -> AIMessage | None:
        """The LangChain message ``sample`` came from, if a LangChain tier answered it."""
        kept = self.answers.get(id(sample)) if sample is not None else None
        return kept[1] if kept is not None and kept[0] is sample else None


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


@dataclass(frozen=True, slots=True)
class _Scope:
    """The cascade run a tier call belongs to: child callbacks plus the caller's messages."""

    callbacks: BaseCallbackManager | None
    request: Request
    messages: Sequence[BaseMessage]
    policy: str
    stop: list[str] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    tally: _Tally = field(default_factory=_Tally)
    json_fallback: Mapping[str, Any] | None = None
    structured: _Structured | None = None
    unheard: bool = False
    """No handler listens to the cascade's run: it was not reported, nor are its tier calls."""

    def context(
        self,
        tier: str,
        own_callbacks: bool = True,
        held: _HeldRun | None = None,
        watch: _OpenRuns | None = None,
    ) -> CallContext:
        """The tier call's context; with ``held``, its run's events go there (see :class:`_HeldRun`);
        ``watch`` sees its runs start and end too."""
        if self.unheard and not own_callbacks:  # nobody would see the tier run's tags or metadata
            return CallContext(
                RunnableConfig(), self.request, self.messages, self.stop, self.options, self.json_fallback
            )
        config = RunnableConfig(
            tags=["nostream", f"cascade_tier:{tier}"],
            metadata={"cascade_policy": self.policy, "cascade_tier": tier},
            run_name=tier,
        )
        if self.callbacks is not None:
            config["callbacks"] = self.callbacks if held is None else held.manager(self.callbacks)
            if watch is not None:
                watched = self.callbacks.copy()
                watched.add_handler(watch, inherit=False)
                config["callbacks"] = watched
        return CallContext(config, self.request, self.messages, self.stop, self.options, self.json_fallback)


class _OpenRuns(BaseCallbackHandler):
    """The runs of a live-streamed tier that have started and not ended: a stream cut off from
    outside (a cancelled task) ends them with that error, as a chat model's own stream does."""

    run_inline = True

    def __init__(self) -> None:
        self.open: dict[uuid.UUID, dict[str, Any]] = {}

    def on_chat_model_start(
        self,
        serialized: Any,
        messages: Any,
        *,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        self.open[run_id] = {"parent_run_id": parent_run_id, "tags": tags}

    def on_llm_end(self, response: Any, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        self.open.pop(run_id, None)

    def on_llm_error(self, error: BaseException, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        self.open.pop(run_id, None)

    def end(self, error: BaseException, scope: _Scope) -> None:
        handlers = [h for h in (scope.callbacks.handlers if scope.callbacks else []) if h is not self]
        while self.open:
            run_id, info = self.open.popitem()
            handle_event(handlers, "on_llm_error", "ignore_llm", error, run_id=run_id, **info)

    async def aend(self, error: BaseException, scope: _Scope) -> None:
        handlers = [h for h in (scope.callbacks.handlers if scope.callbacks else []) if h is not self]
        while self.open:
            run_id, info = self.open.popitem()
            await ahandle_event(handlers, "on_llm_error", "ignore_llm", error, run_id=run_id, **info)


class _HeldRun(BaseCallbackHandler):
    """A scored tier's run events, held back until its scorer decides, then passed on to the
    cascade run's handlers, a rejected run marked (tag ``cascade_rejected``, metadata
    ``cascade_decision``) and its answer left out for event streams (``astream_events``): a UI
    never shows an answer the cascade refused, a tracer shows it marked."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str | None, tuple[Any, ...], dict[str, Any]]] = []
        self.handlers: list[BaseCallbackHandler] = []

    def manager(self, callbacks: BaseCallbackManager) -> CallbackManager:
        self.handlers = list(callbacks.handlers)
        return CallbackManager(
            handlers=[self],
            inheritable_handlers=[self],
            parent_run_id=callbacks.parent_run_id,
            tags=list(callbacks.tags),
            inheritable_tags=list(callbacks.inheritable_tags),
            metadata=dict(callbacks.metadata),
            inheritable_metadata=dict(callbacks.inheritable_metadata),
        )

    def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
        self.events.append(("on_chat_model_start", "ignore_chat_model", args, kwargs))

    def on_llm_end(self, *args: Any, **kwargs: Any) -> None:
        self.events.append(("on_llm_end", "ignore_llm", args, kwargs))

    def on_llm_error(self, *args: Any, **kwargs: Any) -> None:
        self.events.append(("on_llm_error", "ignore_llm", args, kwargs))

    def _replays(
        self, decision: str | None
    ) -> Iterator[tuple[list[BaseCallbackHandler], str, str | None, tuple[Any, ...], dict[str, Any]]]:
        streams: list[BaseCallbackHandler] = [
            h for h in self.handlers if isinstance(h, _StreamingCallbackHandler)
        ]
        others = [h for h in self.handlers if h not in streams]
        for name, ignore, args, kwargs in self.events:
            if decision is not None and name == "on_chat_model_start":
                kwargs = {
                    **kwargs,
                    "tags": [*(kwargs.get("tags") or []), f"cascade_{decision}"],
                    "metadata": {**(kwargs.get("metadata") or {}), "cascade_decision": decision},
                }
            if decision == "rejected" and name == "on_llm_end" and streams:
                yield streams, name, ignore, (_blank(args[0]), *args[1:]), kwargs
                yield others, name, ignore, args, kwargs
            else:
                yield self.handlers, name, ignore, args, kwargs
        self.events = []

    def release(self, decision: str | None) -> None:
        for handlers, name, ignore, args, kwargs in self._replays(decision):
            if handlers:
                handle_event(handlers, name, ignore, *args, **kwargs)

    async def arelease(self, decision: str | None) -> None:
        for handlers, name, ignore, args, kwargs in self._replays(decision):
            if handlers:
                await ahandle_event(handlers, name, ignore, *args, **kwargs)


def _blank(result: LLMResult) -> LLMResult:
    """``result`` with its answers' text and tool calls left out (usage and metadata kept)."""
    generations = [
        [
            ChatGeneration(
                message=g.message.model_copy(
                    update={"content": "", "tool_calls": [], "additional_kwargs": {}}
                )
            )
            if isinstance(g, ChatGeneration)
            else g
            for g in gens
        ]
        for gens in result.generations
    ]
    return LLMResult(generations=generations, llm_output=result.llm_output, run=result.run)


_scope: ContextVar[_Scope | None] = ContextVar("cascade_langchain_scope", default=None)


@dataclass(frozen=True, slots=True)
class _Parent:
    """The cascade run's id and config, passed to ``_stream`` (which gets no run manager)."""

    run_id: uuid.UUID
    config: RunnableConfig


def _local_handlers(callbacks: Any) -> list[BaseCallbackHandler]:
    if isinstance(callbacks, BaseCallbackManager):
        return list(callbacks.handlers)
    return list(callbacks or [])


def _child_callbacks(
    parent: BaseCallbackManager | CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun,
    run_id: uuid.UUID | None,
    own: Any = None,
    own_tags: Sequence[str] | None = None,
) -> CallbackManager:
    """The tier runs' callbacks: the run's inheritable ones plus the model's own (constructor) ones."""
    handlers = list(parent.inheritable_handlers)
    handlers += [h for h in _local_handlers(own) if h not in handlers]
    tags = list(parent.inheritable_tags)
    tags += [t for t in own_tags or () if t not in tags]
    return CallbackManager(
        handlers=handlers,
        inheritable_handlers=handlers,
        parent_run_id=run_id,
        tags=tags,
        inheritable_tags=tags,
        metadata=dict(parent.inheritable_metadata),
        inheritable_metadata=dict(parent.inheritable_metadata),
    )


def _reported_by_tier(completion: Completion) -> Usage:
    """The usage a LangChain tier's own run reported: the completion's, less what was estimated."""
    guess = completion.raw.get("usage_estimated") if completion.raw else None
    u = completion.usage
    if not guess:
        return u
    return replace(
        u, input_tokens=max(0, u.input_tokens - guess[0]), output_tokens=max(0, u.output_tokens - guess[1])
    )


class _TierRun:
    """A tier's provider, made to run as a child run of the cascade's LangChain run.

    LangChain tiers get the child config through :data:`tier_call` and make their own run; other
    providers get a chat-model run reported here (messages in, answer and usage out).
    """

    def __init__(self, inner: Provider, tier: str, kind: str, scored: bool = False) -> None:
        self.inner = _keeping(inner) if isinstance(inner, LangChainProvider) else inner
        self.tier = tier
        self.kind = kind
        self.scored = scored
        """Its scorer decides on its answers: their runs are held back until it has (:class:`_HeldRun`)."""
        self.model = inner.model
        self.langchain = isinstance(inner, LangChainProvider)

    def max_usage(self, request: Request, n: int = 1) -> Usage:
        return self.inner.max_usage(request, n)

    @property
    def streams(self) -> bool:
        if isinstance(self.inner, LangChainProvider):
            return self.inner.can_stream()
        return callable(getattr(self.inner, "stream_text", None))

    def _hold(self, scope: _Scope) -> _HeldRun | None:
        if not self.scored or scope.callbacks is None:
            return None
        held = scope.tally.held.get(self.tier)
        if held is None:
            held = scope.tally.held[self.tier] = _HeldRun()
        return held

    def _own_callbacks(self) -> bool:
        return not self.langchain or self.inner.chat_model.callbacks is not None  # type: ignore[attr-defined]

    def complete(self, request: Request, n: int = 1) -> Completion:
        scope = _scope.get()
        if scope is None:
            return self.inner.complete(request, n)
        try:
            if scope.unheard and not self.langchain:  # no run to report: no run config to build
                completion = self.inner.complete(request, n)
                scope.tally.reported += completion.usage
                return completion
            ctx = scope.context(self.tier, self._own_callbacks(), self._hold(scope))
            if self.langchain:
                token = tier_call.set(ctx)
                try:
                    completion = self.inner.complete(request, n)
                finally:
                    tier_call.reset(token)
                scope.tally.reported += _reported_by_tier(completion)
                return completion
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
            scope.tally.reported += completion.usage
            return completion
        except ProviderError as exc:
            self._failed(exc, scope)
            held = scope.tally.held.pop(self.tier, None)
            if held is not None:  # no answer to decide on: the failed run as it was
                held.release(None)
            raise

    async def acomplete(self, request: Request, n: int = 1) -> Completion:
        scope = _scope.get()
        if scope is None:
            return await self.inner.acomplete(request, n)
        try:
            if scope.unheard and not self.langchain:  # no run to report: no run config to build
                completion = await self.inner.acomplete(request, n)
                scope.tally.reported += completion.usage
                return completion
            ctx = scope.context(self.tier, self._own_callbacks(), self._hold(scope))
            if self.langchain:
                token = tier_call.set(ctx)
                try:
                    completion = await self.inner.acomplete(request, n)
                finally:
                    tier_call.reset(token)
                scope.tally.reported += _reported_by_tier(completion)
                return completion
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
            scope.tally.reported += completion.usage
            return completion
        except ProviderError as exc:
            self._failed(exc, scope)
            held = scope.tally.held.pop(self.tier, None)
            if held is not None:  # no answer to decide on: the failed run as it was
                await held.arelease(None)
            raise

    def _failed(self, exc: ProviderError, scope: _Scope) -> None:
        scope.tally.errors.append(exc)
        if exc.status_code in (401, 403):  # a bad key escalates to dearer tiers: say so loudly
            get_logger().warning(
                "cascade.langchain.auth_error", tier=self.tier, model=self.model, status_code=exc.status_code
            )
            warnings.warn(
                f"tier {self.tier!r} ({self.model}) was refused with HTTP {exc.status_code}"
                " (check its API key); the cascade escalates to the next tier, which may cost more",
                UserWarning,
                stacklevel=2,
            )

    def stream(
        self, request: Request, scope: _Scope, watch: _OpenRuns | None = None
    ) -> Iterator[AIMessageChunk]:
        if isinstance(self.inner, LangChainProvider):
            return self.inner.stream(request, scope.context(self.tier, watch=watch))
        return self._stream_sdk(request, scope)

    def astream(
        self, request: Request, scope: _Scope, watch: _OpenRuns | None = None
    ) -> AsyncIterator[AIMessageChunk]:
        if isinstance(self.inner, LangChainProvider):
            return self.inner.astream(request, scope.context(self.tier, watch=watch))
        return self._astream_sdk(request, scope)

    def _stream_sdk(self, request: Request, scope: _Scope) -> Iterator[AIMessageChunk]:
        """A provider's ``stream_text`` as chunks, reported as the tier's run (start and end)."""
        ctx = scope.context(self.tier)
        manager = CallbackManager.configure(
            ctx.config.get("callbacks"), None, False, ctx.config.get("tags"), None, self._metadata(ctx)
        )
        (run,) = manager.on_chat_model_start(*self._start(request, scope), **self._start_kwargs(1))
        try:
            for step in self.inner.stream_text(request):  # type: ignore[attr-defined]
                if isinstance(step, str):
                    yield AIMessageChunk(content=step)
                else:
                    yield from _sdk_last_chunk(step, scope)
                    run.on_llm_end(_llm_result(step))
        except BaseException as exc:
            run.on_llm_error(exc)
            raise

    async def _astream_sdk(self, request: Request, scope: _Scope) -> AsyncIterator[AIMessageChunk]:
        ctx = scope.context(self.tier)
        manager = AsyncCallbackManager.configure(
            ctx.config.get("callbacks"), None, False, ctx.config.get("tags"), None, self._metadata(ctx)
        )
        (run,) = await manager.on_chat_model_start(*self._start(request, scope), **self._start_kwargs(1))
        try:
            async for step in self.inner.astream_text(request):  # type: ignore[attr-defined]
                if isinstance(step, str):
                    yield AIMessageChunk(content=step)
                else:
                    for chunk in _sdk_last_chunk(step, scope):
                        yield chunk
                    await run.on_llm_end(_llm_result(step))
        except BaseException as exc:
            await run.on_llm_error(exc)
            raise

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


def _keeping(provider: LangChainProvider) -> LangChainProvider:
    """A shallow copy of ``provider`` (clients shared) whose answers' LangChain messages are kept
    in the running scope, for what our types do not carry (content blocks, refusal, logprobs)."""
    kept = copy.copy(provider)
    make = LangChainProvider.completion

    def completion(
        messages: Sequence[AIMessage], latency_s: float, request: Request | None = None
    ) -> Completion:
        out = make(kept, messages, latency_s, request)
        scope = _scope.get()
        if scope is not None:
            scope.tally.keep(out, messages)
        return out

    kept.completion = completion  # type: ignore[method-assign,assignment]
    return kept


class _ToolArgsAsText:
    """A tier's scorer that reads a tool-call answer's arguments as its text.

    A tool-call answer has no text, so a text-reading scorer (``json``, ``regex``, a judge) would
    always reject it. The scorer sees the arguments as JSON instead (one call: its arguments; more:
    a list of ``{"name", "arguments"}``); the answer returned is unchanged.
    """

    def __init__(self, inner: Scorer, tier: str = "", threshold: float | None = None) -> None:
        self.inner = inner
        self.samples = inner.samples
        self.tier = tier
        self.threshold = threshold

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def score(self, request: Request, completion: Completion) -> Score:
        score: Score | None = None
        try:
            score = _gate(completion) or self.inner.score(request, _args_as_text(completion))
            return score
        finally:
            held = self._held()
            if held is not None:
                held.release(self._decision(score))

    async def ascore(self, request: Request, completion: Completion) -> Score:
        score: Score | None = None
        try:
            score = _gate(completion) or await self.inner.ascore(request, _args_as_text(completion))
            return score
        finally:
            held = self._held()
            if held is not None:
                await held.arelease(self._decision(score))

    def _held(self) -> _HeldRun | None:
        scope = _scope.get()
        return scope.tally.held.pop(self.tier, None) if scope is not None else None

    def _decision(self, score: Score | None) -> str:
        ok = score is not None and (self.threshold is None or score.value >= self.threshold)
        return "accepted" if ok else "rejected"

    def max_cost(self, request: Request, max_output_tokens: int) -> Decimal:
        return self.inner.max_cost(request, max_output_tokens)


def _gate(completion: Completion) -> Score | None:
    """Before any scorer, for a structured-output request: an answer that does not parse against
    the schema scores 0; a refusal scores 1 (final: another tier would not be asked for it, and
    the caller gets the refusal error). None: the scorer decides."""
    scope = _scope.get()
    structured = scope.structured if scope is not None else None
    if structured is None:
        return None
    for sample in completion.samples:
        message = scope.tally.message(sample) if scope is not None else None
        if message is not None and message.additional_kwargs.get("refusal"):
            return Score(1.0, detail={"refusal": True})
        problem = structured.problem(sample)
        if problem is not None:
            get_logger().debug("cascade.langchain.schema_gate", problem=problem)
            return Score(0.0, detail={"schema": problem})
    return None


def _args_text(sample: Sample) -> str:
    calls = sample.tool_calls
    if len(calls) == 1:
        return json.dumps(dict(calls[0].arguments))
    return json.dumps([{"name": c.name, "arguments": dict(c.arguments)} for c in calls])


def _args_as_text(completion: Completion) -> Completion:
    if not any(s.tool_calls and not s.text.strip() for s in completion.samples):
        return completion
    samples = tuple(
        replace(s, text=_args_text(s)) if s.tool_calls and not s.text.strip() else s
        for s in completion.samples
    )
    return replace(completion, samples=samples)


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
    tiers = tuple(
        replace(
            t,
            provider=_TierRun(t.provider, t.name, t.provider_kind, scored=t.scorer is not None),
            scorer=_ToolArgsAsText(t.scorer, t.name, t.threshold) if t.scorer is not None else None,  # type: ignore[arg-type]
        )
        for t in cascade.tiers
    )
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


_NAMES: dict[type, tuple[str, ...]] = {}
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _names(cls: type) -> tuple[str, ...]:
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


def _plain(v: Any) -> Any:
    """``_jsonable(asdict(v))`` of :mod:`cascade.types`, without asdict's deep copies (hot path)."""
    t = type(v)
    if t in _SCALARS:
        return v
    if t is Decimal:
        return str(v)
    if t is tuple or t is list:
        return [_plain(x) for x in v]
    if t is dict:
        return {k: _plain(x) for k, x in v.items()}
    names = _NAMES.get(t)
    if names is not None:  # a dataclass seen before (Usage, ToolCall...): no ABC checks
        return {n: _plain(getattr(v, n)) for n in names}
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if is_dataclass(v) and not isinstance(v, type):
        return {n: _plain(getattr(v, n)) for n in _names(type(v))}
    return v


def _flat(obj: Any) -> dict[str, Any]:
    """A dataclass's fields as a dict, values made JSON-ready (scalars untouched: the hot path)."""
    scalars = _SCALARS
    d = {}
    for n in _names(type(obj)):
        v = getattr(obj, n)
        d[n] = v if type(v) in scalars else _plain(v)
    return d


def trace(result: CascadeResult) -> dict[str, Any]:
    """The decision trace put in ``response_metadata["cascade"]``: :meth:`CascadeResult.to_dict`."""
    attempts = []
    for a in result.attempts:
        ad = _flat(a)
        ad["total_cost"] = str(a.total_cost)
        attempts.append(ad)
    d: dict[str, Any] = {}
    for name in _names(CascadeResult):
        if name == "attempts":
            d[name] = attempts
        elif name != "sample":
            v = getattr(result, name)
            d[name] = v if type(v) in _SCALARS else _plain(v)
    d["cost"] = str(result.cost)
    d["usage"] = _flat(result.usage)
    return d


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


def explain(message: BaseMessage) -> str:
    """A readable account of the decisions behind a cascade answer (from its trace): the text of
    :meth:`CascadeResult.explain` (skips, reused samples, tokens, costs, latency), each tier
    shown with its model only (``[model]``, not ``[provider:model]``)."""
    t = message.response_metadata.get("cascade")
    if not isinstance(t, dict):
        return "not a cascade answer (no response_metadata['cascade'])"
    lines = [f"policy {t['policy']!r}: {t['reason']} at tier {t['tier']!r} ({t['model']})"]
    for i, a in enumerate(t["attempts"], 1):
        parts = [f"  {i}. {a['tier']} [{a['model']}] {a['decision']}: {a['reason']}"]
        if a.get("score") is not None and not str(a["reason"]).startswith("score"):
            parts.append(f"score {a['score']:.3f}")
        if a["decision"] not in ("stopped", "skipped"):
            reused = f" ({a['reused_samples']} reused)" if a.get("reused_samples") else ""
            parts.append(f"samples {a['samples']}{reused}")
            usage = a.get("usage") or {}
            tokens = f"tokens {usage.get('input_tokens', 0)}+{usage.get('output_tokens', 0)}"
            source = a.get("usage_source", "reported")
            parts.append(tokens + (f" ({source})" if source != "reported" else ""))
            scorer_cost = Decimal(str(a.get("scorer_cost") or 0))
            cost = f"cost ${show(Decimal(str(a['cost'])))}"
            parts.append(cost + (f" + scorer ${show(scorer_cost)}" if scorer_cost else ""))
            parts.append(f"{float(a.get('latency_s') or 0.0) * 1000:.0f} ms")
        if a.get("retries"):
            parts.append(f"retries {a['retries']}")
        if a.get("error"):
            parts.append(f"error: {a['error']}")
        lines.append(" | ".join(parts))
    lines.append(f"  total: ${show(Decimal(t['cost']))}, {float(t.get('latency_s') or 0.0) * 1000:.0f} ms")
    return "\n".join(lines)


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


def _with_cause(exc: AllTiersFailedError, tally: _Tally) -> AllTiersFailedError:
    """``exc`` as the caller's handlers for the last tier's error catch it: an instance of that
    error's type (``openai.APIError``...) as well as an ``AllTiersFailedError``, with the SDK
    error's attributes (``status_code``, ``response``...), the cascade's message and attempts, and
    the SDK error as ``__cause__``."""
    cause = exc.__cause__
    if cause is None and tally.errors:
        last = tally.errors[-1]
        cause = last.__cause__ if last.__cause__ is not None else last
    if cause is None:
        return exc
    kind = _failed_as(type(cause))
    if kind is None:
        exc.__cause__ = cause
        return exc
    out = kind.__new__(kind)
    out.__dict__.update(cause.__dict__)
    out.__dict__.update(exc.__dict__)
    out.args = exc.args
    out.__cause__ = cause
    out.__traceback__ = exc.__traceback__
    return out


_FAILED_AS: dict[type[BaseException], type[AllTiersFailedError] | None] = {}


def _failed_as(kind: type[BaseException]) -> type[AllTiersFailedError] | None:
    """An ``AllTiersFailedError`` that is also a ``kind`` (one class per kind); None: no need
    (``kind`` is a cascade error already) or no such class (incompatible layouts)."""
    if kind in _FAILED_AS:
        return _FAILED_AS[kind]
    made: type[AllTiersFailedError] | None = None
    if not issubclass(AllTiersFailedError, kind) and issubclass(kind, Exception):
        try:
            made = type(f"AllTiersFailedError[{kind.__name__}]", (AllTiersFailedError, kind), {})
            made.__module__ = AllTiersFailedError.__module__
        except TypeError:
            made = None
    _FAILED_AS[kind] = made
    return made


@contextlib.contextmanager
def _in_scope(scope: _Scope) -> Iterator[None]:
    """Tier calls inside run as child runs of ``scope``; a failure of every tier gets its cause."""
    token = _scope.set(scope)
    try:
        yield
    except AllTiersFailedError as exc:
        failed = _with_cause(exc, scope.tally)
        raise failed from failed.__cause__
    finally:
        _scope.reset(token)
        _release_held(scope)


def _release_held(scope: _Scope) -> None:
    """Runs still held when the cascade's run ends (a budget stop after the call): passed on as they are."""
    while scope.tally.held:
        _, held = scope.tally.held.popitem()
        held.release(None)


def _wants_tokens(config: RunnableConfig | None) -> bool:
    """Whether a token listener (``astream_events``, ``astream_log``) is among the run's
    callbacks: then the answer reaches it as a stream (one chunk, or the live last tier)."""
    callbacks = config.get("callbacks") if config else None
    if callbacks is None:
        ambient = var_child_runnable_config.get()
        callbacks = ambient.get("callbacks") if ambient else None
    if not callbacks:
        return False
    handlers = _local_handlers(callbacks)
    if isinstance(callbacks, BaseCallbackManager):
        handlers += callbacks.inheritable_handlers
    return any(isinstance(h, _StreamingCallbackHandler) for h in handlers)


def _cause_matcher(types: tuple[type[BaseException], ...]) -> Callable[[BaseException], bool]:
    def matches(exc: BaseException) -> bool:
        seen: BaseException | None = exc
        while seen is not None:
            if isinstance(seen, types):
                return True
            seen = seen.__cause__
        return False

    return matches


# -- the chat model ------------------------------------------------------------------------------


class CascadeChatModel(BaseChatModel):
    """A LangChain chat model that answers through a :class:`~cascade.Cascade`.

    Build it from a policy (``CascadeChatModel.from_policy("policy.yaml", providers={...})``) or
    a cascade (``CascadeChatModel(cascade=cascade)``). Tiers may be our providers or any
    LangChain chat models.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    cascade: Cascade
    temperature: float | None = None
    """Model settings (``temperature``, ``max_tokens``, ``top_p``, ``seed``): sent to every tier.
    :meth:`from_policy` writes them into every tier's ``params``; LangChain tiers get them with each
    call; a tier that cannot take one is refused when the model is built."""
    max_tokens: int | None = None
    top_p: float | None = None
    seed: int | None = None
    tools: tuple[dict[str, Any], ...] = ()
    """Tools bound with :meth:`bind_tools` (OpenAI format), sent to every tier."""
    tool_choice: str | dict[str, Any] | None = None
    stream_final_tier: bool = False
    """Stream the last tier live when it is reached (its answer being final)."""
    budget_key_metadata: str | None = "tenant_id"
    """Run-metadata key whose value scopes per-key budget caps."""
    session_metadata: tuple[str, ...] = ("session_id", "thread_id")
    """Run-metadata keys (first present wins) naming the session, for the policy's session pinning."""

    _traced: Cascade = PrivateAttr()
    _text_only: tuple[str, ...] = PrivateAttr(())
    _ident: dict[str, Any] = PrivateAttr(default_factory=dict)
    _ls: dict[str, Any] = PrivateAttr(default_factory=dict)
    _settings: dict[str, Any] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any, /) -> None:
        self._settings = {k: getattr(self, k) for k in _SETTINGS if getattr(self, k) is not None}
        if self._settings:
            _check_settings(self.cascade, self._settings)
        self._traced = _traced(self.cascade)
        self._ident = {
            "policy": self.cascade.name,
            "tiers": [f"{t.name}:{t.provider.model}" for t in self.cascade.tiers],
        }
        self._ls = dict(self._get_ls_params_with_defaults())
        self._text_only = tuple(
            f"{t.name} ({t.provider_kind or type(t.provider).__name__})"
            for t in self.cascade.tiers
            if not isinstance(t.provider, LangChainProvider)
        )

    @field_serializer("cascade")
    def _dump_cascade(self, cascade: Cascade) -> dict[str, Any]:
        """The cascade as data (``model_dump``/``model_dump_json``): its policy name and tiers."""
        return {"policy": cascade.name, "tiers": [f"{t.name}:{t.provider.model}" for t in cascade.tiers]}

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> CascadeChatModel:
        """A copy; one with another ``cascade`` (or model settings) runs that one (rebuilt, checked)."""
        copied = super().model_copy(update=update, deep=deep)
        if update and ("cascade" in update or any(k in update for k in _SETTINGS)):
            copied.model_post_init(None)
        return copied

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
        names to provider objects or LangChain chat models; other arguments set fields.

        A chat model passed in gets its tier's ``timeout:`` (enforced around the whole call)."""
        from cascade.policy import loader
        from cascade.policy.schema import Policy
        from cascade.registry import suggest

        for name in kwargs:  # before building anything: a misspelt setting must not vanish
            if name not in cls.model_fields:
                raise ConfigurationError(f"unknown argument {name!r}{suggest(name, cls.model_fields)}")
        overrides: dict[str, Any] = {}
        if providers is not None:
            overrides["providers"] = providers
        if ledger is not None:
            overrides["ledger"] = ledger
        settings = {k: kwargs[k] for k in _SETTINGS if kwargs.get(k) is not None}
        if settings:  # written into every tier's params: sent, and reserved (max_tokens), by every tier
            if not isinstance(policy, Policy):
                overrides["base_dir"] = Path(policy).parent
            policy = _with_params(policy if isinstance(policy, Policy) else loader.load(policy), settings)
        built = Cascade.from_policy(policy, **overrides)
        if providers:
            spec = policy if isinstance(policy, Policy) else loader.load(policy)
            timeouts = {t.name: t.timeout for t in spec.tiers}
            for t in built.tiers:
                if (
                    t.name in providers
                    and isinstance(t.provider, LangChainProvider)
                    and t.provider.timeout is None
                ):
                    t.provider.timeout = timeouts.get(t.name)
        return cls(cascade=built, **kwargs)

    # -- LangChain plumbing ---------------------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "cascade"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return dict(self._ident)

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        """As ChatOpenAI's: the call's (else the model's) temperature, max_tokens and stop."""
        params = LangSmithParams(ls_provider="cascade", ls_model_name=self.cascade.name, ls_model_type="chat")
        temperature = kwargs.get("temperature", self.temperature)
        if temperature is not None:
            params["ls_temperature"] = temperature
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        if stop or kwargs.get("stop"):
            params["ls_stop"] = stop or kwargs["stop"]
        return params

    def _get_invocation_params(self, stop: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
        kwargs.pop(_PARENT_KWARG, None)
        kwargs.pop(_STRUCTURED, None)
        return {**self._ident, "_type": "cascade", "stop": stop, **kwargs}

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Sequence[Any] | None = None
    ) -> int:
        """The cascade's own (conservative) estimate: no tokenizer download."""
        tool_dicts = tuple(convert_to_openai_tool(t) for t in tools or ())
        return estimate_input_tokens(Request(from_langchain_messages(messages), tools=tool_dicts))

    def get_num_tokens(self, text: str) -> int:
        return self.get_num_tokens_from_messages([HumanMessage(text)])

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | Any],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        strict: bool | None = None,
        parallel_tool_calls: bool | None = None,
        response_format: dict[str, Any] | type | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """A copy whose every tier gets ``tools`` (and ``tool_choice``) with each request, as
        ``ChatOpenAI.bind_tools``: ``strict`` makes the tool schemas strict, ``response_format``
        (which makes them strict unless ``strict=False``) and ``parallel_tool_calls`` are bound as
        call options, and so are other arguments."""
        choice: str | dict[str, Any] | None
        if tool_choice is True:
            choice = "any"
        elif tool_choice is False:
            choice = None
        else:
            choice = tool_choice
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        if response_format and strict is not False:  # OpenAI wants every tool strict beside it
            strict = True
        formatted = tuple(convert_to_openai_tool(t, strict=strict) for t in tools)
        if response_format:
            schema = response_format
            if (
                isinstance(schema, dict)
                and schema.get("type") == "json_schema"
                and "schema" in schema.get("json_schema", {})
            ):  # create_agent's form: its own ``strict``, as ChatOpenAI reads it
                strict = schema["json_schema"].get("strict")
                schema = schema["json_schema"]["schema"]
            kwargs["response_format"] = _response_format(schema, strict)
        bound = self.model_copy(update={"tools": formatted, "tool_choice": choice})
        return bound.bind(**kwargs) if kwargs else bound

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        method: Literal["function_calling", "json_schema", "json_mode"] = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """As ``ChatOpenAI.with_structured_output``: ``json_schema`` (the default; strict for a
        pydantic model unless ``strict=False``) and ``json_mode`` send ``response_format`` to every
        tier, ``function_calling`` forces a call of the schema's tool (``parallel_tool_calls``
        false, ``strict`` kept). A pydantic answer's raw message has ``additional_kwargs["parsed"]``."""
        if kwargs:
            raise ValueError(f"unsupported arguments: {sorted(kwargs)}")
        if method not in ("function_calling", "json_schema", "json_mode"):
            raise ValueError(f"method must be function_calling, json_schema or json_mode, not {method!r}")
        if strict is not None and method == "json_mode":
            raise ValueError("Argument `strict` is not supported with `method`='json_mode'")
        is_model = isinstance(schema, type) and issubclass(schema, BaseModel)
        fmt = {"kwargs": {"method": method, "strict": strict}, "schema": schema}
        marker: dict[str, Any] = {_STRUCTURED: _Structured(method, schema)}
        parser: Runnable[Any, Any]
        if method == "function_calling":
            name = convert_to_openai_tool(schema)["function"]["name"]
            llm = self.bind_tools(
                [schema],
                tool_choice="any",
                parallel_tool_calls=False,
                strict=strict,
                ls_structured_output_format=fmt,
                **marker,
            )
            parser = (
                PydanticToolsParser(tools=[schema], first_tool_only=True)  # type: ignore[list-item]
                if is_model
                else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
            )
            return _with_parser(llm, parser, include_raw)
        parser = PydanticOutputParser(pydantic_object=schema) if is_model else JsonOutputParser()  # type: ignore[arg-type]
        extra: dict[str, Any] = {}
        if method == "json_schema":
            response_format = _response_format(schema, strict)
        else:  # tiers with no JSON mode (ChatAnthropic) get the schema, as their own json_mode does
            response_format = {"type": "json_object"}
            try:
                extra[_JSON_FALLBACK] = _response_format(schema, strict)
            except (ValueError, TypeError, KeyError):  # a schema JSON mode can take, json_schema cannot
                get_logger().debug("cascade.langchain.json_mode_no_schema_format")
            no_json_mode = [
                f"{t.name} ({type(t.provider.chat_model).__name__})"
                for t in self.cascade.tiers
                if isinstance(t.provider, LangChainProvider) and not has_json_mode(t.provider.chat_model)
            ]
            if no_json_mode:
                warnings.warn(
                    f"tiers {', '.join(no_json_mode)} have no JSON mode: they get method='json_schema' with"
                    " this schema instead (as their own with_structured_output(method='json_mode') does)",
                    UserWarning,
                    stacklevel=2,
                )
        llm = self.bind(response_format=response_format, ls_structured_output_format=fmt, **extra, **marker)
        return _with_parser(llm, parser, include_raw)

    def with_retry(
        self,
        *,
        retry_if_exception_type: tuple[type[BaseException], ...] | Callable[[BaseException], bool] = (
            Exception,
        ),
        wait_exponential_jitter: bool = True,
        exponential_jitter_params: Any = None,
        stop_after_attempt: int = 3,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """As ``Runnable.with_retry``, but an exception type also matches an error's ``__cause__``
        (``AllTiersFailedError`` caused by ``openai.InternalServerError`` retries on the latter)."""
        return RunnableRetry(
            bound=self,
            kwargs={},
            config={},
            retry_exception_types=retry_if_exception_type
            if callable(retry_if_exception_type)
            else _cause_matcher(retry_if_exception_type),
            wait_exponential_jitter=wait_exponential_jitter,
            exponential_jitter_params=exponential_jitter_params,
            max_attempt_number=stop_after_attempt,
        )

    # the returned message carries the whole run's usage; the run reported only its own share.
    # streaming paths call ``_stream`` without a run manager: hand it the run's id and config
    def invoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        if self._lean() and not _wants_tokens(config):
            return self._lean_invoke(input, config, stop, kwargs)
        config = self._parent(config, kwargs)
        out = _total(super().invoke(input, config, stop=stop, **kwargs))
        assert isinstance(out, AIMessage)
        return out

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        if self._lean() and not _wants_tokens(config):
            return await self._lean_ainvoke(input, config, stop, kwargs)
        config = self._parent(config, kwargs)
        out = _total(await super().ainvoke(input, config, stop=stop, **kwargs))
        assert isinstance(out, AIMessage)
        return out

    # -- the lean path: BaseChatModel.generate's run reporting, without its per-call machinery ---------

    def _lean(self) -> bool:
        """Whether ``invoke`` may skip ``BaseChatModel.generate`` (no cache, rate limiter, live
        streaming or v1 output to honour): the same run is reported, at a fraction of the cost."""
        if (
            _lc is None
            or self.stream_final_tier
            or self.rate_limiter is not None
            or self.output_version == "v1"
        ):
            return False
        return self.cache is False or (self.cache is None and _lc.get_llm_cache() is None)

    def _lean_start(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None,
        stop: list[str] | None,
        kwargs: dict[str, Any],
    ) -> tuple[RunnableConfig, list[BaseMessage], dict[str, Any]]:
        assert _lc is not None
        if var_child_runnable_config.get() is not None:
            config = ensure_config(config)  # merges an enclosing runnable's config
        else:  # a copy: popping run_id must not touch the caller's dict
            config = RunnableConfig(**config) if config else RunnableConfig()
        if isinstance(input, str):
            messages: list[BaseMessage] = [HumanMessage(input)]
        elif isinstance(input, list) and all(isinstance(m, BaseMessage) for m in input):
            messages = list(input)
        else:
            messages = self._convert_input(input).to_messages()
        fmt = kwargs.pop("ls_structured_output_format", None) or kwargs.pop("structured_output_format", None)
        params = self._get_invocation_params(stop=stop, **kwargs)
        start = {
            "invocation_params": params,
            "options": {"stop": stop, **_lc.format_ls_structured_output(fmt)},
            "name": config.get("run_name"),
            "run_id": config.pop("run_id", None),
            "batch_size": 1,
        }
        configure = (
            (config.get("callbacks"), self.callbacks, self.verbose, config.get("tags"), self.tags),
            {
                "inheritable_metadata": {
                    **(config.get("metadata") or {}),
                    **(
                        self._get_ls_params_with_defaults(stop=stop, **kwargs) if stop or kwargs else self._ls
                    ),
                },
                "local_metadata": self.metadata,
                "langsmith_inheritable_metadata": _lc.filter_invocation_params_for_tracing(params),
            },
        )
        return config, messages, {"start": start, "configure": configure}

    def _unheard(self, config: RunnableConfig, named: dict[str, Any]) -> dict[str, Any] | None:
        """The run's metadata (as configure would merge it) when surely nobody listens, else None."""
        check = _lc.nobody_listens if _lc is not None else None
        if check is None or not check(config.get("callbacks"), self.callbacks, self.verbose):
            return None
        return {**named["inheritable_metadata"], **(named["local_metadata"] or {})}

    def _lean_begin(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None,
        stop: list[str] | None,
        kwargs: dict[str, Any],
        configure: Callable[..., _Manager],
    ) -> tuple[list[BaseMessage], dict[str, Any], _Manager | None, _Scope | None]:
        """The messages, the run's start arguments, and either the run's callback manager or (when
        nobody listens) the scope to run in without reporting a run."""
        config, messages, how = self._lean_start(input, config, stop, kwargs)
        args, named = how["configure"]
        metadata = self._unheard(config, named)
        manager = None if metadata is not None else configure(*args, **named)
        if manager is not None and not manager.handlers and not manager.inheritable_handlers:
            metadata = manager.metadata
        if metadata is None:
            return messages, how, manager, None
        return messages, how, manager, self._prepare(messages, stop, None, kwargs, metadata)

    def _lean_invoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None,
        stop: list[str] | None,
        kwargs: dict[str, Any],
    ) -> AIMessage:
        assert _lc is not None
        messages, how, manager, scope = self._lean_begin(
            input, config, stop, kwargs, CallbackManager.configure
        )
        if scope is not None:  # nobody listens: no run to report
            with _in_scope(scope):
                answer = self._traced.run(scope.request, session=self._session(scope.request))
            return _unreported(answer, how["start"]["run_id"], scope)
        assert manager is not None
        (run,) = manager.on_chat_model_start(
            self._serialized, [_lc.format_for_tracing(messages)], **how["start"]
        )
        try:
            result = self._generate(messages, stop=stop, run_manager=run, **kwargs)
        except BaseException as exc:
            run.on_llm_error(exc, response=LLMResult(generations=[]))
            raise
        generation = result.generations[0]
        if generation.message.id is None:
            generation.message.id = f"{_lc.LC_ID_PREFIX}-{run.run_id}-0"
        run.on_llm_end(LLMResult(generations=[[generation]], llm_output=result.llm_output))
        out = _total(generation.message)
        assert isinstance(out, AIMessage)
        return out

    async def _lean_ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None,
        stop: list[str] | None,
        kwargs: dict[str, Any],
    ) -> AIMessage:
        assert _lc is not None
        messages, how, manager, scope = self._lean_begin(
            input, config, stop, kwargs, AsyncCallbackManager.configure
        )
        if scope is not None:  # nobody listens: no run to report
            with _in_scope(scope):
                answer = await self._traced.arun(scope.request, session=self._session(scope.request))
            return _unreported(answer, how["start"]["run_id"], scope)
        assert manager is not None
        (run,) = await manager.on_chat_model_start(
            self._serialized, [_lc.format_for_tracing(messages)], **how["start"]
        )
        try:
            result = await self._agenerate(messages, stop=stop, run_manager=run, **kwargs)
        except BaseException as exc:
            await run.on_llm_error(exc, response=LLMResult(generations=[]))
            raise
        generation = result.generations[0]
        if generation.message.id is None:
            generation.message.id = f"{_lc.LC_ID_PREFIX}-{run.run_id}-0"
        await run.on_llm_end(LLMResult(generations=[[generation]], llm_output=result.llm_output))
        out = _total(generation.message)
        assert isinstance(out, AIMessage)
        return out

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        config = self._parent(config, kwargs)
        for chunk in super().stream(input, config, stop=stop, **kwargs):
            yield _as_chunk(chunk)

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        config = self._parent(config, kwargs)
        async for chunk in super().astream(input, config, stop=stop, **kwargs):
            yield _as_chunk(chunk)

    def _parent(self, config: RunnableConfig | None, kwargs: dict[str, Any]) -> RunnableConfig | None:
        if _PARENT_KWARG in kwargs:
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
        run_metadata: dict[str, Any] | None = None,
    ) -> _Scope:
        """The request and the tier runs' callbacks; ``run_metadata``: an unreported run's metadata."""
        parent: _Parent | None = kwargs.pop(_PARENT_KWARG, None)
        callbacks: BaseCallbackManager | None = None
        metadata: dict[str, Any] = run_metadata or {}
        if run_manager is not None:
            callbacks = _child_callbacks(run_manager, run_manager.run_id, self.callbacks, self.tags)
            metadata = run_manager.metadata
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
            callbacks = _child_callbacks(run, parent.run_id, self.callbacks, self.tags)
            metadata = run.inheritable_metadata
        key = kwargs.get("budget_key")
        if key is None and self.budget_key_metadata:
            key = metadata.get(self.budget_key_metadata)
        tools = kwargs.get("tools")
        tool_dicts = tuple(convert_to_openai_tool(t) for t in tools) if tools else self.tools
        options = {k: v for k, v in kwargs.items() if k not in _NOT_OPTIONS}
        if self._text_only:
            asked = options
            if _STRUCTURED in kwargs:  # with_structured_output's own parallel_tool_calls=False: no news
                asked = {k: v for k, v in options.items() if k != "parallel_tool_calls"}
            self._check_text_only(messages, asked)
        if self._settings:  # checked at build: every tier takes them (from its params or per call)
            options = {**self._settings, **options}
        request = Request(
            from_langchain_messages(messages),
            tools=tool_dicts,
            metadata={k: v for k, v in metadata.items() if not k.startswith("ls_")} if metadata else {},
            budget_key=None if key is None else str(key),
            tool_choice=kwargs.get("tool_choice", self.tool_choice),
        )
        if not request.messages or not any(m.content.strip() or m.tool_calls for m in request.messages):
            request = Request.of(request.messages)  # raises the usual InvalidRequestError
        fallback = kwargs.get(_JSON_FALLBACK)
        unheard = run_metadata is not None
        return _Scope(
            callbacks,
            request,
            messages,
            self.cascade.name,
            stop,
            options,
            json_fallback=fallback,
            structured=kwargs.get(_STRUCTURED),
            unheard=unheard,
        )

    def _session(self, request: Request) -> str | None:
        """The session key for pinning, from the run's metadata (``session_metadata``)."""
        for key in self.session_metadata:
            value = request.metadata.get(key)
            if value is not None:
                return str(value)
        return None

    def _check_text_only(self, messages: Sequence[BaseMessage], options: Mapping[str, Any]) -> None:
        tiers = ", ".join(self._text_only)
        if _has_media(messages):
            raise InvalidRequestError(
                f"this request has image/audio/file content, which tiers {tiers} cannot take (text only);"
                " use LangChain chat models for tiers that must see it"
            )
        if options:
            warnings.warn(
                f"call options {sorted(options)} reach LangChain tiers only; tiers {tiers} ignore them"
                " (set them in the policy's params)",
                UserWarning,
                stacklevel=4,
            )

    # -- generation -------------------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        scope = self._prepare(messages, stop, run_manager, kwargs)
        with _in_scope(scope):
            result = self._traced.run(scope.request, session=self._session(scope.request))
        return ChatResult(generations=[ChatGeneration(message=_reported_message(result, scope))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        scope = self._prepare(messages, stop, run_manager, kwargs)
        with _in_scope(scope):
            result = await self._traced.arun(scope.request, session=self._session(scope.request))
        return ChatResult(generations=[ChatGeneration(message=_reported_message(result, scope))])

    def _live(self, action: Any) -> _TierRun | None:
        """The tier to stream live for ``action``, if any: the last tier, when its answer is final."""
        if not self.stream_final_tier or not isinstance(action, Call) or action.n != 1:
            return None
        key = action.tier.call_key
        if key and action.cache is not None and action.cache.bought(key, action.request) >= action.n:
            return None  # its model already answered in this run (a voter, a judge): reused, not re-bought
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
        gen = self._traced._steps(scope.request, self._session(scope.request))  # watched, pinned
        streamed: list[AIMessageChunk] = []
        try:
            action = next(gen)
            while True:
                try:
                    live = self._live(action)
                    outcome: Outcome | None = None
                    if live is not None:
                        start = time.perf_counter()
                        runs = _OpenRuns()
                        chunks = live.stream(scope.request, scope, runs)
                        try:
                            for chunk in chunks:
                                streamed.append(chunk)
                                yield ChatGenerationChunk(message=_public(chunk))
                        except ProviderError as exc:
                            scope.tally.errors.append(exc)
                            if streamed:
                                raise
                        except GeneratorExit:  # closed here: the tier's stream ends its run when closed
                            raise
                        except BaseException as exc:  # interrupted inside the tier: its run ends with it
                            runs.end(exc, scope)
                            raise
                        finally:
                            _close(chunks)  # abandoned: the tier's run ends (with an error) now
                        if streamed:
                            outcome = _streamed_outcome(live, streamed, time.perf_counter() - start, scope)
                    if outcome is None:
                        token = _scope.set(scope)
                        try:
                            outcome = _execute(action)
                        finally:
                            _scope.reset(token)
                except BaseException as exc:  # cut off mid-step: settle the loop's hold, as drive() does
                    _cut_off(gen, exc)
                    raise
                action = gen.send(outcome)
        except StopIteration as stop_:
            result: CascadeResult = stop_.value
        except AllTiersFailedError as exc:
            failed = _with_cause(exc, scope.tally)
            raise failed from failed.__cause__
        finally:
            gen.close()
            _release_held(scope)
        yield ChatGenerationChunk(
            message=_final_chunk(result, bool(streamed), _list_content(streamed), scope)
        )

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        scope = self._prepare(messages, stop, run_manager, kwargs)
        gen = self._traced._steps(scope.request, self._session(scope.request))  # watched, pinned
        streamed: list[AIMessageChunk] = []
        try:
            action = next(gen)
            while True:
                try:
                    live = self._live(action)
                    outcome: Outcome | None = None
                    if live is not None:
                        start = time.perf_counter()
                        runs = _OpenRuns()
                        chunks = live.astream(scope.request, scope, runs)
                        try:
                            async for chunk in chunks:
                                streamed.append(chunk)
                                yield ChatGenerationChunk(message=_public(chunk))
                        except ProviderError as exc:
                            scope.tally.errors.append(exc)
                            if streamed:
                                raise
                        except GeneratorExit:  # closed here: the tier's stream ends its run when closed
                            raise
                        except BaseException as exc:  # cancelled inside the tier: its run ends with it
                            await runs.aend(exc, scope)
                            raise
                        finally:
                            await _aclose(chunks)  # abandoned: the tier's run ends (with an error) now
                        if streamed:
                            outcome = _streamed_outcome(live, streamed, time.perf_counter() - start, scope)
                    if outcome is None:
                        token = _scope.set(scope)
                        try:
                            outcome = await _aexecute(action)
                        finally:
                            _scope.reset(token)
                except BaseException as exc:  # cut off mid-step: settle the hold off the event loop
                    await _acut_off(gen, exc)
                    raise
                action = gen.send(outcome)
        except StopIteration as stop_:
            result: CascadeResult = stop_.value
        except AllTiersFailedError as exc:
            failed = _with_cause(exc, scope.tally)
            raise failed from failed.__cause__
        finally:
            gen.close()
            _release_held(scope)
        yield ChatGenerationChunk(
            message=_final_chunk(result, bool(streamed), _list_content(streamed), scope)
        )


class _AbandonedError(Exception):
    """Thrown into the loop for a stream its consumer closed (a ``GeneratorExit`` would make the
    loop settle its hold synchronously, blocking an event loop)."""


def _throw(gen: Steps, exc: BaseException) -> Action | None:
    """Throw ``exc`` into the loop: its answer (the open hold's Settle), or None when it re-raised."""
    thrown = _AbandonedError() if isinstance(exc, GeneratorExit) else exc
    try:
        return gen.throw(thrown)
    except StopIteration:
        return None
    except BaseException as raised:
        if raised is thrown:
            return None
        raise


def _cut_off(gen: Steps, exc: BaseException) -> None:
    """Run mid-step ends in this thread: the loop's Settle executed (``drive`` does the same)."""
    action = _throw(gen, exc)
    while action is not None:
        outcome = _execute(action)
        try:
            action = gen.send(outcome)
        except (StopIteration, _AbandonedError):
            return
        except BaseException as raised:
            if raised is exc:
                return
            raise


async def _acut_off(gen: Steps, exc: BaseException) -> None:
    """Async :func:`_cut_off`: the Settle is awaited (off the event loop), never blocking it."""
    action = _throw(gen, exc)
    while action is not None:
        outcome = await _aexecute(action)
        try:
            action = gen.send(outcome)
        except (StopIteration, _AbandonedError):
            return
        except BaseException as raised:
            if raised is exc:
                return
            raise


def _close(chunks: Iterator[AIMessageChunk]) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        close()


async def _aclose(chunks: AsyncIterator[AIMessageChunk]) -> None:
    close = getattr(chunks, "aclose", None)
    if close is not None:
        await close()


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


_SETTINGS = ("temperature", "max_tokens", "top_p", "seed")


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


def _with_params(policy: Any, settings: Mapping[str, Any]) -> Any:
    """``policy`` with ``settings`` in every tier's ``params`` (validated as the policy's are)."""
    from cascade.policy.schema import GenerationParams

    tiers = []
    for t in policy.tiers:
        try:
            params = GenerationParams.model_validate({**t.params.model_dump(exclude_unset=True), **settings})
        except ValueError as exc:
            raise ConfigurationError(f"tier {t.name!r}: {exc}") from exc
        tiers.append(t.model_copy(update={"params": params}))
    return policy.model_copy(update={"tiers": tuple(tiers) if isinstance(policy.tiers, tuple) else tiers})


def _check_settings(cascade: Cascade, settings: Mapping[str, Any]) -> None:
    """Refuse model settings a tier would not send: a LangChain model with no such field, or a
    provider whose policy ``params`` say otherwise (set them there, or use ``from_policy``)."""
    from cascade.providers.langchain import _constructor_names

    for t in cascade.tiers:
        provider = t.provider
        if isinstance(provider, LangChainProvider):
            names = _constructor_names(type(provider.chat_model))
            missing = [k for k in settings if k not in names]
            if missing:
                raise ConfigurationError(
                    f"tier {t.name!r} ({type(provider.chat_model).__name__}) takes no {', '.join(missing)}"
                )
            continue
        params = getattr(provider, "params", None)
        differ = [k for k, v in settings.items() if getattr(params, k, None) != v]
        if differ:
            raise ConfigurationError(
                f"tier {t.name!r} ({t.provider_kind or type(provider).__name__}) sends its policy params,"
                f" not {', '.join(f'{k}={settings[k]!r}' for k in differ)}: pass them to"
                " CascadeChatModel.from_policy(...) or set them in the tier's params"
            )


def _from_policy(cls: type[CascadeChatModel], *, model: str, **kwargs: Any) -> CascadeChatModel:
    return cls.from_policy(model, **kwargs)


def register_init_chat_model() -> None:
    """Let ``init_chat_model("cascade:policy.yaml", providers=...)`` build a :class:`CascadeChatModel`.

    LangChain's ``init_chat_model`` knows a fixed list of providers; this adds ``cascade`` to it
    (the policy path is the model name; other arguments go to :meth:`CascadeChatModel.from_policy`).
    It edits LangChain's provider table, so it is opt-in.
    """
    try:
        from langchain.chat_models import base
    except ImportError as exc:
        raise ConfigurationError("init_chat_model needs the `langchain` package") from exc
    registry = getattr(base, "_BUILTIN_PROVIDERS", None)
    if not isinstance(registry, dict):
        raise ConfigurationError("this LangChain version has no provider table for init_chat_model")
    registry["cascade"] = ("cascade.langchain", "CascadeChatModel", _from_policy)


def _list_content(chunks: list[AIMessageChunk]) -> bool:
    return bool(chunks) and not isinstance(chunks[0].content, str)


def _sdk_last_chunk(completion: Completion, scope: _Scope) -> Iterator[AIMessageChunk]:
    """After a provider's streamed text: its tool calls as one chunk (if any); the completion is
    kept for the outcome."""
    scope.tally.streamed = completion
    sample = completion.samples[0] if completion.samples else None
    if sample is not None and sample.tool_calls:
        yield AIMessageChunk(content="", tool_call_chunks=_call_chunks(_tool_calls(sample.tool_calls)))


def _streamed_outcome(
    live: _TierRun, chunks: list[AIMessageChunk], latency: float, scope: _Scope
) -> CallOutcome:
    """The outcome of a live-streamed tier call; its run reported all of its usage (estimate included)."""
    if scope.tally.streamed is not None:  # a provider's own stream: its completion, as parsed
        completion = scope.tally.streamed
        scope.tally.reported += completion.usage
        return CallOutcome(completion, None, 0, latency)
    assert isinstance(live.inner, LangChainProvider)
    message = live.inner.streamed_message(chunks, scope.request)
    completion = live.inner.completion([message], latency, scope.request)
    scope.tally.reported += completion.usage
    return CallOutcome(completion, None, 0, latency)


__all__ = [
    "CascadeChatModel",
    "ScriptedChatModel",
    "explain",
    "from_langchain_messages",
    "register_init_chat_model",
    "to_ai_message",
    "usage_metadata",
]
