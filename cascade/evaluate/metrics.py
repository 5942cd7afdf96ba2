"""The field's metrics on (cost, quality) points and per-record arrays, and bootstrap intervals.

=======================  =========================================================================
cost at matched quality  the cheapest point whose quality reaches a reference (the best single
                         model), as a share of that model's cost
AIQ (RouterBench)        area under the non-decreasing concave hull of the points (0 below the
                         cheapest one, flat after the best one) over a common cost range, divided
                         by the range
PGR / APGR (RouteLLM)    share of the weak-to-strong quality gap recovered, against the share of
                         queries that reach the strong model; APGR is the area under the PGR
                         envelope (running maximum, linear between points) over [0, 1]
CPT(x)                   the smallest share of strong calls at which PGR reaches x
oracle                   each record answered by the cheapest model with the best label
=======================  =========================================================================

Bootstrap intervals resample records: :func:`bootstrap_weights` gives a ``(B, n)`` matrix whose
rows are resampled record weights, so the mean of any per-record array over every replicate is
one matrix product.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cascade.evaluate.data import FloatArray
from cascade.money import signless


def upper_hull(cost: FloatArray, quality: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Vertices of the non-decreasing concave hull of the points (cost ascending)."""
    order = np.lexsort((-quality, cost))
    hull: list[tuple[float, float]] = []
    best = -math.inf
    for c, q in zip(cost[order].tolist(), quality[order].tolist(), strict=True):
        if q <= best:
            continue
        best = q
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            # drop the middle point when it lies on or under the chord from x1 to c
            if (y2 - y1) * (c - x1) <= (q - y1) * (x2 - x1):
                hull.pop()
            else:
                break
        hull.append((c, q))
    xs = np.array([h[0] for h in hull], dtype=np.float64)
    ys = np.array([h[1] for h in hull], dtype=np.float64)
    return xs, ys


