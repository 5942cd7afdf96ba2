"""The journal on disk: spend journaled while the ledger was unreachable survives the process."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from cascade import Budget, Cap
from cascade.budget import new_hold_id
from cascade.budget.journal import JournalFile, _host
from cascade.budget.memory import MemoryLedger
from cascade.budget.redis import RedisLedger
from tests.budget.conftest import RedisServer

BUCKET = "policy:p|total"


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_dead_process_journal_is_adopted_and_replayed_once(tmp_path: Path) -> None:
    hold = new_hold_id([BUCKET])
    orphan = tmp_path / f"{_host()}-{_dead_pid()}-0000abcd.jsonl"
    orphan.write_text(
        json.dumps({"hold": hold, "amount": "0.25"})
        + "\n{not json\n"
        + json.dumps({"hold": "no-buckets-in-this-id", "amount": "1"})
        + "\n"
        + json.dumps({"hold": new_hold_id([BUCKET]), "amount": "-5"})  # never trusted
        + "\n"
    )
    ledger = MemoryLedger()
    budget = Budget(caps=(Cap(Decimal(10), "total"),), ledger=ledger, journal_dir=str(tmp_path))
    budget.settle(budget.reserve(budget.buckets("p", None), Decimal("0.1")), Decimal("0.1"))
    assert ledger.spent(BUCKET) == Decimal("0.35")  # the orphan's valid line, then this call
    assert list(tmp_path.iterdir()) == []  # claimed, replayed, removed
    again = Budget(caps=(Cap(Decimal(10), "total"),), ledger=ledger, journal_dir=str(tmp_path))
    again.reserve(again.buckets("p", None), Decimal("0.1"))
    assert ledger.spent(BUCKET) == Decimal("0.35")


def test_a_live_process_journal_is_left_alone(tmp_path: Path) -> None:
    import os

    mine = tmp_path / f"{_host()}-{os.getppid()}-0000abcd.jsonl"  # the parent of this process is alive
    mine.write_text(json.dumps({"hold": new_hold_id([BUCKET]), "amount": "0.25"}) + "\n")
    ledger = MemoryLedger()
    budget = Budget(caps=(Cap(Decimal(10), "total"),), ledger=ledger, journal_dir=str(tmp_path))
    budget.reserve(budget.buckets("p", None), Decimal("0.1"))
    assert ledger.spent(BUCKET) == 0 and mine.exists()


def test_a_journal_left_by_an_earlier_process_with_this_pid_is_adopted(tmp_path: Path) -> None:
    """A restarted container: its new process got the old pid (pid 1, say), yet adopts the journal."""
    import os

    old = tmp_path / f"{_host()}-{os.getpid()}-0000abcd.jsonl"  # the pid-named files of earlier versions
    old.write_text(json.dumps({"hold": new_hold_id([BUCKET]), "amount": "0.5"}) + "\n")
    ledger = MemoryLedger()
    budget = Budget(caps=(Cap(Decimal(10), "total"),), ledger=ledger, journal_dir=str(tmp_path))
    budget.reserve(budget.buckets("p", None), Decimal("0.1"))
    assert ledger.spent(BUCKET) == Decimal("0.5") and list(tmp_path.iterdir()) == []


def test_journal_files_are_named_by_an_instance_id_and_live_while_locked(tmp_path: Path) -> None:
    import os

    live = JournalFile(tmp_path)
    live.append(new_hold_id([BUCKET]), Decimal("0.25"))
    assert str(os.getpid()) not in live.path.name.split("-") and len(live.path.stem) > len(_host()) + 32
    ledger = MemoryLedger()
    budget = Budget(caps=(Cap(Decimal(10), "total"),), ledger=ledger, journal_dir=str(tmp_path))
    budget.reserve(budget.buckets("p", None), Decimal("0.1"))
    assert ledger.spent(BUCKET) == 0 and live.path.exists()  # same process, same pid: still alive
    live.close()  # as its process's death would
    again = Budget(caps=(Cap(Decimal(10), "total"),), ledger=ledger, journal_dir=str(tmp_path))
    again.reserve(again.buckets("p", None), Decimal("0.1"))
    assert ledger.spent(BUCKET) == Decimal("0.25") and list(tmp_path.iterdir()) == []


def _journal_and_die(directory: str) -> None:
    import os
    import signal

    JournalFile(Path(directory)).append(new_hold_id([BUCKET]), Decimal("0.3"))
    os.kill(os.getpid(), signal.SIGKILL)


def test_the_journal_of_a_killed_process_is_adopted(tmp_path: Path) -> None:
    child = multiprocessing.get_context("fork").Process(target=_journal_and_die, args=(str(tmp_path),))
    child.start()
    child.join(30)
    assert child.exitcode == -9 and len(list(tmp_path.glob("*.lock"))) == 1
    ledger = MemoryLedger()
    budget = Budget(caps=(Cap(Decimal(10), "total"),), ledger=ledger, journal_dir=str(tmp_path))
    budget.reserve(budget.buckets("p", None), Decimal("0.1"))
    assert ledger.spent(BUCKET) == Decimal("0.3") and list(tmp_path.iterdir()) == []


def test_the_file_follows_the_journal(tmp_path: Path) -> None:
    f = JournalFile(tmp_path)
    a, b = new_hold_id([BUCKET]), new_hold_id([BUCKET])
    f.append(a, Decimal("0.1"))
    f.append(b, Decimal("0.2"))
    assert [json.loads(x)["amount"] for x in f.path.read_text().splitlines()] == ["0.1", "0.2"]
    f.rewrite([(b, Decimal("0.2"))])
    assert [json.loads(x)["hold"] for x in f.path.read_text().splitlines()] == [b]
    f.rewrite([])
    assert not f.path.exists()


def _spend_while_down(url: str, prefix: str, journal: str) -> None:
    ledger = RedisLedger(url, prefix=prefix, timeout=0.2)
    budget = Budget(
        caps=(Cap(Decimal(1), "total"),), ledger=ledger, on_ledger_error="fail_open", journal_dir=journal
    )
    hold = budget.reserve(budget.buckets("p", None), Decimal("0.5"))  # Redis is down: a local hold
    budget.settle(hold, Decimal("0.3"))  # journaled, then this process exits


@pytest.mark.slow
def test_spend_of_a_process_that_exited_during_an_outage_reaches_redis(
    redis_server: RedisServer, prefix: str, tmp_path: Path
) -> None:
    journal = str(tmp_path / "journal")
    redis_server.stop()
    child = multiprocessing.get_context("fork").Process(
        target=_spend_while_down, args=(redis_server.url, prefix, journal)
    )
    child.start()
    child.join(30)
    assert child.exitcode == 0 and len(list(Path(journal).glob("*.jsonl"))) == 1
    redis_server.start()
    ledger = RedisLedger(redis_server.url, prefix=prefix)
    budget = Budget(caps=(Cap(Decimal(1), "total"),), ledger=ledger, journal_dir=journal)
    budget.reserve(budget.buckets("p", None), Decimal("0.1"))  # adopts and replays the child's journal
    assert ledger.spent(BUCKET) == Decimal("0.3")
    assert list(Path(journal).iterdir()) == []
