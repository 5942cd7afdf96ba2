"""What the SDK-backed providers share: keys, deadlines, billing of started responses, parallel
sampling; and, re-exported from :mod:`~cascade.providers.mapping` and :mod:`~cascade.providers.usage`,
error mapping and usage sanity.

Every SDK error is mapped at the edge (:func:`map_error`) to the cascade error tree (``from exc``)::

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

A response that has started (a 2xx status and any body byte or stream event read) is billable:
:func:`attempt` wraps each request, :class:`Received` counts what came back (bytes against the size
limit and the deadline, stream events, text and tool arguments, the last usage reported), and
:func:`charge_started` makes a failure carry what it produced (see the billing rule in docs/providers.md).

This module imports no SDK: the provider modules pass theirs in.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any, TypeVar
from urllib.parse import urlsplit
from weakref import WeakKeyDictionary

import httpcore2
import httpx2

from cascade.errors import (
    ConfigurationError,
    InvalidResponseError,
    ProviderError,
    ProviderTimeoutError,
)
from cascade.providers.mapping import (
    STREAM_GARBAGE,
    UNPARSEABLE,
    WIRE_ERRORS,
    ResponseTooLarge,
    error_object,
    invalid,
    map_error,
    mapped,
    retry_after,
)
from cascade.providers.usage import (
    check_usage,
    estimate_input_tokens,
    estimate_output_tokens,
    settle_usage,
    token_count,
)
from cascade.retry import CANCEL, Cancellation, deadline
from cascade.retry import DEADLINE as _DEADLINE
from cascade.types import Completion, Usage, UsageSource

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)


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


# -- deadlines --------------------------------------------------------------------------------


def _remaining(timeout: float | None, what: str) -> float | None:
    at = _DEADLINE.get()
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise (httpcore2.ConnectTimeout if what == "connect" else httpcore2.ReadTimeout)("deadline passed")
    return left if timeout is None else min(timeout, left)


def _not_cancelled(error: type[Exception]) -> Cancellation | None:
    """The thread's :class:`~cascade.retry.Cancellation` (None without one); ``error`` if cancelled."""
    scope = CANCEL.get()
    if scope is not None and scope.cancelled:
        raise error("cancelled")
    return scope


