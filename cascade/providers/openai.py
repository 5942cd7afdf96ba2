"""OpenAI chat completions (kind ``openai``) and OpenAI-compatible servers (``openai_compatible``).

``n`` samples are one request with ``n`` (the prompt is billed once). If fewer choices come back
than asked (a server that ignores ``n``), the rest are fetched with extra single-sample calls.
Token logprobs are requested with the ``logprobs`` / ``top_logprobs`` options and land in
:attr:`cascade.types.Sample.logprobs` / ``top_logprobs``. Tools in the request are sent as-is
(OpenAI function format); tool calls come back in :attr:`cascade.types.Sample.tool_calls`.

OpenAI-compatible servers (vLLM, Ollama, llama.cpp server, hosted gateways) differ in what they
honour, so the capabilities are options: ``supports_n`` (vLLM yes; Ollama ignores ``n``, llama.cpp
rejects it, so the default is ``k`` separate calls), ``logprobs``. A server on this machine or the
local network is free unless the tier sets a ``price``; a remote one needs a ``price`` or ``free``.

The SDK client is built with ``max_retries=0`` and the tier's timeout: :mod:`cascade.retry` is the
only retry layer. The timeout bounds the whole call (every sample, connect to last byte). Bodies
are checked before use: no choices, empty choices, an error object or a body that does not parse
is an :class:`~cascade.errors.InvalidResponseError`; usage is checked by
:func:`cascade.providers._sdk.check_usage`.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import openai
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cascade.errors import ConfigurationError
from cascade.policy.schema import GenerationParams, TierSpec
from cascade.providers import _sdk
from cascade.request import Request
from cascade.types import Completion, Message, Sample, ToolCall, Usage


def to_openai_messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Chat messages in the OpenAI wire format (assistant tool calls and tool results included)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        msg: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            msg["content"] = m.content or None
            msg["tool_calls"] = [
                {
                    "id": tc.id,
                    "type": "function",
                    "function": {"name": tc.name, "arguments": json.dumps(dict(tc.arguments))},
                }
                for tc in m.tool_calls
            ]
        if m.role == "tool":
            msg["tool_call_id"] = m.tool_call_id or ""
        if m.name and m.role in ("user", "system"):
            msg["name"] = m.name
        out.append(msg)
    return out


def to_openai_tool_choice(choice: str | Mapping[str, Any]) -> str | dict[str, Any]:
    """``Request.tool_choice`` in OpenAI's form (``any`` is ``required``; a bare name forces it)."""
    if isinstance(choice, str):
        if choice in ("auto", "none", "required"):
            return choice
        if choice == "any":
            return "required"
        return {"type": "function", "function": {"name": choice}}
    if choice.get("type") == "tool" and "name" in choice:  # Anthropic's form
        return {"type": "function", "function": {"name": choice["name"]}}
    return dict(choice)


