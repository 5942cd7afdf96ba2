"""The single retry layer: transient provider errors are retried with capped, jittered backoff.

SDK clients are built with their own retries off, so this is the only place a call is repeated.
A server's ``retry-after`` is honoured up to ``max_retry_after`` seconds. A tier's ``timeout`` is a
deadline for the whole call, its retries and the waits between them included (:func:`deadline`):
no wait runs past it; a retry that would have to wait past it is not made.

It also owns the one rule about failed calls that may have been billed (:func:`billed`): the
callers that hold a reservation for one call pass ``billed_stop=True`` and get such a failure at
once, never retried inside that reservation (:class:`BilledError` carries it through tenacity).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_any,
)
from tenacity.stop import stop_base

from cascade.errors import ProviderError, TransientProviderError
from cascade.money import Price

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``attempts`` counts the first call (1 = no retry)."""

    attempts: int = 3
    initial: float = 0.5
    max_wait: float = 8.0
    jitter: float = 0.5
    max_retry_after: float = 30.0

    def delay(self, attempt: int, error: BaseException | None) -> float:
        """Seconds to wait before try ``attempt + 1`` after ``error`` (backoff, or the server's
        ``retry_after`` up to ``max_retry_after``)."""
        base = min(self.initial * 2 ** (attempt - 1), self.max_wait) + random.uniform(0, self.jitter)
        base = min(base, self.max_wait)
        after = getattr(error, "retry_after", None)
        if after is not None:
            return float(max(base, min(float(after), self.max_retry_after)))
        return float(base)

    def longest(self, timeout: float) -> float:
        """The longest a call can take: its tier's ``timeout``, the deadline that ends every try and
        every wait between tries (a hold, one per try under caps, must outlive it)."""
        return timeout


# -- the whole-call deadline ------------------------------------------------------------------

DEADLINE: ContextVar[float | None] = ContextVar("cascade_deadline", default=None)
"""When (``time.monotonic()``) the current call must be over: its tries, reads and waits."""


class deadline:  # noqa: N801 - used as a context manager, like contextlib's lower-case helpers
    """The call inside must be over ``seconds`` from now (or at ``at``); an enclosing, earlier
    deadline stays in force. (A slotted class, not a generator: one object per call in flight.)"""

    __slots__ = ("_at", "_token")

    def __init__(self, seconds: float | None = None, *, at: float | None = None) -> None:
        if seconds is not None:
            ends = time.monotonic() + seconds
            at = ends if at is None else min(at, ends)
        self._at = at
        self._token: Token[float | None] | None = None

    def __enter__(self) -> None:
        if self._at is not None:  # none of its own: the enclosing deadline, unchanged
            self._token = narrow(self._at)

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            DEADLINE.reset(self._token)
            self._token = None


def narrow(at: float) -> Token[float | None] | None:
    """Make ``at`` the deadline unless an earlier one is in force: the token that undoes it
    (``DEADLINE.reset``), or None when nothing changed (no set, so no context copy per call)."""
    outer = DEADLINE.get()
    if outer is not None and outer <= at:
        return None
    return DEADLINE.set(at)


def remaining() -> float | None:
    """Seconds left before the deadline (never negative); None without one."""
    at = DEADLINE.get()
    return None if at is None else max(0.0, at - time.monotonic())


# -- cancellation of a sync call from another thread -------------------------------------------


class Cancelled(Exception):  # noqa: N818 - the word a caller expects
    """A :class:`Cancellation`'s wait was cut short: the call is not needed any more."""


class Cancellation:
    """Lets another thread cut a blocking call off (a sync hedge's backup): set in the calling
    thread's context (:data:`CANCEL`), it is checked by the sockets of the SDK providers' HTTP
    clients (``cascade.providers._sdk``) on every connect, read and write; :meth:`cancel` also shuts
    down the socket being read, so a read in progress ends at once. Waits between retries go
    through :meth:`sleep`, which :meth:`cancel` cuts short (:class:`Cancelled`)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._lock = threading.Lock()
        self._reading: set[Callable[[], None]] = set()

    @property
    def cancelled(self) -> bool:
        return self.event.is_set()

    def cancel(self) -> None:
        with self._lock:
            self.event.set()
            aborts = list(self._reading)
        for abort in aborts:
            abort()

    def enter(self, abort: Callable[[], None]) -> bool:
        """A read starts; ``abort`` ends it from another thread. False: cancelled already."""
        with self._lock:
            if self.event.is_set():
                return False
            self._reading.add(abort)
            return True

    def leave(self, abort: Callable[[], None]) -> None:
        with self._lock:
            self._reading.discard(abort)

    def sleep(self, seconds: float) -> None:
        if self.event.wait(seconds):
            raise Cancelled("cancelled")


CANCEL: ContextVar[Cancellation | None] = ContextVar("cascade_cancel", default=None)
"""The current thread's call can be cut off by another thread through this (None: it cannot)."""


# -- failed calls that may have been billed ---------------------------------------------------


def billed(error: ProviderError) -> bool:
    """Whether a failed call may have been billed (usage charged to it, or cut off in flight)."""
    return error.usage is not None or error.cut_off


def failure_charge(error: ProviderError, price: Price, worst: Decimal) -> Decimal:
    """What a failed try is charged: the worst case (``worst``) when cut off in flight, else its
    usage (what it reported or produced) at ``price``, never above ``worst``; nothing otherwise."""
    if error.cut_off:
        return worst
    if error.usage is not None:
        return max(min(price.cost(error.usage), worst), Decimal(0))
    return Decimal(0)