class _DeadlineStream(httpcore2.NetworkStream):
    """A socket whose every read and write waits no longer than the thread's deadline, and that a
    :class:`~cascade.retry.Cancellation` of the thread ends (a read in progress: its socket is shut)."""

    def __init__(self, inner: httpcore2.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        scope = _not_cancelled(httpcore2.ReadError)
        if scope is None:
            return self._inner.read(max_bytes, _remaining(timeout, "read"))
        abort = self._shut
        if not scope.enter(abort):
            raise httpcore2.ReadError("cancelled")
        try:
            data = self._inner.read(max_bytes, _remaining(timeout, "read"))
        finally:
            scope.leave(abort)
        _not_cancelled(httpcore2.ReadError)  # shut while reading: what came back is cut off
        return data

    def _shut(self) -> None:
        sock = self._inner.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        _not_cancelled(httpcore2.WriteError)
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
        _not_cancelled(httpcore2.ConnectError)
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


_TLS: dict[tuple[str | None, str | None], ssl.SSLContext] = {}
_TLS_LOCK = threading.Lock()


def tls_context() -> ssl.SSLContext:
    """The default certificate check (httpx's, ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` honoured), built
    once per process and setting: httpx builds one per client, reading the CA bundle each time (about
    80 ms, paid by every provider's every client)."""
    key = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    with _TLS_LOCK:
        ctx = _TLS.get(key)
        if ctx is None:
            ctx = _TLS[key] = httpx2.create_ssl_context()
        return ctx


def http_client(factory: Callable[..., httpx2.Client]) -> httpx2.Client:
    """A sync HTTP client for an SDK (``factory``: its ``DefaultHttpxClient``) that honours
    :func:`deadline`: the sockets of its connection pools (direct, and through proxies from the
    environment) never wait past the deadline, and its responses are counted by :func:`receiving`."""
    # own transports: proxies stay honoured
    client = factory(event_hooks={"response": [_on_response]}, verify=tls_context())
    for transport in [client._transport, *client._mounts.values()]:
        if transport is not None:
            _wrap_sockets(transport)
    return client


class adeadline:  # noqa: N801 - used like a function: ``async with adeadline(...)``
    """The async call inside gives up after ``seconds`` with :class:`ProviderTimeoutError`.

    An enclosing, earlier deadline (:func:`deadline`, or an outer ``adeadline``) stays in force; the
    deadline is also set for :func:`receiving`, which keeps it while a body is read.
    """

    __slots__ = ("_provider", "_seconds", "_timeout", "_token")

    def __init__(self, seconds: float, provider: str) -> None:
        self._seconds = seconds
        self._provider = provider
        self._timeout: asyncio.Timeout | None = None
        self._token: Any = None

    async def __aenter__(self) -> None:
        now = time.monotonic()
        outer = _DEADLINE.get()
        at = now + self._seconds if outer is None else min(now + self._seconds, outer)
        self._token = _DEADLINE.set(at)
        self._timeout = asyncio.timeout(max(0.0, at - now))
        await self._timeout.__aenter__()

    async def __aexit__(self, kind: Any, exc: Any, tb: Any) -> None:
        assert self._timeout is not None
        try:
            await self._timeout.__aexit__(kind, exc, tb)
        except TimeoutError:
            err = ProviderTimeoutError(
                f"{self._provider}: no complete answer within the tier's timeout of {self._seconds:g} s",
                provider=self._provider,
            )
            err.cut_off = True  # the phase is unknown here: a call that may be billed is charged
            raise err from None
        finally:
            _DEADLINE.reset(self._token)


# -- what an attempt received: the size limit and the bill of a response that started ----------

MAX_RESPONSE_BYTES = 32 * 2**20
"""The default response size limit (32 MiB, raw bytes off the wire): the largest real answers (128k
output tokens with 20 top logprobs each) stay well under it; larger bodies are refused while read."""

END_OF_LENGTH = frozenset({"length", "max_tokens"})
"""Finish reasons that mean ``max_tokens`` were produced."""


@dataclass(slots=True)
class Received:
    """What one attempt (one HTTP request) has received so far: bytes, stream events, text, usage.

    A response that has started (a 2xx status and any body byte) is billable: :func:`charge_started`
    turns this into what the failed attempt is charged. ``usage`` keeps the last usage a stream
    reported (a later ``usage: null`` does not replace it).
    """

    limit: int = MAX_RESPONSE_BYTES
    streaming: bool = False
    status: int | None = None
    body_bytes: int = 0
    events: int = 0
    ascii_chars: int = 0
    other_chars: int = 0
    usage: Usage | None = None
    open: set[int] = field(default_factory=set)  # choices (OpenAI) / messages still without a finish
    finishes: int = 0
    length_stops: int = 0  # finish reasons that mean max_tokens were produced
    ended: bool = False  # the stream's end marker ([DONE], message_stop)
    tail: bytes = b""

    @property
    def started(self) -> bool:
        return (
            self.status is not None and 200 <= self.status < 300 and (self.body_bytes > 0 or self.events > 0)
        )

    def body(self, chunk: bytes) -> None:
        """A chunk of the body: counted against the limit and the deadline."""
        self.body_bytes += len(chunk)
        if self.body_bytes > self.limit:
            raise ResponseTooLarge(f"response larger than {self.limit} bytes")
        if self.streaming:
            self.tail = (self.tail + chunk)[-32:]
            self.ended = self.ended or b"[DONE]" in self.tail
        at = _DEADLINE.get()
        if at is not None and time.monotonic() >= at:
            raise httpx2.ReadTimeout("deadline passed while reading the response")

    def text(self, value: Any) -> None:
        """Text or tool-call arguments received in a stream event (anything else is ignored)."""
        if isinstance(value, str) and value:
            ascii_chars = len(value) if value.isascii() else len(value.encode("ascii", "ignore"))
            self.ascii_chars += ascii_chars
            self.other_chars += len(value) - ascii_chars

    def finish(self, index: int, reason: Any) -> None:
        """A finish reason for choice ``index`` (None: the choice is still open)."""
        if reason is None:
            self.open.add(index)
            return
        self.open.discard(index)
        self.finishes += 1
        self.length_stops += reason in END_OF_LENGTH

    def report(self, usage: Usage | None) -> None:
        if usage is not None:
            self.usage = usage

    @property
    def complete(self) -> bool:
        """A stream that reached its end marker, or a finish reason for every choice."""
        return self.ended or (self.finishes > 0 and not self.open)

    def produced(self, input_tokens: int, max_output: int, per_stop: int) -> Usage:
        """At least what was produced: the reported usage (else ``input_tokens``), its output never
        below the text received (nor ``per_stop`` per finish for length), at most ``max_output``."""
        text = math.ceil(self.ascii_chars / 3) + self.other_chars
        out = max(text + (1 if text else 0), self.length_stops * per_stop)
        base = self.usage if self.usage is not None else Usage(input_tokens, 0)
        return replace(base, output_tokens=min(max(base.output_tokens, out), max_output))


_RECEIVING: ContextVar[Received | None] = ContextVar("cascade_receiving", default=None)


@contextlib.contextmanager
def receiving(limit: int, *, streaming: bool) -> Iterator[Received]:
    """Count what the HTTP clients of :func:`http_client` / :func:`ahttp_client` receive for the
    request made inside (in this thread or task)."""
    got = Received(limit=limit, streaming=streaming)
    token = _RECEIVING.set(got)
    try:
        yield got
    finally:
        _RECEIVING.reset(token)


class _Counted(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    """A response body whose every chunk is counted by a :class:`Received` while it is read."""

    def __init__(self, inner: Any, got: Received) -> None:
        self._inner = inner
        self._got = got

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            self._got.body(chunk)
            yield chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._got.body(chunk)
            yield chunk

    def close(self) -> None:
        self._inner.close()

    async def aclose(self) -> None:
        await self._inner.aclose()


def _on_response(response: httpx2.Response) -> None:
    got = _RECEIVING.get()
    if got is None:
        return
    got.status = response.status_code
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > got.limit:
        raise ResponseTooLarge(f"response of {declared} bytes, larger than {got.limit}")
    response.stream = _Counted(response.stream, got)


async def _aon_response(response: httpx2.Response) -> None:
    _on_response(response)


def ahttp_client(factory: Callable[..., httpx2.AsyncClient]) -> httpx2.AsyncClient:
    """An async HTTP client for an SDK (``factory``: its ``DefaultAsyncHttpxClient``) whose responses
    are counted by :func:`receiving` (the size limit and the deadline hold while a body is read)."""
    return factory(event_hooks={"response": [_aon_response]}, verify=tls_context())


def charge_started(
    err: ProviderError, got: Received, *, input_tokens: int, max_output: int, per_stop: int
) -> None:
    """Make ``err`` carry what its attempt is charged once the response has started.

    A body cut off before its end, or a stream without one event that could be read (a reset before
    it, a JSON body instead of events), may have been generated whole: charged the worst case
    (``cut_off``). Otherwise the reported usage (else
    ``input_tokens``) with output never below the text and tool arguments received. An error status
    (4xx, 5xx) or nothing received costs nothing.
    """
    if not got.started or err.cut_off:
        return
    if got.events == 0 and (got.streaming or not isinstance(err, InvalidResponseError)):
        err.cut_off = True  # a body cut off mid-way, or a stream with no event to count: unknown
        return
    least = got.produced(input_tokens, max_output, per_stop)
    if err.usage is None:
        err.usage = least
    else:
        err.usage = replace(err.usage, output_tokens=max(err.usage.output_tokens, least.output_tokens))


@contextlib.contextmanager
def attempt(
    provider: str,
    sdk: ModuleType,
    errors: tuple[type[Exception], ...],
    *,
    streaming: bool,
    limit: int,
    input_tokens: int,
    max_output: int,
    per_stop: int,
) -> Iterator[Received]:
    """One HTTP request of a provider: its failures mapped (:func:`mapped`), and any failure after
    the response started charged what it produced (:func:`charge_started`; ``input_tokens``,
    ``max_output``: the call's worst case; ``per_stop``: the output of one choice stopped by
    ``length``)."""
    with receiving(limit, streaming=streaming) as got:
        try:
            with mapped(provider, sdk, errors, streaming=streaming):
                yield got
        except ProviderError as err:
            charge_started(err, got, input_tokens=input_tokens, max_output=max_output, per_stop=per_stop)
            raise


def truncated(provider: str, got: Received) -> None:
    """Raise when a stream ended without a finish reason and without its end marker."""
    if not got.complete:
        raise invalid(provider, "truncated", "the stream ended without a finish reason or its end marker")


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
    failed = len(errors) + sum(p.failed_calls for p in parts)
    messages = [str(e) for e in errors] + [m for p in parts for m in p.raw.get("errors", ())]
    if failed:
        raw["errors"] = messages
    # calls cut off in flight may be billed: the engine charges each one's worst case
    cut = sum(1 for e in errors if e.cut_off) + sum(p.cut_off_calls for p in parts)
    return Completion(
        samples=tuple(s for p in parts for s in p.samples),
        usage=usage,
        model=first.model,
        cost=None,
        request_id=first.request_id,
        latency_s=max(p.latency_s for p in parts),
        raw=raw,
        usage_source=max((p.usage_source for p in parts), key=_SOURCE_RANK.__getitem__),
        failed_calls=failed,
        cut_off_calls=cut,
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
    "STREAM_GARBAGE",
    "UNPARSEABLE",
    "WIRE_ERRORS",
    "PerLoop",
    "Reopening",
    "ResponseTooLarge",
    "acall_many",
    "adeadline",
    "ahttp_client",
    "api_key",
    "attempt",
    "call_many",
    "charge_started",
    "check_usage",
    "deadline",
    "error_object",
    "estimate_input_tokens",
    "estimate_output_tokens",
    "http_client",
    "invalid",
    "is_local_url",
    "map_error",
    "mapped",
    "merge",
    "reported_usage",
    "retry_after",
    "settle_usage",
    "snippet",
    "token_count",
    "truncated",
]
