"""Any LangChain chat model as a tier.

Pass an instance in Python (``build(policy, providers={"cheap": ChatOpenAI(...)})``) or name a
class in YAML::

    - name: local
      provider: langchain
      model: llama3.1:8b
      free: true
      options:
        class: "langchain_ollama:ChatOllama"
        kwargs: {base_url: "http://localhost:11434"}

Our messages and tools become LangChain messages (``bind_tools`` when the request has tools);
``usage_metadata`` becomes :class:`~cascade.types.Usage` (cache reads from
``input_token_details``); an answer without usage, or without input tokens (a stream from a
gateway that sends none), is billed from an estimate of the prompt and the answer, never 0 input
tokens. ``n`` samples are ``n`` calls (at most ``max_concurrency`` at once in async). Every
exception is mapped to a :class:`~cascade.errors.ProviderError` (transient or permanent, from
status codes, timeouts and connection errors); the provider never retries. A chat model that
retries by itself (``max_retries`` above 0, or unset: the SDKs then retry twice) gets a warning.

Output tokens are bounded, so budget caps hold: the provider reserves ``max_tokens`` per sample
and makes the chat model send that bound. The tier's ``max_tokens`` (the policy's, when it sets
one; else the model's own setting; else :data:`DEFAULT_MAX_TOKENS`) is set in the model's own
limit field (:data:`LIMIT_FIELDS`) on a shallow copy, and a caller's larger ``max_tokens`` call
option is lowered to it. A model with no such field is not :attr:`~LangChainProvider.bounded`:
a policy with budget caps refuses it on a priced tier.

The ``timeout`` (the tier's, for instances passed in) bounds a call without a thread per call:
in async, ``asyncio.timeout`` cancels the whole call; in sync, a chat model over the OpenAI or
Anthropic SDK gets it as its per-request ``timeout`` (split over the SDK's own attempts when it
retries by itself: then its backoff waits come on top), and any other model cannot be
interrupted from the calling thread, so a call that took longer is logged
(``cascade.langchain.deadline_overrun``) and its paid answer kept.

When :class:`cascade.langchain.CascadeChatModel` runs a tier it sets :data:`tier_call`, so the
call becomes a child run (callbacks, tags, metadata) of the cascade's run.
"""

from __future__ import annotations

import asyncio
import importlib
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from functools import reduce
from operator import add
from typing import Any, Final, TypeVar

from langchain_core.callbacks import AsyncCallbackManager, CallbackManager
from langchain_core.globals import get_llm_cache
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
)
from langchain_core.messages.utils import message_chunk_to_message
from langchain_core.outputs import ChatGeneration, ChatResult, LLMResult
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig
from langchain_core.runnables.config import var_child_runnable_config
from pydantic import BaseModel, ConfigDict, Field

from cascade.errors import (
    ConfigurationError,
    PermanentProviderError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    TransientProviderError,
)
from cascade.logging import get_logger
from cascade.money import Price
from cascade.providers._sdk import estimate_input_tokens
from cascade.providers.langchain_messages import (
    _chunk_message,
    _constructor_names,
    _estimate_output,
    as_ai_message,
    langchain_tool_choice,
    model_name,
    sdk_retries,
    to_langchain_messages,
    to_sample,
    to_usage,
    usage_metadata,
)
from cascade.request import Request
from cascade.types import Completion, Usage

DEFAULT_MAX_TOKENS = 1024
LIMIT_FIELDS: Final = (
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "num_predict",
    "max_new_tokens",
)
"""Where chat model classes keep their bound on output tokens (ChatOpenAI, ChatAnthropic, most:
``max_tokens``; Google: ``max_output_tokens``; ChatOllama: ``num_predict``; Hugging Face:
``max_new_tokens``); the first one a class has is the one set."""
_SDK_PACKAGES = ("langchain_openai", "langchain_anthropic")  # call kwargs reach the SDK's create()
_Manager = TypeVar("_Manager", CallbackManager, AsyncCallbackManager)