class BilledError(ProviderError):
    """Carries a billed failure through tenacity without a retry (``billed_stop``)."""

    def __init__(self, error: ProviderError) -> None:
        super().__init__(str(error))
        self.error = error


def _reraise(exc: ProviderError, retries: int) -> None:
    """Raise the call's final error (a billed one unwrapped) with ``retries`` set, its cause kept."""
    error = exc.error if isinstance(exc, BilledError) else exc
    error.retries = retries
    raise error from error.__cause__


def _replaying(first: BaseException, fn: Callable[[], T]) -> Callable[[], T]:
    """``fn`` whose first invocation re-raises the error the fast path already got."""
    pending: list[BaseException] = [first]

    def call() -> T:
        if pending:
            raise pending.pop()
        return fn()

    return call


def _areplaying(first: BaseException, fn: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
    """Async twin of :func:`_replaying`."""
    pending: list[BaseException] = [first]

    async def call() -> T:
        if pending:
            raise pending.pop()
        return await fn()

    return call


class _PastDeadline(stop_base):
    """Stop when the next wait would run past the whole call's deadline."""

    def __init__(self, at: float | None) -> None:
        self.at = at

    def __call__(self, state: RetryCallState) -> bool:
        return self.at is not None and time.monotonic() + (state.upcoming_sleep or 0.0) >= self.at


def _retrying_kwargs(policy: RetryPolicy, sleep: object) -> dict[str, object]:
    at = DEADLINE.get()

    def wait(state: RetryCallState) -> float:
        return policy.delay(state.attempt_number, state.outcome.exception() if state.outcome else None)

    return {
        "stop": stop_any(stop_after_attempt(policy.attempts), _PastDeadline(at)),
        "wait": wait,
        "retry": retry_if_exception_type(TransientProviderError),
        "sleep": sleep,
        "reraise": True,
    }


def _charged(exc: ProviderError, seen: list[ProviderError] | None, stop: bool) -> ProviderError:
    """Record ``exc`` in ``seen`` when it may have been billed; with ``stop``, wrap it to end the call."""
    if billed(exc):
        if seen is not None:
            seen.append(exc)
        if stop:
            return BilledError(exc)
    return exc


def _charging(fn: Callable[[], T], seen: list[ProviderError] | None, stop: bool) -> Callable[[], T]:
    """``fn`` that records its billed failures in ``seen`` and, with ``stop``, raises them at once."""
    if seen is None and not stop:
        return fn

    def call() -> T:
        try:
            return fn()
        except ProviderError as exc:
            charged = _charged(exc, seen, stop)
            if charged is not exc:
                raise charged from None
            raise

    return call


def _acharging(
    fn: Callable[[], Awaitable[T]], seen: list[ProviderError] | None, stop: bool
) -> Callable[[], Awaitable[T]]:
    """Async :func:`_charging`."""
    if seen is None and not stop:
        return fn

    async def call() -> T:
        try:
            return await fn()
        except ProviderError as exc:
            charged = _charged(exc, seen, stop)
            if charged is not exc:
                raise charged from None
            raise

    return call


def call_with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
    *,
    billed_seen: list[ProviderError] | None = None,
    billed_stop: bool = False,
) -> tuple[T, int]:
    """Call ``fn``; retry transient errors. Returns (result, number of retries).

    On final failure the error is re-raised with ``retries`` set to the retries made.
    ``billed_seen`` collects the failed tries that may have been billed; with ``billed_stop`` such a
    failure ends the call at once (its reservation covered one try).
    """
    try:
        return fn(), 0  # fast path: no retry machinery (nor wrapper) unless the first call fails
    except ProviderError as exc:
        first = _charged(exc, billed_seen, billed_stop)
    if not isinstance(first, TransientProviderError) or policy.attempts <= 1:
        _reraise(first, 0)  # a BilledError is not transient: raised unwrapped, never retried
    call = _charging(fn, billed_seen, billed_stop)
    retrying = Retrying(**_retrying_kwargs(policy, sleep))  # type: ignore[arg-type]
    try:
        return retrying(_replaying(first, call)), retrying.statistics["attempt_number"] - 1
    except ProviderError as exc:
        _reraise(exc, retrying.statistics["attempt_number"] - 1)
        raise


async def acall_with_retry(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    *,
    billed_seen: list[ProviderError] | None = None,
    billed_stop: bool = False,
) -> tuple[T, int]:
    """Async twin of :func:`call_with_retry`."""
    try:
        return await fn(), 0
    except ProviderError as exc:
        failed = exc
    return await aretry_failed(failed, fn, policy, sleep, billed_seen=billed_seen, billed_stop=billed_stop)


async def aretry_failed(
    failed: ProviderError,
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    *,
    billed_seen: list[ProviderError] | None = None,
    billed_stop: bool = False,
) -> tuple[T, int]:
    """:func:`acall_with_retry` after its first try (a call of ``fn``) raised ``failed``: for a
    caller that makes the first try itself (no coroutine of this one in flight while it answers)."""
    first = _charged(failed, billed_seen, billed_stop)
    if not isinstance(first, TransientProviderError) or policy.attempts <= 1:
        _reraise(first, 0)  # a BilledError is not transient: raised unwrapped, never retried
    call = _acharging(fn, billed_seen, billed_stop)
    retrying = AsyncRetrying(**_retrying_kwargs(policy, sleep))  # type: ignore[arg-type]
    try:
        result: T = await retrying(_areplaying(first, call))
        return result, retrying.statistics["attempt_number"] - 1
    except ProviderError as exc:
        _reraise(exc, retrying.statistics["attempt_number"] - 1)
        raise
