"""The on-disk side of a budget's journal: settlements not yet written to an unreachable ledger.

Each process appends to a file of its own (``<host>-<pid>-<id>.jsonl`` in the journal folder) and
rewrites it after a replay, so spend journaled by a process that exits before the ledger is back
is not lost: the next process of the same host that reaches the ledger claims the files of dead
processes (an atomic rename) and replays them. Replays are settles of hold ids that name their
buckets, and ledgers charge a hold id once, so a file replayed twice is charged once.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import uuid
from decimal import Decimal, InvalidOperation
from pathlib import Path

from cascade.budget import hold_buckets


def default_dir() -> Path:
    """``$CASCADE_JOURNAL``, else a ``journal`` folder next to the default SQLite ledger."""
    env = os.environ.get("CASCADE_JOURNAL")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("CASCADE_LEDGER", "~/.cascade/ledger.sqlite3")).expanduser().parent / "journal"


def _host() -> str:
    return "".join(c if c.isalnum() or c in "._" else "_" for c in socket.gethostname())[:64] or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # not ours to signal: it exists
        return True
    return True


def _parse(line: str) -> tuple[str, Decimal] | None:
    """One journal line, validated (a file is input: a bad line is skipped, never trusted)."""
    try:
        row = json.loads(line)
        hold, amount = row["hold"], Decimal(row["amount"])
    except (ValueError, KeyError, TypeError, InvalidOperation):
        return None
    if not isinstance(hold, str) or hold_buckets(hold) is None or not amount.is_finite() or amount < 0:
        return None
    return hold, amount


class JournalFile:
    """This process's journal file (created on the first entry, removed when the journal empties)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.dir = directory if directory is not None else default_dir()
        self._lock = threading.Lock()
        self._path: Path | None = None
        self.errors = 0  # writes that failed (the journal still lives in memory)

    @property
    def path(self) -> Path:
        if self._path is None:
            self._path = self.dir / f"{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        return self._path

    def append(self, hold: str, amount: Decimal) -> None:
        line = json.dumps({"hold": hold, "amount": str(amount)}) + "\n"
        with self._lock:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as f:
                    f.write(line)
            except OSError:
                self.errors += 1

    def rewrite(self, entries: list[tuple[str, Decimal]]) -> None:
        """Make the file hold exactly ``entries`` (none: no file)."""
        with self._lock:
            try:
                if not entries:
                    if self._path is not None:
                        self._path.unlink(missing_ok=True)
                    return
                self.dir.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(
                    "".join(json.dumps({"hold": h, "amount": str(a)}) + "\n" for h, a in entries),
                    encoding="utf-8",
                )
                os.replace(tmp, self.path)
            except OSError:
                self.errors += 1

    def claim_orphans(self) -> tuple[list[tuple[str, Decimal]], list[Path]]:
        """Claim the journal files left by dead processes of this host: their entries, and the
        claimed files to :meth:`forget` once the entries are safe in this process's own file."""
        out: list[tuple[str, Decimal]] = []
        claimed: list[Path] = []
        try:
            files = sorted(self.dir.glob(f"{_host()}-*.jsonl"))
        except OSError:
            return out, claimed
        for f in files:
            try:
                pid = int(f.name[len(_host()) + 1 :].split("-", 1)[0])
            except ValueError:
                continue
            if pid == os.getpid() or _alive(pid):
                continue
            mine = f.with_name(f"{f.name}.claimed-{os.getpid()}")
            try:
                os.rename(f, mine)  # atomic: one process claims a file
                text = mine.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            out.extend(e for e in map(_parse, text.splitlines()) if e is not None)
            claimed.append(mine)
        return out, claimed

    @staticmethod
    def forget(claimed: list[Path]) -> None:
        for f in claimed:
            with contextlib.suppress(OSError):
                f.unlink()
