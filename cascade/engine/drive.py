"""The drivers: they execute the loop's actions, sync or async, and feed the outcomes back.

:func:`drive` and :func:`adrive` run one generator from :func:`cascade.engine.loop.steps` to its
result. An exception while executing an action (a cancellation, a crash in user code) is thrown
into the loop, which answers with the :class:`~cascade.engine.actions.Settle` of its open hold; the
driver executes that before the exception propagates. The async driver runs ledger calls off the
event loop (``Budget.areserve``/``asettle``) and shields them: a started settle completes, and a
reservation that lands after its run was cancelled is released.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, TypeVar

from cascade.engine import hedge, reuse
from cascade.engine.actions import (
    SETTLED,
    Call,
    CallOutcome,
    Predict,
    Predicted,
    Rate,
    RateOutcome,
    Reserve,
    Reserved,
    Settle,
)
from cascade.engine.loop import Action, Outcome
from cascade.errors import BudgetExceededError, CascadeError, ConfigurationError, ProviderError, ScorerError
from cascade.logging import get_logger
from cascade.retry import DEADLINE, RetryPolicy, aretry_failed, call_with_retry, deadline, narrow
from cascade.types import ZERO, CascadeResult, Completion

T = TypeVar("T")
Steps = Generator[Action, Outcome, CascadeResult]


def drive(gen: Steps) -> CascadeResult:
    """Run the loop ``gen`` to its result, executing its actions in this thread."""
    try:
        action = next(gen)
        while True:
            try:
                outcome = execute(action)
            except BaseException as exc:  # crashed mid-step: the loop answers with its hold's Settle
                action = gen.throw(exc)
                continue
            action = gen.send(outcome)
    except StopIteration as stop:
        result: CascadeResult = stop.value
        return result
    finally:
        gen.close()


async def adrive(gen: Steps) -> CascadeResult:
    """Async :func:`drive`: provider, scorer and ledger calls are awaited, never blocking the loop."""
    # no local keeps the action nor the last outcome while a step is awaited (the step's coroutine
    # holds what it needs): fewer GC-tracked objects per request in flight
    try:
        step = aexecute(next(gen))
        while True:
            try:
                outcome = await step
            except BaseException as exc:  # cancelled mid-step: the loop answers with its hold's Settle
                step = aexecute(gen.throw(exc))
                continue
            step = aexecute(gen.send(outcome))
            del outcome
    except StopIteration as stop:
        result: CascadeResult = stop.value
        return result
    finally:
        gen.close()


def execute(action: Action) -> Outcome:
    """Execute one action (provider calls with retries); provider and scorer errors become outcomes."""
    if isinstance(action, Call):
        return _call(action)
    if isinstance(action, Rate):
        return _rate(action)
    if isinstance(action, Reserve):
        try:
            return Reserved(action.budget.reserve(action.buckets, action.amount), None)
        except BudgetExceededError as exc:
            return Reserved(None, exc)
    if isinstance(action, Settle):
        action.budget.settle(action.hold, action.amount)
        return SETTLED
    if isinstance(action, hedge.Hedge):  # the backup runs in a thread, its call cancellable
        return hedge.hedge(action, execute, _call)
    if isinstance(action, hedge.Join):
        return hedge.join(action.backup)
    if isinstance(action, hedge.Cancel):
        return hedge.cancel(action.backup)
    try:
        return _predicted(action.tier.skip.predict(action.request))  # type: ignore[union-attr]
    except CascadeError as exc:
        return Predicted(None, exc)


def _policy(policy: RetryPolicy, attempts: int | None) -> RetryPolicy:
    """A tier's retry ``policy``, for the tries a call action may make (``attempts``)."""
    if attempts is None or max(1, attempts) == policy.attempts:  # the first reservation: no copy
        return policy
    return replace(policy, attempts=max(1, attempts))


