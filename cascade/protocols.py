"""The three extension points: providers, scorers and ledgers.

Each is a small :class:`typing.Protocol`; anything with the right methods fits, and
:mod:`cascade.registry` makes it nameable from a policy file (also through entry points).
What a plugin *may* also offer is declared here too, one small optional Protocol per capability
(:class:`NowaitLedger`, :class:`ClockLedger`, :class:`TimedProvider`...): cascade checks for it
with ``isinstance`` (or ``getattr``) and works without it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Protocol, runtime_checkable

from cascade.money import Price
from cascade.request import Request
from cascade.types import Completion, Sample, Score, Usage


@runtime_checkable
class Provider(Protocol):
    """Talks to one model. Built per tier, with the model and generation params bound.

    ``complete`` returns ``n`` samples (one request with ``n`` where the API allows it, else ``n``
    calls) and raises only :class:`cascade.errors.ProviderError` subclasses. ``max_usage`` is the
    worst-case usage of that call, computed without network, used to reserve budget.
    """

    model: str

    def complete(self, request: Request, n: int = 1) -> Completion: ...

    async def acomplete(self, request: Request, n: int = 1) -> Completion: ...

    def max_usage(self, request: Request, n: int = 1) -> Usage: ...


@runtime_checkable
class SkipEstimator(Protocol):
    """Predicts from the prompt alone, before a tier is called, how likely its answer is to be
    accepted and right (in [0, 1]); below the tier's skip threshold the tier is not called.

    ``predict`` may raise :class:`cascade.errors.CascadeError` (an embeddings endpoint down): the
    tier is then called as if there were no estimator. An estimator that does I/O may also offer
    ``async def apredict(request) -> float``; without it the async driver runs ``predict`` in a
    worker thread, so the event loop never waits on it.
    """

    def predict(self, request: Request) -> float: ...


@runtime_checkable
class Scorer(Protocol):
    """Rates a tier's completion in [0, 1].

    ``samples`` is how many samples the scorer needs from the tier (self-consistency asks for k).
    ``max_cost`` is the worst-case cost of scoring one request (0 for local scorers), reserved
    before the tier is called. ``score`` raises :class:`cascade.errors.ScorerError` on failure.
    """

    samples: int

    def score(self, request: Request, completion: Completion) -> Score: ...

    async def ascore(self, request: Request, completion: Completion) -> Score: ...

    def max_cost(self, request: Request, max_output_tokens: int) -> Decimal: ...


@runtime_checkable
class Ledger(Protocol):
    """Holds spend against caps. ``caps`` are ``(bucket_key, limit)`` pairs.

    ``reserve`` atomically checks every cap and holds ``amount`` against all of them, returning a
    hold id, or raises :class:`cascade.errors.BudgetExceededError` holding nothing. ``settle``
    replaces the hold with the actual amount spent (which may be more or less than held), once: a
    settle retried with the same hold id (a journal replayed after a lost reply) charges nothing
    more, and a hold id made by :func:`cascade.budget.new_hold_id` names its buckets, so a settle
    of a hold the ledger never saw (``fail_open``) or already reclaimed still charges them.
    Holds older than ``ttl`` seconds are reclaimed (a crashed process cannot pin budget forever).
    ``areserve`` / ``asettle`` are the same steps for async callers and must never block the event
    loop (run blocking I/O in a thread). A ledger that can often answer at once without blocking
    may also offer :class:`NowaitLedger`'s methods (the async engine then skips the task and the
    thread). Errors reaching the ledger raise
    :class:`cascade.errors.LedgerError` (:class:`cascade.errors.LedgerUnavailableError` when a
    retry later can help), so ``budget.on_ledger_error`` can apply. A ledger may also offer
    ``now() -> datetime`` (UTC): a :class:`~cascade.budget.Budget` without a ``clock`` names window
    buckets with it (the Redis ledger: the server's clock, which every host shares).
    """

    def reserve(self, caps: Sequence[tuple[str, Decimal]], amount: Decimal, *, ttl: float = 600.0) -> str: ...

    def settle(self, hold_id: str, actual: Decimal) -> None: ...

    async def areserve(
        self, caps: Sequence[tuple[str, Decimal]], amount: Decimal, *, ttl: float = 600.0
    ) -> str: ...

    async def asettle(self, hold_id: str, actual: Decimal) -> None: ...

    def spent(self, bucket_key: str) -> Decimal: ...


@runtime_checkable
class NowaitLedger(Protocol):
    """Optional :class:`Ledger` methods that never block: ``try_reserve`` returns a hold id, raises
    :class:`cascade.errors.BudgetExceededError`, or returns None when answering would mean waiting
    (a lock held elsewhere); ``try_settle`` returns False in that case. Memory and SQLite ledgers
    offer them; a network ledger does not."""

    def try_reserve(
        self, caps: Sequence[tuple[str, Decimal]], amount: Decimal, *, ttl: float = 600.0
    ) -> str | None: ...

    def try_settle(self, hold_id: str, actual: Decimal) -> bool: ...


# -- optional capabilities ----------------------------------------------------------------------


@runtime_checkable
class ClockLedger(Protocol):
    """A ledger with its own clock (UTC): a :class:`~cascade.budget.Budget` without a ``clock``
    names window buckets with it (the Redis ledger: the server's clock, which every host shares)."""

    def now(self) -> datetime: ...


@runtime_checkable
class InProcessLedger(Protocol):
    """``in_process = True``: nothing outside this process settles its holds, so a budget waiting
    for room is woken by its own settles and needs no polling (the memory ledger)."""

    in_process: bool


@runtime_checkable
class HeldLedger(Protocol):
    """A ledger that can tell how much is held (reserved, not yet settled) on a bucket
    (``cascade spend`` shows it)."""

    def held(self, bucket_key: str) -> Decimal: ...


@runtime_checkable
class AsyncSkipEstimator(Protocol):
    """A :class:`SkipEstimator` that does I/O and offers a native async ``apredict``; without it the
    async driver runs ``predict`` in a worker thread."""

    async def apredict(self, request: Request) -> float: ...


@runtime_checkable
class KeyedScorer(Protocol):
    """A scorer that knows the comparable answer of a sample (its extractor): outcome logs record
    it, and agreement across tiers uses it (``self_consistency``)."""

    def key(self, sample: Sample) -> str | None: ...


@runtime_checkable
class TimedProvider(Protocol):
    """A provider with a per-call ``timeout`` in seconds (None: none), which the engine reports
    when a call runs out of time."""

    timeout: float | None


@runtime_checkable
class PricedProvider(Protocol):
    """A provider that knows its own price (``default_price``, None when unknown) and whether its
    calls are ``free`` (a local server, recorded replays); a policy's price wins over it."""

    default_price: Price | None
    free: bool


@runtime_checkable
class CacheMultipliers(Protocol):
    """A provider whose prompt-cache reads and writes cost a multiple of the input price
    (``(read, write)``, Anthropic: 0.1 and 1.25)."""

    cache_multipliers: tuple[Decimal | None, Decimal | None]


@runtime_checkable
class BoundedProvider(Protocol):
    """``bounded = False``: the provider cannot cap its output tokens (a LangChain model without a
    max-tokens setting), so a spend cap cannot bound its cost; ``max_tokens`` is its own cap."""

    bounded: bool


@runtime_checkable
class CostBoundProvider(Protocol):
    """A provider that knows the worst-case cost of a call itself (replay: the recorded cost);
    None falls back to the price times the worst-case usage."""

    def max_cost(self, request: Request, n: int = 1) -> Decimal | None: ...


@runtime_checkable
class StreamingProvider(Protocol):
    """A provider that streams the text of one sample, then yields the final :class:`Completion`."""

    def stream_text(self, request: Request) -> Iterator[str | Completion]: ...


@runtime_checkable
class Closeable(Protocol):
    """A provider, scorer or ledger holding connections: :meth:`cascade.Cascade.close` closes it."""

    def close(self) -> None: ...


@runtime_checkable
class AsyncCloseable(Protocol):
    """The async twin of :class:`Closeable` (:meth:`cascade.Cascade.aclose`)."""

    async def aclose(self) -> None: ...