@dataclass(frozen=True, slots=True)
class CallContext:
    """How the next LangChain tier call runs: its ``config`` (callbacks, tags, metadata, run name).

    ``messages`` are the caller's original LangChain messages for ``request`` (used instead of
    converting ours back, so images and provider-specific content blocks survive); ``stop`` are
    the caller's stop sequences (they replace the tier's own); ``options`` are the caller's call
    options (``bind(temperature=..., max_tokens=...)``, ``parallel_tool_calls``,
    ``response_format``), passed on to the chat model.
    """

    config: RunnableConfig = field(default_factory=lambda: RunnableConfig())
    request: Request | None = None
    messages: Sequence[BaseMessage] | None = None
    stop: Sequence[str] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    json_fallback: Mapping[str, Any] | None = None
    """What a chat model with no JSON mode gets for ``response_format={"type": "json_object"}``
    (the caller's schema as ``json_schema``); None: such a request is refused."""
    unheard: bool = False
    """Nobody listens to the call (no handler, tracing or hook anywhere): no run is reported, so
    a plain chat model is called without ``BaseChatModel.generate``'s run machinery."""


tier_call: ContextVar[CallContext | None] = ContextVar("cascade_langchain_tier_call", default=None)
"""Set around a tier call by the LangChain front; read by :class:`LangChainProvider`."""


