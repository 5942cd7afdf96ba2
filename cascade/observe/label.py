"""Quality labels for outcome-log rows, without humans where need be.

Sources (each fills ``quality`` of every sample it can judge; the first source given wins where
several can):

- ``strongest``: agreement of each sample's extracted answer with the answer of the row's
  strongest tier (its majority answer). Rows where the strongest tier was not called (live rows it
  was not needed for, unless shadow-sampled) get no label. Answers are compared as extracted
  (``answer``); a sample without one is labelled 0.
- ``judge``: a judge scorer's rating of each sample's text (needs ``include_text`` logs), within a
  budget in USD; samples left when the budget is spent stay unlabelled.
- ``file:labels.csv``: human labels joined by id (the row's ``id`` or the caller's ``request_id``):
  columns ``id,reference`` (the right answer; samples labelled by matching it) or
  ``id,model,quality`` (a label for every sample of that model).
- ``recorded``: the labels a replayed sample carried (offline demos and benchmarks only).

:func:`agreement` says how often two sources agree on the rows both label.
"""

from __future__ import annotations

import csv
import itertools
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from cascade.errors import ConfigurationError, ProviderError, ScorerError
from cascade.observe.logfile import meta

# a source's labels for one row: model -> one label (or None) per sample
Labels = dict[str, list[float | None]]
Source = Callable[[dict[str, Any]], Labels | None]


def _answers(row: Mapping[str, Any], model: str) -> list[str | None]:
    out: list[str | None] = []
    for s in row["responses"].get(model) or []:
        a = s.get("answer")
        out.append(None if a is None else str(a).strip())
    return out


def strongest_model(row: Mapping[str, Any]) -> str | None:
    """The response key of the row's last (strongest) policy tier, if it answered."""
    m = meta(row)
    raw = m.get("tiers")
    tiers: dict[str, Any] = raw if isinstance(raw, dict) else {}
    name = m.get("strongest")
    if not isinstance(name, str):  # a row without the policy's tier list: its last tier called
        names = list(tiers)
        name = names[-1] if names else None
    trace = tiers.get(name) if name is not None else None
    model = trace.get("model") if isinstance(trace, dict) else None
    return model if isinstance(model, str) and row["responses"].get(model) else None


def strongest(row: dict[str, Any]) -> Labels | None:
    model = strongest_model(row)
    if model is None:
        return None
    votes = Counter(a for a in _answers(row, model) if a is not None)
    if not votes:
        return None
    reference = votes.most_common(1)[0][0]
    return {m: [1.0 if a == reference else 0.0 for a in _answers(row, m)] for m in row["responses"]}


def recorded(row: dict[str, Any]) -> Labels | None:
    out: Labels = {}
    for m, samples in row["responses"].items():
        labels = [_float(s.get("recorded_quality")) for s in samples]
        if any(v is not None for v in labels):
            out[m] = labels
    return out or None


