"""The :class:`Cascade`: the public object that runs a policy, sync or async, one or many."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Generator, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from cascade.budget import Budget
from cascade.engine.loop import (
    SETTLED,
    Action,
    Call,
    CallOutcome,
    OnExhausted,
    Outcome,
    RateOutcome,
    Reserve,
    Reserved,
    Settings,
    Settle,
    Tier,
    steps,
)
from cascade.errors import BudgetExceededError, CascadeError, ProviderError, ScorerError
from cascade.logging import get_logger
from cascade.retry import acall_with_retry, call_with_retry
from cascade.types import ZERO, CascadeResult, Message, Request

if TYPE_CHECKING:
    from cascade.observe import Observer

Prompt = str | Request | Sequence[Message | Mapping[str, Any]]
T = TypeVar("T")


class Cascade:
    """Runs prompts through tiers, cheapest first, until a scorer accepts an answer.

    Build one from a policy file with :meth:`from_policy` (or :func:`cascade.load`), or directly
    from :class:`~cascade.engine.loop.Tier` objects.
    """

    def __init__(
        self,
        tiers: Sequence[Tier],
        *,
        name: str = "cascade",
        budget: Budget | None = None,
        on_exhausted: OnExhausted = "return_best",
        include_text: bool = False,
        observer: Observer | None = None,
    ) -> None:
        if not tiers:
            raise ValueError("a cascade needs at least one tier")
        for t in tiers[:-1]:
            if t.scorer is None or t.threshold is None:
                raise ValueError(f"tier {t.name!r} is not the last, so it needs a scorer and threshold")
        self.settings = Settings(name, tuple(tiers), budget or Budget(), on_exhausted, include_text)
        self.observer = observer  # outcome log, shadow sampling, session pins, metrics (cascade.observe)

    @classmethod
    def from_policy(cls, policy: Any, **overrides: Any) -> Cascade:
        """Build from a policy file path, YAML text path-like, or a :class:`~cascade.policy.Policy`."""
        from cascade.engine.build import build

        return build(policy, **overrides)

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def tiers(self) -> tuple[Tier, ...]:
        return self.settings.tiers

    # -- resources ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the providers' (and scorers') HTTP clients; use ``with cascade: ...`` to be sure."""
        if self.observer is not None:  # first: pending shadow work still uses the clients
            self.observer.close()
        for obj in self._closeables():
            closer = getattr(obj, "close", None)
            if callable(closer):
                closer()

    async def aclose(self) -> None:
        """Close the async clients made on the running event loop (and the sync ones)."""
        for obj in self._closeables():
            closer = getattr(obj, "aclose", None)
            if callable(closer):
                await closer()
        self.close()

    def _closeables(self) -> list[object]:
        return [obj for t in self.tiers for obj in (t.provider, t.scorer) if obj is not None]

    def __enter__(self) -> Cascade:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Cascade:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _steps(self, request: Request, session: str | None) -> Generator[Action, Outcome, CascadeResult]:
        """The loop for ``request``, watched by the observer when there is one."""
        if self.observer is None:
            return steps(self.settings, request)
        return self.observer.steps(self.settings, request, session)

    # -- sync ---------------------------------------------------------------------------------

    def run(
        self,
        prompt: Prompt,
        *,
        budget_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        session: str | None = None,
    ) -> CascadeResult:
        """Run one prompt (a string, chat messages or a :class:`Request`).

        ``session`` names a conversation or agent run, for session pinning (policy ``session:``).
        """
        request = Request.of(prompt, budget_key=budget_key, metadata=metadata)
        gen = self._steps(request, session)
        try:
            action = next(gen)
            while True:
                try:
                    outcome = _execute(action)
                except BaseException as exc:  # crashed mid-step: the loop answers with its hold's Settle
                    action = gen.throw(exc)
                    continue
                action = gen.send(outcome)
        except StopIteration as stop:
            result: CascadeResult = stop.value
            return result
        finally:
            gen.close()

    def batch(
        self,
        prompts: Iterable[Prompt],
        *,
        concurrency: int = 8,
        return_exceptions: bool = False,
        budget_key: str | None = None,
    ) -> list[CascadeResult | CascadeError]:
        """Run many prompts on a thread pool; results in input order.

        With ``return_exceptions`` a failing prompt yields its :class:`CascadeError` in place.
        """

        def one(p: Prompt) -> CascadeResult | CascadeError:
            try:
                return self.run(p, budget_key=budget_key)
            except CascadeError as exc:
                if return_exceptions:
                    return exc
                raise

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            return list(pool.map(one, prompts))

    # -- async --------------------------------------------------------------------------------

    async def arun(
        self,
        prompt: Prompt,
        *,
        budget_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        session: str | None = None,
    ) -> CascadeResult:
        """Async twin of :meth:`run` (same loop, same results)."""
        request = Request.of(prompt, budget_key=budget_key, metadata=metadata)
        gen = self._steps(request, session)
        try:
            action = next(gen)
            while True:
                try:
                    outcome = await _aexecute(action)
                except BaseException as exc:  # cancelled mid-step: the loop answers with its hold's Settle
                    action = gen.throw(exc)
                    continue
                action = gen.send(outcome)
        except StopIteration as stop:
            result: CascadeResult = stop.value
            return result
        finally:
            gen.close()

    async def abatch(
        self,
        prompts: Iterable[Prompt],
        *,
        concurrency: int = 32,
        return_exceptions: bool = False,
        budget_key: str | None = None,
    ) -> list[CascadeResult | CascadeError]:
        """Run many prompts concurrently, at most ``concurrency`` at once; results in input order."""
        gate = asyncio.Semaphore(max(1, concurrency))

        async def one(p: Prompt) -> CascadeResult | CascadeError:
            async with gate:
                try:
                    return await self.arun(p, budget_key=budget_key)
                except CascadeError as exc:
                    if return_exceptions:
                        return exc
                    raise

        return list(await asyncio.gather(*(one(p) for p in prompts)))