class LangChainProvider:
    """A tier backed by a LangChain :class:`~langchain_core.language_models.BaseChatModel`."""

    class Options(BaseModel):
        """Policy options for ``provider: langchain``."""

        model_config = ConfigDict(extra="forbid", populate_by_name=True)
        class_: str | None = Field(
            None,
            alias="class",
            pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$",
            description='Import path of the chat model class, "package.module:ChatX" (omit when the '
            "model is passed in Python with providers={tier: chat_model}).",
        )
        kwargs: dict[str, Any] = Field(default_factory=dict, description="Constructor arguments.")
        model_kwarg: str | None = Field(
            "model", description="Constructor argument that receives the tier's model (null: none)."
        )
        max_concurrency: int = Field(4, ge=1, description="Parallel calls for n samples (async).")

    def __init__(
        self,
        chat_model: BaseChatModel,
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        stop: Sequence[str] | None = None,
        max_concurrency: int = 4,
        timeout: float | None = None,
    ) -> None:
        if not isinstance(chat_model, BaseChatModel):
            raise TypeError(f"not a LangChain chat model: {chat_model!r}")
        self.model = model or model_name(chat_model)
        limit = limit_field(chat_model)
        own = _positive_int(getattr(chat_model, limit)) if limit is not None else None
        self.max_tokens: int = max_tokens or own or DEFAULT_MAX_TOKENS
        """Output tokens per sample: reserved by the budget, and sent as the model's bound."""
        self.bounded = limit is not None
        """Whether the chat model's answers are bounded by :attr:`max_tokens` (it has a field of
        :data:`LIMIT_FIELDS`); an unbounded model's answers may cost more than is reserved, so a
        policy with caps refuses it on a priced tier."""
        self.unbounded = (
            f"{type(chat_model).__name__} has no output-token limit cascade can set (a field named one of"
            f" {', '.join(LIMIT_FIELDS)}), so its answers may cost more than the budget reserves and"
            " the policy's caps could be exceeded; use a chat model with such a field, or mark the"
            " tier `free: true`"
        )
        """Why a policy with caps refuses this tier when it is not :attr:`bounded`."""
        if limit is not None and own != self.max_tokens:  # a shallow copy: clients are shared
            chat_model = chat_model.model_copy(update={limit: self.max_tokens})
        self.chat_model = chat_model
        self.stop = list(stop) if stop else None
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.free = False
        self.default_price: Price | None = _known_price(chat_model, self.model)
        self._quiet_model: BaseChatModel | None = None
        retries = sdk_retries(chat_model)
        if retries:
            set_to = getattr(chat_model, "max_retries", None)
            shown = (
                f"max_retries={set_to}"
                if set_to is not None
                else f"max_retries unset: the SDK retries {retries}x"
            )
            warnings.warn(
                f"{type(chat_model).__name__} ({self.model}) retries failed calls itself ({shown})"
                " and cascade retries them too, multiplying requests; build it with max_retries=0",
                UserWarning,
                stacklevel=2,
            )

    @property
    def timeout(self) -> float | None:
        """Seconds a whole call may take (see the module's notes for how); None: no limit."""
        return self._timeout

    @timeout.setter
    def timeout(self, seconds: float | None) -> None:
        self._timeout = seconds
        self._sync_options: dict[str, Any] = {}
        """Call options that make a sync call honour the timeout (the SDK's per-request timeout)."""
        if seconds is not None and _sdk_backed(self.chat_model):
            per_try = seconds / (1 + sdk_retries(self.chat_model))
            own = _own_timeout(self.chat_model)
            self._sync_options["timeout"] = per_try if own is None else min(own, per_try)

    def _overran(self, latency_s: float) -> None:
        """A sync call outlived :attr:`timeout`: it could not be cut off; say so (the answer is kept)."""
        get_logger().warning(
            "cascade.langchain.deadline_overrun", model=self.model, timeout=self._timeout, latency_s=latency_s
        )

    async def _adeadline(self, coro: Any) -> Any:
        """``await coro``, cancelled with :class:`ProviderTimeoutError` after :attr:`timeout` seconds."""
        if self._timeout is None:
            return await coro
        deadline = asyncio.timeout(self._timeout)
        try:
            async with deadline:
                return await coro
        except TimeoutError:
            if deadline.expired():
                raise _cut_off(self.model, self._timeout) from None
            raise

    @classmethod
    def from_config(cls, tier: Any, options: LangChainProvider.Options, ctx: Any) -> LangChainProvider:
        if options.class_ is None:
            raise ConfigurationError(
                f"tier {tier.name!r}: provider 'langchain' needs `options: {{class: package.module:ChatX}}`"
                " or a chat model passed in Python (providers={tier_name: chat_model})"
            )
        module, _, attr = options.class_.partition(":")
        where = f"tier {tier.name!r}: {options.class_}"
        try:
            obj: Any = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise ConfigurationError(f"{where}: cannot import ({exc})") from exc
        if not (isinstance(obj, type) and issubclass(obj, BaseChatModel)):
            raise ConfigurationError(f"{where}: not a LangChain chat model class")
        kwargs = dict(options.kwargs)
        if options.model_kwarg:
            kwargs.setdefault(options.model_kwarg, tier.model)
        params = tier.params
        for name in ("temperature", "top_p", "max_tokens", "seed"):
            if name in params.model_fields_set and getattr(params, name) is not None:
                kwargs.setdefault(name, getattr(params, name))
        for key, value in params.extra.items():
            kwargs.setdefault(key, value)
        # cascade's retry layer is the only one, and the tier's timeout applies (where the class has them)
        accepts = _constructor_names(obj)
        if "max_retries" in accepts:
            kwargs.setdefault("max_retries", 0)
        if "timeout" in accepts:
            kwargs.setdefault("timeout", tier.timeout)
        try:
            chat_model = obj(**kwargs)
        except Exception as exc:
            raise ConfigurationError(f"{where}: cannot build ({type(exc).__name__}: {exc})") from exc
        return cls(
            chat_model,
            model=tier.model,
            max_tokens=params.max_tokens,
            stop=params.stop,
            max_concurrency=options.max_concurrency,
            timeout=tier.timeout,
        )

    # -- the Provider protocol ----------------------------------------------------------------

    def complete(self, request: Request, n: int = 1) -> Completion:
        ctx = tier_call.get()
        runnable, messages, config, kwargs = self._prepare(request, ctx, quiet=True)
        if self._sync_options:
            kwargs = {**self._sync_options, **kwargs}
        start = time.perf_counter()
        try:
            if ctx is not None and ctx.unheard and self._plain():
                model, kwargs = _unbound(runnable, kwargs)
                outputs = [_generated(model._generate(messages, **kwargs)) for _ in range(n)]
            elif not config.get("callbacks"):  # no run to parent
                outputs = [runnable.invoke(messages, config, **kwargs) for _ in range(n)]
            else:
                with _parent_config(config):
                    outputs = [runnable.invoke(messages, config, **kwargs) for _ in range(n)]
        except Exception as exc:
            raise map_error(exc) from exc
        latency = time.perf_counter() - start
        if self._timeout is not None and latency > self._timeout:
            self._overran(latency)
        return self.completion([as_ai_message(o) for o in outputs], latency, request)

    async def acomplete(self, request: Request, n: int = 1) -> Completion:
        ctx = tier_call.get()
        runnable, messages, config, kwargs = self._prepare(request, ctx, quiet=True)
        gate = asyncio.Semaphore(self.max_concurrency) if n > 1 else None
        if ctx is not None and ctx.unheard and self._plain():
            model, lean = _unbound(runnable, kwargs)

            async def call() -> BaseMessage:
                return _generated(await model._agenerate(messages, **lean))
        else:

            async def call() -> BaseMessage:
                out: BaseMessage = await runnable.ainvoke(messages, config, **kwargs)
                return out

        async def one() -> BaseMessage:
            assert gate is not None
            async with gate:
                return await call()

        start = time.perf_counter()
        try:
            with _parent_config(config):
                if n == 1:  # one call: no gate
                    outputs = [await self._adeadline(call())]
                else:
                    outputs = await self._adeadline(asyncio.gather(*(one() for _ in range(n))))
        except Exception as exc:
            raise map_error(exc) from exc
        return self.completion([as_ai_message(o) for o in outputs], time.perf_counter() - start, request)

    def max_usage(self, request: Request, n: int = 1) -> Usage:
        # n samples are n calls, each billed for the prompt
        return Usage(estimate_input_tokens(request) * n, self.max_tokens * n)

    # -- streaming (used by the LangChain front for the final tier) ---------------------------

    def can_stream(self) -> bool:
        """Whether the chat model streams (implements ``_stream`` and has streaming enabled)."""
        model = self.chat_model
        return type(model)._stream is not BaseChatModel._stream and model.disable_streaming is not True

    def _stream_call(
        self, request: Request, context: CallContext | None, configure: Callable[..., _Manager]
    ) -> tuple[BaseChatModel, list[BaseMessage], _Manager, dict[str, Any], dict[str, Any]]:
        """The chat model to stream, its messages, the run's callback manager (from ``configure``),
        the call's kwargs and the run's start arguments."""
        runnable, messages, config, kwargs = self._prepare(request, context)
        model, kwargs = _unbound(runnable, kwargs)
        # ask for usage in the stream where the model can (ChatOpenAI with a base_url does not by default)
        asked = "stream_usage" in model.model_fields_set
        if (
            "stream_usage" in type(model).model_fields
            and not asked
            and not getattr(model, "stream_usage", None)
        ):
            kwargs.setdefault("stream_usage", True)
        params = model._get_invocation_params(**kwargs)
        start: dict[str, Any] = {
            "invocation_params": params,
            "options": {"stop": kwargs.get("stop")},
            "name": config.get("run_name"),
            "batch_size": 1,
        }
        metadata = {**(config.get("metadata") or {}), **model._get_ls_params_with_defaults(**kwargs)}
        manager = configure(
            config.get("callbacks"),
            model.callbacks,
            model.verbose,
            config.get("tags"),
            model.tags,
            metadata,
            model.metadata,
        )
        return model, messages, manager, kwargs, start

    def stream(self, request: Request, context: CallContext | None = None) -> Iterator[AIMessageChunk]:
        """Stream one answer as LangChain chunks; errors are mapped like :meth:`complete`'s.

        The call is a run of its own (start, end with usage, errors) that reports no token
        events: the caller of the cascade streams these chunks as its own, so token listeners
        (``astream_events``, ``on_llm_new_token``) get each token once. An answer whose stream
        carries no usage is billed, and reported, from an estimate. ``context`` replaces
        :data:`tier_call` (a generator cannot rely on a context variable).
        """
        model, messages, manager, kwargs, start = self._stream_call(
            request, context, CallbackManager.configure
        )
        (run,) = manager.on_chat_model_start(model._serialized, [messages], **start)
        chunks: list[AIMessageChunk] = []
        try:
            for generation in model._stream(messages, **kwargs):
                chunk = _chunk_message(generation)
                if chunk is not None:
                    chunks.append(chunk)
                    yield chunk
        except GeneratorExit:
            run.on_llm_error(GeneratorExit("the stream was abandoned"))
            raise
        except Exception as exc:
            run.on_llm_error(exc)
            raise map_error(exc) from exc
        run.on_llm_end(self._streamed_result(chunks, request))

    async def astream(
        self, request: Request, context: CallContext | None = None
    ) -> AsyncIterator[AIMessageChunk]:
        """Async twin of :meth:`stream`."""
        model, messages, manager, kwargs, start = self._stream_call(
            request, context, AsyncCallbackManager.configure
        )
        (run,) = await manager.on_chat_model_start(model._serialized, [messages], **start)
        chunks: list[AIMessageChunk] = []
        try:
            async for generation in model._astream(messages, **kwargs):
                chunk = _chunk_message(generation)
                if chunk is not None:
                    chunks.append(chunk)
                    yield chunk
        except GeneratorExit:
            await run.on_llm_error(GeneratorExit("the stream was abandoned"))
            raise
        except Exception as exc:
            await run.on_llm_error(exc)
            raise map_error(exc) from exc
        await run.on_llm_end(self._streamed_result(chunks, request))

    def streamed_message(self, chunks: Sequence[AIMessageChunk], request: Request) -> AIMessage:
        """The whole answer of a stream, with its usage (estimated when the stream had none)."""
        if not chunks:
            return AIMessage("")
        message = message_chunk_to_message(reduce(add, chunks))
        assert isinstance(message, AIMessage)
        usage, estimated = self._usage(message, request)
        if estimated:
            message = message.model_copy(update={"usage_metadata": usage_metadata(usage)})
        return message

    def _streamed_result(self, chunks: Sequence[AIMessageChunk], request: Request) -> LLMResult:
        return LLMResult(generations=[[ChatGeneration(message=self.streamed_message(chunks, request))]])

    def _usage(self, message: AIMessage, request: Request | None) -> tuple[Usage, Usage | None]:
        """The usage of one answer and the part of it that was estimated (None: all reported)."""
        reported = to_usage(message)
        if reported is None:
            guess = Usage(
                estimate_input_tokens(request) if request is not None else 0, _estimate_output(message)
            )
            return guess, guess
        missing_input = (
            reported.input_tokens + reported.cached_input_tokens + reported.cache_creation_tokens == 0
        )
        missing_output = reported.output_tokens == 0 and bool(message.text or message.tool_calls)
        if not (missing_input or missing_output):
            return reported, None
        estimated = Usage()
        if missing_input:  # output-only usage (some Anthropic-compatible streams)
            inp = estimate_input_tokens(request) if request is not None else 0
            reported, estimated = replace(reported, input_tokens=inp), Usage(inp)
        if missing_output:
            out = _estimate_output(message)
            reported, estimated = replace(reported, output_tokens=out), estimated + Usage(0, out)
        return reported, (estimated if estimated.total_tokens else None)

    def completion(
        self, messages: Sequence[AIMessage], latency_s: float = 0.0, request: Request | None = None
    ) -> Completion:
        """Our :class:`Completion` for the answers a LangChain model gave (one per sample).

        Missing usage is estimated (input tokens from ``request``); ``raw["usage_estimated"]``
        then holds the estimated part as ``[input, output]`` tokens.
        """
        samples = tuple(to_sample(m) for m in messages)
        if len(messages) == 1:  # the usual case: no sums
            usage, guess = self._usage(messages[0], request)
            estimated = guess if guess is not None else Usage()
        else:
            usage, estimated = Usage(), Usage()
            for m in messages:
                u, guess = self._usage(m, request)
                usage += u
                if guess is not None:
                    estimated += guess
        raw: dict[str, Any] = {}
        invalid = [list(m.invalid_tool_calls) for m in messages]
        if any(invalid):
            raw["invalid_tool_calls"] = invalid
        if estimated.total_tokens:
            raw["usage_estimated"] = [estimated.input_tokens, estimated.output_tokens]
        meta = messages[0].response_metadata if messages else {}
        model = meta.get("model_name") or meta.get("model") or self.model
        return Completion(
            samples=samples,
            usage=usage,
            model=str(model),
            request_id=meta.get("id") or meta.get("request_id"),
            latency_s=latency_s,
            raw=raw,
        )

    # -- helpers ------------------------------------------------------------------------------

    def _plain(self) -> bool:
        """Whether ``BaseChatModel.generate`` would do nothing around ``_generate`` for a run nobody
        listens to: no cache, rate limiter, v1 output, own callbacks or verbose output."""
        model = self.chat_model
        if model.rate_limiter is not None or model.callbacks is not None or model.verbose:
            return False
        if getattr(model, "output_version", None) == "v1":
            return False
        return model.cache is False or (model.cache is None and get_llm_cache() is None)

    def _quiet(self) -> BaseChatModel:
        """The chat model with streaming off (a shallow copy: clients are shared)."""
        if self._quiet_model is None:
            quiet = self.chat_model.disable_streaming is True
            self._quiet_model = (
                self.chat_model if quiet else self.chat_model.model_copy(update={"disable_streaming": True})
            )
        return self._quiet_model

    def _prepare(
        self, request: Request, context: CallContext | None = None, *, quiet: bool = False
    ) -> tuple[Runnable[LanguageModelInput, BaseMessage], list[BaseMessage], RunnableConfig, dict[str, Any]]:
        """The runnable to call (tools bound), its input, config and call arguments.

        ``quiet``: a whole-answer call never streams, even when a caller listens for tokens
        (``astream_events``), so a candidate the scorer may reject emits no token events.
        """
        ctx = context if context is not None else tier_call.get()
        stop = (ctx.stop if ctx is not None and ctx.stop else None) or self.stop
        call_kwargs: dict[str, Any] = {"stop": list(stop)} if stop else {}
        if ctx is not None and ctx.options:
            call_kwargs.update(ctx.options)
            for key in LIMIT_FIELDS:  # the budget reserved max_tokens: a caller may ask less, not more
                asked = call_kwargs.get(key)
                if isinstance(asked, int) and asked > self.max_tokens:
                    call_kwargs[key] = self.max_tokens
            fmt = call_kwargs.get("response_format")
            if (
                isinstance(fmt, Mapping)
                and fmt.get("type") == "json_object"
                and not has_json_mode(self.chat_model)
            ):
                call_kwargs["response_format"] = self._json_fallback(ctx)
        config: RunnableConfig = dict(ctx.config) if ctx is not None else {}  # type: ignore[assignment]
        if ctx is not None and ctx.request is request and ctx.messages is not None:
            messages = list(ctx.messages)
        else:
            messages = to_langchain_messages(request.messages)
        model = self._quiet() if quiet else self.chat_model
        runnable: Runnable[LanguageModelInput, BaseMessage] = model
        if request.tools:
            kwargs: dict[str, Any] = {}
            choice = langchain_tool_choice(request.tool_choice)
            if choice is not None:
                kwargs["tool_choice"] = choice
            if "parallel_tool_calls" in call_kwargs:  # bind_tools knows each provider's spelling
                kwargs["parallel_tool_calls"] = call_kwargs.pop("parallel_tool_calls")
            try:
                runnable = model.bind_tools([dict(t) for t in request.tools], **kwargs)
            except NotImplementedError as exc:
                raise PermanentProviderError(
                    f"{self.model}: this chat model does not support tools", provider="langchain"
                ) from exc
            except Exception as exc:
                raise map_error(exc) from exc
        return runnable, messages, config, call_kwargs

    def _json_fallback(self, ctx: CallContext) -> Mapping[str, Any]:
        if ctx.json_fallback is None:
            raise ConfigurationError(
                f"{type(self.chat_model).__name__} ({self.model}) has no JSON mode"
                " (response_format={'type': 'json_object'}); use"
                " with_structured_output(schema, method='json_mode' or 'json_schema') so it gets a schema"
            )
        get_logger().debug("cascade.langchain.json_mode_as_schema", model=self.model)
        return ctx.json_fallback


