"""A SQLite ledger: caps that hold across threads and processes sharing one file.

Every reservation runs in a ``BEGIN IMMEDIATE`` transaction (one writer at a time), checks each
bucket's spent + held + amount against its limit, and records the hold; settlement replaces the
hold by the real cost. Amounts are stored as integer nano-USD (reservations rounded up, settled
amounts rounded to the nearest nano-dollar), so comparisons are exact integer arithmetic.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from cascade.errors import BudgetExceededError
from cascade.types import show

NANO = Decimal("1e9")
DEFAULT_PATH = "~/.cascade/ledger.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spend (bucket TEXT PRIMARY KEY, nano INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS holds (id TEXT NOT NULL, bucket TEXT NOT NULL, nano INTEGER NOT NULL,
                                  expires REAL NOT NULL, PRIMARY KEY (id, bucket));
CREATE INDEX IF NOT EXISTS holds_bucket ON holds (bucket);
"""


def _nano(amount: Decimal, rounding: str) -> int:
    return int((amount * NANO).to_integral_value(rounding=rounding))


def default_path() -> Path:
    return Path(os.environ.get("CASCADE_LEDGER", DEFAULT_PATH)).expanduser()


class SQLiteLedger:
    """Spend and holds in a SQLite file (WAL mode)."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect() as db:
            db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def reserve(self, caps: Sequence[tuple[str, Decimal]], amount: Decimal, *, ttl: float = 600.0) -> str:
        db = self._connect()
        want = _nano(amount, ROUND_CEILING)
        now = time.time()
        hid = uuid.uuid4().hex
        db.execute("BEGIN IMMEDIATE")
        try:
            # expired holds stop counting at once; their rows stay a day so a late settle still charges
            db.execute("DELETE FROM holds WHERE expires < ?", (now - 86400,))
            for bucket, limit in caps:
                spent = db.execute("SELECT nano FROM spend WHERE bucket = ?", (bucket,)).fetchone()
                held = db.execute(
                    "SELECT COALESCE(SUM(nano), 0) FROM holds WHERE bucket = ? AND expires >= ?",
                    (bucket, now),
                ).fetchone()[0]
                used = (spent[0] if spent else 0) + held
                cap = _nano(limit, ROUND_HALF_UP)
                if used + want > cap:
                    raise BudgetExceededError(
                        f"cap {bucket} (${show(limit)}) cannot cover ${show(amount)}:"
                        f" ${show(Decimal(used) / NANO)} used or held",
                        cap=bucket,
                        needed=amount,
                        available=Decimal(cap - used) / NANO,
                    )
                db.execute(
                    "INSERT INTO holds (id, bucket, nano, expires) VALUES (?, ?, ?, ?)",
                    (hid, bucket, want, now + ttl),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return hid

    def settle(self, hold_id: str, actual: Decimal) -> None:
        db = self._connect()
        cost = _nano(actual, ROUND_HALF_UP)
        db.execute("BEGIN IMMEDIATE")
        try:
            buckets = [r[0] for r in db.execute("SELECT bucket FROM holds WHERE id = ?", (hold_id,))]
            if not buckets:
                raise KeyError(f"unknown or expired hold {hold_id!r}")
            db.execute("DELETE FROM holds WHERE id = ?", (hold_id,))
            for bucket in buckets:
                db.execute(
                    "INSERT INTO spend (bucket, nano) VALUES (?, ?) "
                    "ON CONFLICT(bucket) DO UPDATE SET nano = nano + excluded.nano",
                    (bucket, cost),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def spent(self, bucket_key: str) -> Decimal:
        row = self._connect().execute("SELECT nano FROM spend WHERE bucket = ?", (bucket_key,)).fetchone()
        return Decimal(row[0] if row else 0) / NANO
