"""The :class:`Cascade`: the public object that runs a policy, sync or async, one or many."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cascade.budget import Budget
from cascade.engine.loop import (
    Action,
    Call,
    CallOutcome,
    OnExhausted,
    Outcome,
    RateOutcome,
    Settings,
    Tier,
    steps,
)
from cascade.errors import CascadeError, ProviderError, ScorerError
from cascade.retry import acall_with_retry, call_with_retry
from cascade.types import CascadeResult, Message, Request

Prompt = str | Request | Sequence[Message | Mapping[str, Any]]


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
    ) -> None:
        if not tiers:
            raise ValueError("a cascade needs at least one tier")
        for t in tiers[:-1]:
            if t.scorer is None or t.threshold is None:
                raise ValueError(f"tier {t.name!r} is not the last, so it needs a scorer and threshold")
        self.settings = Settings(name, tuple(tiers), budget or Budget(), on_exhausted, include_text)

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

    # -- sync ---------------------------------------------------------------------------------

    def run(
        self,
        prompt: Prompt,
        *,
        budget_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> CascadeResult:
        """Run one prompt (a string, chat messages or a :class:`Request`)."""
        request = Request.of(prompt, budget_key=budget_key, metadata=metadata)
        gen = steps(self.settings, request)
        try:
            action = next(gen)
            while True:
                action = gen.send(_execute(action))
        except StopIteration as stop:
            result: CascadeResult = stop.value
            return result
        finally:
            gen.close()  # cancelled or crashed mid-step: the loop settles its budget hold

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
    ) -> CascadeResult:
        """Async twin of :meth:`run` (same loop, same results)."""
        request = Request.of(prompt, budget_key=budget_key, metadata=metadata)
        gen = steps(self.settings, request)
        try:
            action = next(gen)
            while True:
                action = gen.send(await _aexecute(action))
        except StopIteration as stop:
            result: CascadeResult = stop.value
            return result
        finally:
            gen.close()  # cancelled or crashed mid-step: the loop settles its budget hold

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


__all__ = ["Cascade", "Prompt"]