def limit_field(chat_model: BaseChatModel) -> str | None:
    """The field of :data:`LIMIT_FIELDS` in which this chat model keeps its output-token bound."""
    fields = type(chat_model).model_fields
    return next((name for name in LIMIT_FIELDS if name in fields), None)


def _sdk_backed(chat_model: BaseChatModel) -> bool:
    """Whether the chat model hands its call options to an OpenAI or Anthropic SDK ``create()``
    (which takes a per-request ``timeout``)."""
    return any(c.__module__.startswith(_SDK_PACKAGES) for c in type(chat_model).__mro__)


def _own_timeout(chat_model: BaseChatModel) -> float | None:
    for attr in ("request_timeout", "default_request_timeout", "timeout"):
        value = getattr(chat_model, attr, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
    return None


def _unbound(
    runnable: Runnable[LanguageModelInput, BaseMessage], kwargs: Mapping[str, Any]
) -> tuple[BaseChatModel, dict[str, Any]]:
    """The chat model under ``bind_tools`` / ``bind`` and the call's kwargs with the bound ones,
    as its ``_generate`` / ``_stream`` take them (without the tracing-only structured-output format)."""
    bound: dict[str, Any] = {}
    while isinstance(runnable, RunnableBinding):
        bound = {**runnable.kwargs, **bound}
        runnable = runnable.bound
    assert isinstance(runnable, BaseChatModel)
    out = {**bound, **kwargs}
    out.pop("ls_structured_output_format", None)
    out.pop("structured_output_format", None)
    return runnable, out


def _generated(result: ChatResult) -> BaseMessage:
    """The message of ``_generate``'s result with the metadata ``BaseChatModel.generate`` adds
    (generation info, and the single generation's ``llm_output``)."""
    generation = result.generations[0]
    message = generation.message
    extra = {**(result.llm_output or {}), **(generation.generation_info or {})}
    if extra:
        message.response_metadata = {**extra, **message.response_metadata}
    return message


def has_json_mode(chat_model: BaseChatModel) -> bool:
    """Whether ``response_format={"type": "json_object"}`` means JSON mode to this chat model
    (ChatAnthropic has none: the Messages API takes a schema only)."""
    return not any(c.__module__.startswith("langchain_anthropic") for c in type(chat_model).__mro__)


@contextmanager
def _parent_config(config: RunnableConfig) -> Iterator[None]:
    """Make ``config`` the ambient runnable config while a tier runs.

    LangChain merges the ambient config (set by an enclosing chain or graph node) into every
    call; without this, a bound model (``bind_tools``) would attach its run to the enclosing
    node instead of the cascade's run.
    """
    if not config.get("callbacks"):
        yield
        return
    token = var_child_runnable_config.set(config)
    try:
        yield
    finally:
        var_child_runnable_config.reset(token)


# -- errors ---------------------------------------------------------------------------------------


def map_error(exc: BaseException, provider: str = "langchain") -> ProviderError:
    """Our error for whatever a LangChain chat model (or the SDK under it) raised."""
    if isinstance(exc, ProviderError):
        return exc
    names = {c.__name__ for c in type(exc).__mro__}
    response = getattr(exc, "response", None)
    status = _status(exc, response)
    headers = getattr(response, "headers", None)
    request_id = getattr(exc, "request_id", None) or _header(headers, "x-request-id", "request-id")
    message = f"{type(exc).__name__}: {exc}"
    common: dict[str, Any] = {
        "provider": provider,
        "status_code": status,
        "request_id": request_id if isinstance(request_id, str) else None,
    }
    if status == 429 or "RateLimitError" in names:
        after = _header(headers, "retry-after")
        try:
            retry_after = float(after) if after is not None else None
        except ValueError:
            retry_after = None
        return RateLimitError(message, retry_after=retry_after, **common)
    if status == 408 or isinstance(exc, TimeoutError) or any("Timeout" in n for n in names):
        timeout = ProviderTimeoutError(message, **common)
        timeout.cut_off = True  # a wrapped client does not say whether the request went out: charge it
        return timeout
    if status is not None:
        if status in (409, 425) or status >= 500:
            return TransientProviderError(message, **common)
        return PermanentProviderError(message, **common)
    if isinstance(exc, ConnectionError) or any("Connect" in n for n in names):
        return TransientProviderError(message, **common)
    return PermanentProviderError(message, **common)


def _cut_off(model: str, timeout: float | None) -> ProviderTimeoutError:
    """The deadline passed with the call in flight: it may be billed in full, so the engine charges it."""
    err = ProviderTimeoutError(
        f"{model}: no answer within the tier timeout ({timeout}s)", provider="langchain"
    )
    err.cut_off = True
    return err


def _status(exc: BaseException, response: Any) -> int | None:
    for obj in (exc, response):
        for attr in ("status_code", "http_status", "status"):
            value = getattr(obj, attr, None)
            if isinstance(value, int) and 100 <= value <= 599:
                return value
    return None


def _header(headers: Any, *names: str) -> str | None:
    if headers is None:
        return None
    for name in names:
        try:
            value = headers.get(name)
        except Exception:  # noqa: S112 - odd header objects: treat as absent
            continue
        if value is not None:
            return str(value)
    return None


def _positive_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _known_price(chat_model: BaseChatModel, model: str) -> Price | None:
    from cascade.price_table import lookup

    try:
        provider = chat_model._get_ls_params().get("ls_provider")
    except Exception:
        return None
    return lookup(str(provider), model) if provider else None


__all__ = [
    "LIMIT_FIELDS",
    "CallContext",
    "LangChainProvider",
    "_constructor_names",
    "as_ai_message",
    "langchain_tool_choice",
    "limit_field",
    "map_error",
    "model_name",
    "sdk_retries",
    "tier_call",
    "to_langchain_messages",
    "to_sample",
    "to_usage",
    "usage_metadata",
]