def _arguments(text: str | None) -> Mapping[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {"_raw": text}  # a model wrote invalid JSON: keep it for the caller to judge
    return value if isinstance(value, dict) else {"_value": value}


def usage_of(u: Any) -> Usage | None:
    """Our :class:`Usage` from an OpenAI ``usage`` (cached prompt tokens counted apart); None when
    there is none or its counts are not integers (the caller estimates it)."""
    if u is None:
        return None
    details = getattr(u, "prompt_tokens_details", None)
    cached = _sdk.token_count(getattr(details, "cached_tokens", 0) or 0)
    prompt = _sdk.token_count(getattr(u, "prompt_tokens", None))
    completion = _sdk.token_count(getattr(u, "completion_tokens", None))
    if cached is None or prompt is None or completion is None:
        return None
    if prompt < 0 or completion < 0 or cached < 0:
        return Usage(prompt - cached, completion, cached)  # negative: check_usage refuses it
    return Usage(max(prompt - cached, 0), completion, min(cached, prompt))


def _observe(got: _sdk.Received, chunk: Any) -> Any:
    """Note what a stream chunk (untrusted) carries; returns its usage object when it reports one."""
    got.events += 1
    try:
        usage = getattr(chunk, "usage", None)
        got.report(usage_of(usage))
        for choice in getattr(chunk, "choices", None) or ():
            delta = choice.delta
            got.text(getattr(delta, "content", None))
            for tc in getattr(delta, "tool_calls", None) or ():
                got.text(getattr(getattr(tc, "function", None), "arguments", None))
            got.finish(choice.index if isinstance(choice.index, int) else 0, choice.finish_reason)
    except _sdk.MALFORMED:
        return None  # the accumulator will say what is wrong with it
    return usage


_CALL_ERRORS: tuple[type[Exception], ...] = (openai.OpenAIError, *_sdk.WIRE_ERRORS)
"""The SDK's errors and the HTTP errors it lets through (both mapped by ``_sdk.map_error``)."""


@contextlib.asynccontextmanager
async def _achunks(client: Any, kw: Mapping[str, Any]) -> AsyncIterator[Any]:
    """An async streamed ``create``'s chunks, as a context manager (what :func:`_sdk.astream_steps` opens)."""
    async with await client.chat.completions.create(**kw, stream=True) as chunks:
        yield chunks


class _Streamed:
    """A streamed reply's chunks put together as the ``ChatCompletion`` that ``create`` returns
    unstreamed: the one owner of that mapping for every streamed call (``stream: true`` tiers and
    :meth:`OpenAIProvider.stream_text`). The SDK's own parsing (``get_final_completion``) is not
    used: it raises for a ``length`` or ``content_filter`` finish, which unstreamed is an answer
    (billed) with that finish reason, so it must be one streamed too.

    ``got``: what the attempt received (usage, text, finishes: its bill if it fails)."""

    def __init__(self, got: _sdk.Received | None = None) -> None:
        self.state = ChatCompletionStreamState()  # no tools or format: we parse, not the SDK
        self.got = got
        self.usage: Any = None
        self.failure: Exception | None = None

    def add(self, chunk: Any) -> str | None:
        """Take a chunk (untrusted); returns the text it adds to the first choice, if any."""
        if self.got is not None:
            self.usage = _observe(self.got, chunk) or self.usage
        elif getattr(chunk, "usage", None) is not None:
            self.usage = chunk.usage
        if self.failure is not None:
            return None  # after a failure the rest is drained: produced, so billed
        try:
            self.state.handle_chunk(chunk)
            for choice in chunk.choices or ():
                text = choice.delta.content if choice.index == 0 else None
                if isinstance(text, str) and text:
                    return text
        except Exception as exc:
            self.failure = exc
        return None

    def final(self, provider: str) -> Any:
        """The assembled reply; a failed or truncated stream is refused; the last usage reported
        is kept (a later chunk's ``usage: null`` does not replace it)."""
        if self.failure is not None:
            raise self.failure
        if self.got is not None:
            _sdk.truncated(provider, self.got)
        response = self.state.current_completion_snapshot  # a ChatCompletion, checked by parse()
        if self.usage is not None:
            response.usage = self.usage
        return response


def _errors(provider: str) -> AbstractContextManager[None]:
    """The openai SDK's failures in cascade's words, for sync and async streams alike (its
    requests map them through :func:`~cascade.providers._sdk.attempt`, the same
    :func:`~cascade.providers._sdk.mapped`)."""
    return _sdk.mapped(provider, openai, _CALL_ERRORS, streaming=True)


class _CallOptions(BaseModel):
    """How calls are made: options the OpenAI API and compatible servers share."""

    model_config = ConfigDict(extra="forbid")
    logprobs: bool = Field(False, description="Ask for token logprobs (for logprob-based scorers).")
    top_logprobs: int = Field(0, ge=0, le=20, description="Alternatives per token (needs logprobs).")
    stream: bool = Field(False, description="Stream the response (assembled before scoring).")
    parallel: int = Field(4, ge=1, le=64, description="Concurrent calls when samples need several.")
    max_response_bytes: int = Field(
        _sdk.MAX_RESPONSE_BYTES,
        ge=1024,
        description="Refuse a response body larger than this while reading it.",
    )

    @model_validator(mode="after")
    def _top_needs_logprobs(self) -> _CallOptions:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self


class OpenAIProvider:
    """A tier answered by OpenAI's chat completions API."""

    kind = "openai"
    sdk_name = "openai"
    key_env = "OPENAI_API_KEY"
    max_tokens_field = "max_completion_tokens"  # what current OpenAI models accept (o-series too)

    class Options(_CallOptions):
        """Provider options for ``provider: openai``."""

        api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the key.")
        base_url: str | None = Field(None, description="Another endpoint (a gateway or proxy).")

    def __init__(
        self,
        model: str,
        *,
        api_key: str,
        base_url: str | None = None,
        params: GenerationParams | None = None,
        timeout: float = 60.0,
        logprobs: bool = False,
        top_logprobs: int = 0,
        stream: bool = False,
        supports_n: bool = True,
        parallel: int = 4,
        provider_name: str | None = None,
        max_response_bytes: int = _sdk.MAX_RESPONSE_BYTES,
    ) -> None:
        self.model = model
        self.params = params or GenerationParams()
        self.timeout = timeout
        self.logprobs = logprobs
        self.top_logprobs = top_logprobs
        self.stream = stream
        self.supports_n = supports_n
        self.parallel = parallel
        self.max_response_bytes = max_response_bytes
        self.name = provider_name or self.kind
        self.base_url = base_url
        self.free = False
        client_kw: dict[str, Any] = {"api_key": api_key, "timeout": timeout, "max_retries": 0}
        if base_url:
            client_kw["base_url"] = base_url
        self._sync = _sdk.Reopening(
            lambda: openai.OpenAI(**client_kw, http_client=_sdk.http_client(openai.DefaultHttpxClient))
        )
        self._sync.get()  # made now: a bad configuration fails here, not at the first call
        self._async = _sdk.PerLoop(
            lambda: openai.AsyncOpenAI(
                **client_kw, http_client=_sdk.ahttp_client(openai.DefaultAsyncHttpxClient)
            )
        )
        self._warned_n = False

    @classmethod
    def from_config(cls, tier: TierSpec, options: OpenAIProvider.Options, ctx: Any) -> OpenAIProvider:
        return cls(
            tier.model,
            api_key=_sdk.api_key(options.api_key_env, tier=tier.name, provider="OpenAI"),
            base_url=options.base_url,
            params=tier.params,
            timeout=tier.timeout,
            logprobs=options.logprobs,
            top_logprobs=options.top_logprobs,
            stream=options.stream,
            parallel=options.parallel,
            max_response_bytes=options.max_response_bytes,
        )

    # -- request and response, shared by the sync and async paths -------------------------------

    def request_kwargs(self, request: Request, n: int = 1) -> dict[str, Any]:
        """The keyword arguments of ``chat.completions.create`` for ``request``."""
        p = self.params
        kw: dict[str, Any] = {"model": self.model, "messages": to_openai_messages(request.messages)}
        if n > 1:
            kw["n"] = n
        kw[self.max_tokens_field] = p.max_tokens
        for field in ("temperature", "top_p", "stop", "seed"):
            value = getattr(p, field)
            if value is not None:
                kw[field] = value
        if request.tools:
            kw["tools"] = [dict(t) for t in request.tools]
            if request.tool_choice is not None:
                kw["tool_choice"] = to_openai_tool_choice(request.tool_choice)
        if request.response_format is not None:
            kw["response_format"] = dict(request.response_format)
        if self.logprobs:
            kw["logprobs"] = True
            if self.top_logprobs:
                kw["top_logprobs"] = self.top_logprobs
        if p.extra:
            kw["extra_body"] = dict(p.extra)
        if self.stream:
            kw["stream_options"] = {"include_usage": True}
        return kw

    def _sample(self, choice: Any) -> Sample:
        message = choice.message
        if message is None:
            raise TypeError("a choice without a message")
        if not isinstance(message.content, (str, type(None))):
            raise TypeError("message content that is not text")
        calls = tuple(
            ToolCall(tc.function.name, _arguments(tc.function.arguments), tc.id or "")
            for tc in (message.tool_calls or ())
            if getattr(tc, "type", "function") == "function"
        )
        logprobs: tuple[float, ...] | None = None
        top: tuple[Mapping[str, float], ...] | None = None
        content = getattr(choice.logprobs, "content", None) if choice.logprobs is not None else None
        if content is not None:
            logprobs = tuple(float(t.logprob) for t in content)
            if self.top_logprobs:
                top = tuple({a.token: float(a.logprob) for a in (t.top_logprobs or ())} for t in content)
        return Sample(
            message.content or "",
            tool_calls=calls,
            logprobs=logprobs,
            top_logprobs=top,
            finish_reason=choice.finish_reason,
        )

    def parse(
        self, response: Any, latency_s: float = 0.0, request: Request | None = None, n: int = 1
    ) -> Completion:
        """Our :class:`Completion` from a ``ChatCompletion`` (an untrusted body: checked first).

        With ``request``, usage is checked against the worst case of ``n`` samples for it.
        """
        rid = getattr(response, "_request_id", None)
        if not isinstance(response, ChatCompletion):  # the SDK returns the text of a non-JSON body
            raise _sdk.invalid(self.name, "not a chat completion", _sdk.snippet(response), request_id=rid)
        billed = _sdk.reported_usage(response, usage_of)
        error = _sdk.error_object(response.model_extra)
        if error is not None:
            raise _sdk.invalid(
                self.name, "error object in a 200 response", error, request_id=rid, usage=billed
            )
        choices = getattr(response, "choices", None)
        if not isinstance(choices, Sequence) or isinstance(choices, str):
            raise _sdk.invalid(self.name, "no choices", request_id=rid, usage=billed)
        if not choices:
            raise _sdk.invalid(self.name, "empty choices", request_id=rid, usage=billed)
        try:
            ordered = sorted(choices, key=lambda c: c.index if isinstance(c.index, int) else 0)
            samples = tuple(self._sample(c) for c in ordered)
            model = response.model if isinstance(response.model, str) and response.model else self.model
            reported = usage_of(getattr(response, "usage", None))
        except _sdk.MALFORMED as exc:
            raise _sdk.invalid(
                self.name, "malformed choices", f"{type(exc).__name__}: {exc}", request_id=rid, usage=billed
            ) from None
        usage, source = _sdk.settle_usage(  # one request for n samples: the prompt once, max_tokens each
            reported,
            samples=samples,
            request=request,
            max_output=self.params.max_tokens * n,
            provider=self.name,
            model=self.model,
            request_id=rid,
        )
        return Completion(
            samples=samples,
            usage=usage,
            model=model,
            request_id=rid,
            latency_s=latency_s,
            raw={
                "id": getattr(response, "id", None),
                "system_fingerprint": getattr(response, "system_fingerprint", None),
            },
            usage_source=source,
        )

    def _missing(self, first: Completion, n: int) -> int:
        """Samples still owed after a call with ``n``; warns once when a server ignores ``n``."""
        missing = n - len(first.samples)
        if missing > 0 and not self._warned_n and first.samples:
            self._warned_n = True
            from cascade.logging import get_logger

            get_logger().warning(
                "cascade.provider_ignored_n",
                provider=self.name,
                model=self.model,
                asked=n,
                got=len(first.samples),
                hint="set supports_n: false for this server",
            )
        return missing

    # -- sync -------------------------------------------------------------------------------------

    def _attempt(self, request: Request, n: int) -> Any:
        """One request's error mapping and bill (see :func:`cascade.providers._sdk.attempt`)."""
        return _sdk.attempt(
            self.name,
            openai,
            _CALL_ERRORS,
            streaming=self.stream,
            limit=self.max_response_bytes,
            input_tokens=_sdk.estimate_input_tokens(request),
            max_output=self.params.max_tokens * n,
            per_stop=self.params.max_tokens,
        )

    def _call(self, request: Request, n: int) -> Completion:
        kw = self.request_kwargs(request, n)
        start = time.perf_counter()
        with self._attempt(request, n) as got:
            if self.stream:
                streamed = _Streamed(got)
                with self.client.chat.completions.create(**kw, stream=True) as chunks:
                    for chunk in chunks:
                        streamed.add(chunk)
                response = streamed.final(self.name)
            else:
                response = self.client.chat.completions.create(**kw)
            return self.parse(response, time.perf_counter() - start, request, n)

    def complete(self, request: Request, n: int = 1) -> Completion:
        with _sdk.deadline(self.timeout):  # the timeout bounds the whole call, every sample
            if not self.supports_n:
                return _sdk.call_many(lambda: self._call(request, 1), n, self.parallel)
            first = self._call(request, n)
            missing = self._missing(first, n)
            if missing <= 0:
                return first
            rest = _sdk.call_many(lambda: self._call(request, 1), missing, self.parallel)
            return _sdk.merge([first, rest])

    # -- async ------------------------------------------------------------------------------------

    async def _acall(self, request: Request, n: int) -> Completion:
        kw = self.request_kwargs(request, n)
        client = self._async.get()
        start = time.perf_counter()
        with self._attempt(request, n) as got:
            if self.stream:
                streamed = _Streamed(got)
                async with await client.chat.completions.create(**kw, stream=True) as chunks:
                    async for chunk in chunks:
                        streamed.add(chunk)
                response = streamed.final(self.name)
            else:
                response = await client.chat.completions.create(**kw)
            return self.parse(response, time.perf_counter() - start, request, n)

    async def acomplete(self, request: Request, n: int = 1) -> Completion:
        async with _sdk.adeadline(self.timeout, self.name):  # the whole call, every sample
            if not self.supports_n:
                return await _sdk.acall_many(lambda: self._acall(request, 1), n, self.parallel)
            first = await self._acall(request, n)
            missing = self._missing(first, n)
            if missing <= 0:
                return first
            rest = await _sdk.acall_many(lambda: self._acall(request, 1), missing, self.parallel)
            return _sdk.merge([first, rest])

    # -- one sample, streamed (the LangChain front's live last tier) -------------------------------

    def stream_text(self, request: Request) -> Iterator[str | Completion]:
        """One sample streamed: its text deltas as they arrive, then its :class:`Completion` (as
        :meth:`complete` returns it; usage asked for in the stream). The timeout bounds the call."""
        kw = {**self.request_kwargs(request), "stream_options": {"include_usage": True}}
        start = time.perf_counter()
        streamed = _Streamed()
        with _errors(self.name):
            for step in _sdk.stream_steps(
                lambda: self.client.chat.completions.create(**kw, stream=True), self.timeout, streamed.add
            ):
                if isinstance(step, str):
                    yield step
            response = streamed.final(self.name)
        yield self.parse(response, time.perf_counter() - start, request, 1)

    async def astream_text(self, request: Request) -> AsyncIterator[str | Completion]:
        """Async :meth:`stream_text`."""
        kw = {**self.request_kwargs(request), "stream_options": {"include_usage": True}}
        client = self._async.get()
        start = time.perf_counter()
        streamed = _Streamed()
        with _errors(self.name):
            steps = _sdk.astream_steps(lambda: _achunks(client, kw), self.timeout, streamed.add, self.name)
            async for step in steps:
                if isinstance(step, str):
                    yield step
            response = streamed.final(self.name)
        yield self.parse(response, time.perf_counter() - start, request, 1)

    @property
    def client(self) -> Any:
        """The sync SDK client (made on first use, and again after :meth:`close`)."""
        return self._sync.get()

    def mapped(self) -> AbstractContextManager[None]:
        """The SDK's failures in cascade's words for requests made on :attr:`client` outside this
        provider's calls (the batch driver's uploads, jobs, polls and downloads)."""
        return _sdk.mapped(self.name, openai, _CALL_ERRORS, streaming=False)

    def close(self) -> None:
        """Close the sync HTTP client; a later call opens a new one."""
        self._sync.close()

    async def aclose(self) -> None:
        """Close the async HTTP client of the running event loop; a later call opens a new one."""
        await self._async.aclose()

    # -- budget -----------------------------------------------------------------------------------

    def max_usage(self, request: Request, n: int = 1) -> Usage:
        """Worst case: the prompt once (``n`` calls without native ``n``) plus every output token."""
        prompt = _sdk.estimate_input_tokens(request)
        calls = 1 if self.supports_n else n
        return Usage(prompt * calls, self.params.max_tokens * n)


class OpenAICompatibleProvider(OpenAIProvider):
    """A tier answered by an OpenAI-compatible server (vLLM, Ollama, llama.cpp, a gateway)."""

    kind = "openai_compatible"
    max_tokens_field = "max_tokens"  # what vLLM, Ollama and llama.cpp all read

    class Options(_CallOptions):
        """Provider options for ``provider: openai_compatible``."""

        base_url: str = Field(
            description="The server's OpenAI-compatible root, e.g. http://localhost:8000/v1."
        )
        api_key_env: str | None = Field(
            None, description="Environment variable holding a key, if it needs one."
        )
        supports_n: bool = Field(
            False, description="The server honours n (vLLM: true). Otherwise n samples are n calls."
        )

    @classmethod
    def from_config(  # type: ignore[override]
        cls, tier: TierSpec, options: OpenAICompatibleProvider.Options, ctx: Any
    ) -> OpenAICompatibleProvider:
        key = (
            _sdk.api_key(options.api_key_env, tier=tier.name, provider=f"{options.base_url}")
            if options.api_key_env
            else "not-needed"
        )
        provider = cls(
            tier.model,
            api_key=key,
            base_url=options.base_url,
            params=tier.params,
            timeout=tier.timeout,
            logprobs=options.logprobs,
            top_logprobs=options.top_logprobs,
            stream=options.stream,
            supports_n=options.supports_n,
            parallel=options.parallel,
            max_response_bytes=options.max_response_bytes,
        )
        return provider

    def __init__(self, model: str, *, base_url: str | None = None, **kw: Any) -> None:
        if not base_url:
            raise ConfigurationError("openai_compatible needs a base_url")
        kw.setdefault("supports_n", False)
        kw.setdefault("api_key", "not-needed")
        super().__init__(model, base_url=base_url, **kw)
        self.free = _sdk.is_local_url(base_url)


__all__ = [
    "OpenAICompatibleProvider",
    "OpenAIProvider",
    "to_openai_messages",
    "to_openai_tool_choice",
    "usage_of",
]
