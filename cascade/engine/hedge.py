"""Hedged escalation: start the next tier in parallel when a tier has no verdict in time.

A tier with ``hedge: {after: ...}`` makes the loop yield a :class:`Hedge` instead of its
:class:`~cascade.engine.actions.Call`. The async driver (:func:`ahedge`) runs the tier's call and arms
a *backup*: a task that waits ``after`` seconds, reserves the next tier's worst case and calls it.
The loop scores the tier's answer meanwhile (the backup keeps running), then resolves the backup
with :class:`Join` (the tier escalated: the next tier takes the call already in flight, or calls
now if the backup never launched) or :class:`Cancel` (the tier was accepted, or the run ended: the
backup is cancelled and charged what it may have cost). The fast answer never wins by arriving
first: only a tier's scorer accepts its answer.

Hedges chain: a backup whose tier hedges too carries that tier's hedge (:attr:`Hedge.then`), armed
when the backup launches and counted from then (:attr:`Backup.next`). Joined, the loop takes the
chained backup as its own; cancelled, the loop cancels the chain link by link, charging each.

The sync driver (:func:`hedge`) arms the backup in a worker thread, its call under a
:class:`~cascade.retry.Cancellation`: a cancel ends a call of an SDK provider (OpenAI, Anthropic,
OpenAI-compatible) at once (its socket is shut, its waits between retries cut short); any other
provider's call (a LangChain model, a custom provider) is waited for. Either way the thread has
ended when :func:`join` or :func:`cancel` returns, and its hold is settled by the loop. What the
thread raised (a ledger error while reserving or releasing, a bug in a provider) is raised to the
caller by :func:`join` or :func:`cancel`, as the async driver's task's exception is.

``after: pNN`` is the tier's observed call latency at that quantile, kept in memory per
:class:`~cascade.engine.cascade.Cascade` (its :class:`Latencies`, on the loop's ``Settings``): the
last :data:`WINDOW` successful calls of each hedging tier that it took as its own, its hedged call or
a backup's call it joined (a cancelled backup's is not: only the fast ones answer before a cancel).
Until :data:`WARMUP` calls are seen, the tier does not hedge.

A backup's call that raises (a bug, not a provider error) is charged as cut off, and its error
reaches the caller once every hold is settled: :func:`ajoin` and :func:`join` raise it (the loop
then cancels the backup to settle it), :func:`acancel` and :func:`cancel` return it to the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from cascade.engine.actions import Call, CallOutcome, Reserve, Settle
from cascade.engine.latency import WARMUP, WINDOW, HedgeAfter, Latencies
from cascade.errors import BudgetExceededError
from cascade.logging import get_logger
from cascade.retry import CANCEL, Cancellation, Cancelled
from cascade.types import ZERO

# -- actions (the loop yields them) and their outcomes ------------------------------------------


@dataclass(slots=True)
class Hedge:
    """Action: ``call`` (the tier's), and after ``after`` seconds without it answering, ``backup``
    (the next tier's) in parallel, once ``reserve`` holds its worst case (outcome: :class:`Hedged`).

    ``backup`` None: the call alone (a ``pNN`` delay still warming up), only its time is measured.
    ``refusal``: the per-request cap cannot cover both calls (checked by the loop): no backup.
    """

    call: Call
    backup: Call | None
    after: float | None
    reserve: Reserve | None
    worst: Decimal  # the backup's reservation (its call and scoring)
    refusal: BudgetExceededError | None = None
    then: Hedge | None = None  # the backup's own hedge (its ``call`` is ``backup``): armed at its launch


@dataclass(slots=True)
class Backup:
    """The next tier's call, armed by a :class:`Hedge` (the async driver's task)."""

    hedge: Hedge
    task: asyncio.Task[CallOutcome | None] | None = None
    worker: Worker | None = None  # the sync driver's thread (instead of ``task``)
    launched: float | None = None  # seconds into the hedged tier's call when the backup started
    seconds: float | None = None  # how long its call took, once over (on the driver's clock)
    hold: str | None = None
    refusal: BudgetExceededError | None = None
    next: Backup | None = None  # armed by ``hedge.then`` when this backup launched: the chain goes on

    @property
    def call(self) -> Call:
        """The next tier's call (a backup is armed only with one)."""
        assert self.hedge.backup is not None
        return self.hedge.backup

    def resolved(self, call: CallOutcome | None, error: BaseException | None = None) -> Resolved:
        """Its end, for the loop (``call``: its outcome, None when it never launched or was cut off)."""
        return Resolved(self.launched, call, self.hold, self.hedge.worst, self.refusal, error, self.seconds)


@dataclass(slots=True)
class Hedged:
    call: CallOutcome
    backup: Backup | None  # None: no backup armed (none asked for, or a pNN delay warming up)
    seconds: float  # how long the tier's call took, on the driver's clock (its sleeps' clock)


@dataclass(slots=True)
class Join:
    """Action: the next tier's call is the backup's (outcome: :class:`Resolved`)."""

    backup: Backup


@dataclass(slots=True)
class Cancel:
    """Action: the backup is not needed; cancel it (outcome: :class:`Resolved`)."""

    backup: Backup


@dataclass(slots=True)
class Resolved:
    """A backup's end: its call's outcome when it launched (None: never launched, or cut off)."""

    launched: float | None
    call: CallOutcome | None
    hold: str | None
    worst: Decimal
    refusal: BudgetExceededError | None
    error: BaseException | None = None  # what a cancelled backup's call raised (a bug): the loop raises it
    seconds: float | None = None  # how long its call took, when it was over (on the driver's clock)


# -- the async driver's side ---------------------------------------------------------------------

Execute = Callable[[Any], Awaitable[Any]]


async def ahedge(action: Hedge, aexecute: Execute) -> Hedged:
    """Run the tier's call with its backup armed; returns when the tier's call is over."""
    clock = asyncio.get_running_loop().time  # the loop's clock: the one its sleeps follow
    start = clock()
    if action.backup is None or action.after is None:
        return Hedged(await aexecute(action.call), None, clock() - start)
    backup = _arm(action, aexecute, clock)
    try:
        call = await aexecute(action.call)
    except BaseException:  # cancelled mid-call: the loop never sees the backup, so it ends here
        await astop(backup, aexecute)
        raise
    return Hedged(call, backup, clock() - start)


def _arm(action: Hedge, aexecute: Execute, clock: Callable[[], float]) -> Backup:
    """The backup of ``action`` (which has one), in a task that waits ``after`` then launches it."""
    assert action.backup is not None
    assert action.after is not None
    backup = Backup(action, refusal=action.refusal)
    backup.task = asyncio.ensure_future(_launch(backup, action.backup, action.after, aexecute, clock))
    return backup


async def _launch(
    backup: Backup, call: Call, after: float, aexecute: Execute, clock: Callable[[], float]
) -> CallOutcome | None:
    t0 = clock()
    await asyncio.sleep(after)
    if backup.refusal is not None:
        return None
    reserve = backup.hedge.reserve
    if reserve is not None:
        held = await aexecute(reserve)
        if held.refusal is not None:
            backup.refusal = held.refusal
            return None
        backup.hold = held.hold
    launch = clock()
    backup.launched = launch - t0
    if backup.hedge.then is not None:  # the backup's tier hedges in turn, counted from this launch
        backup.next = _arm(backup.hedge.then, aexecute, clock)
    outcome: CallOutcome = await aexecute(call)
    backup.seconds = clock() - launch
    return outcome


async def ajoin(backup: Backup) -> Resolved:
    """The backup's call, awaited when it launched; a backup still waiting is disarmed."""
    task = backup.task
    assert task is not None
    if backup.launched is None and not task.done():
        await _cancelled(task)  # still waiting or reserving (a cancelled reserve releases its hold)
    elif backup.launched is None and not task.cancelled():
        task.result()  # a ledger error in its reserve is the caller's, as in acancel()
    call = await task if backup.launched is not None else None
    return backup.resolved(call)


async def acancel(backup: Backup) -> Resolved:
    """Cancel the backup; its outcome when it had already answered (else it was cut off), or what
    its call raised (not raised here: the loop settles the backup's hold first)."""
    task = backup.task
    assert task is not None
    call: CallOutcome | None = None
    error: BaseException | None = None
    if not task.done():
        await _cancelled(task)  # cut off: what it returns or raises now is the cancel's doing
    elif not task.cancelled():
        error = task.exception()
        call = task.result() if error is None else None
    return backup.resolved(call, error)


async def astop(backup: Backup, aexecute: Execute) -> None:
    """Cancel the backup and its chain, settling each hold at its reserved worst case (the run was
    cut off)."""
    resolved = await acancel(backup)
    reserve = backup.hedge.reserve
    if resolved.hold is not None and reserve is not None:
        await aexecute(Settle(reserve.budget, resolved.hold, reserve.amount))
    if backup.next is not None:  # final now: the backup's task (or thread) has ended
        await astop(backup.next, aexecute)


async def _cancelled(task: asyncio.Task[Any]) -> None:
    task.cancel()
    await asyncio.wait({task})  # no task left running (a cancel of ours meanwhile still propagates)
    if not task.cancelled():  # it finished before the cancel landed
        with contextlib.suppress(BaseException):
            task.result()


def stop_now(backup: Backup) -> None:
    """Synchronous :func:`astop` for a closed loop (it cannot yield): cancel, and settle the holds."""
    if backup.task is not None:
        backup.task.cancel()
    if backup.worker is not None:
        backup.worker.stop()
        if backup.worker.error is not None:  # the run ends with another exception: logged, not lost
            error = backup.worker.error
            get_logger().error("cascade.hedge_backup_error", error=f"{type(error).__name__}: {error}")
    reserve = backup.hedge.reserve
    if backup.hold is not None and reserve is not None:
        reserve.budget.settle(backup.hold, reserve.amount)
    if backup.next is not None:
        stop_now(backup.next)


# -- the sync driver's side ----------------------------------------------------------------------


@dataclass(slots=True)
class Worker:
    """A sync backup's thread: it waits ``after``, reserves, then calls under ``scope``."""

    thread: threading.Thread
    scope: Cancellation = field(default_factory=Cancellation)
    lock: threading.Lock = field(default_factory=threading.Lock)  # launch vs. disarm
    outcome: CallOutcome | None = None
    error: BaseException | None = None  # what the thread raised: a ledger error, a bug (not a provider's)

    def stop(self) -> None:
        """Cancel the backup and wait for its thread to end (at once for an SDK provider's call)."""
        with self.lock:
            self.scope.cancel()
        self.thread.join()


def hedge(action: Hedge, execute: Callable[[Any], Any], call: Callable[..., CallOutcome]) -> Hedged:
    """Sync :func:`ahedge`: the tier's call in this thread, the backup armed in a worker thread.

    ``execute``: the sync driver's (reserves and settles); ``call(action, sleep)``: its provider call."""
    start = time.monotonic()
    if action.backup is None or action.after is None:
        return Hedged(call(action.call), None, time.monotonic() - start)
    backup = _arm_thread(action, execute, call)
    try:
        outcome = call(action.call)
    except BaseException:  # crashed mid-call: the loop never sees the backup, so it ends here
        stop_now(backup)
        raise
    return Hedged(outcome, backup, time.monotonic() - start)


def _arm_thread(action: Hedge, execute: Callable[[Any], Any], call: Callable[..., CallOutcome]) -> Backup:
    """Sync :func:`_arm`: the backup of ``action`` in a worker thread, started."""
    assert action.after is not None
    backup = Backup(action, refusal=action.refusal)
    worker = Worker(threading.Thread(name="cascade-hedge", daemon=True))
    context = contextvars.copy_context()  # the run's context variables, as an asyncio task has them
    worker.thread = threading.Thread(
        target=context.run,
        args=(_run, backup, worker, action.after, execute, call),
        name="cascade-hedge",
        daemon=True,
    )
    backup.worker = worker
    worker.thread.start()
    return backup


def _run(
    backup: Backup,
    worker: Worker,
    after: float,
    execute: Callable[[Any], Any],
    call: Callable[..., CallOutcome],
) -> None:
    scope = worker.scope
    t0 = time.monotonic()
    if scope.event.wait(after) or backup.refusal is not None:
        return
    reserve = backup.hedge.reserve
    try:  # a ledger error (reserve, release) is the caller's, raised by join() or cancel()
        held = execute(reserve) if reserve is not None else None
        with worker.lock:
            if held is not None and held.refusal is not None:
                backup.refusal = held.refusal
                return
            if scope.cancelled:  # disarmed while reserving: the hold is released
                if held is not None and reserve is not None:
                    execute(Settle(reserve.budget, held.hold, ZERO))
                return
            backup.hold = held.hold if held is not None else None
            launch = time.monotonic()
            backup.launched = launch - t0
            if backup.hedge.then is not None:  # the backup's tier hedges in turn (not once disarmed)
                backup.next = _arm_thread(backup.hedge.then, execute, call)
    except BaseException as exc:
        worker.error = exc
        return
    token = CANCEL.set(scope)
    try:
        outcome = call(backup.call, scope.sleep)
    except Cancelled:
        return
    except BaseException as exc:  # not a provider's error (those are outcomes): raised by join()
        worker.error = exc
        return
    finally:
        CANCEL.reset(token)
    backup.seconds = time.monotonic() - launch
    # an error that came after the cancel is the cancel's doing: the call was cut off
    worker.outcome = outcome if outcome.completion is not None or not scope.cancelled else None


def join(backup: Backup) -> Resolved:
    """Sync :func:`ajoin`: the backup's call, waited for when it launched; one still waiting is disarmed."""
    worker = backup.worker
    assert worker is not None
    with worker.lock:
        if backup.launched is None:
            worker.scope.cancel()
    worker.thread.join()
    _raise(worker)  # as ``await task`` raises it in ajoin(): the loop abandons the call
    call = worker.outcome if backup.launched is not None else None
    return backup.resolved(call)


def cancel(backup: Backup) -> Resolved:
    """Sync :func:`acancel`: cancel the backup; its outcome when it had already answered."""
    worker = backup.worker
    assert worker is not None
    worker.stop()
    return backup.resolved(worker.outcome, worker.error)


def _raise(worker: Worker) -> None:
    """Raise what the backup's thread raised, once (the loop then cancels the backup again)."""
    error, worker.error = worker.error, None
    if error is not None:
        raise error


__all__ = [
    "WARMUP",
    "WINDOW",
    "Backup",
    "Cancel",
    "Hedge",
    "HedgeAfter",
    "Hedged",
    "Join",
    "Latencies",
    "Resolved",
]
