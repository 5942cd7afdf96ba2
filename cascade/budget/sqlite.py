"""A SQLite ledger: caps that hold across threads and processes sharing one file.

Every reservation runs in a ``BEGIN IMMEDIATE`` transaction (one writer at a time), checks each
bucket's spent + held + amount against its limit, and records the hold; settlement replaces the
hold by the real cost. Amounts are stored as integer nano-USD (reservations rounded up, settled
amounts rounded to the nearest nano-dollar), so comparisons are exact integer arithmetic.

The file is opened on first use (building a cascade never creates it). A fault (a corrupt or
foreign file, a directory, a read-only folder, a lock held longer than ``lock_timeout``) raises
:class:`~cascade.errors.LedgerError` with one line naming the file and what to do.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict

from cascade.budget.buckets import NANO, hold_buckets, new_hold_id, refusal, reserve_nano, to_nano
from cascade.errors import LedgerError, LedgerUnavailableError

DEFAULT_PATH = "~/.cascade/ledger.sqlite3"
KEEP_S = 86400.0  # expired holds and settled ids are kept a day: a late or retried settle still charges once

_TABLES = {
    "spend": ["bucket", "nano"],
    "holds": ["id", "bucket", "nano", "expires"],
    "settled": ["id", "at"],
}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS spend (bucket TEXT PRIMARY KEY, nano INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS holds (id TEXT NOT NULL, bucket TEXT NOT NULL, nano INTEGER NOT NULL,
                                  expires REAL NOT NULL, PRIMARY KEY (id, bucket));
CREATE INDEX IF NOT EXISTS holds_bucket ON holds (bucket);
CREATE INDEX IF NOT EXISTS holds_expires ON holds (expires);
CREATE TABLE IF NOT EXISTS settled (id TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS settled_at ON settled (at);
"""


class _BusyError(Exception):
    """The file's write lock is taken: try again off the event loop."""


_T = TypeVar("_T")


def _rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        db.execute("ROLLBACK")


def default_path() -> Path:
    return Path(os.environ.get("CASCADE_LEDGER", DEFAULT_PATH)).expanduser()


