"""Tier calls as child runs of the cascade's LangChain run: the run scope, held and open runs, errors."""

from __future__ import annotations

import contextlib
import copy
import json
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    BaseCallbackHandler,
    BaseCallbackManager,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.callbacks.manager import ahandle_event, handle_event
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
)
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.runnables import (
    RunnableConfig,
)
from langchain_core.runnables.config import var_child_runnable_config
from langchain_core.tracers._streaming import _StreamingCallbackHandler

from cascade.engine.actions import CallOutcome
from cascade.engine.cascade import Cascade
from cascade.errors import AllTiersFailedError, ProviderError
from cascade.langchain.calls import _call_chunks, _llm_result, _tool_calls
from cascade.langchain.structured import _Structured
from cascade.logging import get_logger
from cascade.protocols import Provider, Scorer
from cascade.providers.langchain import (
    CallContext,
    LangChainProvider,
    tier_call,
    to_langchain_messages,
)
from cascade.request import Request
from cascade.types import Completion, Sample, Score, Usage

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
                RunnableConfig(),
                self.request,
                self.messages,
                self.stop,
                self.options,
                self.json_fallback,
                unheard=True,
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

    run_inline = True  # only records: no thread hop in async runs

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
        streams: list[BaseCallbackHandler] = [h for h in self.handlers if _streaming(h)]
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
    return any(_streaming(h) for h in handlers)


_STREAMING: dict[type, bool] = {}


def _streaming(handler: BaseCallbackHandler) -> bool:
    """Whether ``handler`` is a token listener (``astream_events``, ``astream_log``), by its class:
    an ``isinstance`` check against LangChain's runtime protocol costs ~10 µs for a handler that
    is not one (every attribute looked up), on every call."""
    cls = type(handler)
    known = _STREAMING.get(cls)
    if known is None:
        known = _STREAMING[cls] = isinstance(handler, _StreamingCallbackHandler)
    return known


def _cause_matcher(types: tuple[type[BaseException], ...]) -> Callable[[BaseException], bool]:
    def matches(exc: BaseException) -> bool:
        seen: BaseException | None = exc
        while seen is not None:
            if isinstance(seen, types):
                return True
            seen = seen.__cause__
        return False

    return matches


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
