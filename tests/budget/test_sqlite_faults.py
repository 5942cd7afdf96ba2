"""SQLite ledger faults are one-line errors naming the file; locks wait a bounded time; async never stalls."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from cascade import LedgerError, LedgerUnavailableError
from cascade.budget.sqlite import SQLiteLedger
from cascade.cli import main

CAPS = [("b", Decimal(1))]
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _one_line(exc: BaseException, path: Path) -> str:
    text = str(exc)
    assert "\n" not in text and str(path) in text
    return text


def test_building_a_ledger_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "ledger.sqlite3"
    ledger = SQLiteLedger(path)
    assert not path.exists() and not path.parent.exists()
    ledger.settle(ledger.reserve(CAPS, Decimal("0.1")), Decimal("0.1"))
    assert path.exists()


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (b"this is not a database, just text\n" * 200, "not a readable SQLite database"),
        (b"SQLite format 3\x00" + b"\x10\x00\x01\x01" + b"\x00" * 40, "not a readable SQLite database"),
    ],
    ids=["corrupt", "truncated"],
)
def test_a_corrupt_or_truncated_file(tmp_path: Path, content: bytes, what: str) -> None:
    path = tmp_path / "ledger.sqlite3"
    path.write_bytes(content)
    with pytest.raises(LedgerError, match=what) as info:
        SQLiteLedger(path).reserve(CAPS, Decimal("0.1"))
    assert "move it aside" in _one_line(info.value, path)


def test_a_truncated_copy_of_a_real_ledger(tmp_path: Path) -> None:
    good = tmp_path / "good.sqlite3"
    ledger = SQLiteLedger(good)
    for _ in range(200):
        ledger.settle(ledger.reserve([(f"bucket-{_}", Decimal(1))], Decimal("0.1")), Decimal("0.1"))
    del ledger
    data = good.read_bytes()
    bad = tmp_path / "bad.sqlite3"
    bad.write_bytes(data[: len(data) // 3])
    led = SQLiteLedger(bad)

    def read_all() -> None:
        for i in range(200):
            led.spent(f"bucket-{i}")

    with pytest.raises(LedgerError) as info:
        read_all()
    _one_line(info.value, bad)


def test_a_foreign_database(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE users (id INTEGER, name TEXT)")
    db.commit()
    db.close()
    with pytest.raises(LedgerError, match=r"a SQLite database of something else \(tables users\)") as info:
        SQLiteLedger(path).reserve(CAPS, Decimal("0.1"))
    _one_line(info.value, path)


def test_a_foreign_table_with_our_name(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE spend (who TEXT, amount REAL)")
    db.commit()
    db.close()
    with pytest.raises(LedgerError, match=r"has a table 'spend' that is not a cascade ledger's"):
        SQLiteLedger(path).spent("b")


def test_a_directory(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="is a directory") as info:
        SQLiteLedger(tmp_path).reserve(CAPS, Decimal("0.1"))
    _one_line(info.value, tmp_path)


@pytest.mark.skipif(AS_ROOT, reason="root ignores file permissions")
def test_a_read_only_file(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    SQLiteLedger(path).reserve(CAPS, Decimal("0.1"))
    for p in tmp_path.iterdir():
        p.chmod(0o444)
    try:
        with pytest.raises(LedgerError) as info:
            SQLiteLedger(path).reserve(CAPS, Decimal("0.1"))
        _one_line(info.value, path)
    finally:
        for p in tmp_path.iterdir():
            p.chmod(0o644)


def test_a_read_only_file_via_sqlite_readonly_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same fault as a read-only file, produced in a way that holds even for root."""
    path = tmp_path / "ledger.sqlite3"
    SQLiteLedger(path).reserve(CAPS, Decimal("0.1"))
    ledger = SQLiteLedger(path)
    ledger._ready = True
    real_connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda p, **kw: real_connect(f"file:{p}?mode=ro", uri=True, **kw))
    with pytest.raises(LedgerError, match="cannot be written") as info:
        ledger.reserve(CAPS, Decimal("0.1"))
    assert "writable" in _one_line(info.value, path)