def aiq(cost: FloatArray, quality: FloatArray, lo: float, hi: float) -> float:
    """RouterBench's AIQ of a set of points over the cost range ``[lo, hi]``, integrated exactly.

    The curve is the non-decreasing concave hull of the points: 0 below the cheapest point (nothing
    is answered for less), linear between vertices (a seeded mix of two neighbours), flat after the
    best point. Every set of points reads by this one rule, a single point included: a point
    ``(c, q)`` reads ``q * (hi - c) / (hi - lo)`` for ``c`` in the range, ``q`` at or below ``lo``
    and 0 at or above ``hi``; so a policy that is the range's costliest model alone reads 0.0 (a
    budget curve of one point buys nothing below its own cost). A range of zero width reads the best
    quality at or under it."""
    c = np.asarray(cost, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    if hi <= lo:
        return float(np.max(q[c <= hi])) if np.any(c <= hi) else 0.0
    xs, ys = upper_hull(c, q)
    cuts = np.unique(np.concatenate([[lo, hi], xs[(xs > lo) & (xs < hi)]]))
    area = 0.0
    for a, b in itertools.pairwise(cuts.tolist()):
        if b <= xs[0]:  # below the cheapest point: 0
            continue
        ha, hb = np.interp([a, b], xs, ys)  # linear on [a, b]: no vertex inside
        area += 0.5 * (float(ha) + float(hb)) * (b - a)
    return float(area / (hi - lo))


def cost_at_quality(cost: FloatArray, quality: FloatArray, target: float, tol: float = 1e-12) -> float | None:
    """The cheapest cost among points whose quality is at least ``target`` (None if none is)."""
    ok = quality >= target - tol
    return float(cost[ok].min()) if ok.any() else None


@dataclass(frozen=True)
class GapMetrics:
    """RouteLLM's metrics for a weak/strong pair."""

    apgr: float
    cpt50: float | None
    cpt80: float | None


def gap_metrics(strong_share: FloatArray, quality: FloatArray, q_weak: float, q_strong: float) -> GapMetrics:
    """APGR, CPT(50%) and CPT(80%) from points (share of strong calls, quality)."""
    gap = q_strong - q_weak
    if gap <= 0:
        return GapMetrics(math.nan, None, None)
    pgr = (quality - q_weak) / gap
    s = np.concatenate([[0.0], strong_share, [1.0]])
    p = np.concatenate([[0.0], pgr, [1.0]])
    order = np.lexsort((-p, s))
    s, p = s[order], np.maximum.accumulate(p[order])
    apgr = float(np.trapezoid(p, s))

    def cpt(x: float) -> float | None:
        hit = pgr >= x - 1e-12
        return float(strong_share[hit].min()) if hit.any() else None

    return GapMetrics(apgr, cpt(0.5), cpt(0.8))


def oracle(quality: FloatArray, cost: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Per record: the best label any model got, and the cheapest cost of a model that got it."""
    best = quality.max(axis=1)
    hit = quality >= best[:, None] - 1e-12
    return best, np.where(hit, cost, np.inf).min(axis=1)


def best_mix_aiq(
    cost: FloatArray, quality: FloatArray, lo: float, hi: float
) -> tuple[float, tuple[int, int]]:
    """The best AIQ of a random mix of two models (points are per model)."""
    best, pair = -math.inf, (0, 0)
    m = len(cost)
    for a in range(m):
        for b in range(a + 1, m):
            v = aiq(cost[[a, b]], quality[[a, b]], lo, hi)
            if v > best:
                best, pair = v, (a, b)
    if m == 1:
        best = aiq(cost, quality, lo, hi)
    return best, pair


def bootstrap_weights(n: int, reps: int, seed: int = 0) -> FloatArray:
    """``(reps, n)`` resampling weights that sum to 1 per row (a multinomial draw of n records)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=reps).astype(np.float64) / n


@dataclass(frozen=True)
class Interval:
    """A point estimate with a bootstrap 95% interval."""

    value: float
    low: float
    high: float

    def fmt(self, spec: str = ".4f", scale: float = 1.0, suffix: str = "") -> str:
        if math.isnan(self.value):
            return "n/a"
        v, lo, hi = self.value * scale, self.low * scale, self.high * scale
        if math.isnan(lo) or math.isnan(hi):
            return f"{signless(v, spec)}{suffix}"
        return f"{signless(v, spec)}{suffix} [{signless(lo, spec)}, {signless(hi, spec)}]"

    def to_dict(self) -> dict[str, float | None]:
        def clean(x: float) -> float | None:
            return None if math.isnan(x) or math.isinf(x) else x

        return {"value": clean(self.value), "low": clean(self.low), "high": clean(self.high)}


def interval(point: float, replicates: FloatArray | list[float]) -> Interval:
    r = np.asarray(replicates, dtype=np.float64)
    r = r[~np.isnan(r)]
    if len(r) == 0:
        return Interval(point, math.nan, math.nan)
    lo, hi = np.percentile(r, [2.5, 97.5])
    return Interval(point, float(lo), float(hi))


def bootstrap(stat: Callable[[FloatArray | None], float], weights: FloatArray) -> Interval:
    """``stat(None)`` on the records as they are, ``stat(w)`` on each resampled weight row."""
    point = stat(None)
    reps = []
    for w in weights:
        try:
            reps.append(stat(w))
        except (ValueError, ZeroDivisionError):
            reps.append(math.nan)
    return interval(point, reps)


def wmean(values: FloatArray, w: FloatArray | None) -> FloatArray:
    """Mean over the last axis, weighted by a resampling row (or plain)."""
    if w is None:
        return np.asarray(values.mean(axis=-1), dtype=np.float64)
    return np.asarray(values @ w, dtype=np.float64)


__all__ = [
    "GapMetrics",
    "Interval",
    "aiq",
    "best_mix_aiq",
    "bootstrap",
    "bootstrap_weights",
    "cost_at_quality",
    "gap_metrics",
    "interval",
    "oracle",
    "signless",
    "upper_hull",
    "wmean",
]
