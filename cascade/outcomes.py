"""Recorded-outcomes files (format ``cascade-outcomes/1``): what models answered, with labels.

A file is gzip (or plain) JSON Lines, one query per line: ``id``, ``prompt``, ``reference``,
optional ``split``, and ``responses`` mapping model name -> list of samples (``text``,
``answer``, ``quality``, ``input_tokens``, ``output_tokens``, ``cost_usd``, optional ``variant``
and ``judge``). A ``NAME.card.json`` beside ``NAME.jsonl.gz`` may give per-model prices.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from cascade.errors import ConfigurationError
from cascade.files import card_path, read_lines
from cascade.money import Price, usd


@dataclass(frozen=True, slots=True)
class RecordedSample:
    text: str | None
    answer: str | None
    quality: float | None
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal | None
    variant: str | None = None
    judge: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Record:
    id: str
    prompt: str
    reference: Any
    split: str | None
    responses: Mapping[str, tuple[RecordedSample, ...]]


@dataclass
class Outcomes:
    """A loaded recorded-outcomes file."""

    path: Path
    records: list[Record]
    card: Mapping[str, Any] = field(default_factory=dict)
    by_id: dict[str, Record] = field(default_factory=dict)
    by_prompt: dict[str, Record] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for r in self.records:
            self.by_id.setdefault(r.id, r)
            self.by_prompt.setdefault(r.prompt, r)
            self.by_prompt.setdefault(r.prompt.strip(), r)

    @property
    def name(self) -> str:
        return str(self.card.get("name") or self.path.name.split(".")[0])

    @property
    def models(self) -> list[str]:
        """Every model in the file, in first-seen order."""
        seen: dict[str, None] = {}
        for r in self.records:
            for m in r.responses:
                seen.setdefault(m, None)
        return list(seen)

    def price(self, model: str) -> Price | None:
        info = (self.card.get("models") or {}).get(model)
        if not info or "input_usd_per_mtok" not in info:
            return None
        return Price(usd(info["input_usd_per_mtok"]), usd(info["output_usd_per_mtok"]))

    def find(self, prompt: str, id: str | None = None) -> Record | None:
        if id is not None and id in self.by_id:
            return self.by_id[id]
        return self.by_prompt.get(prompt) or self.by_prompt.get(prompt.strip())

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)


def _num(v: Any) -> float | None:
    return None if v is None else float(v)


def _sample(d: Mapping[str, Any]) -> RecordedSample:
    cost = d.get("cost_usd")
    return RecordedSample(
        text=d.get("text"),
        answer=None if d.get("answer") is None else str(d["answer"]),
        quality=_num(d.get("quality")),
        input_tokens=int(d.get("input_tokens") or 0),
        output_tokens=int(d.get("output_tokens") or 0),
        cost_usd=None if cost is None else usd(cost),
        variant=d.get("variant"),
        judge=d.get("judge"),
    )


def read(path: str | Path) -> Outcomes:
    """Read a recorded-outcomes file (not cached); errors name the file and line."""
    p = Path(path)
    if not p.exists():
        raise ConfigurationError(f"{p}: no such recorded-outcomes file")
    records: list[Record] = []
    try:
        _read_lines(p, read_lines(p), records)
    except UnicodeDecodeError as err:
        raise ConfigurationError(f"{p}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    card_file = card_path(p)
    card: Any = {}
    if card_file.exists():
        try:
            card = json.loads(card_file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise ConfigurationError(f"{card_file}: not a valid card (JSON: {err})") from None
        if not isinstance(card, dict) or not isinstance(card.get("models", {}), dict):
            raise ConfigurationError(
                f"{card_file}: not a valid card (expected an object with a 'models' object)"
            )
        for m, info in card.get("models", {}).items():
            for key in ("input_usd_per_mtok", "output_usd_per_mtok"):
                if isinstance(info, dict) and key in info:
                    try:
                        usd(info[key])
                    except (ValueError, TypeError, ArithmeticError):
                        raise ConfigurationError(
                            f"{card_file}: models.{m}.{key}: not a price ({info[key]!r})"
                        ) from None
    return Outcomes(p, records, card)


def _read_lines(p: Path, fh: Any, records: list[Record]) -> None:
    for lineno, line in enumerate(fh, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            records.append(
                Record(
                    id=str(d["id"]),
                    prompt=d["prompt"],
                    reference=d.get("reference"),
                    split=d.get("split"),
                    responses={
                        m: tuple(_sample(s) for s in samples) for m, samples in d["responses"].items()
                    },
                )
            )
        except (ValueError, KeyError, TypeError, AttributeError, ArithmeticError) as err:
            raise ConfigurationError(f"{p}:{lineno}: not a recorded-outcomes record ({err!r})") from None


_cache: dict[tuple[str, float], Outcomes] = {}
_lock = threading.Lock()


def load(path: str | Path) -> Outcomes:
    """Read a file once per process (re-read if it changed)."""
    p = Path(path).resolve()
    key = (str(p), p.stat().st_mtime if p.exists() else 0.0)
    with _lock:
        if key not in _cache:
            _cache[key] = read(p)
        return _cache[key]