def _execute(action: Action) -> Outcome:
    if isinstance(action, Reserve):
        try:
            return Reserved(action.budget.reserve(action.buckets, action.amount), None)
        except BudgetExceededError as exc:
            return Reserved(None, exc)
    if isinstance(action, Settle):
        action.budget.settle(action.hold, action.amount)
        return SETTLED
    start = time.perf_counter()
    tier, request = action.tier, action.request
    if isinstance(action, Call):
        try:
            completion, retries = call_with_retry(
                lambda: tier.provider.complete(request, action.n), tier.retry
            )
        except ProviderError as exc:
            return CallOutcome(None, exc, exc.retries, time.perf_counter() - start)
        return CallOutcome(completion, None, retries, time.perf_counter() - start)
    assert tier.scorer is not None
    try:
        score = tier.scorer.score(request, action.completion)
    except (ScorerError, ProviderError) as exc:
        return RateOutcome(None, exc, time.perf_counter() - start)
    return RateOutcome(score, None, time.perf_counter() - start)


async def _aexecute(action: Action) -> Outcome:
    if isinstance(action, Reserve):
        return await _areserve(action)
    if isinstance(action, Settle):
        # a started settle runs to its end even if this task is cancelled meanwhile
        await asyncio.shield(_background(action.budget.asettle(action.hold, action.amount)))
        return SETTLED
    start = time.perf_counter()
    tier, request = action.tier, action.request
    if isinstance(action, Call):
        try:
            completion, retries = await acall_with_retry(
                lambda: tier.provider.acomplete(request, action.n), tier.retry
            )
        except ProviderError as exc:
            return CallOutcome(None, exc, exc.retries, time.perf_counter() - start)
        return CallOutcome(completion, None, retries, time.perf_counter() - start)
    assert tier.scorer is not None
    try:
        score = await tier.scorer.ascore(request, action.completion)
    except (ScorerError, ProviderError) as exc:
        return RateOutcome(None, exc, time.perf_counter() - start)
    return RateOutcome(score, None, time.perf_counter() - start)


_tasks: set[asyncio.Task[Any]] = set()


def _background(coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """A task kept referenced until done (a shielded ledger call outlives a cancelled run)."""
    task = asyncio.ensure_future(coro)
    _tasks.add(task)
    task.add_done_callback(_done)
    return task


def _done(task: asyncio.Task[Any]) -> None:
    _tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:  # logged even when also awaited
        get_logger().error(
            "cascade.ledger_error", error=f"{type(task.exception()).__name__}: {task.exception()}"
        )


async def _areserve(action: Reserve) -> Reserved:
    """Reserve off the event loop; cancelled meanwhile, a hold that still lands is released."""
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
    _background(action.budget.asettle(task.result(), ZERO))


__all__ = ["Cascade", "Prompt"]