def _float(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        return None
    try:
        f = float(v)
    except ValueError:
        return None
    return f if 0.0 <= f <= 1.0 else None


class FileLabels:
    """Human labels from a CSV file (a :data:`Source`; see the module docstring), with what the
    file names (``models``) and the ids it labels twice with different values (``conflicts``,
    one message each; the last line wins)."""

    def __init__(self, path: str | Path) -> None:
        p = self.path = Path(path)
        self.by_ref: dict[str, str] = {}
        self.by_model: dict[str, dict[str, float]] = {}
        self.conflicts: list[str] = []
        with open(p, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            cols = set(reader.fieldnames or ())
            if "id" not in cols or not ({"reference"} <= cols or {"model", "quality"} <= cols):
                raise ConfigurationError(f"{p}: labels need columns id,reference or id,model,quality")
            for lineno, rec in enumerate(reader, 2):
                rid = (rec.get("id") or "").strip()
                if not rid:
                    continue
                if rec.get("model") and rec.get("quality") not in (None, ""):
                    q = _float(rec["quality"])
                    if q is None:
                        raise ConfigurationError(f"{p}:{lineno}: quality must be a number in 0..1")
                    model = rec["model"].strip()
                    self._set(
                        self.by_model.setdefault(rid, {}), model, q, f"{p}:{lineno}: id {rid!r} {model}"
                    )
                elif rec.get("reference") not in (None, ""):
                    self._set(self.by_ref, rid, str(rec["reference"]).strip(), f"{p}:{lineno}: id {rid!r}")

    def _set(self, into: dict[str, Any], key: str, value: Any, where: str) -> None:
        if key in into and into[key] != value:
            self.conflicts.append(f"{where} labelled {into[key]!r} before, now {value!r} (the last wins)")
        into[key] = value

    @property
    def models(self) -> set[str]:
        """The models the file labels by name (``id,model,quality``)."""
        return {m for given in self.by_model.values() for m in given}

    def __call__(self, row: dict[str, Any]) -> Labels | None:
        for k in (row["id"], meta(row).get("request_id")):
            if isinstance(k, str) and k in self.by_model:
                given = self.by_model[k]
                out: Labels = {
                    m: [given[m]] * len(row["responses"][m]) for m in row["responses"] if m in given
                }
                return out or None  # the row has none of the models named: not labelled
            if isinstance(k, str) and k in self.by_ref:
                ref = self.by_ref[k]
                return {m: [1.0 if a == ref else 0.0 for a in _answers(row, m)] for m in row["responses"]}
        return None


def from_file(path: str | Path) -> FileLabels:
    """A source of human labels from a CSV file (see the module docstring)."""
    return FileLabels(path)


@dataclass
class JudgeBudget:
    limit: Decimal
    spent: Decimal = Decimal(0)
    calls: int = 0
    skipped: int = 0
    failed: int = 0


def from_judge(scorer: Any, budget: JudgeBudget) -> Source:
    """A source rating each sample's text with a judge ``scorer`` (needs texts in the log)."""
    from cascade.request import Request
    from cascade.types import Completion, Sample, Usage

    def source(row: dict[str, Any]) -> Labels | None:
        if row["prompt"].startswith("sha256:"):
            return None
        request = Request.of(row["prompt"])
        out: Labels = {}
        for m, samples in row["responses"].items():
            labels: list[float | None] = []
            for s in samples:
                text = s.get("text")
                if not isinstance(text, str) or budget.spent >= budget.limit:
                    budget.skipped += isinstance(text, str)
                    labels.append(None)
                    continue
                budget.calls += 1
                try:
                    score = scorer.score(request, Completion((Sample(text),), Usage(), m))
                except (ScorerError, ProviderError) as exc:  # no verdict: unlabelled, its cost counted
                    budget.spent += exc.cost if isinstance(exc, ScorerError) else Decimal(0)
                    budget.failed += 1
                    labels.append(None)
                    continue
                budget.spent += score.cost
                labels.append(float(score.value))
            out[m] = labels
        return out if any(v is not None for ls in out.values() for v in ls) else None

    return source


@dataclass
class PairAgreement:
    a: str
    b: str
    compared: int
    agreed: int

    @property
    def rate(self) -> float | None:
        return self.agreed / self.compared if self.compared else None


def agreement(labels: Mapping[str, Sequence[Labels | None]]) -> list[PairAgreement]:
    """For each pair of sources: on rows both label, how many first-sample labels agree (a label
    of 0.5 or more counts as right)."""
    out = []
    for a, b in itertools.combinations(labels, 2):
        compared = agreed = 0
        for la, lb in zip(labels[a], labels[b], strict=True):
            if la is None or lb is None:
                continue
            for m in la.keys() & lb.keys():
                x, y = (la[m] or [None])[0], (lb[m] or [None])[0]
                if x is None or y is None:
                    continue
                compared += 1
                agreed += (x >= 0.5) == (y >= 0.5)
        out.append(PairAgreement(a, b, compared, agreed))
    return out


def apply(row: dict[str, Any], sources: Sequence[Labels | None]) -> bool:
    """Fill ``quality`` of the row's samples from the first source that labels each; True if the
    row's every model got a first-sample label."""
    complete = True
    for m, samples in row["responses"].items():
        for i, s in enumerate(samples):
            s["quality"] = None
            for labels in sources:
                if labels is not None and m in labels and i < len(labels[m]) and labels[m][i] is not None:
                    s["quality"] = labels[m][i]
                    break
        complete = complete and bool(samples) and samples[0]["quality"] is not None
    return complete


__all__ = [
    "FileLabels",
    "JudgeBudget",
    "Labels",
    "PairAgreement",
    "agreement",
    "apply",
    "from_file",
    "from_judge",
    "recorded",
    "strongest",
    "strongest_model",
]