def _call(action: Call, sleep: Callable[[float], None] = time.sleep) -> CallOutcome:
    """``action``'s call with its retries; ``sleep``: the waits (a cancellable one for a backup)."""
    start = time.perf_counter()
    tier, request, cache, n = action.tier, action.request, action.cache, action.n
    if cache is not None and tier.call_key:
        key = tier.call_key
        fn: Callable[[], Completion] = lambda: cache.complete(key, tier.provider, request, n)  # noqa: E731
    else:
        fn = lambda: tier.provider.complete(request, n)  # noqa: E731
    billed: list[ProviderError] = []  # failed tries that may have been billed
    with deadline(at=action.deadline):
        if action.wait > 0:
            sleep(action.wait)  # the loop never asks for a wait past the deadline
        try:
            policy = _policy(action.tier.retry, action.attempts)
            completion, retries = call_with_retry(
                fn, policy, sleep, billed_seen=billed, billed_stop=action.capped
            )
        except ProviderError as exc:
            return CallOutcome(None, exc, exc.retries, time.perf_counter() - start, tuple(billed))
    return CallOutcome(completion, None, retries, time.perf_counter() - start, tuple(billed))


def _rate(action: Rate) -> RateOutcome:
    start = time.perf_counter()
    tier, cache = action.tier, action.cache
    assert tier.scorer is not None
    token = reuse.current.set(cache) if cache is not None else None  # the scorer's providers reuse too
    try:
        score = tier.scorer.score(action.request, action.completion)
    except (ScorerError, ProviderError) as exc:
        return RateOutcome(None, exc, time.perf_counter() - start)
    finally:
        if token is not None:
            reuse.current.reset(token)
    return RateOutcome(score, None, time.perf_counter() - start)


def aexecute(action: Action) -> Awaitable[Outcome]:
    """Async :func:`execute`: ledger calls and skip estimates never block the event loop.

    Returns the step's own coroutine (no wrapping coroutine: one object less per call in flight)."""
    if isinstance(action, Call):
        return _acall(action)
    if isinstance(action, Rate):
        return _arate(action)
    if isinstance(action, Reserve):
        return _areserve(action)
    if isinstance(action, Settle):
        return _asettle(action)
    if isinstance(action, hedge.Hedge):
        return hedge.ahedge(action, aexecute)
    if isinstance(action, hedge.Join):
        return hedge.ajoin(action.backup)
    if isinstance(action, hedge.Cancel):
        return hedge.acancel(action.backup)
    return _apredict(action)


async def _acall(action: Call) -> CallOutcome:
    start = time.perf_counter()
    tier, request, cache, n = action.tier, action.request, action.cache, action.n
    attempts, capped, wait, at = action.attempts, action.capped, action.wait, action.deadline
    del action  # not kept while the provider answers (the loop and the driver drop it too)
    reusing = cache is not None and tier.call_key
    # this task's context: the provider's calls see the deadline (none: nothing set, and no `with`,
    # whose bound __exit__ would be one more GC-tracked object per call in flight)
    token = None if at is None else narrow(at)
    try:
        if wait > 0:
            await asyncio.sleep(wait)
        try:  # the first try made here, called bare: no retry coroutine, billed list nor partial
            if reusing:  # (each a GC-tracked object in flight while the provider answers)
                assert cache is not None
                completion = await cache.acomplete(tier.call_key, tier.provider, request, n)
            else:
                completion = await tier.provider.acomplete(request, n)
        except ProviderError as exc:
            failed = exc
        else:
            return CallOutcome(completion, None, 0, time.perf_counter() - start)
        fn: Callable[[], Awaitable[Completion]]
        if reusing:  # partial, not a closure: fewer objects per call in flight
            assert cache is not None
            fn = partial(cache.acomplete, tier.call_key, tier.provider, request, n)
        else:
            fn = partial(tier.provider.acomplete, request, n)
        billed: list[ProviderError] = []
        try:
            completion, retries = await aretry_failed(
                failed, fn, _policy(tier.retry, attempts), billed_seen=billed, billed_stop=capped
            )
        except ProviderError as exc:
            return CallOutcome(None, exc, exc.retries, time.perf_counter() - start, tuple(billed))
    finally:
        if token is not None:
            DEADLINE.reset(token)
    return CallOutcome(completion, None, retries, time.perf_counter() - start, tuple(billed))


