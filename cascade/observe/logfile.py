"""Reading outcome logs back: rows from one or many (rotated, possibly gzipped) files.

Log files are untrusted input (a crash can leave a cut-off last line, a file may be edited by
hand): a line that is not a row is skipped and counted, never fatal, and every field read later is
checked for its type.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cascade.files import read_lines
from cascade.observe.outcome_log import log_files
from cascade.observe.session import parse_duration


@dataclass
class Log:
    """Rows read from outcome-log files, with what could not be read."""

    rows: list[dict[str, Any]]
    files: list[Path]
    bad_lines: int = 0
    cards: list[dict[str, Any]] = field(default_factory=list)

    @property
    def tiers(self) -> list[str]:
        """Tier names in policy order (from the rows' traces, the cards as a fallback)."""
        seen: dict[str, None] = {}
        for card in self.cards:
            for t in card.get("tiers") or ():
                if isinstance(t, str):
                    seen.setdefault(t, None)
        for r in self.rows:
            for t in meta(r).get("tiers") or {}:
                seen.setdefault(t, None)
        return list(seen)


def meta(row: Mapping[str, Any]) -> dict[str, Any]:
    m = row.get("cascade")
    return m if isinstance(m, dict) else {}


def _valid(d: Any) -> bool:
    if not isinstance(d, dict) or not isinstance(d.get("id"), str) or not isinstance(d.get("prompt"), str):
        return False
    responses = d.get("responses")
    if not isinstance(responses, dict):
        return False
    return all(isinstance(v, list) and all(isinstance(s, dict) for s in v) for v in responses.values())


def read_log(paths: Iterable[str]) -> Log:
    """Rows of every file named (see :func:`~cascade.observe.outcome_log.log_files`), in file order."""
    files = log_files(tuple(paths))
    rows: list[dict[str, Any]] = []
    bad = 0
    cards = []
    for f in files:
        for line in read_lines(f, errors="replace"):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if _valid(d):
                rows.append(d)
            else:
                bad += 1
        name = f.name
        for suffix in (".jsonl.gz", ".jsonl"):
            if name.endswith(suffix):
                card = f.with_name(name[: -len(suffix)] + ".card.json")
                if card.exists():
                    try:
                        loaded = json.loads(card.read_text(encoding="utf-8"))
                    except ValueError:
                        loaded = None
                    if isinstance(loaded, dict):
                        cards.append(loaded)
                break
    return Log(rows, files, bad, cards)


def timestamp(row: Mapping[str, Any]) -> datetime | None:
    ts = meta(row).get("ts")
    if not isinstance(ts, str):
        return None
    try:
        t = datetime.fromisoformat(ts)
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def since(rows: list[dict[str, Any]], window: str, now: datetime | None = None) -> list[dict[str, Any]]:
    """Rows newer than ``window`` (``7d``, ``12h``, ``30m``) before ``now``."""
    cut = (now or datetime.now(UTC)) - timedelta(seconds=parse_duration(window))
    return [r for r in rows if (t := timestamp(r)) is not None and t >= cut]


def merged_card(cards: list[dict[str, Any]]) -> dict[str, Any]:
    """One card for rows of several files: the union of their models (first price wins)."""
    out: dict[str, Any] = {}
    models: dict[str, Any] = {}
    for c in cards:
        for k, v in c.items():
            if k != "models":
                out.setdefault(k, v)
        for m, info in (c.get("models") or {}).items():
            models.setdefault(m, info)
    out["models"] = models
    return out


__all__ = ["Log", "merged_card", "meta", "read_log", "since", "timestamp"]
