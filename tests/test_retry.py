"""Retry waits count against the whole call's deadline (issue 18 §3); billed tries end a reservation."""

from __future__ import annotations

import asyncio
import time

import pytest

from cascade.errors import InvalidResponseError, RateLimitError, TransientProviderError
from cascade.retry import RetryPolicy, acall_with_retry, call_with_retry, deadline
from cascade.types import Usage

DEFAULT = RetryPolicy()  # 3 attempts, retry-after honoured up to 30 s


def limited(after: float) -> RateLimitError:
    return RateLimitError("429", provider="p", status_code=429, retry_after=after)


def test_a_wait_past_the_deadline_is_not_made() -> None:
    slept: list[float] = []
    tries = 0

    def fn() -> None:
        nonlocal tries
        tries += 1
        raise limited(1e9)

    with deadline(1.0), pytest.raises(RateLimitError) as info:
        call_with_retry(fn, DEFAULT, sleep=slept.append)
    assert slept == [] and tries == 1 and info.value.retries == 0  # was: a 30 s wait, then another


def test_waits_that_fit_are_made_and_stop_at_the_deadline() -> None:
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    def fn() -> None:
        raise limited(0.3)

    with deadline(1.0), pytest.raises(RateLimitError):
        call_with_retry(fn, RetryPolicy(attempts=10, initial=0, jitter=0), sleep=sleep)
    assert 1 <= len(slept) <= 3 and sum(slept) < 1.0


def test_the_async_twin_keeps_the_deadline_too() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async def fn() -> None:
        raise limited(1e9)

    async def go() -> None:
        with deadline(1.0):
            await acall_with_retry(fn, DEFAULT, sleep=sleep)

    with pytest.raises(RateLimitError):
        asyncio.run(go())
    assert slept == []


def test_a_billed_try_is_not_retried_inside_its_reservation() -> None:
    tries = 0
    seen: list[object] = []

    def fn() -> None:
        nonlocal tries
        tries += 1
        err = InvalidResponseError("bad", reason="truncated", provider="p")
        err.usage = Usage(10, 5)
        raise err

    with pytest.raises(InvalidResponseError) as info:  # unwrapped: the caller sees the real error
        call_with_retry(fn, DEFAULT, sleep=lambda _: None, billed_seen=seen, billed_stop=True)  # type: ignore[arg-type]
    assert tries == 1 and seen == [info.value] and info.value.retries == 0
    tries = 0
    with pytest.raises(TransientProviderError):
        call_with_retry(fn, DEFAULT, sleep=lambda _: None)
    assert tries == 3  # without a reservation to protect (uncapped), retried


def test_a_first_try_that_answers_builds_no_retry_wrapper(monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-request cost (issue 24): the billing wrapper is made only once a retry is needed."""
    import cascade.retry as retry

    def no_wrapper(*_: object) -> None:
        raise AssertionError("wrapper built on the fast path")

    monkeypatch.setattr(retry, "_charging", no_wrapper)
    monkeypatch.setattr(retry, "_acharging", no_wrapper)
    seen: list[object] = []
    assert call_with_retry(lambda: "ok", DEFAULT, billed_seen=seen, billed_stop=True) == ("ok", 0)

    async def answer() -> str:
        return "ok"

    assert asyncio.run(acall_with_retry(answer, DEFAULT, billed_seen=seen, billed_stop=True)) == ("ok", 0)
    assert seen == []


def test_billed_tries_are_recorded_once_each_on_the_fast_path_and_the_retries() -> None:
    errors: list[TransientProviderError] = []

    def fn() -> str:
        if len(errors) < 2:
            err = TransientProviderError("cut", provider="p")
            err.usage = Usage(3, 1)
            errors.append(err)
            raise err
        return "ok"

    seen: list[object] = []
    assert call_with_retry(fn, DEFAULT, sleep=lambda _: None, billed_seen=seen) == ("ok", 2)
    assert seen == errors

    async def afn() -> str:
        return fn()

    errors.clear()
    seen.clear()

    async def nap(_: float) -> None:
        return None

    with pytest.raises(TransientProviderError) as info:
        asyncio.run(acall_with_retry(afn, DEFAULT, sleep=nap, billed_seen=seen, billed_stop=True))
    assert seen == errors == [info.value] and info.value.retries == 0


def test_a_deadline_that_changes_nothing_leaves_the_context_alone() -> None:
    """Per-request cost (issue 24): no deadline, or a later one inside an earlier one, sets nothing
    (a context variable set copies the task's context: objects per call in flight)."""
    import contextvars

    from cascade.retry import DEADLINE, remaining

    def enter(at: float | None) -> bool:
        with deadline(at=at):
            return DEADLINE in contextvars.copy_context()

    assert contextvars.Context().run(enter, None) is False
    assert contextvars.Context().run(enter, time.monotonic() + 60) is True
    with deadline(5.0):
        outer = DEADLINE.get()
        with deadline(at=None):
            assert DEADLINE.get() == outer
        with deadline(60.0):
            assert DEADLINE.get() == outer
        with deadline(1.0):
            left = remaining()
            assert left is not None and left <= 1.0
        assert DEADLINE.get() == outer
    assert DEADLINE.get() is None