async def _arate(action: Rate) -> RateOutcome:
    start = time.perf_counter()
    tier, cache = action.tier, action.cache
    assert tier.scorer is not None
    token = reuse.current.set(cache) if cache is not None else None  # child tasks copy it
    try:
        score = await tier.scorer.ascore(action.request, action.completion)
    except (ScorerError, ProviderError) as exc:
        return RateOutcome(None, exc, time.perf_counter() - start)
    finally:
        if token is not None:
            reuse.current.reset(token)
    return RateOutcome(score, None, time.perf_counter() - start)


def _predicted(value: Any) -> Predicted:
    """An estimate, validated: a number in [0, 1] (anything else is the estimator's failure)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        error = ConfigurationError(f"skip estimator: predicted {value!r}, not a number in [0, 1]")
        return Predicted(None, error)
    return Predicted(float(value))


async def _apredict(action: Predict) -> Predicted:
    estimator, request = action.tier.skip, action.request
    assert estimator is not None
    native = getattr(estimator, "apredict", None)
    try:
        if native is not None:
            return _predicted(await native(request))
        return _predicted(await asyncio.to_thread(estimator.predict, request))  # I/O never blocks the loop
    except CascadeError as exc:
        return Predicted(None, exc)


_tasks: set[asyncio.Task[Any]] = set()  # ledger calls in flight, kept referenced until done
_orphans: set[asyncio.Task[Any]] = set()  # ...and those whose run was cancelled: nobody awaits them


def _background(coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    task = asyncio.ensure_future(coro)
    _tasks.add(task)
    task.add_done_callback(_done)
    return task


def _done(task: asyncio.Task[Any]) -> None:
    _tasks.discard(task)
    if task in _orphans:
        _orphans.discard(task)
        _report(task)


def _orphan(task: asyncio.Task[Any]) -> None:
    """Nobody awaits ``task`` any more: its failure is logged when it ends."""
    if task.done():
        _report(task)
    else:
        _orphans.add(task)


def _report(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        get_logger().error("cascade.ledger_error", error=f"{type(exc).__name__}: {exc}")


async def _asettle(action: Settle) -> Outcome:
    """Settle off the event loop; a settle once started completes even if its run is cancelled."""
    if action.budget.settle_now(action.hold, action.amount):
        return SETTLED  # written at once: nothing to wait for, nothing a cancel could interrupt
    task = _background(action.budget.asettle(action.hold, action.amount))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        _orphan(task)
        raise
    return SETTLED


async def _areserve(action: Reserve) -> Reserved:
    """Reserve off the event loop; cancelled meanwhile, a hold that still lands is released."""
    try:
        hold = action.budget.reserve_now(action.buckets, action.amount)
    except BudgetExceededError as exc:
        return Reserved(None, exc)
    if hold is not None:
        return Reserved(hold, None)  # held at once, without a task or a thread
    task = _background(action.budget.areserve(action.buckets, action.amount))
    try:
        return Reserved(await asyncio.shield(task), None)
    except BudgetExceededError as exc:
        return Reserved(None, exc)
    except asyncio.CancelledError:
        task.add_done_callback(lambda t: _release(action, t))
        raise


def _release(action: Reserve, task: asyncio.Task[str]) -> None:
    if task.cancelled() or task.exception() is not None:
        return  # nothing was held (the exception is retrieved, so it is not reported as lost)
    _orphan(_background(action.budget.asettle(task.result(), ZERO)))


# -- streaming drivers: the caller executes each action, and may yield to its own caller meanwhile --


@dataclass(frozen=True, slots=True)
class Executed:
    """A step executor's last item: the outcome of the action it executed."""

    outcome: Outcome


