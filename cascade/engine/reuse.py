"""One call per model per request: samples already bought within a run are reused, not bought again.

Every run of the loop carries a :class:`SampleCache`. A call is identified by its *call key* (the
provider kind, model, options and generation params, see :func:`call_key`) and the request (its
messages, tools and tool choice). When a later tier, a self-consistency voter or mixture source, or
a judge asks for samples of a call already made in this run, it gets the samples bought so far and
only the missing ones are bought (a *top-up*). A reused sample costs nothing and its usage is not
counted again, so billing, the trace and the ledger count each paid call once.

The tier calls go through the cache in the drivers (:mod:`cascade.engine.drive`); the providers a
scorer builds (mixture sources, judges) are wrapped in :class:`ReusingProvider` by the build
context, and find the run's cache in a context variable the drivers set while a scorer runs.
Outside a run (a scorer called directly, the offline simulator) the wrapper calls straight through.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from cascade.protocols import Provider
from cascade.request import Request
from cascade.types import ZERO, Completion, Sample, Usage

current: ContextVar[SampleCache | None] = ContextVar("cascade_sample_cache", default=None)
"""The sample cache of the run whose scorer is executing (set by the drivers)."""


def call_key(kind: str, model: str, options: Mapping[str, Any], params: Mapping[str, Any]) -> str:
    """What makes two calls the same call: provider kind, model, provider options, generation params."""
    return json.dumps([kind, model, options, params], sort_keys=True, default=str, separators=(",", ":"))


def _request_key(request: Request) -> str:
    return repr((request.messages, request.tools, request.tool_choice))


@dataclass(frozen=True, slots=True)
class Bought:
    """How a sample was bought: the ``index``-th of ``k`` samples of one call that used ``usage``
    and was billed ``cost`` (None: priced by the tier). Reused samples keep it (outcome logs record
    what the sample cost when it was bought, not the $0 of its reuse)."""

    usage: Usage
    k: int
    index: int
    cost: Decimal | None


@dataclass(slots=True)
class _Entry:
    samples: list[Sample] = field(default_factory=list)
    bought: list[Bought] = field(default_factory=list)  # one per sample
    asked: int = 0  # samples asked for that came back or are simply not there (a short recording)
    lock: asyncio.Lock | None = None


class SampleCache:
    """The samples bought in one run, by call; ``reused`` counts the samples served again."""

    __slots__ = ("_entries", "reused")

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], _Entry] = {}
        self.reused = 0

    @property
    def empty(self) -> bool:
        """Nothing asked for yet in this run (so nothing to reuse)."""
        return not self._entries

    def bought(self, key: str, request: Request) -> int:
        """How many samples of this call the run has bought so far (reusable for free)."""
        if not self._entries:  # no call yet: no request key to build
            return 0
        entry = self._entries.get((key, _request_key(request)))
        return len(entry.samples) if entry is not None else 0

    def missing(self, key: str, request: Request, n: int) -> int:
        """How many of ``n`` samples of this call a request for them would still buy."""
        if not self._entries:
            return n
        entry = self._entries.get((key, _request_key(request)))
        return max(0, n - entry.asked) if entry is not None else n

    def _plan(self, key: str, request: Request, n: int) -> tuple[_Entry, int]:
        entry = self._entries.setdefault((key, _request_key(request)), _Entry())
        return entry, max(0, n - entry.asked)

    def _serve(self, entry: _Entry, n: int, bought: Completion | None, model: str) -> Completion:
        have = min(n, len(entry.samples))
        reused = have - (len(bought.samples) if bought is not None else 0)
        self.reused += max(0, reused)
        samples = tuple(entry.samples[:n])
        if bought is None:
            raw: dict[str, Any] = {"reused_samples": have, "bought": tuple(entry.bought[:n])}
            return Completion(samples=samples, usage=Usage(), model=model, cost=ZERO, raw=raw)
        raw = dict(bought.raw)
        if reused > 0:
            raw["reused_samples"] = reused
            raw["bought"] = tuple(entry.bought[:n])
        return replace(bought, samples=samples, raw=raw)

    def _store(self, entry: _Entry, asked: int, got: Completion) -> None:
        k = len(got.samples)
        entry.bought.extend(Bought(got.usage, k, i, got.cost) for i in range(k))
        entry.samples.extend(got.samples)
        # samples lost to failed parallel calls may be asked for again; a short recording may not
        entry.asked += len(got.samples) if got.failed_calls else asked

    def complete(self, key: str, provider: Provider, request: Request, n: int) -> Completion:
        """``n`` samples of ``provider`` for ``request``: the ones bought in this run, topped up."""
        entry, missing = self._plan(key, request, n)
        bought = None
        if missing:
            bought = _top_up(provider, request, entry.asked, missing)
            self._store(entry, missing, bought)
        return self._serve(entry, n, bought, provider.model)

    async def acomplete(self, key: str, provider: Provider, request: Request, n: int) -> Completion:
        """Async :meth:`complete`; concurrent voters of one call wait for each other, not pay twice."""
        entry, _ = self._plan(key, request, n)
        if entry.lock is None:
            entry.lock = asyncio.Lock()
        async with entry.lock:
            missing = max(0, n - entry.asked)
            bought = None
            if missing:
                bought = await _atop_up(provider, request, entry.asked, missing)
                self._store(entry, missing, bought)
            return self._serve(entry, n, bought, provider.model)


def _replays(provider: Provider) -> bool:
    """A recorded-outcomes provider answers ``n`` with the first ``n`` recorded samples."""
    from cascade.providers.replay import ReplayProvider

    return isinstance(provider, ReplayProvider)


def _top_up(provider: Provider, request: Request, have: int, missing: int) -> Completion:
    if have and _replays(provider):  # the next recorded samples, billed as the difference
        return _difference(provider.complete(request, have + missing), provider.complete(request, have), have)
    return provider.complete(request, missing)


async def _atop_up(provider: Provider, request: Request, have: int, missing: int) -> Completion:
    if have and _replays(provider):
        whole = await provider.acomplete(request, have + missing)
        return _difference(whole, await provider.acomplete(request, have), have)
    return await provider.acomplete(request, missing)


def _difference(whole: Completion, first: Completion, have: int) -> Completion:
    """The samples of ``whole`` after the first ``have``, with the usage and cost they add."""
    a, b = whole.usage, first.usage
    usage = Usage(
        max(0, a.input_tokens - b.input_tokens),
        max(0, a.output_tokens - b.output_tokens),
        max(0, a.cached_input_tokens - b.cached_input_tokens),
        max(0, a.cache_creation_tokens - b.cache_creation_tokens),
    )
    cost: Decimal | None = None
    if whole.cost is not None and first.cost is not None:
        cost = max(ZERO, whole.cost - first.cost)
    return replace(whole, samples=whole.samples[have:], usage=usage, cost=cost)


class ReusingProvider:
    """A provider built for a scorer (a mixture source, a judge) that reuses the run's samples.

    Everything but the calls is the wrapped provider's (``model``, ``max_usage``, prices, ``close``).
    """

    def __init__(self, inner: Provider, key: str) -> None:
        self.inner = inner
        self.key = key
        self.model = inner.model

    def complete(self, request: Request, n: int = 1) -> Completion:
        cache = current.get()
        if cache is None:
            return self.inner.complete(request, n)
        return cache.complete(self.key, self.inner, request, n)

    async def acomplete(self, request: Request, n: int = 1) -> Completion:
        cache = current.get()
        if cache is None:
            return await self.inner.acomplete(request, n)
        return await cache.acomplete(self.key, self.inner, request, n)

    def max_usage(self, request: Request, n: int = 1) -> Usage:
        """The worst case of what asking for ``n`` samples would buy: within a run, only the
        samples not bought yet (so a scorer's reservation does not count reused samples)."""
        cache = current.get()
        if cache is not None:
            n = cache.missing(self.key, request, n)
            if n == 0:
                return Usage()
        return self.inner.max_usage(request, n)

    def __getattr__(self, name: str) -> Any:
        if name == "inner" or name.startswith("__"):  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"ReusingProvider({self.inner!r})"


__all__ = ["Bought", "ReusingProvider", "SampleCache", "call_key", "current"]