def test_a_missing_folder_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    path = blocker / "ledger.sqlite3"  # its "folder" is a file
    with pytest.raises(LedgerError) as info:
        SQLiteLedger(path).reserve(CAPS, Decimal("0.1"))
    _one_line(info.value, path)


def _lock_for(path: Path, seconds: float) -> subprocess.Popen[bytes]:
    """Another process holding the ledger's write lock for ``seconds``."""
    code = (
        "import sqlite3, sys, time\n"
        f"db = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
        "db.execute('BEGIN IMMEDIATE')\n"
        "print('locked', flush=True)\n"
        f"time.sleep({seconds})\n"
        "db.execute('ROLLBACK')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    proc.stdout.close()
    assert line == b"locked"
    return proc


@pytest.mark.slow
def test_a_locked_ledger_waits_a_bounded_time_then_says_so(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    SQLiteLedger(path).reserve(CAPS, Decimal("0.1"))
    proc = _lock_for(path, 3)
    try:
        started = time.monotonic()
        with pytest.raises(
            LedgerUnavailableError, match=r"locked by another process for more than 0\.3 s"
        ) as info:
            SQLiteLedger(path, lock_timeout=0.3).reserve(CAPS, Decimal("0.1"))
        assert time.monotonic() - started < 1.5
        assert "lock_timeout" in _one_line(info.value, path)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_async_reservations_never_stall_the_event_loop_on_a_locked_ledger(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = SQLiteLedger(path, lock_timeout=5)
    ledger.reserve(CAPS, Decimal("0.01"))
    proc = _lock_for(path, 0.8)
    worst = 0.0

    async def ticker(stop: asyncio.Event) -> None:
        nonlocal worst
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            worst = max(worst, now - last - 0.005)
            last = now

    async def main() -> None:
        stop = asyncio.Event()
        tick = asyncio.create_task(ticker(stop))
        hold = await ledger.areserve(CAPS, Decimal("0.01"))  # waits for the lock in a thread
        await ledger.asettle(hold, Decimal("0.01"))
        stop.set()
        await tick

    try:
        asyncio.run(main())
    finally:
        proc.wait()
    assert worst < 0.1, f"the event loop stalled {worst * 1000:.0f} ms"
    assert ledger.spent("b") == Decimal("0.01")


def test_a_settle_after_its_hold_row_was_purged_still_charges_once(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = SQLiteLedger(path)
    hold = ledger.reserve(CAPS, Decimal("0.5"))
    db = sqlite3.connect(path)
    db.execute("DELETE FROM holds")  # what the day-old purge does
    db.commit()
    db.close()
    for _ in range(3):
        ledger.settle(hold, Decimal("0.2"))  # was KeyError; retried settles charge once
    assert ledger.spent("b") == Decimal("0.2") and ledger.held("b") == 0


def test_a_settle_is_never_negative(tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path / "l.sqlite3")
    ledger.settle(ledger.reserve(CAPS, Decimal("0.5")), Decimal("-0.6"))
    assert ledger.spent("b") == 0


@pytest.mark.slow
def test_cli_prints_one_line_for_a_corrupt_ledger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    ledger.write_bytes(b"garbage" * 500)
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "name: p\ntiers:\n  - {name: a, provider: scripted, model: m, free: true, options: {answers: [hi]}}\n"
        f"budget:\n  caps: [{{limit: 1, window: day}}]\n  ledger: {{kind: sqlite, path: {ledger}}}\n"
    )
    assert main(["run", "-p", str(policy), "hello"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f"cascade: error: ledger {ledger} is not a readable SQLite database"
    )


def test_validate_build_does_not_create_the_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = tmp_path / "deep" / "ledger.sqlite3"
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "name: p\ntiers:\n  - {name: a, provider: scripted, model: m, free: true, options: {answers: [hi]}}\n"
        f"budget:\n  caps: [{{limit: 1, window: day}}]\n  ledger: {{kind: sqlite, path: {ledger}}}\n"
    )
    assert main(["validate", "--build", str(policy)]) == 0
    assert not ledger.exists() and not ledger.parent.exists()
