"""Anthropic messages API (kind ``anthropic``).

System messages become the ``system`` parameter; tool results and assistant tool calls become
``tool_result`` / ``tool_use`` blocks; tools in OpenAI function format are converted to Anthropic's
(tools already in Anthropic's format pass through). The API has no ``n``: ``n`` samples are ``n``
calls, at most ``parallel`` at once (threads for ``complete``, tasks for ``acomplete``), each
billed for the prompt. ``temperature`` / ``top_p`` / ``params.extra`` travel in the request body.
Usage keeps ``cache_read_input_tokens`` and ``cache_creation_input_tokens`` apart from input.

The SDK client is built with ``max_retries=0`` and the tier's timeout: :mod:`cascade.retry` is the
only retry layer; the timeout bounds the whole call (all ``n`` calls, connect to last byte). Bodies
are checked before use: no or empty content blocks, an error object or a body that does not parse
is an :class:`~cascade.errors.InvalidResponseError`; usage is checked by
:func:`cascade.providers._sdk.check_usage`. Token logprobs and ``seed`` do not exist in this API.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from decimal import Decimal
from typing import Any

import anthropic
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message as AnthropicMessage
from pydantic import BaseModel, ConfigDict, Field

from cascade.errors import ConfigurationError
from cascade.policy.schema import GenerationParams, TierSpec
from cascade.providers import _sdk
from cascade.request import Request
from cascade.types import Completion, Message, Sample, ToolCall, Usage


def to_anthropic_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI-format function tool as an Anthropic tool (Anthropic-format tools pass through)."""
    if "input_schema" in tool or "function" not in tool:
        return dict(tool)
    fn = tool["function"]
    out: dict[str, Any] = {
        "name": fn["name"],
        "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
    }
    if fn.get("description"):
        out["description"] = fn["description"]
    return out


def to_anthropic_tool_choice(choice: str | Mapping[str, Any]) -> dict[str, Any]:
    """``Request.tool_choice`` (OpenAI style, or already Anthropic's) in Anthropic's form."""
    if isinstance(choice, str):
        if choice in ("auto", "none", "any"):
            return {"type": choice}
        if choice == "required":
            return {"type": "any"}
        return {"type": "tool", "name": choice}
    fn = choice.get("function")
    if choice.get("type") == "function" and isinstance(fn, Mapping):
        return {"type": "tool", "name": fn["name"]}
    return dict(choice)


def to_anthropic_messages(messages: tuple[Message, ...]) -> tuple[str | None, list[dict[str, Any]]]:
    """``(system, messages)`` in the Anthropic wire format; consecutive same-role turns merged."""
    system = "\n\n".join(m.content for m in messages if m.role == "system" and m.content) or None
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        blocks: list[dict[str, Any]]
        if m.role == "tool":
            role = "user"
            blocks = [{"type": "tool_result", "tool_use_id": m.tool_call_id or "", "content": m.content}]
        else:
            role = m.role
            blocks = [{"type": "text", "text": m.content}] if m.content else []
            blocks += [
                {"type": "tool_use", "id": tc.id, "name": tc.name, "input": dict(tc.arguments)}
                for tc in m.tool_calls
            ]
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return system, out


def usage_of(u: Any) -> Usage | None:
    """Our :class:`Usage` from an Anthropic ``usage`` (cache reads and writes counted apart); None
    when there is none or its counts are not integers (the caller estimates it)."""
    if u is None:
        return None
    counts = [
        _sdk.token_count(getattr(u, "input_tokens", None)),
        _sdk.token_count(getattr(u, "output_tokens", None)),
        _sdk.token_count(getattr(u, "cache_read_input_tokens", 0) or 0),
        _sdk.token_count(getattr(u, "cache_creation_input_tokens", 0) or 0),
    ]
    if any(c is None for c in counts):
        return None
    return Usage(*(c or 0 for c in counts))


