"""The outcome log: rows appended by a writer thread, never by the request that produced them.

``write(row)`` puts the row on a bounded queue and returns at once; when the queue is full the row
is dropped, counted (:attr:`OutcomeLog.dropped`) and logged (``cascade.outcome_log_dropped``, at
most once a second), so writing never blocks or fails a request. The writer thread wakes once per
``flush_interval`` (not once per row), serialises the rows gathered to JSON Lines and appends them
(a crash loses at most the rows of the last interval), whole lines in one ``write`` to an
``O_APPEND`` file, so several processes may share a log path. Files rotate by UTC day:
``outcomes.jsonl`` is written as ``outcomes-2026-11-28.jsonl``, with a ``.card.json`` beside it
naming the policy's models and prices, so each day's file is a recorded-outcomes file that
``cascade eval``/``tune`` can read.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cascade.errors import ConfigurationError
from cascade.files import card_path, write_text
from cascade.logging import get_logger

_STOP = object()


def day_path(base: Path, day: str) -> Path:
    """``logs/outcomes.jsonl`` -> ``logs/outcomes-2026-11-28.jsonl``."""
    name = base.name
    stem, suffix = (name[: -len(".jsonl")], ".jsonl") if name.endswith(".jsonl") else (name, ".jsonl")
    return base.with_name(f"{stem}-{day}{suffix}")


def _today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


class OutcomeLog:
    """Append rows to daily JSON Lines files from a background thread (see the module docstring)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        card: Mapping[str, Any] | None = None,
        queue_size: int = 10_000,
        flush_interval: float = 1.0,
        clock: Callable[[], str] = _today,
        render: Callable[[Any], Mapping[str, Any]] | None = None,
    ) -> None:
        self.base = Path(path)
        self.card = dict(card or {})
        self.flush_interval = flush_interval
        self._clock = clock
        self.render = render
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, queue_size))
        self.written = 0
        self.dropped = 0
        self.errors = 0
        self._last_drop_log = 0.0
        self._lock = threading.Lock()
        self._closed = False
        self._stop = threading.Event()
        self._fd: int | None = None
        self._day = ""
        self._check_writable()
        self._thread = threading.Thread(target=self._work, name="cascade-outcome-log", daemon=True)
        self._thread.start()

    # -- the caller's side: never blocks ------------------------------------------------------------

    def write(self, row: object) -> bool:
        """Queue ``row`` (a JSON-ready mapping, or anything ``render`` turns into one); False (and
        counted as dropped) when the queue is full or the log is closed."""
        if not self._closed:
            try:
                self._queue.put_nowait(row)
                return True
            except queue.Full:
                pass
        self._drop("queue full" if not self._closed else "closed")
        return False

    def _drop(self, why: str) -> None:
        with self._lock:
            self.dropped += 1
            now = time.monotonic()
            if now - self._last_drop_log < 1.0:
                return
            self._last_drop_log = now
            dropped = self.dropped
        get_logger().warning("cascade.outcome_log_dropped", reason=why, dropped=dropped, path=str(self.base))

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, flush and close the file (rows written later are dropped)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        with contextlib.suppress(queue.Full):  # the writer is stuck (a dead disk): give up on the rows
            self._queue.put(_STOP, timeout=timeout)
        self._thread.join(timeout)

    def __enter__(self) -> OutcomeLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_writable(self) -> None:
        """Fail at start, not silently on the writer thread: the folder must exist (or be made) and
        take files, and today's file, if there, must be a writable file."""
        path = day_path(self.base, self._clock())
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists() and not path.is_file():
                raise IsADirectoryError(errno.EISDIR, "not a file", str(path))
            if not os.access(path.parent, os.W_OK | os.X_OK) or (
                path.exists() and not os.access(path, os.W_OK)
            ):
                raise PermissionError(errno.EACCES, "not writable", str(path))
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename and str(exc.filename) != str(path) else ""
            raise ConfigurationError(
                f"{path}: cannot write the outcome log ({exc.strerror or exc}{where}); fix"
                " logging.outcomes.path"
            ) from None

    # -- the writer thread --------------------------------------------------------------------------

    def _open(self) -> int:
        day = self._clock()
        if self._fd is not None and day == self._day:
            return self._fd
        self._close_fd()
        path = day_path(self.base, day)
        path.parent.mkdir(parents=True, exist_ok=True)
        card = card_path(path)
        if self.card and not card.exists():  # whole or absent: a failed write is retried next batch
            write_text(card, json.dumps(self.card, indent=2) + "\n")
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._day = day
        return self._fd

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _work(self) -> None:
        # Rows are gathered for up to ``flush_interval`` after the first one arrives, then rendered
        # and appended together: one wake-up per batch instead of one per row, so a busy caller
        # hands the interpreter lock to this thread once a second, not once a request.
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            self._stop.wait(self.flush_interval)
            batch = [first]
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            lines: list[bytes] = []
            for item in batch:
                try:
                    data = self.render(item) if self.render is not None else item
                    lines.append(json.dumps(data, ensure_ascii=False, default=str).encode() + b"\n")
                except Exception as exc:  # a row that cannot be rendered: counted and logged, never raised
                    self._error(exc)
            if lines:
                self._write(lines)
        self._close_fd()

    def _write(self, lines: list[bytes]) -> None:
        """Append whole lines with one ``write`` on an ``O_APPEND`` file: processes and cascades
        sharing a log never interleave inside a row."""
        try:
            fd = self._open()
            chunk = memoryview(b"".join(lines))
            while chunk:
                chunk = chunk[os.write(fd, chunk) :]
            self.written += len(lines)
        except OSError as exc:  # a full disk, a removed folder: the rows are lost, counted and logged
            with self._lock:
                self.dropped += len(lines)
            self._error(exc)

    def _error(self, exc: BaseException) -> None:
        self.errors += 1
        get_logger().error("cascade.outcome_log_error", error=f"{type(exc).__name__}: {exc}")


def log_files(paths: list[str] | tuple[str, ...]) -> list[Path]:
    """The log files named by ``paths``: files as given, directories' ``*.jsonl``/``*.jsonl.gz``
    files, and a rotated base name (``outcomes.jsonl`` -> ``outcomes-*.jsonl``)."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.name.endswith((".jsonl", ".jsonl.gz"))))
        elif p.exists():
            out.append(p)
        else:
            stem = p.name[: -len(".jsonl")] if p.name.endswith(".jsonl") else p.name
            rotated = sorted(p.parent.glob(f"{stem}-????-??-??.jsonl"))
            if not rotated:
                raise FileNotFoundError(2, "no such log file or directory", str(p))
            out.extend(rotated)
    return out


__all__ = ["OutcomeLog", "day_path", "log_files"]
