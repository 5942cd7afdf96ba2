"""The outcome log: never blocks, counts drops, rotates by day, flushes within its interval."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from cascade.observe.outcome_log import OutcomeLog, day_path, log_files


def test_rows_are_written_to_the_days_file_with_a_card(tmp_path: Path) -> None:
    log = OutcomeLog(tmp_path / "o.jsonl", card={"models": {"m": {}}}, clock=lambda: "2026-01-02")
    assert log.write({"id": "1"}) and log.write({"id": "2"})
    log.close()
    f = tmp_path / "o-2026-01-02.jsonl"
    assert [json.loads(x)["id"] for x in f.read_text().splitlines()] == ["1", "2"]
    assert json.loads((tmp_path / "o-2026-01-02.card.json").read_text()) == {"models": {"m": {}}}
    assert log.written == 2 and log.dropped == 0


def test_rotation_by_day(tmp_path: Path) -> None:
    day = ["2026-01-01"]
    log = OutcomeLog(tmp_path / "o.jsonl", clock=lambda: day[0], flush_interval=0.01)
    log.write({"id": "a"})
    deadline = time.monotonic() + 5
    while log.written < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    day[0] = "2026-01-02"
    log.write({"id": "b"})
    log.close()
    assert (tmp_path / "o-2026-01-01.jsonl").read_text().count("\n") == 1
    assert (tmp_path / "o-2026-01-02.jsonl").read_text().count("\n") == 1
    assert [p.name for p in log_files([str(tmp_path / "o.jsonl")])] == [
        "o-2026-01-01.jsonl",
        "o-2026-01-02.jsonl",
    ]


def test_a_full_queue_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    gate = threading.Event()

    def slow(row: object) -> dict[str, object]:
        gate.wait(5)
        return {"row": row}

    log = OutcomeLog(tmp_path / "o.jsonl", queue_size=2, render=slow)
    started = time.perf_counter()
    results = [log.write(i) for i in range(50)]
    took = time.perf_counter() - started
    gate.set()
    log.close()
    assert took < 0.5  # the writer is stuck, the callers are not
    assert results.count(False) == log.dropped >= 40
    assert log.written == 50 - log.dropped


def test_rows_reach_the_file_within_the_flush_interval(tmp_path: Path) -> None:
    log = OutcomeLog(tmp_path / "o.jsonl", flush_interval=0.05, clock=lambda: "d")
    log.write({"id": "x"})
    f = tmp_path / "o-d.jsonl"
    deadline = time.monotonic() + 5
    while (not f.exists() or not f.read_text()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert f.read_text().strip() == '{"id": "x"}'  # on disk while the log is still open
    log.close()


def test_a_row_that_cannot_be_rendered_is_counted_not_raised(tmp_path: Path) -> None:
    def bad(row: object) -> dict[str, object]:
        raise ValueError("no")

    log = OutcomeLog(tmp_path / "o.jsonl", render=bad)
    assert log.write(1)
    log.close()
    assert log.errors == 1 and log.written == 0


def test_writes_after_close_are_dropped(tmp_path: Path) -> None:
    log = OutcomeLog(tmp_path / "o.jsonl")
    log.close()
    assert not log.write({"id": "late"})
    assert log.dropped == 1


def test_day_path() -> None:
    assert day_path(Path("logs/outcomes.jsonl"), "2026-11-28") == Path("logs/outcomes-2026-11-28.jsonl")
    assert day_path(Path("logs/out"), "2026-11-28") == Path("logs/out-2026-11-28.jsonl")


def test_logs_sharing_a_path_never_interleave_inside_a_row(tmp_path: Path) -> None:
    logs = [OutcomeLog(tmp_path / "o.jsonl", clock=lambda: "d", flush_interval=0.001) for _ in range(3)]
    big = "x" * 5000  # rows larger than a buffer's page

    def fill(log: OutcomeLog, who: int) -> None:
        for i in range(300):
            log.write({"who": who, "i": i, "pad": big})

    threads = [threading.Thread(target=fill, args=(log, n)) for n, log in enumerate(logs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for log in logs:
        log.close()
    rows = [json.loads(line) for line in (tmp_path / "o-d.jsonl").read_text().splitlines()]
    assert len(rows) == 900 and all(r["pad"] == big for r in rows)


def test_a_failing_disk_counts_rows_as_dropped(tmp_path: Path) -> None:
    log = OutcomeLog(tmp_path / "blocked" / "o.jsonl")  # writable at start (checked then)...
    (tmp_path / "blocked").rmdir()
    (tmp_path / "blocked").write_text("a file where the log folder should be")  # ...not later
    assert log.write({"id": "1"})  # accepted: the caller never sees the disk
    log.close()
    assert log.written == 0 and log.dropped == 1 and log.errors == 1


def test_a_failed_card_write_leaves_no_truncated_card(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk while the day's card is written: no half card stays (it would never be
    rewritten), and the next batch writes it whole."""
    real, failures = Path.write_text, [1]

    def disk_full(self: Path, data: str, *args: object, **kwargs: object) -> int:
        if not failures:
            return real(self, data, *args, **kwargs)  # type: ignore[arg-type]
        failures.pop()
        real(self, data[: len(data) // 2], encoding="utf-8")
        raise OSError(28, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", disk_full)
    log = OutcomeLog(tmp_path / "o.jsonl", card={"models": {"m": {}}}, clock=lambda: "2026-01-02")
    log.write({"id": "1"})
    log.close()
    assert log.dropped == 1 and not (tmp_path / "o-2026-01-02.card.json").exists()
    log = OutcomeLog(tmp_path / "o.jsonl", card={"models": {"m": {}}}, clock=lambda: "2026-01-02")
    log.write({"id": "2"})
    log.close()
    assert json.loads((tmp_path / "o-2026-01-02.card.json").read_text()) == {"models": {"m": {}}}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