def _observe(got: _sdk.Received, event: Any) -> None:
    """Note what a stream event (untrusted) carries (the SDK's accumulator then assembles it)."""
    got.events += 1
    kind = getattr(event, "type", None)
    if kind == "message_start":
        got.report(_sdk.reported_usage(getattr(event, "message", None), usage_of))
        got.finish(0, None)
    elif kind == "content_block_delta":
        delta = getattr(event, "delta", None)
        got.text(getattr(delta, "text", None))
        got.text(getattr(delta, "partial_json", None))
    elif kind == "message_delta":
        out = _sdk.token_count(getattr(getattr(event, "usage", None), "output_tokens", None))
        if out is not None and out >= 0 and got.usage is not None:
            got.report(replace(got.usage, output_tokens=out))
        got.finish(0, getattr(getattr(event, "delta", None), "stop_reason", None))
    elif kind == "message_stop":
        got.ended = True


def _accumulate(event: Any, message: Any, bufs: dict[int, bytes]) -> Any:
    """``message`` with ``event`` added (the SDK's accumulator: it raises on events it cannot place)."""
    return accumulate_event(event=event, current_snapshot=message, json_bufs=bufs)


_CALL_ERRORS: tuple[type[Exception], ...] = (anthropic.AnthropicError, *_sdk.WIRE_ERRORS)
"""The SDK's errors and the HTTP errors it lets through (both mapped by ``_sdk.map_error``)."""


def _text(event: Any) -> str | None:
    """The text an event of ``messages.stream`` adds, if any."""
    return event.text if getattr(event, "type", None) == "text" else None


def _errors(provider: str) -> AbstractContextManager[None]:
    """The anthropic SDK's failures in cascade's words, for sync and async streams alike (its
    requests map them through :func:`~cascade.providers._sdk.attempt`, the same
    :func:`~cascade.providers._sdk.mapped`)."""
    return _sdk.mapped(provider, anthropic, _CALL_ERRORS, streaming=True)


def parse(
    message: Any, latency_s: float = 0.0, request: Request | None = None, max_tokens: int | None = None
) -> Completion:
    """Our :class:`Completion` (one sample) from an Anthropic ``Message`` (untrusted: checked).

    With ``request`` and ``max_tokens``, usage is checked against the call's worst case.
    """
    rid = getattr(message, "_request_id", None)
    if not isinstance(message, AnthropicMessage):  # the SDK returns the text of a non-JSON body
        raise _sdk.invalid("anthropic", "not a message", _sdk.snippet(message), request_id=rid)
    billed = _sdk.reported_usage(message, usage_of)
    error = _sdk.error_object(message.model_extra)
    if error is not None or str(message.type) == "error":
        raise _sdk.invalid(
            "anthropic", "error object in a 200 response", error or "", request_id=rid, usage=billed
        )
    blocks = getattr(message, "content", None)
    if not isinstance(blocks, Sequence) or isinstance(blocks, str):
        raise _sdk.invalid("anthropic", "no content blocks", request_id=rid, usage=billed)
    if not blocks:
        raise _sdk.invalid("anthropic", "empty content blocks", request_id=rid, usage=billed)
    try:
        kinds = [b.type for b in blocks]
        if not all(isinstance(k, str) for k in kinds):
            raise TypeError("a content block without a type")
        texts = [b.text for b in blocks if b.type == "text"]
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("a text block without text")
        calls = tuple(
            ToolCall(
                str(b.name), dict(b.input) if isinstance(b.input, Mapping) else {"_value": b.input}, b.id
            )
            for b in blocks
            if b.type == "tool_use"
        )
        sample = Sample("".join(texts), tool_calls=calls, finish_reason=message.stop_reason)
        reported = usage_of(getattr(message, "usage", None))
    except _sdk.MALFORMED as exc:
        raise _sdk.invalid(
            "anthropic", "malformed content", f"{type(exc).__name__}: {exc}", request_id=rid, usage=billed
        ) from None
    usage, source = _sdk.settle_usage(
        reported,
        samples=(sample,),
        request=request,
        max_output=max_tokens,
        provider="anthropic",
        model=str(message.model),
        request_id=rid,
    )
    return Completion(
        samples=(sample,),
        usage=usage,
        model=message.model if isinstance(message.model, str) else "",
        request_id=rid,
        latency_s=latency_s,
        raw={"id": getattr(message, "id", None)},
        usage_source=source,
    )


