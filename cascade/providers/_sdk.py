"""What the SDK-backed providers share: keys, error mapping, token estimates, parallel sampling.

Every SDK error is mapped here, at the edge, to the cascade error tree (``raise ... from exc``)::

    SDK error                               cascade error                 retried by cascade.retry
    APITimeoutError                         ProviderTimeoutError          yes
    APIConnectionError                      TransientProviderError        yes
    429 (but OpenAI ``insufficient_quota``)  RateLimitError (retry_after)  yes
    408, 409, 5xx, 529 overloaded           TransientProviderError        yes
    ``x-should-retry: true`` / ``false``     transient / permanent         as the server says
    any other status (400, 401, 403, 404)   PermanentProviderError        no
    request missing from a vcrpy cassette   PermanentProviderError        no
    a 200 that is not a usable answer       InvalidResponseError          yes
    (an error event in a stream included)
    httpx errors an SDK lets through         ProviderTimeoutError /        yes
                                            TransientProviderError

Responses are untrusted input. :func:`invalid` builds the error for a body that does not parse,
is HTML, lacks choices or content blocks, or carries an error object; :func:`check_usage` replaces
missing usage by an estimate, refuses negative counts and clamps impossible ones to the reserved
worst case (``Completion.usage_source`` says which, and a log event says why).

The tier's ``timeout`` is a deadline for the whole call, all samples included: :func:`deadline`
sets it for the calling thread (sync clients get it through :func:`http_client`, whose sockets
never wait past it, so a server dripping one byte at a time cannot stretch a call), and
:func:`adeadline` wraps an async call in ``asyncio.timeout``.

This module imports no SDK: the provider modules pass theirs in.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from decimal import Decimal
from types import ModuleType
from typing import Any, TypeVar
from urllib.parse import urlsplit
from weakref import WeakKeyDictionary

import httpcore2
import httpx2

from cascade.errors import (
    ConfigurationError,
    InvalidResponseError,
    PermanentProviderError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    TransientProviderError,
)
from cascade.types import Completion, Request, Sample, ToolCall, Usage, UsageSource

T = TypeVar("T")


# -- credentials ------------------------------------------------------------------------------


def api_key(env: str, *, tier: str, provider: str) -> str:
    """The key in environment variable ``env``; a :class:`ConfigurationError` naming it if unset."""
    value = os.environ.get(env, "").strip()
    if not value:
        raise ConfigurationError(
            f"tier {tier!r}: environment variable {env} is not set ({provider} API key); "
            f"export {env}=... or name another variable with `options: {{api_key_env: ...}}`"
        )
    return value


def is_local_url(url: str | None) -> bool:
    """True for a server on this machine or the local network (priced 0 unless configured)."""
    if not url:
        return False
    host = (urlsplit(url).hostname or "").lower()
    if host in ("localhost", "::1", "0.0.0.0") or host.endswith((".local", ".localhost", ".internal")):  # noqa: S104
        return True
    if "." not in host:  # a single-label name: a container or LAN host (http://vllm:8000/v1)
        return True
    parts = host.split(".")
    if len(parts) == 4 and all(p.isdigit() for p in parts):
        a, b = int(parts[0]), int(parts[1])
        return a in (10, 127) or (a == 192 and b == 168) or (a == 172 and 16 <= b <= 31)
    return False


# -- errors -----------------------------------------------------------------------------------


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000
        except ValueError:
            value = -1.0
        if 0 <= value < math.inf:
            return value
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        parsed = email.utils.parsedate_tz(raw)
        if parsed is None:
            return None
        seconds = email.utils.mktime_tz(parsed) - time.time()
    return max(0.0, seconds) if seconds < math.inf else None


def _message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        err = body.get("error", body)
        if isinstance(err, Mapping) and isinstance(err.get("message"), str):
            kind = err.get("type") or err.get("code")
            text = str(err["message"])
            return f"{kind}: {text}"[:300] if isinstance(kind, str) and kind else text[:300]
    return str(getattr(exc, "message", "") or exc)[:300]


def _error_code(exc: Any) -> str | None:
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        err = body.get("error", body)
        if isinstance(err, Mapping):
            code = err.get("code") or err.get("type")
            return code if isinstance(code, str) else None
    return None


def _is_cassette_miss(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if type(seen).__name__ == "CannotOverwriteExistingCassetteException":
            return True
        seen = seen.__cause__ or seen.__context__
    return False


WIRE_ERRORS: tuple[type[Exception], ...] = (httpx2.HTTPError,)
"""HTTP errors an SDK lets through unwrapped (raised while a streamed body is read)."""

STREAM_GARBAGE: tuple[type[Exception], ...] = (
    AssertionError,
    AttributeError,
    TypeError,
    ValueError,
    KeyError,
    IndexError,
)
"""What an SDK's stream accumulator raises on events that are not what it expects (JSON instead of
server-sent events, events out of order): the stream does not parse."""


def map_error(exc: BaseException, *, provider: str, sdk: ModuleType) -> ProviderError:
    """The cascade error for an SDK (or unwrapped HTTP) exception (the caller raises it ``from exc``)."""
    name = type(exc).__name__
    if _is_cassette_miss(exc):
        return PermanentProviderError(
            f"{provider}: request not found in the cassette (re-record it; see cassettes/README.md)",
            provider=provider,
        )
    if isinstance(exc, httpx2.TimeoutException | sdk.APITimeoutError):
        return _timed_out(exc, provider)
    if isinstance(exc, httpx2.HTTPError):
        return TransientProviderError(f"{provider}: connection error ({name})", provider=provider)
    if isinstance(exc, sdk.APIConnectionError):
        return TransientProviderError(f"{provider}: connection error ({name})", provider=provider)
    if isinstance(exc, sdk.APIStatusError):
        status = int(exc.status_code)
        headers = exc.response.headers
        rid = getattr(exc, "request_id", None) or headers.get("x-request-id") or headers.get("request-id")
        kw: dict[str, Any] = {
            "provider": provider,
            "status_code": status,
            "request_id": rid,
            "retry_after": retry_after(headers),
        }
        message = f"{provider}: {name}: {_message(exc)}"
        if 200 <= status < 300:  # an error event inside a streamed 200
            return invalid(provider, "error event in the stream", _message(exc), request_id=rid)
        should = (headers.get("x-should-retry") or "").lower()
        if status == 429 and _error_code(exc) != "insufficient_quota" and should != "false":
            return RateLimitError(message, **kw)
        if should == "true" or (should != "false" and (status in (408, 409) or status >= 500)):
            return TransientProviderError(message, **kw)
        return PermanentProviderError(message, **kw)
    if isinstance(exc, sdk.APIError):  # an error the server sent inside a 200 (a stream's error event)
        return invalid(provider, "error event in the stream", _message(exc))
    return PermanentProviderError(f"{provider}: {name}: {str(exc)[:300]}", provider=provider)


def _timed_out(exc: BaseException, provider: str) -> ProviderTimeoutError:
    """A timeout; ``cut_off`` unless it happened before the request went out (connect, pool).

    A call abandoned while the server may be generating can be billed: the engine charges it at
    the call's worst case. One that never connected cannot be.
    """
    err = ProviderTimeoutError(f"{provider}: request timed out", provider=provider)
    cause: BaseException | None = exc
    before_sending = False
    for _ in range(4):  # the SDK's timeout wraps httpx's, which may wrap httpcore's
        if cause is None:
            break
        if isinstance(cause, httpx2.ConnectTimeout | httpx2.PoolTimeout | httpcore2.ConnectTimeout):
            before_sending = True
            break
        cause = cause.__cause__ or cause.__context__
    err.cut_off = not before_sending
    return err


def invalid(
    provider: str,
    reason: str,
    detail: str = "",
    *,
    request_id: str | None = None,
    usage: Usage | None = None,
) -> InvalidResponseError:
    """The error for a 200 whose body is not a usable answer (``reason``: a few words).

    ``usage``: what the body reported it used (billed although unusable); negative counts are ignored.
    """
    text = f"{provider}: invalid response: {reason}" + (f" ({detail[:200]})" if detail else "")
    err = InvalidResponseError(text, reason=reason, provider=provider, status_code=200, request_id=request_id)
    counts = () if usage is None else (usage.input_tokens, usage.output_tokens, usage.cached_input_tokens)
    if usage is not None and min(*counts, usage.cache_creation_tokens) >= 0 and usage != Usage():
        err.usage = usage
    return err


def error_object(body_extra: Mapping[str, Any] | None) -> str | None:
    """The message of an ``error`` object found in a 200 body, if there is one."""
    err = (body_extra or {}).get("error")
    if err is None:
        return None
    if isinstance(err, Mapping):
        kind, message = err.get("type") or err.get("code"), err.get("message")
        text = f"{kind}: {message}" if isinstance(kind, str) and kind else str(message)
        return text[:200]
    return str(err)[:200]


# -- deadlines --------------------------------------------------------------------------------

_DEADLINE: ContextVar[float | None] = ContextVar("cascade_deadline", default=None)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Sockets of :func:`http_client` clients in this thread give up ``seconds`` from now.

    An enclosing, earlier deadline stays in force. The SDK reports the expiry as its timeout
    error, which :func:`map_error` turns into :class:`ProviderTimeoutError`.
    """
    at = time.monotonic() + seconds
    outer = _DEADLINE.get()
    token = _DEADLINE.set(at if outer is None else min(at, outer))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def _remaining(timeout: float | None, what: str) -> float | None:
    at = _DEADLINE.get()
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise (httpcore2.ConnectTimeout if what == "connect" else httpcore2.ReadTimeout)("deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore2.NetworkStream):
    """A socket whose every read and write waits no longer than the thread's deadline."""

    def __init__(self, inner: httpcore2.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _remaining(timeout, "read"))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _remaining(timeout, "write"))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> Any:
        return _DeadlineStream(
            self._inner.start_tls(ssl_context, server_hostname, _remaining(timeout, "connect"))
        )

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore2.NetworkBackend):
    def __init__(self, inner: httpcore2.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.NetworkStream:
        stream = self._inner.connect_tcp(
            host, port, _remaining(timeout, "connect"), local_address, socket_options
        )
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.NetworkStream:
        stream = self._inner.connect_unix_socket(path, _remaining(timeout, "connect"), socket_options)
        return _DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _wrap_sockets(transport: Any) -> bool:
    """Make ``transport``'s connection pool (direct or through a proxy) honour :func:`deadline`."""
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if not isinstance(pool, httpcore2.ConnectionPool) or not isinstance(backend, httpcore2.NetworkBackend):
        return False
    if not isinstance(backend, _DeadlineBackend):
        pool._network_backend = _DeadlineBackend(backend)
    return True


def http_client(factory: Callable[..., httpx2.Client]) -> httpx2.Client:
    """A sync HTTP client for an SDK (``factory``: its ``DefaultHttpxClient``) that honours
    :func:`deadline`: the sockets of its connection pools (direct, and through proxies from the
    environment) never wait past the deadline."""
    client = factory()  # its own transports: proxies from the environment stay honoured
    for transport in [client._transport, *client._mounts.values()]:
        if transport is not None:
            _wrap_sockets(transport)
    return client


class adeadline:  # noqa: N801 - used like a function: ``async with adeadline(...)``
    """The async call inside gives up after ``seconds`` with :class:`ProviderTimeoutError`."""

    __slots__ = ("_provider", "_seconds", "_timeout")

    def __init__(self, seconds: float, provider: str) -> None:
        self._seconds = seconds
        self._provider = provider
        self._timeout = asyncio.timeout(seconds)

    async def __aenter__(self) -> None:
        await self._timeout.__aenter__()

    async def __aexit__(self, kind: Any, exc: Any, tb: Any) -> None:
        try:
            await self._timeout.__aexit__(kind, exc, tb)
        except TimeoutError:
            err = ProviderTimeoutError(
                f"{self._provider}: no complete answer within the tier's timeout of {self._seconds:g} s",
                provider=self._provider,
            )
            err.cut_off = True  # the phase is unknown here: a call that may be billed is charged
            raise err from None


def stream_steps(
    open_stream: Callable[[], Any], timeout: float, text: Callable[[Any], str | None]
) -> Iterator[str | Any]:
    """A streamed call's text deltas as they arrive, then the SDK's stream object (for its final
    message). ``timeout`` bounds the whole call, each step under :func:`deadline` (never across a
    ``yield``: the consumer's code runs with no deadline of ours)."""
    at = time.monotonic() + timeout
    with deadline(timeout):
        manager = open_stream()
        events = manager.__enter__()
    try:
        it = iter(events)
        while True:
            with deadline(at - time.monotonic()):
                event = next(it, None)
            if event is None:
                break
            delta = text(event)
            if delta:
                yield delta
        yield events
    finally:
        manager.__exit__(None, None, None)


async def astream_steps(
    open_stream: Callable[[], Any], timeout: float, text: Callable[[Any], str | None], provider: str
) -> Any:
    """Async :func:`stream_steps` (an async generator), each step under :class:`adeadline`."""
    at = time.monotonic() + timeout
    async with adeadline(timeout, provider):
        manager = open_stream()
        events = await manager.__aenter__()
    try:
        it = aiter(events)
        while True:
            async with adeadline(max(0.0, at - time.monotonic()), provider):
                event = await anext(it, None)
            if event is None:
                break
            delta = text(event)
            if delta:
                yield delta
        yield events
    finally:
        await manager.__aexit__(None, None, None)


MALFORMED: tuple[type[Exception], ...] = (AttributeError, TypeError, ValueError, KeyError)
"""What reading fields of a body the SDK built without validation raises when it is malformed."""

UNPARSEABLE: tuple[type[Exception], ...] = (json.JSONDecodeError, UnicodeDecodeError)
"""What an SDK raises for a body that is not JSON (or not UTF-8) although it says it is."""


def reported_usage(body: Any, read: Callable[[Any], Usage | None]) -> Usage | None:
    """What ``body`` reports it used (``read``: the provider's ``usage_of``), read defensively: a
    body without a usable answer may still have been billed. None when absent or malformed."""
    try:
        return read(getattr(body, "usage", None))
    except MALFORMED:
        return None


def snippet(body: Any) -> str:
    """The start of a body that is not what was expected, on one line (its type if not text)."""
    text = body if isinstance(body, str) else type(body).__name__
    return " ".join(text.split())[:80]


# -- usage sanity -----------------------------------------------------------------------------


def _logger() -> Any:
    """The event logger when the application listens (as the engine does), else None."""
    from cascade.logging import listening

    return listening()


FAR = 2
"""Reported input tokens above ``FAR`` x the (already generous) estimate + ``SLACK`` are impossible."""
SLACK = 1024


def token_count(value: Any) -> int | None:
    """A token count from an untrusted field: an int (or integral float); None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def estimate_output_tokens(samples: Sequence[Sample]) -> int:
    """A generous output-token count for the returned samples (text and tool-call arguments)."""
    texts = [text for s in samples for text in (s.text, *_call_texts(s.tool_calls))]
    return sum(_text_tokens(text) + 1 for text in texts)


def check_usage(
    usage: Usage | None,
    *,
    samples: Sequence[Sample],
    bound: Usage,
    provider: str,
    model: str,
    request_id: str | None = None,
) -> tuple[Usage, UsageSource]:
    """Usage fit to bill: ``bound`` is the worst case reserved for this call (``max_usage``).

    Missing usage is estimated (the bound's input, the returned text's output); negative counts
    raise :class:`InvalidResponseError`; input far above the estimate, or output above the bound
    (``max_tokens`` x samples) are clamped to the bound. Anything but ``reported`` is logged.
    """
    if usage is None:
        estimated = Usage(bound.input_tokens, min(estimate_output_tokens(samples), bound.output_tokens))
        log = _logger()
        if log is not None:
            log.warning(
                "cascade.usage_estimated",
                provider=provider,
                model=model,
                request_id=request_id,
                input_tokens=estimated.input_tokens,
                output_tokens=estimated.output_tokens,
            )
        return estimated, "estimated"
    counts = (usage.input_tokens, usage.output_tokens, usage.cached_input_tokens, usage.cache_creation_tokens)
    if min(counts) < 0:
        raise invalid(provider, "negative token counts", str(usage), request_id=request_id)
    prompt_side = usage.input_tokens + usage.cached_input_tokens + usage.cache_creation_tokens
    too_much_in = prompt_side > FAR * bound.input_tokens + SLACK
    too_much_out = usage.output_tokens > bound.output_tokens
    if not (too_much_in or too_much_out):
        return usage, "reported"
    room = bound.input_tokens
    creation = min(usage.cache_creation_tokens, room) if too_much_in else usage.cache_creation_tokens
    cached = min(usage.cached_input_tokens, room - creation) if too_much_in else usage.cached_input_tokens
    inp = min(usage.input_tokens, room - creation - cached) if too_much_in else usage.input_tokens
    clamped = Usage(inp, min(usage.output_tokens, bound.output_tokens), cached, creation)
    log = _logger()
    if log is not None:
        log.warning(
            "cascade.usage_clamped",
            provider=provider,
            model=model,
            request_id=request_id,
            reported_input=prompt_side,
            reported_output=usage.output_tokens,
            bound_input=bound.input_tokens,
            bound_output=bound.output_tokens,
        )
    return clamped, "clamped"


def settle_usage(
    reported: Usage | None,
    *,
    samples: Sequence[Sample],
    request: Request | None,
    max_output: int | None,
    provider: str,
    model: str,
    request_id: str | None = None,
) -> tuple[Usage, UsageSource]:
    """A parsed body's usage: checked by :func:`check_usage` against the call's worst case (the
    prompt once, ``max_output`` out) when ``request`` and ``max_output`` are known, else as reported."""
    if request is None or max_output is None:
        return (reported, "reported") if reported is not None else (Usage(), "estimated")
    return check_usage(
        reported,
        samples=samples,
        bound=Usage(estimate_input_tokens(request), max_output),
        provider=provider,
        model=model,
        request_id=request_id,
    )


# -- token estimates --------------------------------------------------------------------------


def estimate_input_tokens(request: Request) -> int:
    """A conservative (high) input-token count without a tokenizer or network.

    ASCII text at 3 characters a token (tokenizers average about 4), any other character a
    token of its own, plus a few tokens of framing per message.
    """
    texts = [m.content for m in request.messages]
    texts += [text for m in request.messages for text in _call_texts(m.tool_calls)]
    texts += [json.dumps(t) for t in request.tools]
    return sum(_text_tokens(text) for text in texts) + 8 * len(request.messages) + 16


def _text_tokens(text: str) -> int:
    """ASCII at 3 characters a token (tokenizers average about 4), any other character a token."""
    ascii_chars = len(text) if text.isascii() else len(text.encode("ascii", "ignore"))
    return math.ceil(ascii_chars / 3) + (len(text) - ascii_chars)


def _call_texts(calls: Iterable[ToolCall]) -> list[str]:
    return [json.dumps(dict(tc.arguments)) + tc.name for tc in calls]


# -- several calls for several samples ---------------------------------------------------------


_SOURCE_RANK: dict[UsageSource, int] = {"reported": 0, "estimated": 1, "clamped": 2}


def merge(parts: Sequence[Completion], errors: Sequence[ProviderError] = ()) -> Completion:
    """One completion from several calls' completions (samples in order, usage summed).

    ``usage_source`` is the least trustworthy of the parts' (clamped, then estimated).
    """
    first = parts[0]
    usage = Usage()
    for p in parts:
        usage = usage + p.usage
    raw: dict[str, Any] = {"calls": len(parts), "request_ids": [p.request_id for p in parts]}
    # failures inside a part (itself merged from several calls) still count
    for e in errors:  # a failed call that reported usage was billed all the same
        if e.usage is not None:
            usage = usage + e.usage
    failed = len(errors) + sum(int(p.raw.get("failed_calls", 0)) for p in parts)
    messages = [str(e) for e in errors] + [m for p in parts for m in p.raw.get("errors", ())]
    if failed:
        raw["failed_calls"] = failed
        raw["errors"] = messages
    cut = sum(1 for e in errors if e.cut_off) + sum(int(p.raw.get("cut_off_calls", 0)) for p in parts)
    if cut:  # calls cut off in flight may be billed: the engine charges each one's worst case
        raw["cut_off_calls"] = cut
    return Completion(
        samples=tuple(s for p in parts for s in p.samples),
        usage=usage,
        model=first.model,
        cost=None,
        request_id=first.request_id,
        latency_s=max(p.latency_s for p in parts),
        raw=raw,
        usage_source=max((p.usage_source for p in parts), key=_SOURCE_RANK.__getitem__),
    )


def _gathered(results: Sequence[Completion | ProviderError]) -> Completion:
    ok = [r for r in results if isinstance(r, Completion)]
    errors = [r for r in results if isinstance(r, ProviderError)]
    if not ok:
        first = errors[0]  # it speaks for all: what every failed call may have cost
        billed = [e.usage for e in errors if e.usage is not None]
        if billed:
            total = billed[0]
            for u in billed[1:]:
                total = total + u
            first.usage = total
        first.cut_off = any(e.cut_off for e in errors)
        raise first
    # Calls that succeeded were billed: return their samples (fewer than asked) rather than
    # throw away paid answers and retry them all.
    return merge(ok, errors)


def call_many(fn: Callable[[], Completion], k: int, parallel: int) -> Completion:
    """``k`` calls of ``fn`` on at most ``parallel`` threads, merged."""
    if k == 1:
        return fn()
    at = _DEADLINE.get()  # worker threads do not inherit context variables: pass the deadline on

    def one(_: int) -> Completion | ProviderError:
        token = _DEADLINE.set(at)
        try:
            return fn()
        except ProviderError as exc:
            return exc
        finally:
            _DEADLINE.reset(token)

    with ThreadPoolExecutor(max_workers=max(1, min(k, parallel))) as pool:
        return _gathered(list(pool.map(one, range(k))))


async def acall_many(fn: Callable[[], Awaitable[Completion]], k: int, parallel: int) -> Completion:
    """``k`` concurrent calls of ``fn``, at most ``parallel`` at once, merged."""
    if k == 1:
        return await fn()
    gate = asyncio.Semaphore(max(1, parallel))

    async def one() -> Completion | ProviderError:
        async with gate:
            try:
                return await fn()
            except ProviderError as exc:
                return exc

    return _gathered(await asyncio.gather(*(one() for _ in range(k))))


# -- failed calls that may have been billed ---------------------------------------------------


class _BilledError(ProviderError):
    """Carries a billed failure through the retry layer without a retry (see :func:`call_charging`)."""

    def __init__(self, error: ProviderError) -> None:
        super().__init__(str(error))
        self.error = error


def billed(error: ProviderError) -> bool:
    """Whether a failed call may have been billed (usage reported, or cut off in flight)."""
    return error.usage is not None or error.cut_off


def failure_charge(error: ProviderError, price: Any, worst: Usage) -> Decimal:
    """What a failed call is charged: its reported usage (at most ``worst``'s cost), the worst case
    when cut off in flight, else nothing. ``price``: a :class:`~cascade.money.Price`."""
    most: Decimal = price.cost(worst)
    if error.cut_off:
        return most
    if error.usage is not None:
        reported: Decimal = price.cost(error.usage)
        return max(min(reported, most), Decimal(0))
    return Decimal(0)


def call_charging(fn: Callable[[], Completion], policy: Any) -> Completion:
    """``fn`` with the retry ``policy`` (a :class:`~cascade.retry.RetryPolicy`), except that a
    failure that may have been billed is raised at once: a reservation covers one call of it."""
    from cascade.retry import call_with_retry

    def once() -> Completion:
        try:
            return fn()
        except ProviderError as exc:
            if billed(exc):
                raise _BilledError(exc) from None
            raise

    try:
        return call_with_retry(once, policy)[0]
    except _BilledError as exc:
        exc.error.retries = exc.retries
        raise exc.error from None


async def acall_charging(fn: Callable[[], Awaitable[Completion]], policy: Any) -> Completion:
    """Async :func:`call_charging`."""
    from cascade.retry import acall_with_retry

    async def once() -> Completion:
        try:
            return await fn()
        except ProviderError as exc:
            if billed(exc):
                raise _BilledError(exc) from None
            raise

    try:
        return (await acall_with_retry(once, policy))[0]
    except _BilledError as exc:
        exc.error.retries = exc.retries
        raise exc.error from None


class Reopening:
    """A sync SDK client made on first use and again after :meth:`close` (a closed cascade reopens).

    ``Cascade.aclose()`` closes the sync clients too; a later ``run()`` must not meet the SDK's raw
    "client has been closed" error, so the next call simply makes a new client.
    """

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._client: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._factory()
                client = self._client
        return client

    def close(self) -> None:
        """Close the client, if one was made; the next :meth:`get` makes a new one."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


class PerLoop:
    """One async SDK client per running event loop (an async client must not cross loops)."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._clients: WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = WeakKeyDictionary()

    def get(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            for old in [lp for lp in self._clients if lp.is_closed()]:
                del self._clients[old]  # a client can keep its dead loop alive: drop both
            client = self._clients[loop] = self._factory()
        return client

    async def aclose(self) -> None:
        """Close the running loop's client, if one was made."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()


__all__ = [
    "PerLoop",
    "Reopening",
    "acall_charging",
    "acall_many",
    "adeadline",
    "api_key",
    "billed",
    "call_charging",
    "call_many",
    "check_usage",
    "deadline",
    "error_object",
    "estimate_input_tokens",
    "estimate_output_tokens",
    "failure_charge",
    "http_client",
    "invalid",
    "is_local_url",
    "map_error",
    "merge",
    "reported_usage",
    "retry_after",
    "settle_usage",
    "snippet",
    "token_count",
]
