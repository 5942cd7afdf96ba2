"""The on-disk side of a budget's journal: settlements not yet written to an unreachable ledger.

Each journal appends to a file of its own (``<host>-<instance>.jsonl`` in the journal folder, the
instance a random 128-bit id) and rewrites it after a replay, so spend journaled by a process that
exits before the ledger is back is not lost: the next process of the same host that reaches the
ledger claims the files of dead journals (an atomic rename) and replays them. A journal is alive
while its process holds an exclusive ``flock`` on ``<host>-<instance>.lock``, which the kernel drops
when the process dies however it dies, so a restarted container whose new process got the old pid
still adopts its predecessor's journal (process ids are reused; the old ``<host>-<pid>-<id>``
files, without a lock, are claimed when that pid is dead or is this process's own). Replays are
settles of hold ids that name their buckets, and ledgers charge a hold id once, so a file replayed
twice is charged once.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import uuid
import weakref
from decimal import Decimal, InvalidOperation
from pathlib import Path

from cascade.budget.buckets import hold_buckets

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows: every locked journal counts as alive
    fcntl = None  # type: ignore[assignment]


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


def _lock(path: Path, create: bool) -> int | None:
    """A descriptor of ``path``, exclusively locked, or None when another live process holds it."""
    if fcntl is None:  # pragma: no cover
        return None
    fd = os.open(path, os.O_RDWR | os.O_CREAT if create else os.O_RDONLY, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


class _Held:
    """A held lock, released when closed or when its journal is garbage collected."""

    def __init__(self, owner: object, fd: int) -> None:
        self._finalizer = weakref.finalize(owner, os.close, fd)

    def close(self) -> None:
        self._finalizer()


def _legacy_dead(name: str) -> bool:
    """Whether an old ``<host>-<pid>-<id>.jsonl`` file (no lock) was left by a dead process."""
    parts = name[len(_host()) + 1 :].split("-")
    if len(parts) != 2 or not (parts[0].isascii() and parts[0].isdigit()) or len(parts[0]) > 9:
        return True  # no lock and no pid: nobody can be writing it
    pid = int(parts[0])
    return pid == os.getpid() or not _alive(pid)  # our own journals have a lock: same pid, older process


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
    """This journal's file (created on the first entry, removed when the journal empties)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.dir = directory if directory is not None else default_dir()
        self._lock = threading.Lock()
        self.path = self.dir / f"{_host()}-{uuid.uuid4().hex}.jsonl"
        self._alive: _Held | None = None  # the lock that says this journal's process lives
        self.errors = 0  # writes that failed (the journal still lives in memory)

    def _hold_lock(self) -> None:
        """Take this journal's lock before its file exists, so no one ever claims a live file."""
        if self._alive is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = _lock(self.path.with_suffix(".lock"), create=True)
            self._alive = _Held(self, fd) if fd is not None else None

    def close(self) -> None:
        """Drop the lock (as the process's death would): the file, if any, is an orphan now."""
        with self._lock:
            if self._alive is not None:
                self._alive.close()
                self._alive = None

    def append(self, hold: str, amount: Decimal) -> None:
        line = json.dumps({"hold": hold, "amount": str(amount)}) + "\n"
        with self._lock:
            try:
                self._hold_lock()
                with self.path.open("a", encoding="utf-8") as f:
                    f.write(line)
            except OSError:
                self.errors += 1

    def rewrite(self, entries: list[tuple[str, Decimal]]) -> None:
        """Make the file hold exactly ``entries`` (none: no file)."""
        with self._lock:
            try:
                if not entries:
                    self.path.unlink(missing_ok=True)
                    if self._alive is not None:
                        self.path.with_suffix(".lock").unlink(missing_ok=True)
                        self._alive.close()
                        self._alive = None
                    return
                self._hold_lock()
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(
                    "".join(json.dumps({"hold": h, "amount": str(a)}) + "\n" for h, a in entries),
                    encoding="utf-8",
                )
                os.replace(tmp, self.path)
            except OSError:
                self.errors += 1

    def claim_orphans(self) -> tuple[list[tuple[str, Decimal]], list[Path]]:
        """Claim the journal files of dead journals of this host: their entries, and the claimed
        files to :meth:`forget` once the entries are safe in this journal's own file."""
        out: list[tuple[str, Decimal]] = []
        claimed: list[Path] = []
        try:
            files = sorted(self.dir.glob(f"{_host()}-*.jsonl"))
        except OSError:
            return out, claimed
        for f in files:
            if f == self.path:
                continue
            lock_path = f.with_suffix(".lock")
            lock: int | None = None
            try:
                if lock_path.exists():
                    lock = _lock(lock_path, create=False)
                    if lock is None:
                        continue  # its process holds the lock: alive
                    if os.stat(lock_path).st_ino != os.fstat(lock).st_ino:
                        os.close(lock)  # its owner emptied its journal and started a new one meanwhile
                        lock = None
                        continue
                elif not _legacy_dead(f.name):
                    continue
                mine = f.with_name(f"{f.name}.claimed-{uuid.uuid4().hex[:8]}")
                os.rename(f, mine)  # atomic: one process claims a file
                text = mine.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            finally:
                if lock is not None:
                    with contextlib.suppress(OSError):
                        lock_path.unlink()
                    os.close(lock)
            out.extend(e for e in map(_parse, text.splitlines()) if e is not None)
            claimed.append(mine)
        return out, claimed

    @staticmethod
    def forget(claimed: list[Path]) -> None:
        for f in claimed:
            with contextlib.suppress(OSError):
                f.unlink()
