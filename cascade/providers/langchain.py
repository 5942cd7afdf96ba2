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
``input_token_details``); ``n`` samples are ``n`` calls (at most ``max_concurrency`` at once in
async). Every exception is mapped to a :class:`~cascade.errors.ProviderError` (transient or
permanent, from status codes, timeouts and connection errors); the provider never retries.

When :class:`cascade.langchain.CascadeChatModel` runs a tier it sets :data:`tier_call`, so the
call becomes a child run (callbacks, tags, metadata) of the cascade's run.
"""

from __future__ import annotations

import asyncio
import importlib
import math
import time
import warnings
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.runnables import Runnable, RunnableConfig
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
from cascade.money import Price
from cascade.providers._sdk import estimate_input_tokens
from cascade.types import Completion, Message, Request, Sample, ToolCall, Usage

DEFAULT_MAX_TOKENS = 1024


@dataclass(frozen=True, slots=True)
class CallContext:
    """How the next LangChain tier call runs: its ``config`` (callbacks, tags, metadata, run name).

    ``messages`` are the caller's original LangChain messages for ``request`` (used instead of
    converting ours back, so images and provider-specific content blocks survive); ``stop`` are
    the caller's stop sequences (they replace the tier's own).
    """

    config: RunnableConfig = field(default_factory=lambda: RunnableConfig())
    request: Request | None = None
    messages: Sequence[BaseMessage] | None = None
    stop: Sequence[str] | None = None


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
    ) -> None:
        if not isinstance(chat_model, BaseChatModel):
            raise TypeError(f"not a LangChain chat model: {chat_model!r}")
        self.chat_model = chat_model
        self.model = model or model_name(chat_model)
        self.max_tokens = max_tokens or _int_attr(chat_model, "max_tokens", "max_output_tokens")
        self.stop = list(stop) if stop else None
        self.max_concurrency = max_concurrency
        self.free = False
        self.default_price: Price | None = _known_price(chat_model, self.model)
        self._quiet_model: BaseChatModel | None = None
        retries = getattr(chat_model, "max_retries", None)
        if isinstance(retries, int) and retries > 0:
            warnings.warn(
                f"{type(chat_model).__name__} ({self.model}) retries failed calls itself"
                f" (max_retries={retries}) and cascade retries them too; build it with max_retries=0",
                UserWarning,
                stacklevel=2,
            )

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
        )

    # -- the Provider protocol ----------------------------------------------------------------

    def complete(self, request: Request, n: int = 1) -> Completion:
        runnable, messages, config, kwargs = self._prepare(request, quiet=True)
        start = time.perf_counter()
        try:
            with _parent_config(config):
                outputs = [runnable.invoke(messages, config, **kwargs) for _ in range(n)]
        except Exception as exc:
            raise map_error(exc) from exc
        return self.completion([as_ai_message(o) for o in outputs], time.perf_counter() - start)

    async def acomplete(self, request: Request, n: int = 1) -> Completion:
        runnable, messages, config, kwargs = self._prepare(request, quiet=True)
        gate = asyncio.Semaphore(self.max_concurrency)

        async def one() -> BaseMessage:
            async with gate:
                out: BaseMessage = await runnable.ainvoke(messages, config, **kwargs)
                return out

        start = time.perf_counter()
        try:
            with _parent_config(config):
                outputs = await asyncio.gather(*(one() for _ in range(n)))
        except Exception as exc:
            raise map_error(exc) from exc
        return self.completion([as_ai_message(o) for o in outputs], time.perf_counter() - start)

    def max_usage(self, request: Request, n: int = 1) -> Usage:
        # n samples are n calls, each billed for the prompt
        return Usage(estimate_input_tokens(request) * n, self.max_tokens * n)

    # -- streaming (used by the LangChain front for the final tier) ---------------------------

    def stream(self, request: Request, context: CallContext | None = None) -> Iterator[AIMessageChunk]:
        """Stream one answer as LangChain chunks; errors are mapped like :meth:`complete`'s.

        ``context`` replaces :data:`tier_call` (a generator cannot rely on a context variable).
        """
        runnable, messages, config, kwargs = self._prepare(request, context)
        try:
            with _parent_config(config):
                chunks = iter(runnable.stream(messages, config, **kwargs))
            while True:
                with _parent_config(config):  # around each step: a generator must not leak it
                    chunk = next(chunks, None)
                if chunk is None:
                    return
                if isinstance(chunk, AIMessageChunk):
                    yield chunk
        except Exception as exc:
            raise map_error(exc) from exc

    async def astream(
        self, request: Request, context: CallContext | None = None
    ) -> AsyncIterator[AIMessageChunk]:
        """Async twin of :meth:`stream`."""
        runnable, messages, config, kwargs = self._prepare(request, context)
        try:
            with _parent_config(config):
                chunks = aiter(runnable.astream(messages, config, **kwargs))
            while True:
                with _parent_config(config):
                    chunk = await anext(chunks, None)
                if chunk is None:
                    return
                if isinstance(chunk, AIMessageChunk):
                    yield chunk
        except Exception as exc:
            raise map_error(exc) from exc

    def completion(self, messages: Sequence[AIMessage], latency_s: float = 0.0) -> Completion:
        """Our :class:`Completion` for the answers a LangChain model gave (one per sample)."""
        samples = tuple(to_sample(m) for m in messages)
        usage = Usage()
        estimated = False
        for m in messages:
            u = to_usage(m)
            if u is None:
                estimated = True
                u = Usage(0, max(1, math.ceil(len(m.text) / 4)))
            usage += u
        raw: dict[str, Any] = {}
        invalid = [list(m.invalid_tool_calls) for m in messages]
        if any(invalid):
            raw["invalid_tool_calls"] = invalid
        if estimated:
            raw["usage_estimated"] = True
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
            try:
                runnable = model.bind_tools([dict(t) for t in request.tools], **kwargs)
            except NotImplementedError as exc:
                raise PermanentProviderError(
                    f"{self.model}: this chat model does not support tools", provider="langchain"
                ) from exc
            except Exception as exc:
                raise map_error(exc) from exc
        return runnable, messages, config, call_kwargs


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
        return ProviderTimeoutError(message, **common)
    if status is not None:
        if status in (409, 425) or status >= 500:
            return TransientProviderError(message, **common)
        return PermanentProviderError(message, **common)
    if isinstance(exc, ConnectionError) or any("Connect" in n for n in names):
        return TransientProviderError(message, **common)
    return PermanentProviderError(message, **common)


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


def _int_attr(obj: object, *names: str) -> int:
    for name in names:
        value = getattr(obj, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return DEFAULT_MAX_TOKENS


def _known_price(chat_model: BaseChatModel, model: str) -> Price | None:
    from cascade.price_table import lookup

    try:
        provider = chat_model._get_ls_params().get("ls_provider")
    except Exception:
        return None
    return lookup(str(provider), model) if provider else None


__all__ = ["CallContext", "LangChainProvider", "map_error", "tier_call", "to_langchain_messages"]
