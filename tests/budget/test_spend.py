"""``cascade spend``: spent, held and remaining per cap, from the policy's own ledger."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from cascade.budget.redis import RedisLedger
from cascade.budget.sqlite import SQLiteLedger
from cascade.cli import main

POLICY = """name: shop
tiers:
  - {{name: a, provider: scripted, model: m, free: true, options: {{answers: [hi]}}}}
budget:
  caps:
    - {{limit: 10, window: day}}
    - {{limit: 100, window: month}}
    - {{limit: 1, window: total, scope: key}}
  ledger: {ledger}
"""


def _buckets(policy: str, key: str = "alice") -> dict[str, str]:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    return {
        "day": f"policy:{policy}|day:{now:%Y-%m-%d}",
        "month": f"policy:{policy}|month:{now:%Y-%m}",
        "key": f"key:{policy}:{key}|total",
    }


def test_spend_reads_a_sqlite_ledger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "l.sqlite3"
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY.format(ledger=f"{{kind: sqlite, path: {path}}}"))
    b = _buckets("shop")
    ledger = SQLiteLedger(path)
    ledger.settle(
        ledger.reserve([(b["day"], Decimal(10)), (b["key"], Decimal(1))], Decimal("0.5")), Decimal("0.25")
    )
    ledger.reserve([(b["day"], Decimal(10))], Decimal("1.5"))  # in flight
    assert main(["spend", "-p", str(policy), "--key", "alice", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["bucket"]: r for r in out["caps"]}
    assert rows[b["day"]] == {
        "bucket": b["day"],
        "scope": "policy",
        "window": "day",
        "limit": "10",
        "spent": "0.25",
        "held": "1.5",
        "remaining": "8.25",
    }
    assert (rows[b["key"]]["spent"], rows[b["key"]]["remaining"]) == ("0.25", "0.75")
    assert rows[b["month"]]["spent"] == "0"

    assert main(["spend", "-p", str(policy), "--window", "day"]) == 0
    text = capsys.readouterr().out
    assert b["day"] in text and "$8.25" in text and b["month"] not in text


def test_spend_without_a_key_says_per_key_caps_need_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY.format(ledger=f"{{kind: sqlite, path: {tmp_path / 'l.sqlite3'}}}"))
    assert main(["spend", "-p", str(policy)]) == 0  # before any spend: $0, and no ledger created
    out = capsys.readouterr().out
    assert "none yet, nothing spent" in out and "$0.00" in out and not (tmp_path / "l.sqlite3").exists()
    assert main(["spend", "-p", str(policy), "--json"]) == 0
    assert {c["spent"] for c in json.loads(capsys.readouterr().out)["caps"]} == {"0"}
    assert not (tmp_path / "l.sqlite3").exists()
    SQLiteLedger(tmp_path / "l.sqlite3").spent("x")
    assert main(["spend", "-p", str(policy)]) == 0
    assert "pass --key" in capsys.readouterr().out


def test_spend_reads_a_redis_ledger(
    redis_url: str, prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY.format(ledger=f"{{kind: redis, url: '{redis_url}', prefix: '{prefix}'}}"))
    b = _buckets("shop")
    ledger = RedisLedger(redis_url, prefix=prefix)
    ledger.settle(ledger.reserve([(b["month"], Decimal(100))], Decimal(3)), Decimal("2.5"))
    assert main(["spend", "-p", str(policy), "--window", "month", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["caps"]
    assert (row["spent"], row["held"], row["remaining"]) == ("2.5", "0", "97.5")


def test_spend_refuses_a_memory_ledger_and_a_policy_without_caps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY.format(ledger="{kind: memory}"))
    assert main(["spend", "-p", str(policy)]) == 2
    assert "memory ledger" in capsys.readouterr().err
    bare = tmp_path / "bare.yaml"
    bare.write_text(
        "name: b\ntiers:\n  - {name: a, provider: scripted, model: m, free: true, options: {answers: [x]}}\n"
    )
    assert main(["spend", "-p", str(bare)]) == 2
    assert "no window caps" in capsys.readouterr().err
