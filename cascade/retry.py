"""The single retry layer: transient provider errors are retried with capped, jittered backoff.

SDK clients are built with their own retries off, so this is the only place a call is repeated.
A server's ``retry-after`` is honoured up to ``max_retry_after`` seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from cascade.errors import ProviderError, TransientProviderError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``attempts`` counts the first call (1 = no retry)."""

    attempts: int = 3
    initial: float = 0.5
    max_wait: float = 8.0
    jitter: float = 0.5
    max_retry_after: float = 30.0

    def longest(self, timeout: float) -> float:
        """The longest a call with these retries can take: every try times out, every wait is full."""
        return timeout * self.attempts + (self.attempts - 1) * max(self.max_wait, self.max_retry_after)

    def _wait(self) -> Callable[[RetryCallState], float]:
        exponential = wait_exponential(multiplier=self.initial, max=self.max_wait)
        backoff = exponential + wait_random(0, self.jitter)

        def wait(state: RetryCallState) -> float:
            base = min(backoff(state), self.max_wait)
            exc = state.outcome.exception() if state.outcome else None
            after = getattr(exc, "retry_after", None)
            if after is not None:
                return max(base, min(float(after), self.max_retry_after))
            return base

        return wait


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


def _retrying_kwargs(policy: RetryPolicy, sleep: object) -> dict[str, object]:
    return {
        "stop": stop_after_attempt(policy.attempts),
        "wait": policy._wait(),
        "retry": retry_if_exception_type(TransientProviderError),
        "sleep": sleep,
        "reraise": True,
    }


def call_with_retry(
    fn: Callable[[], T], policy: RetryPolicy, sleep: Callable[[float], None] = time.sleep
) -> tuple[T, int]:
    """Call ``fn``; retry transient errors. Returns (result, number of retries).

    On final failure the error is re-raised with ``retries`` set to the retries made.
    """
    try:
        return fn(), 0  # fast path: no retry machinery unless the first call fails
    except TransientProviderError as exc:
        if policy.attempts <= 1:
            raise
        first: TransientProviderError = exc
    retrying = Retrying(**_retrying_kwargs(policy, sleep))  # type: ignore[arg-type]
    try:
        return retrying(_replaying(first, fn)), retrying.statistics["attempt_number"] - 1
    except ProviderError as exc:
        exc.retries = retrying.statistics["attempt_number"] - 1
        raise


async def acall_with_retry(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> tuple[T, int]:
    """Async twin of :func:`call_with_retry`."""
    try:
        return await fn(), 0
    except TransientProviderError as exc:
        if policy.attempts <= 1:
            raise
        first: TransientProviderError = exc
    retrying = AsyncRetrying(**_retrying_kwargs(policy, sleep))  # type: ignore[arg-type]
    try:
        result: T = await retrying(_areplaying(first, fn))
        return result, retrying.statistics["attempt_number"] - 1
    except ProviderError as exc:
        exc.retries = retrying.statistics["attempt_number"] - 1
        raise