class SQLiteLedger:
    """Spend and holds in a SQLite file (WAL mode)."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

    def __init__(self, path: str | os.PathLike[str] | None = None, *, lock_timeout: float = 5.0) -> None:
        self.path = Path(path).expanduser() if path is not None else default_path()
        self.lock_timeout = lock_timeout
        self._local = threading.local()
        self._ready = False
        self._init_lock = threading.Lock()
        self._last_purge = 0.0

    def __repr__(self) -> str:
        return f"SQLiteLedger({str(self.path)!r})"

    # -- opening and faults ----------------------------------------------------------------------

    def _fault(self, exc: BaseException) -> LedgerError:
        """One line naming the file and what to do, for any error SQLite or the OS raised."""
        where = str(self.path)
        text = str(exc)
        low = text.lower()
        if isinstance(exc, sqlite3.OperationalError) and ("locked" in low or "busy" in low):
            return LedgerUnavailableError(
                f"ledger {where} stayed locked by another process for more than {self.lock_timeout:g} s:"
                " find the process holding it, or raise ledger.lock_timeout",
                ledger=where,
            )
        if self.path.is_dir():
            return LedgerError(
                f"ledger {where} is a directory: set ledger.path (or $CASCADE_LEDGER) to a file", ledger=where
            )
        if "not a database" in low or "malformed" in low or "corrupt" in low:
            return LedgerError(
                f"ledger {where} is not a readable SQLite database (corrupt or truncated: {text}):"
                " move it aside to start a new ledger, or restore it from a backup",
                ledger=where,
            )
        if "readonly" in low or "read-only" in low or isinstance(exc, PermissionError):
            return LedgerError(
                f"ledger {where} cannot be written ({text}): make the file and its folder writable,"
                " or set ledger.path to a writable place",
                ledger=where,
            )
        if "unable to open" in low or isinstance(exc, OSError):
            return LedgerError(
                f"ledger {where} cannot be opened ({text}): check that its folder exists and is writable",
                ledger=where,
            )
        return LedgerError(f"ledger {where}: {type(exc).__name__}: {text}", ledger=where)

    def _connect(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is not None:
            return db
        try:
            if not self._ready:
                with self._init_lock:
                    if not self._ready:
                        self._create_when_free()
            db = sqlite3.connect(self.path, isolation_level=None, timeout=self.lock_timeout)
            db.execute("PRAGMA synchronous=NORMAL")
        except (sqlite3.Error, OSError) as exc:
            raise self._fault(exc) from None
        self._local.db = db
        return db

    def _create_when_free(self) -> None:
        """:meth:`_create`, retried while another process creates the file at the same moment.

        Switching a new file to WAL and creating its tables answers "database is locked" at once
        (SQLite's busy timeout does not cover it) when processes start together; wait up to
        ``lock_timeout`` as for any other lock.
        """
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                self._create()
                return
            except sqlite3.OperationalError as exc:
                busy = "locked" in str(exc).lower() or "busy" in str(exc).lower()
                if not busy or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)

    def _create(self) -> None:
        if self.path.is_dir():
            raise IsADirectoryError(21, "is a directory", str(self.path))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, timeout=self.lock_timeout)
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            for name in tables & set(_TABLES):
                cols = [r[1] for r in db.execute(f"PRAGMA table_info({name})")]
                if cols != _TABLES[name]:
                    raise LedgerError(
                        f"ledger {self.path} has a table {name!r} that is not a cascade ledger's"
                        f" (columns {', '.join(cols)}): point ledger.path at another file",
                        ledger=str(self.path),
                    )
            if tables and not tables & {"spend", "holds"}:
                raise LedgerError(
                    f"ledger {self.path} is a SQLite database of something else (tables"
                    f" {', '.join(sorted(tables))}): point ledger.path at another file",
                    ledger=str(self.path),
                )
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
        finally:
            db.close()
        self._ready = True

    def _tx(self, db: sqlite3.Connection) -> None:
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._fault(exc) from None

    # -- the ledger ------------------------------------------------------------------------------

    def reserve(self, caps: Sequence[tuple[str, Decimal]], amount: Decimal, *, ttl: float = 600.0) -> str:
        return self._reserve(self._connect(), caps, amount, ttl)

    def _reserve(
        self, db: sqlite3.Connection, caps: Sequence[tuple[str, Decimal]], amount: Decimal, ttl: float
    ) -> str:
        want = reserve_nano(amount)
        now = time.time()
        hid = new_hold_id([b for b, _ in caps])
        self._tx(db)
        try:
            if now - self._last_purge > 60:
                # expired holds stop counting at once; their rows stay a day so a late settle still charges
                db.execute("DELETE FROM holds WHERE expires < ?", (now - KEEP_S,))
                db.execute("DELETE FROM settled WHERE at < ?", (now - KEEP_S,))
                self._last_purge = now
            for bucket, limit in caps:
                spent = db.execute("SELECT nano FROM spend WHERE bucket = ?", (bucket,)).fetchone()
                held = db.execute(
                    "SELECT COALESCE(SUM(nano), 0) FROM holds WHERE bucket = ? AND expires >= ?",
                    (bucket, now),
                ).fetchone()[0]
                used = (spent[0] if spent else 0) + held
                cap = to_nano(limit)
                if used + want > cap:
                    spent_nano = spent[0] if spent else 0
                    raise refusal(bucket, limit, amount, Decimal(used) / NANO, Decimal(spent_nano) / NANO)
                db.execute(
                    "INSERT INTO holds (id, bucket, nano, expires) VALUES (?, ?, ?, ?)",
                    (hid, bucket, want, now + ttl),
                )
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(db)
            raise self._fault(exc) from None
        except BaseException:
            _rollback(db)
            raise
        return hid

    def settle(self, hold_id: str, actual: Decimal) -> None:
        """Charge ``actual`` to the hold's buckets once (a retried settle is a no-op).

        A hold that expired, or whose row was purged, is still charged: its id names its buckets.
        """
        self._settle(self._connect(), hold_id, actual)

    def _settle(self, db: sqlite3.Connection, hold_id: str, actual: Decimal) -> None:
        cost = max(to_nano(actual), 0)
        self._tx(db)
        try:
            if db.execute("SELECT 1 FROM settled WHERE id = ?", (hold_id,)).fetchone() is None:
                buckets = [r[0] for r in db.execute("SELECT bucket FROM holds WHERE id = ?", (hold_id,))]
                if not buckets:
                    buckets = list(hold_buckets(hold_id) or ())
                    if not buckets:
                        raise KeyError(f"unknown hold {hold_id!r}")
                db.execute("DELETE FROM holds WHERE id = ?", (hold_id,))
                for bucket in buckets:
                    db.execute(
                        "INSERT INTO spend (bucket, nano) VALUES (?, ?) "
                        "ON CONFLICT(bucket) DO UPDATE SET nano = nano + excluded.nano",
                        (bucket, cost),
                    )
                db.execute("INSERT INTO settled (id, at) VALUES (?, ?)", (hold_id, time.time()))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(db)
            raise self._fault(exc) from None
        except BaseException:
            _rollback(db)
            raise

    def release(self, hold_id: str) -> None:
        """Drop a hold without charging anything."""
        self.settle(hold_id, Decimal(0))

    # -- async: one try in the event loop, a worker thread only when the file is busy ---------------

    def _in_loop(self) -> sqlite3.Connection | None:
        """This thread's connection that never waits for a lock (None until the file is open).

        A free write lock makes a reservation a transaction of some tens of microseconds, cheaper
        than handing it to a thread; a busy one answers "locked" at once instead of stalling the
        event loop, and the call then waits in a worker thread as the sync path does.
        """
        db: sqlite3.Connection | None = getattr(self._local, "nowait", None)
        if db is None and self._ready:
            try:
                db = sqlite3.connect(self.path, isolation_level=None, timeout=0)
                db.execute("PRAGMA synchronous=NORMAL")
            except (sqlite3.Error, OSError):
                return None
            self._local.nowait = db
        return db

    def try_reserve(
        self, caps: Sequence[tuple[str, Decimal]], amount: Decimal, *, ttl: float = 600.0
    ) -> str | None:
        """:meth:`reserve` if the write lock is free now, else None (nothing held)."""
        db = self._in_loop()
        if db is None:
            return None
        try:
            return self._nowait(self._reserve, db, caps, amount, ttl)
        except _BusyError:
            return None

    def try_settle(self, hold_id: str, actual: Decimal) -> bool:
        """:meth:`settle` if the write lock is free now, else False (nothing written)."""
        db = self._in_loop()
        if db is None:
            return False
        try:
            self._nowait(self._settle, db, hold_id, actual)
        except _BusyError:
            return False
        return True

    async def areserve(
        self, caps: Sequence[tuple[str, Decimal]], amount: Decimal, *, ttl: float = 600.0
    ) -> str:
        """:meth:`reserve` at once when the file is free, else in a worker thread (never stalls the loop)."""
        hold = self.try_reserve(caps, amount, ttl=ttl)
        if hold is not None:
            return hold
        return await asyncio.to_thread(self.reserve, caps, amount, ttl=ttl)

    async def asettle(self, hold_id: str, actual: Decimal) -> None:
        """:meth:`settle` at once when the file is free, else in a worker thread."""
        if not self.try_settle(hold_id, actual):
            await asyncio.to_thread(self.settle, hold_id, actual)

    def _nowait(self, op: Callable[..., _T], db: sqlite3.Connection, *args: object) -> _T:
        """``op`` on the no-wait connection; :class:`_BusyError` when another writer holds the file."""
        try:
            return op(db, *args)
        except LedgerUnavailableError as exc:  # "locked" or "busy": nothing was written
            raise _BusyError from exc

    def _read(self, sql: str, args: tuple[object, ...]) -> int:
        try:
            row = self._connect().execute(sql, args).fetchone()
        except sqlite3.Error as exc:
            raise self._fault(exc) from None
        return int(row[0]) if row and row[0] is not None else 0

    def spent(self, bucket_key: str) -> Decimal:
        return Decimal(self._read("SELECT nano FROM spend WHERE bucket = ?", (bucket_key,))) / NANO

    def held(self, bucket_key: str) -> Decimal:
        """What live (unexpired) holds keep from ``bucket_key`` now."""
        nano = self._read(
            "SELECT COALESCE(SUM(nano), 0) FROM holds WHERE bucket = ? AND expires >= ?",
            (bucket_key, time.time()),
        )
        return Decimal(nano) / NANO

    def holds(self) -> int:
        """How many hold rows (live or expired, unsettled) the file has."""
        return self._read("SELECT COUNT(DISTINCT id) FROM holds", ())
