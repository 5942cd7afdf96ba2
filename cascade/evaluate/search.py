"""The tuner's search over settings (tiers, order, thresholds) on the training rows, in numpy."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cascade.evaluate.candidates import Candidate
from cascade.evaluate.data import BoolArray, FloatArray
from cascade.evaluate.metrics import upper_hull
from cascade.evaluate.simulate import TierArrays
from cascade.evaluate.tuning import Setting

# -- search -------------------------------------------------------------------------------------


@dataclass
class _Arr:
    """A tier's train arrays, ready for the fast two-tier path."""

    accept_score: FloatArray  # -inf where the tier cannot accept (no answer, scorer error)
    ok: BoolArray
    quality: FloatArray
    cost: FloatArray

    @classmethod
    def of(cls, t: TierArrays) -> _Arr:
        can = t.ok & ~t.scorer_error & ~np.isnan(t.score)
        return cls(
            np.where(can, t.score, -np.inf), t.ok, np.nan_to_num(t.quality), np.where(t.ok, t.cost, 0.0)
        )


def _two_tier(
    first: _Arr, last: _Arr, rows: BoolArray, fallback_q: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """All thresholds of ``first -> last`` on ``rows`` at once: (thresholds, quality sums, cost sums).

    ``fallback_q`` is what a record gets when the last tier has no answer (an earlier candidate)."""
    a = first.accept_score[rows]
    q1 = first.quality[rows]
    c1 = first.cost[rows]
    okl = last.ok[rows]
    ql = np.where(okl, last.quality[rows], np.where(first.ok[rows], q1, fallback_q[rows]))
    cl = last.cost[rows]
    order = np.argsort(-a, kind="stable")
    a_s = a[order]
    gain = np.cumsum((q1 - ql)[order])
    saved = np.cumsum(cl[order])
    # a cut after position i accepts every record with score >= a_s[i]; keep the last index of
    # each distinct finite score
    finite = np.isfinite(a_s)
    last_of = np.r_[a_s[1:] != a_s[:-1], True] & finite
    th = np.r_[a_s[last_of], np.inf]
    base_q, base_c = float(ql.sum()), float(c1.sum() + cl.sum())
    qs = np.r_[base_q + gain[last_of], base_q]
    cs = np.r_[base_c - saved[last_of], base_c]
    return th, qs, cs


def _levels(score: FloatArray, k: int) -> FloatArray:
    s = score[np.isfinite(score)]
    values = np.unique(s)
    if len(values) > k:
        values = np.unique(np.quantile(s, np.linspace(0, 1, k + 1)[1:]))
    out: FloatArray = np.r_[values, np.inf]
    return out


class _Search:
    def __init__(self, cands: list[Candidate], rows: BoolArray) -> None:
        self.cands = cands
        self.rows = rows
        self.n = int(rows.sum())
        self.scored = {i: _Arr.of(c.scored) for i, c in enumerate(cands) if c.scored is not None}
        self.bare = {i: _Arr.of(c.bare) for i, c in enumerate(cands) if c.bare is not None}
        self.cost = {i: float(a.cost[rows].mean()) for i, a in self.scored.items()}
        self.zero = np.zeros(len(rows))
        self.settings: list[tuple[tuple[int, ...], FloatArray, FloatArray, FloatArray]] = []
        # (tiers, thresholds (G, k-1), quality means (G,), cost means (G,))

    def singles(self) -> None:
        for i, a in self.bare.items():
            q = np.where(a.ok, a.quality, 0.0)[self.rows].mean()
            c = a.cost[self.rows].mean()
            self.settings.append(((i,), np.zeros((1, 0)), np.array([q]), np.array([c])))

    def pairs(self) -> None:
        for i, s in self.scored.items():
            for j in self.bare:
                if j == i or (
                    self.cands[j].spec.model == self.cands[i].spec.model and not self.cands[i].partners
                ):
                    continue
                th, qs, cs = _two_tier(s, self._after((i,), j), self.rows, self.zero)
                self.settings.append(((i, j), th[:, None], qs / self.n, cs / self.n))

    def _after(self, prefix: tuple[int, ...], j: int, scored: bool = False) -> _Arr:
        """Candidate ``j`` (scored or bare) costed after ``prefix``'s tiers: one call per model per
        request, samples bought earlier are reused (issue 9; :func:`routing.after`)."""
        from cascade.evaluate.routing import after

        return after(self.cands, self.scored if scored else self.bare, prefix, j, scored)

    def deeper(
        self, prefixes: Sequence[tuple[int, ...]], lasts: Sequence[int], firsts: Sequence[int], levels: int
    ) -> None:
        """Extend each prefix of scored tiers by one scored tier of ``firsts`` (costlier than the
        prefix's last) before each last tier."""
        for prefix in prefixes:
            for mid in firsts:
                if mid in prefix or self.cost[mid] <= self.cost[prefix[-1]]:
                    continue
                for j in lasts:
                    if j != mid and j not in prefix:
                        self._extend(prefix, mid, j, levels)

    def _extend(self, prefix: tuple[int, ...], mid: int, last: int, levels: int) -> None:
        # enumerate a grid over the prefix thresholds, then every threshold of `mid`
        arrs = [self._after(prefix[:k], i, scored=True) for k, i in enumerate(prefix)]
        mid_arr, last_arr = self._after(prefix, mid, scored=True), self._after((*prefix, mid), last)
        grids = [_levels(a.accept_score[self.rows], levels) for a in arrs]
        rows_all = self.rows
        ths: list[FloatArray] = []
        qs: list[FloatArray] = []
        cs: list[FloatArray] = []
        for combo in itertools.product(*grids):
            alive = rows_all.copy()
            q_acc = 0.0
            c_acc = 0.0
            fallback = np.zeros(len(rows_all))
            fb_set = np.zeros(len(rows_all), dtype=bool)
            for a, th in zip(arrs, combo, strict=True):
                c_acc += float(a.cost[alive].sum())
                acc = alive & (a.accept_score >= th)
                q_acc += float(a.quality[acc].sum())
                new_fb = alive & ~acc & a.ok & ~fb_set
                fallback = np.where(new_fb, a.quality, fallback)
                fb_set |= new_fb
                alive &= ~acc
            th2, q2, c2 = _two_tier(mid_arr, last_arr, alive, fallback)
            g = len(th2)
            ths.append(np.column_stack([np.tile(np.array(combo), (g, 1)), th2]))
            qs.append((q_acc + q2) / self.n)
            cs.append((c_acc + c2) / self.n)
        self.settings.append(
            ((*prefix, mid, last), np.concatenate(ths), np.concatenate(qs), np.concatenate(cs))
        )

    def flat(self) -> tuple[FloatArray, FloatArray, np.ndarray, np.ndarray]:
        """Every setting tried (a tier that never accepts is left out: the shorter cascade is cheaper)."""
        q = np.concatenate([s[2] for s in self.settings])
        c = np.concatenate([s[3] for s in self.settings])
        which = np.concatenate([np.full(len(s[2]), k) for k, s in enumerate(self.settings)])
        row = np.concatenate([np.arange(len(s[2])) for s in self.settings])
        finite = np.concatenate([np.isfinite(s[1]).all(axis=1) for s in self.settings])
        return q[finite], c[finite], which[finite], row[finite]

    def setting(self, which: int, row: int, q: float, c: float) -> Setting:
        tiers, th, _, _ = self.settings[which]
        return Setting(tiers, tuple(float(x) for x in th[row]), float(q), float(c))


def _usefulness(search: _Search, k: int) -> tuple[list[int], list[int]]:
    """Scored candidates and last tiers that appear most on the two-tier frontier."""
    q, c, _, _ = search.flat()
    xs, ys = upper_hull(c, q)
    score_first: dict[int, float] = {}
    score_last: dict[int, float] = {}
    for w in range(len(search.settings)):
        tiers, _, qs, cs = search.settings[w]
        if len(tiers) != 2:
            continue
        # how close this pair gets to the hull, at its best
        hull_q = np.interp(cs, xs, ys, left=ys[0], right=ys[-1])
        gap = float(np.max(qs - hull_q))
        score_first[tiers[0]] = max(score_first.get(tiers[0], -math.inf), gap)
        score_last[tiers[1]] = max(score_last.get(tiers[1], -math.inf), gap)
    firsts = sorted(score_first, key=lambda i: -score_first[i])[:k]
    lasts = sorted(score_last, key=lambda i: -score_last[i])[: max(4, k // 3)]
    return firsts, lasts
