"""The :class:`Cascade`: the public object that runs a policy, sync or async, one or many."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Generator, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from cascade.budget import Budget, hold_ttl_problem
from cascade.engine.actions import Tier
from cascade.engine.drive import AsyncStep, Step, adrive, astream, drive, stream
from cascade.engine.loop import Action, OnExhausted, OnUnverified, Outcome, Settings, steps
from cascade.errors import CascadeError, InvalidRequestError
from cascade.request import Prompt, Request
from cascade.types import CascadeResult

if TYPE_CHECKING:
    from pathlib import Path

    from cascade.engine.assemble import Parts
    from cascade.engine.batch import BatchReport
    from cascade.observe import Observer

T = TypeVar("T")
Sessions = str | Sequence[str | None] | None
"""A batch's sessions: one for every prompt, or one per prompt."""


class Cascade:
    """Runs prompts through tiers, cheapest first, until a scorer accepts an answer.

    Build one from a policy file with :meth:`from_policy` (or :func:`cascade.load`), or directly
    from :class:`~cascade.engine.actions.Tier` objects.
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
        on_unverified: OnUnverified = "answer",
    ) -> None:
        if not tiers:
            raise ValueError("a cascade needs at least one tier")
        for t in tiers[:-1]:
            if t.scorer is None or t.threshold is None:
                raise ValueError(f"tier {t.name!r} is not the last, so it needs a scorer and threshold")
        if tiers[-1].skip is not None:
            raise ValueError(f"tier {tiers[-1].name!r} is the last tier: it cannot be skipped")
        if on_unverified == "abstain" and (tiers[-1].scorer is None or tiers[-1].threshold is None):
            raise ValueError(
                f"on_unverified: abstain needs a scorer and threshold on the last tier {tiers[-1].name!r}"
            )
        if budget is not None and budget.caps:  # as the policy loader checks a policy's
            problem = hold_ttl_problem(budget.hold_ttl, _longest_calls(tiers))
            if problem is not None:
                raise ValueError(problem)
        self.settings = Settings(
            name, tuple(tiers), budget or Budget(), on_exhausted, include_text, on_unverified=on_unverified
        )
        self.observer = observer  # outcome log, shadow sampling, session pins, metrics (cascade.observe)

    @classmethod
    def from_policy(cls, policy: Any, **overrides: Any) -> Cascade:
        """Build from a policy file path or a :class:`~cascade.policy.Policy`.

        ``overrides``: ``ledger``, ``providers`` (tier name -> provider or LangChain chat model),
        ``base_dir`` (see :func:`cascade.engine.build.build`).
        """
        from cascade.engine.assemble import assemble  # policy parsing: loaded only when used

        return cls.from_parts(assemble(policy, **overrides))

    @classmethod
    def from_parts(cls, parts: Parts) -> Cascade:
        """A cascade from parts a policy was assembled into (:func:`cascade.engine.assemble.assemble`)."""
        return cls(
            parts.tiers,
            name=parts.name,
            budget=parts.budget,
            on_exhausted=parts.on_exhausted,
            include_text=parts.include_text,
            observer=parts.observer,
            on_unverified=parts.on_unverified,
        )

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def tiers(self) -> tuple[Tier, ...]:
        return self.settings.tiers

    # -- resources ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the providers' (and scorers') HTTP clients; use ``with cascade: ...`` to be sure.

        A closed cascade may still be used: the built-in providers open new clients on their next call.
        """
        if self.observer is not None:  # first: pending shadow work still uses the clients
            self.observer.close()
        for obj in self._closeables():
            closer = getattr(obj, "close", None)
            if callable(closer):
                closer()

    async def aclose(self) -> None:
        """Close the async clients made on the running event loop (and the sync ones, as :meth:`close`)."""
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
        return drive(self._steps(request, session))

    def batch(
        self,
        prompts: Iterable[Prompt],
        *,
        concurrency: int = 8,
        return_exceptions: bool = False,
        budget_key: str | None = None,
        session: Sessions = None,
    ) -> list[CascadeResult | CascadeError]:
        """Run many prompts on a thread pool; results in input order.

        With ``return_exceptions`` a failing prompt yields its :class:`CascadeError` in place.
        ``session``: one session for every prompt, or one per prompt (a sequence as long as the
        prompts; ``None`` items have none), for session pinning as in :meth:`run`.
        """
        items = list(prompts)
        sessions = _sessions(session, len(items))

        def one(i: int) -> CascadeResult | CascadeError:
            try:
                return self.run(items[i], budget_key=budget_key, session=sessions[i])
            except CascadeError as exc:
                if return_exceptions:
                    return exc
                raise

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            return list(pool.map(one, range(len(items))))

    def drive(
        self,
        prompt: Prompt,
        step: Callable[[Action], Step[T]],
        *,
        budget_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        session: str | None = None,
    ) -> Generator[T | CascadeResult, None, None]:
        """Run one prompt, each of the loop's actions executed by your ``step``
        (:func:`cascade.engine.drive.stream`): yields what ``step`` yields, then the result.

        ``step(action)`` is a generator that yields items for the consumer (say, the chunks of an
        answer it streams) and last :class:`~cascade.engine.drive.Executed` with the action's outcome
        (:func:`cascade.engine.drive.execute` computes the usual one). Close the generator to abandon
        the run: its open hold is settled before ``close()`` returns.
        """
        request = Request.of(prompt, budget_key=budget_key, metadata=metadata)
        return stream(self._steps(request, session), step)

    def adrive(
        self,
        prompt: Prompt,
        step: Callable[[Action], AsyncStep[T]],
        *,
        budget_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        session: str | None = None,
    ) -> AsyncGenerator[T | CascadeResult, None]:
        """Async :meth:`drive` (``step`` an async generator; :func:`cascade.engine.drive.aexecute`).

        Cancelled or closed mid-step, the open hold is settled off the event loop before the
        cancellation propagates (or ``aclose()`` returns)."""
        request = Request.of(prompt, budget_key=budget_key, metadata=metadata)
        return astream(self._steps(request, session), step)

    def provider_batch(
        self,
        prompts: Iterable[Prompt],
        *,
        budget_key: str | None = None,
        state: str | Path | None = None,
        poll_interval: float = 30.0,
    ) -> BatchReport:
        """Run ``prompts`` with each tier round as one provider batch job, at batch prices.

        OpenAI-format tiers only. ``state``: a file that makes the job resumable (re-run the same
        call after a crash: no request is sent, nor paid for, twice). See :mod:`cascade.engine.batch`.
        """
        from cascade.engine.batch import run_batch

        return run_batch(
            self.settings, prompts, budget_key=budget_key, state=state, poll_interval=poll_interval
        )

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
        return await adrive(self._steps(request, session))

    async def abatch(
        self,
        prompts: Iterable[Prompt],
        *,
        concurrency: int = 32,
        return_exceptions: bool = False,
        budget_key: str | None = None,
        session: Sessions = None,
    ) -> list[CascadeResult | CascadeError]:
        """Run many prompts concurrently, at most ``concurrency`` at once; results in input order.

        ``session`` as in :meth:`batch`.
        """
        items = list(prompts)
        sessions = _sessions(session, len(items))
        gate = asyncio.Semaphore(max(1, concurrency))

        async def one(p: Prompt, key: str | None) -> CascadeResult | CascadeError:
            async with gate:
                try:
                    return await self.arun(p, budget_key=budget_key, session=key)
                except CascadeError as exc:
                    if return_exceptions:
                        return exc
                    raise

        return list(await asyncio.gather(*(one(p, k) for p, k in zip(items, sessions, strict=True))))


def _longest_calls(tiers: Sequence[Tier]) -> list[tuple[str, float]]:
    """Each tier's longest call, where its provider says its timeout (a test double may not)."""
    out = []
    for t in tiers:
        timeout = getattr(t.provider, "timeout", None)
        if isinstance(timeout, int | float) and not isinstance(timeout, bool):
            out.append((t.name, t.retry.longest(float(timeout))))
    return out


def _sessions(session: Sessions, n: int) -> list[str | None]:
    """One session per prompt: ``session`` for all, or the sequence given (its length checked)."""
    if session is None or isinstance(session, str):
        return [session] * n
    keys = list(session)
    if len(keys) != n:
        raise InvalidRequestError(f"session: {len(keys)} sessions for {n} prompts (give one per prompt)")
    for k in keys:
        if k is not None and not isinstance(k, str):
            raise InvalidRequestError(f"session: a session is a string or None, not {type(k).__name__}")
    return keys


__all__ = ["Cascade", "Prompt"]
