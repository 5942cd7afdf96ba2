"""Reading outcome logs back: rows from one or many (rotated, possibly gzipped) files.

Log files are untrusted input (a crash can leave a cut-off last line, a file may be edited by
hand): a line that is not a row is skipped and counted, never fatal, and every field read later is
checked for its type. A file that is something else (a recorded-outcomes file, rows of another
format or with a malformed ``cascade`` block) is refused with a :class:`ConfigurationError` naming
the file and line: read as a log it would give figures that look right and are not.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cascade.durations import parse_duration
from cascade.errors import ConfigurationError
from cascade.files import read_lines
from cascade.observe.outcome_log import log_files
from cascade.observe.record import FORMAT


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


def answered(row: Mapping[str, Any]) -> str | None:
    """The tier whose answer the row's request got; None when it got none: an error, or an
    abstention (rows written before ``abstained`` existed named the last tier with reason
    ``abstained``: read as abstentions too)."""
    m = meta(row)
    tier = m.get("answered")
    return tier if isinstance(tier, str) and not abstained(row) else None


def abstained(row: Mapping[str, Any]) -> bool:
    """Whether the row's request ended in an abstention (``on_unverified: abstain``)."""
    m = meta(row)
    return bool(m.get("abstained")) or m.get("reason") == "abstained"


def _valid(d: Any) -> bool:
    if not isinstance(d, dict) or not isinstance(d.get("id"), str) or not isinstance(d.get("prompt"), str):
        return False
    responses = d.get("responses")
    if not isinstance(responses, dict):
        return False
    return all(isinstance(v, list) and all(isinstance(s, dict) for s in v) for v in responses.values())


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", type(None): "null"}.get(type(value), type(value).__name__)


def _not_a_log_row(m: Any) -> str | None:
    """Why a record's ``cascade`` block is not an outcome-log row's (None: it is one)."""
    if not isinstance(m, dict):
        return f"its `cascade` block is {_kind(m)}, not an object"
    fmt = m.get("format")
    if fmt is None:
        return f"its `cascade` block has no `format` (an outcome-log row says {FORMAT!r})"
    if fmt != FORMAT:
        return f"format {fmt!r} is not one this version reads ({FORMAT!r})"
    if not isinstance(m.get("tiers"), dict):
        return f"its `cascade.tiers` is {_kind(m.get('tiers'))}, not an object"
    return None


def read_log(paths: Iterable[str]) -> Log:
    """Rows of every file named (see :func:`~cascade.observe.outcome_log.log_files`), in file order.

    Raises :class:`ConfigurationError` for a file that is not an outcome log (see the module)."""
    files = log_files(tuple(paths))
    rows: list[dict[str, Any]] = []
    bad = 0
    cards = []
    for f in files:
        for lineno, line in enumerate(read_lines(f, errors="replace"), 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if not _valid(d):
                bad += 1
            elif "cascade" not in d:
                raise ConfigurationError(
                    f"{f}:{lineno}: a recorded-outcomes record, not an outcome-log row (no `cascade`"
                    " block): `cascade eval` and `tune` read such files; report and label read the"
                    " files of a policy's logging.outcomes"
                )
            elif (why := _not_a_log_row(d["cascade"])) is not None:
                raise ConfigurationError(f"{f}:{lineno}: not an outcome-log row: {why}")
            else:
                rows.append(d)
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
    """Rows newer than ``window`` (``7d``, ``12h``, ``30m``) before ``now``; a row without a
    readable ``ts`` is left out (count them with :func:`undated`)."""
    cut = (now or datetime.now(UTC)) - timedelta(seconds=parse_duration(window))
    return [r for r in rows if (t := timestamp(r)) is not None and t >= cut]


def undated(rows: Iterable[Mapping[str, Any]]) -> int:
    """How many rows have no readable ``ts`` (so no window can hold them)."""
    return sum(1 for r in rows if timestamp(r) is None)


def policies(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Rows per policy that logged them: ``name@identity`` (``name`` for rows without one)."""
    out: dict[str, int] = {}
    for r in rows:
        m = meta(r)
        key = f"{m.get('policy')}@{m['policy_id']}" if m.get("policy_id") else str(m.get("policy"))
        out[key] = out.get(key, 0) + 1
    return out


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


__all__ = [
    "Log",
    "abstained",
    "answered",
    "merged_card",
    "meta",
    "policies",
    "read_log",
    "since",
    "timestamp",
    "undated",
]