Step = Generator[T | Executed, None, None]
"""What a step executor returns for an action: items for the consumer, then :class:`Executed`."""
AsyncStep = AsyncGenerator[T | Executed, None]


def stream(gen: Steps, step: Callable[[Action], Step[T]]) -> Generator[T | CascadeResult, None, None]:
    """Run the loop ``gen``, each action executed by ``step``: yields what ``step`` yields (say,
    the chunks of an answer streamed live), then the :class:`CascadeResult`.

    However the run ends mid-step (an exception in ``step``, or the consumer closing this generator),
    the loop's open hold is settled here, in this thread, before the exception propagates.
    """
    try:
        action = next(gen)
        while True:
            outcome: Outcome | None = None
            items = step(action)
            try:
                try:
                    for item in items:
                        if isinstance(item, Executed):
                            outcome = item.outcome
                        else:
                            yield item
                finally:
                    items.close()  # abandoned mid-step: the step's own clean-up runs first
            except BaseException as exc:
                _cut_off(gen, exc)
                raise
            action = gen.send(_executed(outcome, action))
    except StopIteration as stop:
        result: CascadeResult = stop.value
    finally:
        gen.close()
    yield result


async def astream(
    gen: Steps, step: Callable[[Action], AsyncStep[T]]
) -> AsyncGenerator[T | CascadeResult, None]:
    """Async :func:`stream`: the hold of a run cancelled or closed mid-step is settled off the event
    loop (its ``Settle`` awaited) before the cancellation propagates."""
    try:
        action = next(gen)
        while True:
            outcome: Outcome | None = None
            items = step(action)
            try:
                try:
                    async for item in items:
                        if isinstance(item, Executed):
                            outcome = item.outcome
                        else:
                            yield item
                finally:
                    await items.aclose()
            except BaseException as exc:
                await _acut_off(gen, exc)
                raise
            action = gen.send(_executed(outcome, action))
    except StopIteration as stop:
        result: CascadeResult = stop.value
    finally:
        gen.close()
    yield result


def _executed(outcome: Outcome | None, action: Action) -> Outcome:
    if outcome is None:
        raise TypeError(f"a step executor ended without an Executed outcome for {type(action).__name__}")
    return outcome


class _AbandonedError(Exception):
    """Thrown into the loop for a stream its consumer closed (a ``GeneratorExit`` would make the
    loop settle its hold synchronously, blocking an event loop)."""


def _throw(gen: Steps, exc: BaseException) -> Action | None:
    """Throw ``exc`` into the loop: its answer (the open hold's Settle), or None when it re-raised."""
    thrown = _AbandonedError() if isinstance(exc, GeneratorExit) else exc
    try:
        return gen.throw(thrown)
    except StopIteration:
        return None
    except BaseException as raised:
        if raised is thrown:
            return None
        raise


def _cut_off(gen: Steps, exc: BaseException) -> None:
    """A run that ends mid-step: the loop's Settle executed in this thread."""
    action = _throw(gen, exc)
    while action is not None:
        outcome = execute(action)
        try:
            action = gen.send(outcome)
        except (StopIteration, _AbandonedError):
            return
        except BaseException as raised:
            if raised is exc:
                return
            raise


async def _acut_off(gen: Steps, exc: BaseException) -> None:
    """Async :func:`_cut_off`: the Settle is awaited (off the event loop), never blocking it."""
    action = _throw(gen, exc)
    while action is not None:
        outcome = await aexecute(action)
        try:
            action = gen.send(outcome)
        except (StopIteration, _AbandonedError):
            return
        except BaseException as raised:
            if raised is exc:
                return
            raise


__all__ = ["AsyncStep", "Executed", "Step", "adrive", "aexecute", "astream", "drive", "execute", "stream"]
