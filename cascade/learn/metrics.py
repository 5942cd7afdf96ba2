"""Metrics for scorers: AUROC, expected calibration error, reliability bins, accept-rate tables.

Plain numpy; ``scores`` are confidences in [0, 1], ``labels`` 1 for a correct answer, 0 otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

ArrayLike = Sequence[float] | npt.NDArray[np.float64]


def _arrays(scores: ArrayLike, labels: ArrayLike) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if s.shape != y.shape:
        raise ValueError("scores and labels must have the same length")
    return s, y


def auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve (ties count half); NaN when only one class is present."""
    s, y = _arrays(scores, labels)
    pos = y > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


@dataclass(frozen=True, slots=True)
class Bin:
    lo: float
    hi: float
    count: int
    confidence: float
    accuracy: float


def reliability(scores: ArrayLike, labels: ArrayLike, bins: int = 10) -> list[Bin]:
    """Equal-width confidence bins with mean confidence and accuracy (empty bins omitted)."""
    s, y = _arrays(scores, labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(s, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        m = which == b
        if m.any():
            out.append(
                Bin(
                    float(edges[b]), float(edges[b + 1]), int(m.sum()), float(s[m].mean()), float(y[m].mean())
                )
            )
    return out


def ece(scores: ArrayLike, labels: ArrayLike, bins: int = 10) -> float:
    """Expected calibration error: the count-weighted mean |accuracy - confidence| over bins."""
    s, _ = _arrays(scores, labels)
    if len(s) == 0:
        return float("nan")
    return sum(b.count * abs(b.accuracy - b.confidence) for b in reliability(scores, labels, bins)) / len(s)


@dataclass(frozen=True, slots=True)
class AcceptRow:
    threshold: float
    accept_rate: float
    accuracy: float | None


def accept_table(scores: ArrayLike, labels: ArrayLike, thresholds: Sequence[float]) -> list[AcceptRow]:
    """For each threshold: the share of answers accepted (score >= t) and their accuracy."""
    s, y = _arrays(scores, labels)
    rows = []
    for t in thresholds:
        m = s >= t
        rows.append(AcceptRow(t, float(m.mean()) if len(s) else 0.0, float(y[m].mean()) if m.any() else None))
    return rows


def brier(scores: ArrayLike, labels: ArrayLike) -> float:
    s, y = _arrays(scores, labels)
    return float(np.mean((s - y) ** 2))


__all__ = ["AcceptRow", "Bin", "accept_table", "auroc", "brier", "ece", "reliability"]