class AnthropicProvider:
    """A tier answered by Anthropic's messages API."""

    kind = "anthropic"
    cache_multipliers = (Decimal("0.1"), Decimal("1.25"))
    """Cache reads and (5-minute) cache writes relative to the input price: a tier ``price:``
    without ``cached_input`` / ``cache_write`` is completed with these, as Anthropic bills."""

    class Options(BaseModel):
        """Provider options for ``provider: anthropic``."""

        model_config = ConfigDict(extra="forbid")
        api_key_env: str = Field("ANTHROPIC_API_KEY", description="Environment variable holding the key.")
        base_url: str | None = Field(None, description="Another endpoint (a gateway or proxy).")
        stream: bool = Field(
            False,
            description="Stream the response (needed for very large max_tokens); assembled before scoring.",
        )
        parallel: int = Field(4, ge=1, le=32, description="Concurrent calls when sampling several answers.")
        max_response_bytes: int = Field(
            _sdk.MAX_RESPONSE_BYTES,
            ge=1024,
            description="Refuse a response body larger than this while reading it.",
        )

    def __init__(
        self,
        model: str,
        *,
        api_key: str,
        base_url: str | None = None,
        params: GenerationParams | None = None,
        timeout: float = 60.0,
        stream: bool = False,
        parallel: int = 4,
        max_response_bytes: int = _sdk.MAX_RESPONSE_BYTES,
    ) -> None:
        self.model = model
        self.params = params or GenerationParams()
        if self.params.seed is not None:
            raise ConfigurationError(f"anthropic model {model!r}: the messages API has no seed")
        self.timeout = timeout
        self.stream = stream
        self.parallel = parallel
        self.max_response_bytes = max_response_bytes
        self.free = False
        client_kw: dict[str, Any] = {"api_key": api_key, "timeout": timeout, "max_retries": 0}
        if base_url:
            client_kw["base_url"] = base_url
        self._sync = _sdk.Reopening(
            lambda: anthropic.Anthropic(
                **client_kw, http_client=_sdk.http_client(anthropic.DefaultHttpxClient)
            )
        )
        self._sync.get()  # made now: a bad configuration fails here, not at the first call
        self._async = _sdk.PerLoop(
            lambda: anthropic.AsyncAnthropic(
                **client_kw, http_client=_sdk.ahttp_client(anthropic.DefaultAsyncHttpxClient)
            )
        )

    @classmethod
    def from_config(cls, tier: TierSpec, options: AnthropicProvider.Options, ctx: Any) -> AnthropicProvider:
        key = _sdk.api_key(options.api_key_env, tier=tier.name, provider="Anthropic")
        try:
            return cls(
                tier.model,
                api_key=key,
                base_url=options.base_url,
                params=tier.params,
                timeout=tier.timeout,
                stream=options.stream,
                parallel=options.parallel,
                max_response_bytes=options.max_response_bytes,
            )
        except ConfigurationError as exc:
            raise ConfigurationError(f"tier {tier.name!r}: {exc}") from None

    def request_kwargs(self, request: Request) -> dict[str, Any]:
        """The keyword arguments of ``messages.create`` for one sample of ``request``."""
        p = self.params
        system, messages = to_anthropic_messages(request.messages)
        kw: dict[str, Any] = {"model": self.model, "max_tokens": p.max_tokens, "messages": messages}
        if system is not None:
            kw["system"] = system
        if p.stop:
            kw["stop_sequences"] = list(p.stop)
        if request.tools:
            kw["tools"] = [to_anthropic_tool(t) for t in request.tools]
            if request.tool_choice is not None:
                kw["tool_choice"] = to_anthropic_tool_choice(request.tool_choice)
        body = {k: v for k, v in (("temperature", p.temperature), ("top_p", p.top_p)) if v is not None}
        body.update(p.extra)
        if body:
            kw["extra_body"] = body
        return kw

    def _attempt(self, request: Request) -> Any:
        """One request's error mapping and bill (see :func:`cascade.providers._sdk.attempt`)."""
        return _sdk.attempt(
            self.kind,
            anthropic,
            _CALL_ERRORS,
            streaming=self.stream,
            limit=self.max_response_bytes,
            input_tokens=_sdk.estimate_input_tokens(request),
            max_output=self.params.max_tokens,
            per_stop=self.params.max_tokens,
        )

    def _call(self, request: Request) -> Completion:
        kw = self.request_kwargs(request)
        start = time.perf_counter()
        with self._attempt(request) as got:
            if self.stream:
                message: Any = None
                failure: Exception | None = None
                bufs: dict[int, bytes] = {}  # partial tool JSON, by content block
                with self.client.messages.create(**kw, stream=True) as events:
                    for event in events:
                        _observe(got, event)
                        if failure is None:  # after a failure the rest is drained: produced, so billed
                            try:
                                message = accumulate_event(
                                    event=event, current_snapshot=message, json_bufs=bufs
                                )
                            except Exception as exc:
                                failure = exc
                if failure is not None:
                    raise failure
                _sdk.truncated(self.kind, got)
            else:
                message = self.client.messages.create(**kw)
            return parse(message, time.perf_counter() - start, request, self.params.max_tokens)

    async def _acall(self, request: Request) -> Completion:
        kw = self.request_kwargs(request)
        client = self._async.get()
        start = time.perf_counter()
        with self._attempt(request) as got:
            if self.stream:
                message: Any = None
                failure: Exception | None = None
                bufs: dict[int, bytes] = {}  # partial tool JSON, by content block
                async with await client.messages.create(**kw, stream=True) as events:
                    async for event in events:
                        _observe(got, event)
                        if failure is None:  # after a failure the rest is drained: produced, so billed
                            try:
                                message = accumulate_event(
                                    event=event, current_snapshot=message, json_bufs=bufs
                                )
                            except Exception as exc:
                                failure = exc
                if failure is not None:
                    raise failure
                _sdk.truncated(self.kind, got)
            else:
                message = await client.messages.create(**kw)
            return parse(message, time.perf_counter() - start, request, self.params.max_tokens)

    def stream_text(self, request: Request) -> Iterator[str | Completion]:
        """One sample streamed: its text deltas as they arrive, then its :class:`Completion` (as
        :meth:`complete` returns it). The timeout bounds the whole call."""
        kw = self.request_kwargs(request)
        start = time.perf_counter()
        with _errors(self.kind):
            for step in _sdk.stream_steps(lambda: self.client.messages.stream(**kw), self.timeout, _text):
                if isinstance(step, str):
                    yield step
                else:
                    message = step.get_final_message()
        yield parse(message, time.perf_counter() - start, request, self.params.max_tokens)

    async def astream_text(self, request: Request) -> AsyncIterator[str | Completion]:
        """Async :meth:`stream_text`."""
        kw = self.request_kwargs(request)
        client = self._async.get()
        start = time.perf_counter()
        with _errors(self.kind):
            steps = _sdk.astream_steps(lambda: client.messages.stream(**kw), self.timeout, _text, self.kind)
            async for step in steps:
                if isinstance(step, str):
                    yield step
                else:
                    message = await step.get_final_message()
        yield parse(message, time.perf_counter() - start, request, self.params.max_tokens)

    def complete(self, request: Request, n: int = 1) -> Completion:
        with _sdk.deadline(self.timeout):  # the timeout bounds all n calls together
            return _sdk.call_many(lambda: self._call(request), n, self.parallel)

    async def acomplete(self, request: Request, n: int = 1) -> Completion:
        async with _sdk.adeadline(self.timeout, self.kind):
            return await _sdk.acall_many(lambda: self._acall(request), n, self.parallel)

    @property
    def client(self) -> Any:
        """The sync SDK client (made on first use, and again after :meth:`close`)."""
        return self._sync.get()

    def mapped(self) -> AbstractContextManager[None]:
        """The SDK's failures in cascade's words for requests made on :attr:`client` outside this
        provider's calls (the batch driver's uploads, jobs, polls and downloads)."""
        return _sdk.mapped(self.kind, anthropic, _CALL_ERRORS, streaming=False)

    def close(self) -> None:
        """Close the sync HTTP client; a later call opens a new one."""
        self._sync.close()

    async def aclose(self) -> None:
        """Close the async HTTP client of the running event loop; a later call opens a new one."""
        await self._async.aclose()

    def max_usage(self, request: Request, n: int = 1) -> Usage:
        """Worst case: ``n`` calls, each billed for the prompt and up to ``max_tokens`` out."""
        return Usage(_sdk.estimate_input_tokens(request) * n, self.params.max_tokens * n)


__all__ = [
    "AnthropicProvider",
    "parse",
    "to_anthropic_messages",
    "to_anthropic_tool",
    "to_anthropic_tool_choice",
    "usage_of",
]
