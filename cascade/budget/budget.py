"""The Budget: reserves the worst case on every bucket before a call, settles the real cost
after it, waits for room, survives an unreachable ledger (fail open or closed, journal)."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from cascade.budget.buckets import (
    Cap,
    OnExceeded,
    OnLedgerError,
    _period,
    host_now,
    new_hold_id,
)
from cascade.errors import BudgetExceededError, LedgerError, LedgerUnavailableError
from cascade.protocols import Ledger

# The optional capabilities are declared as Protocols (cascade/protocols.py) but looked up with
# getattr on the hot path: isinstance() against a runtime-checkable Protocol costs ~5 µs a call,
# which doubled the per-request time of a capped cascade (26 -> 56 µs with a memory ledger).


def _in_process(ledger: Ledger | None) -> bool:
    """Only this process settles the ledger's holds (:class:`~cascade.protocols.InProcessLedger`)."""
    return getattr(ledger, "in_process", False) is True


def _log(level: int) -> Any:
    """The event logger, or None when nobody listens at ``level``."""
    from cascade.logging import listening

    return listening(level)


class _Waiter:
    """A reservation queued for room: a thread's event or a coroutine's future."""

    __slots__ = ("event", "fut", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.loop = loop
        self.event = threading.Event()
        self.fut: asyncio.Future[None] | None = None

    def arm(self) -> None:
        """Forget past wake-ups; call before each try, so a wake-up during the try is not lost."""
        if self.loop is None:
            self.event.clear()
        else:
            self.fut = self.loop.create_future()

    def wake(self) -> None:
        if self.loop is None:
            self.event.set()
        elif self.fut is not None and not self.fut.done():
            self.loop.call_soon_threadsafe(_resolve, self.fut)


class _State:
    """A budget's mutable side: waiters for room, and the journal of spend not yet in the ledger.

    Waiters queue per refusing cap, first come first served. Only the head of a queue polls the
    ledger (room freed by another process wakes nobody here); a settle in this process wakes the
    heads at once, and a head that gets in wakes the next, so a thousand waiters cost one poll.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queues: dict[str, list[_Waiter]] = {}
        self.local_holds: set[str] = set()  # fail_open holds the ledger never saw
        self.journal: list[tuple[str, Decimal]] = []  # settlements to write when the ledger is back
        self.down_until = 0.0  # monotonic time before which the ledger is not tried again (fail_open)
        self.replaying = False
        self.file: Any = None  # the journal's file (cascade.budget.journal.JournalFile), made on first use
        self.adopted = False  # journal files of dead processes were looked for

    def wake_one(self) -> None:
        """Room may have been freed: wake the head of every queue."""
        with self.lock:
            for queue in self.queues.values():
                if queue:
                    queue[0].wake()

    def join(self, cap: str, waiter: _Waiter) -> None:
        with self.lock:
            self.queues.setdefault(cap, []).append(waiter)

    def busy_queue(self, buckets: Sequence[tuple[str, Decimal]]) -> str:
        """The first of ``buckets`` that reservations of this process already wait for ("" if none)."""
        with self.lock:
            return next((b for b, _ in buckets if self.queues.get(b)), "")

    def is_head(self, cap: str, waiter: _Waiter) -> bool:
        with self.lock:
            queue = self.queues.get(cap)
            return bool(queue) and queue[0] is waiter  # type: ignore[index]

    def leave(self, cap: str, waiter: _Waiter) -> None:
        """Leave the queue (admitted or given up) and wake the next, who now leads."""
        with self.lock:
            queue = self.queues.get(cap, [])
            if waiter in queue:
                queue.remove(waiter)
            if queue:
                queue[0].wake()
            else:
                self.queues.pop(cap, None)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def hold_ttl_problem(hold_ttl: float, longest: Sequence[tuple[str, float]]) -> str | None:
    """Why ``hold_ttl`` is too short for tiers whose longest calls are ``(name, seconds)`` (None:
    it is not). A hold that expires mid-call frees its money while the call may still be billed,
    so a cap could be overspent; the policy loader and :class:`~cascade.Cascade` both ask."""
    if not longest:
        return None
    name, seconds = max(longest, key=lambda t: t[1])
    if hold_ttl > seconds:
        return None
    return (
        f"hold_ttl {hold_ttl:g} s must exceed the longest call, {seconds:g} s (tier {name!r}: its timeout,"
        " which ends every try and retry wait); raise hold_ttl or lower the timeout"
    )


_POLL_MIN, _POLL_MAX = 0.005, 0.25  # waiting also polls: room freed in another process wakes nobody here
_RETRY_DOWN = 0.5  # seconds a fail_open budget skips an unreachable ledger before trying it again


@dataclass(frozen=True, slots=True)
class Budget:
    """The budget settings of a cascade.

    ``on_exceeded``: ``stop`` returns the best answer so far, ``raise`` raises
    :class:`~cascade.errors.BudgetExceededError`, ``wait`` queues the reservation up to ``max_wait``
    seconds for in-flight holds to settle (then stops). ``on_ledger_error``: ``fail_closed`` makes
    no call while the ledger is unreachable; ``fail_open`` lets calls go on and journals their
    spend locally until the ledger is back. A ledger error that is not an outage (a wrong password)
    fails closed in both modes.

    ``clock`` names the window buckets; by default the ledger's own ``now()`` when it has one (the
    Redis ledger: the server's clock, which every host shares), else this host's clock.
    """

    per_request: Decimal | None = None
    caps: tuple[Cap, ...] = ()
    on_exceeded: OnExceeded = "stop"
    ledger: Ledger | None = None
    hold_ttl: float = 600.0
    clock: Callable[[], datetime] | None = None
    max_wait: float = 30.0
    on_ledger_error: OnLedgerError = "fail_closed"
    journal_dir: str | None = None  # default $CASCADE_JOURNAL or ~/.cascade/journal
    _state: _State = field(default_factory=_State, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        import math

        if isinstance(self.hold_ttl, bool) or not (
            isinstance(self.hold_ttl, int | float) and math.isfinite(self.hold_ttl) and self.hold_ttl > 0
        ):
            raise ValueError(f"hold_ttl must be a finite number of seconds above 0, got {self.hold_ttl!r}")
        if self.caps and self.ledger is None:
            from cascade.budget.memory import MemoryLedger

            # caps must never be silently ignored: without a ledger they live in this process
            object.__setattr__(self, "ledger", MemoryLedger())

    def buckets(self, policy: str, key: str | None) -> Sequence[tuple[str, Decimal]]:
        """The (bucket, limit) pairs a request with caller ``key`` is charged against now."""
        if not self.caps:
            return ()
        now = self.clock() if self.clock is not None else self._now()
        out = []
        for cap in self.caps:
            scope = f"policy:{policy}" if cap.scope == "policy" else f"key:{policy}:{key or 'anonymous'}"
            out.append((f"{scope}|{_period(cap.window, now)}", cap.limit))
        return tuple(out)  # of strings and numbers: the collector stops tracking it (a list it never does)

    def _now(self) -> datetime:
        now: Callable[[], datetime] | None = getattr(self.ledger, "now", None)  # ClockLedger
        return now() if now is not None else host_now()

    @property
    def journal(self) -> tuple[tuple[str, Decimal], ...]:
        """Settlements not yet written to the ledger (it was unreachable): (hold id, amount)."""
        with self._state.lock:
            return tuple(self._state.journal)

    # -- ledger access: the engine goes through these, never through the ledger directly ---------

    def reserve(self, buckets: Sequence[tuple[str, Decimal]], amount: Decimal) -> str:
        """Hold ``amount`` on every bucket; raises :class:`~cascade.errors.BudgetExceededError`.

        With ``on_exceeded: wait`` a refusal waits (up to ``max_wait``) for holds to settle. With
        ``on_ledger_error: fail_open`` an unreachable ledger gives a local hold (logged) instead of
        :class:`~cascade.errors.LedgerUnavailableError`.
        """
        assert self.ledger is not None
        st = self._state
        if not st.adopted:
            self._adopt()
        if st.journal and not self._skip_ledger():
            self.replay()
        if self.on_ledger_error == "fail_open" and self._skip_ledger():
            return self._local_hold(buckets, amount, None)
        deadline: float | None = None
        poll = self._poll_start()
        waiter: _Waiter | None = None
        queue = st.busy_queue(buckets) if self.on_exceeded == "wait" else ""
        try:
            if queue:  # others already wait for this cap: line up behind them (first come, first served)
                waiter = _Waiter(None)
                st.join(queue, waiter)
                deadline = self._keep_waiting(None, queue, amount, None)
                while not (
                    waiter.event.wait(self._timeout(False, poll, deadline)) or st.is_head(queue, waiter)
                ):
                    if time.monotonic() >= deadline:
                        break
            while True:
                if waiter is not None:
                    waiter.arm()
                try:
                    return self.ledger.reserve(buckets, amount, ttl=self.hold_ttl)
                except BudgetExceededError as exc:
                    if self.on_exceeded != "wait" or self._never_fits(exc, buckets, amount):
                        raise
                    deadline = self._keep_waiting(exc, exc.cap, amount, deadline)
                    if waiter is None or queue != exc.cap:
                        if waiter is not None:
                            st.leave(queue, waiter)
                        waiter, queue = _Waiter(None), exc.cap
                        st.join(queue, waiter)
                    while True:  # only the head polls; the others sleep until woken (or they lead)
                        head = st.is_head(queue, waiter)
                        timeout = self._timeout(head, poll, deadline)
                        if waiter.event.wait(timeout) or head or time.monotonic() >= deadline:
                            break
                    poll = min(poll * 2, self._poll_max()) if head else self._poll_start()
                except LedgerUnavailableError as exc:
                    return self._unavailable(exc, buckets, amount)
        finally:
            if waiter is not None:
                st.leave(queue, waiter)

    async def areserve(self, buckets: Sequence[tuple[str, Decimal]], amount: Decimal) -> str:
        """Async :meth:`reserve`: never blocks the event loop on the ledger or while waiting."""
        assert self.ledger is not None
        st = self._state
        if not st.adopted:
            await asyncio.to_thread(self._adopt)
        if st.journal and not self._skip_ledger():
            await self.areplay()
        if self.on_ledger_error == "fail_open" and self._skip_ledger():
            return self._local_hold(buckets, amount, None)
        deadline: float | None = None
        poll = self._poll_start()
        waiter: _Waiter | None = None
        queue = st.busy_queue(buckets) if self.on_exceeded == "wait" else ""
        try:
            if queue:  # others already wait for this cap: line up behind them
                waiter = _Waiter(asyncio.get_running_loop())
                waiter.arm()
                st.join(queue, waiter)
                deadline = self._keep_waiting(None, queue, amount, None)
                first = waiter.fut
                assert first is not None
                while not st.is_head(queue, waiter) and time.monotonic() < deadline:
                    await asyncio.wait({first}, timeout=self._timeout(False, poll, deadline))
                    if first.done():
                        break
            while True:
                if waiter is not None:
                    waiter.arm()
                try:
                    return await self._areserve_once(buckets, amount)
                except BudgetExceededError as exc:
                    if self.on_exceeded != "wait":
                        raise
                    if isinstance(getattr(exc, "cap_spent", None), Decimal):
                        never = self._never_fits(exc, buckets, amount)
                    else:  # a third-party ledger: ask it off the loop
                        never = await asyncio.to_thread(self._never_fits, exc, buckets, amount)
                    if never:
                        raise
                    deadline = self._keep_waiting(exc, exc.cap, amount, deadline)
                    if waiter is None or queue != exc.cap:
                        if waiter is not None:
                            st.leave(queue, waiter)
                        waiter, queue = _Waiter(asyncio.get_running_loop()), exc.cap
                        waiter.arm()
                        st.join(queue, waiter)
                    fut = waiter.fut
                    assert fut is not None
                    while True:
                        head = st.is_head(queue, waiter)
                        await asyncio.wait({fut}, timeout=self._timeout(head, poll, deadline))
                        if fut.done() or head or time.monotonic() >= deadline:
                            break
                    poll = min(poll * 2, self._poll_max()) if head else self._poll_start()
                except LedgerUnavailableError as exc:
                    return self._unavailable(exc, buckets, amount)
        finally:
            if waiter is not None:
                st.leave(queue, waiter)

    @staticmethod
    def _timeout(head: bool, poll: float, deadline: float) -> float:
        """How long a waiter sleeps: the head until its next poll, the others a second at most."""
        left = deadline - time.monotonic()
        return max(min(left, poll * (0.5 + random.random()) if head else 1.0), 0.0)

    def _poll_start(self) -> float:
        return self._poll_max() if _in_process(self.ledger) else _POLL_MIN

    def _poll_max(self) -> float:
        # a ledger only this process uses needs no polling: its settles wake the waiters
        return 1.0 if _in_process(self.ledger) else _POLL_MAX

    def _keep_waiting(
        self, exc: BudgetExceededError | None, cap: str, amount: Decimal, deadline: float | None
    ) -> float:
        """The deadline of a reservation that may wait; raises ``exc`` when it has passed."""
        now = time.monotonic()
        if deadline is None:
            deadline = now + self.max_wait
            self._event("info", "cascade.budget_wait", cap=cap, needed=str(amount), max_wait=self.max_wait)
        elif now >= deadline and exc is not None:
            self._event("warning", "cascade.budget_wait_timeout", cap=cap, waited_s=self.max_wait)
            raise exc
        return deadline

    async def _areserve_once(self, buckets: Sequence[tuple[str, Decimal]], amount: Decimal) -> str:
        assert self.ledger is not None
        native = getattr(self.ledger, "areserve", None)
        if native is not None:
            hold: str = await native(buckets, amount, ttl=self.hold_ttl)
            return hold
        return await asyncio.to_thread(self.ledger.reserve, buckets, amount, ttl=self.hold_ttl)

    def settle(self, hold: str, actual: Decimal) -> None:
        """Replace ``hold`` by what was really spent.

        Never loses spend: if the ledger cannot write it (unreachable, read-only after a failover,
        out of memory, a rotated password: any :class:`~cascade.errors.LedgerError`) the
        settlement is journaled (event ``cascade.ledger_settle_deferred``) and written when the
        ledger takes it again (:meth:`replay`).
        """
        assert self.ledger is not None
        if self._journal_local(hold, actual):
            return
        try:
            self.ledger.settle(hold, actual)
        except LedgerError as exc:
            self._defer(hold, actual, exc)
        finally:
            self._state.wake_one()
        if self._state.journal and not self._skip_ledger():
            self.replay()

    async def asettle(self, hold: str, actual: Decimal) -> None:
        """Async :meth:`settle`."""
        assert self.ledger is not None
        if self._journal_local(hold, actual):
            return
        try:
            native = getattr(self.ledger, "asettle", None)
            if native is not None:
                await native(hold, actual)
            else:
                await asyncio.to_thread(self.ledger.settle, hold, actual)
        except LedgerError as exc:
            self._defer(hold, actual, exc)
        finally:
            self._state.wake_one()
        if self._state.journal and not self._skip_ledger():
            await self.areplay()

    # -- without suspending: the async engine's fast path -------------------------------------------

    def reserve_now(self, buckets: Sequence[tuple[str, Decimal]], amount: Decimal) -> str | None:
        """:meth:`reserve`, if the ledger can answer at once without blocking (a memory ledger, a free
        SQLite file): the hold, or :class:`~cascade.errors.BudgetExceededError` (unless ``wait``).
        None means "take the async path" (:meth:`areserve`): nothing was held."""
        attempt: Callable[..., str | None] | None = getattr(self.ledger, "try_reserve", None)  # NowaitLedger
        st = self._state
        if attempt is None or not st.adopted or st.journal or self._skip_ledger():
            return None
        if self.on_exceeded == "wait" and st.busy_queue(buckets):
            return None  # others wait for this cap: line up behind them
        try:
            hold: str | None = attempt(buckets, amount, ttl=self.hold_ttl)
        except BudgetExceededError:
            if self.on_exceeded == "wait":
                return None
            raise
        except LedgerError:
            return None  # the async path applies on_ledger_error
        return hold

    def settle_now(self, hold: str, actual: Decimal) -> bool:
        """:meth:`settle`, if the ledger can write at once without blocking; False means "take the
        async path" (:meth:`asettle`): nothing was written."""
        attempt: Callable[[str, Decimal], bool] | None = getattr(
            self.ledger, "try_settle", None
        )  # NowaitLedger
        st = self._state
        if attempt is None or st.journal or st.local_holds:
            return False
        try:
            done: bool = attempt(hold, actual)
        except LedgerError:
            return False
        if done:
            st.wake_one()
        return done

    # -- the local journal -------------------------------------------------------------------------

    def replay(self) -> int:
        """Write journaled settlements into the ledger; returns how many were written.

        Each is a settle of a hold id that names its buckets, so a ledger that no longer knows the
        hold charges its buckets, and a settlement written twice (a retry) is charged once.
        """
        assert self.ledger is not None
        batch = self._take_journal()
        done = 0
        try:
            for hold, amount in batch:
                self.ledger.settle(hold, amount)
                done += 1
        except LedgerError as exc:
            self._mark_down(exc)
        finally:
            self._return_journal(batch, done)
        return done

    async def areplay(self) -> int:
        """Async :meth:`replay`."""
        assert self.ledger is not None
        batch = self._take_journal()
        done = 0
        native = getattr(self.ledger, "asettle", None)
        try:
            for hold, amount in batch:
                if native is not None:
                    await native(hold, amount)
                else:
                    await asyncio.to_thread(self.ledger.settle, hold, amount)
                done += 1
        except LedgerError as exc:
            self._mark_down(exc)
        finally:
            self._return_journal(batch, done)
        return done

    def _file(self) -> Any:
        st = self._state
        if st.file is None:
            from pathlib import Path

            from cascade.budget.journal import JournalFile

            st.file = JournalFile(Path(self.journal_dir).expanduser() if self.journal_dir else None)
        return st.file

    def _adopt(self) -> None:
        """Take over the journals that exited processes of this host left behind (replayed next)."""
        st = self._state
        st.adopted = True
        file = self._file()
        if not file.dir.is_dir():
            return
        entries, claimed = file.claim_orphans()
        if entries:
            with st.lock:
                st.journal.extend(entries)
                pending = list(st.journal)
            file.rewrite(pending)
            total = sum((a for _, a in entries), Decimal(0))
            self._event(
                "warning", "cascade.ledger_journal_adopted", settlements=len(entries), amount=str(total)
            )
        file.forget(claimed)

    def _journaled(self, hold: str, amount: Decimal) -> None:
        with self._state.lock:
            self._state.journal.append((hold, amount))
        self._file().append(hold, amount)

    def _take_journal(self) -> list[tuple[str, Decimal]]:
        st = self._state
        with st.lock:
            if st.replaying:
                return []
            st.replaying = True
            batch, st.journal = st.journal, []
            return batch

    def _return_journal(self, batch: list[tuple[str, Decimal]], done: int) -> None:
        st = self._state
        with st.lock:
            st.replaying = False
            st.journal[:0] = batch[done:]
            left = len(st.journal)
            pending = list(st.journal)
        if done:
            self._file().rewrite(pending)
        if batch:
            if done:
                total = sum((a for _, a in batch[:done]), Decimal(0))
                self._event(
                    "warning", "cascade.ledger_replayed", settlements=done, amount=str(total), left=left
                )
            if done < len(batch):
                self._event("warning", "cascade.ledger_replay_failed", written=done, left=left)

    def _release_lost(self, exc: LedgerUnavailableError) -> None:
        """A reservation that failed in flight may still have landed: journal its release (settle 0)."""
        pending = getattr(exc, "pending_hold", None)
        if isinstance(pending, str):
            self._mark_down(exc)
            self._journaled(pending, Decimal(0))

    def _unavailable(
        self, exc: LedgerUnavailableError, buckets: Sequence[tuple[str, Decimal]], amount: Decimal
    ) -> str:
        """A reservation the ledger could not answer: re-raise ``exc`` (fail_closed) or hold locally."""
        self._release_lost(exc)
        if self.on_ledger_error != "fail_open":
            self._event("error", "cascade.ledger_unavailable", mode="fail_closed", error=str(exc))
            raise exc
        return self._local_hold(buckets, amount, exc)

    def _local_hold(
        self, buckets: Sequence[tuple[str, Decimal]], amount: Decimal, exc: Exception | None
    ) -> str:
        st = self._state
        if exc is not None:
            self._mark_down(exc)
        hold = new_hold_id([b for b, _ in buckets])
        with st.lock:
            st.local_holds.add(hold)
        self._event(
            "warning", "cascade.ledger_fail_open", needed=str(amount), error=str(exc) if exc else "down"
        )
        return hold

    def _journal_local(self, hold: str, actual: Decimal) -> bool:
        st = self._state
        with st.lock:
            if hold not in st.local_holds:
                return False
            st.local_holds.discard(hold)
        self._journaled(hold, actual)
        self._event("warning", "cascade.ledger_journaled", amount=str(actual))
        return True

    def _defer(self, hold: str, actual: Decimal, exc: Exception) -> None:
        self._mark_down(exc)
        self._journaled(hold, actual)
        self._event("error", "cascade.ledger_settle_deferred", amount=str(actual), error=str(exc))

    def _mark_down(self, exc: Exception) -> None:
        """An outage: a fail_open budget skips the ledger a moment. A mistake (a wrong password) is
        not one: the next reservation asks the ledger again and fails closed."""
        if isinstance(exc, LedgerUnavailableError):
            self._state.down_until = time.monotonic() + _RETRY_DOWN

    def _skip_ledger(self) -> bool:
        return time.monotonic() < self._state.down_until

    def _never_fits(
        self, exc: BudgetExceededError, buckets: Sequence[tuple[str, Decimal]], amount: Decimal
    ) -> bool:
        """True when no settlement can make room: the refusing cap's spend alone leaves too little."""
        assert self.ledger is not None
        for bucket, limit in buckets:
            if bucket == exc.cap:
                known = getattr(exc, "cap_spent", None)  # our ledgers say what the cap has spent
                if isinstance(known, Decimal):
                    return known + amount > limit
                try:
                    return self.ledger.spent(bucket) + amount > limit
                except LedgerUnavailableError:
                    return False
        return False

    def _event(self, level: str, event: str, **fields: Any) -> None:
        log = _log(logging.getLevelName(level.upper()))
        if log is not None:
            getattr(log, level)(event, **fields)
