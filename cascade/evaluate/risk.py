"""Risk control for the tuner: Learn-then-Test with fixed-sequence testing.

A setting's *drop* on a record is ``reference quality - setting quality``, a paired loss in
``[-1, 1]``. For each setting the null hypothesis is "its expected drop is more than ``eps``". A
valid p-value per setting comes from the calibration records (never used to build or order the
settings); the settings are tested in a fixed sequence, most conservative first, and the sequence
stops at the first one not rejected. Every rejected setting then has an expected drop of at most
``eps``, all of them at once with probability at least ``1 - delta`` (the family-wise error of a
fixed sequence is the level of each test). Nothing is assumed about the distribution beyond
records being drawn independently from the traffic the policy will see.

Two p-values, both exact in finite samples:

* **binomial** (every label is 0 or 1): the paired drop is -1, 0 or +1, so the ``W`` records the
  setting loses and the ``B`` it wins are a trinomial draw with shares ``p_w`` and ``p_b``; the null
  is ``p_w - p_b > eps``. An exact unconditional test of the net count ``W - B`` (Berger and Boos'
  confidence-interval p-value): a Clopper-Pearson upper bound ``s_u`` on the discordant share
  ``s = p_w + p_b`` at level ``gamma = delta / 5``, then the largest ``P(W - B <= observed)`` over
  the null boundary ``p_w - p_b = eps`` with ``s <= s_u`` (a larger ``p_w - p_b`` at the same
  ``p_b`` only makes a small net count less likely); the p-value is ``gamma`` plus that maximum.
  Before issue 20 the test conditioned on the discordant count (a binomial test of ``W`` among
  ``W + B`` at ``delta / 2``), which lost much power on the few dozen discordant records a good
  cascade leaves: 330 records with 4% discordant and no net loss gave 0.16 against 0.08 now.
* **betting** (any labels in [0, 1]): the capital of a bettor against "mean drop >= eps"
  (Waudby-Smith and Ramdas' predictable bets, aGRAPA sizes, records in a seeded order); by Ville's
  inequality ``1 / max capital`` is a valid p-value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from cascade.evaluate.data import FloatArray

Method = Literal["binomial", "betting"]


def _log_factorials(n: int) -> FloatArray:
    out: FloatArray = np.r_[0.0, np.cumsum(np.log(np.arange(1, n + 1, dtype=np.float64)))]
    return out


def _binom_terms(k: int, n: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``log C(n, i)``, ``i`` and ``n - i`` for ``i = 0..k``: what :func:`_binom_cdf` sums over,
    computed once for a search over ``p`` (empty unless ``0 <= k < n``: the CDF needs no sum there)."""
    if not 0 <= k < n:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    logf = _log_factorials(n)
    logc: FloatArray = logf[n] - logf[: k + 1] - logf[n - k - 1 : n + 1][::-1][: k + 1]
    i = np.arange(k + 1, dtype=np.float64)
    return logc, i, n - i


def _binom_cdf(k: int, n: int, p: float, terms: tuple[FloatArray, FloatArray, FloatArray]) -> float:
    """:func:`binom_cdf` given ``terms = _binom_terms(k, n)``."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    logc, i, rest = terms
    logp = logc + i * math.log(p) + rest * math.log1p(-p)
    top = float(logp.max())
    return float(min(1.0, math.exp(top) * float(np.exp(logp - top).sum())))


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) <= k)."""
    return _binom_cdf(k, n, p, _binom_terms(k, n))


def binom_upper(k: int, n: int, alpha: float) -> float:
    """Clopper-Pearson upper confidence bound on a binomial share, level ``1 - alpha``."""
    if n == 0 or k >= n:
        return 1.0
    terms = _binom_terms(k, n)  # once for the 60 halvings
    lo, hi = k / n, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if _binom_cdf(k, n, mid, terms) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


def _log_binom_pmf(k: np.ndarray, n: int, p: float, logf: FloatArray) -> FloatArray:
    out: FloatArray = logf[n] - logf[k] - logf[n - k] + k * math.log(p) + (n - k) * math.log1p(-p)
    return out


def net_cdf(t: int, n: int, pw: float, pb: float, *, tail: float = 1e-15) -> float:
    """``P(W - B <= t)`` for ``(W, B, rest) ~ Multinomial(n; pw, pb, 1 - pw - pb)``: exact but for
    the values of ``B`` less likely than ``tail`` each, whose whole mass is added (an upper bound)."""
    logf = _log_factorials(n)
    if pb <= 0.0:
        bs, lpb, total = np.zeros(1, dtype=np.int64), np.zeros(1), 0.0
    else:
        b = np.arange(n + 1)
        lpb = _log_binom_pmf(b, n, pb, logf)
        keep = lpb > math.log(tail)
        total = float(np.exp(lpb[~keep]).sum())
        bs, lpb = b[keep], lpb[keep]
    q = min(1.0, pw / (1.0 - pb)) if pb < 1.0 else 0.0  # W given B = b: Binomial(n - b, q)
    for bi, lp in zip(bs.tolist(), lpb.tolist(), strict=True):
        m = n - bi
        k = min(t + bi, m)
        if k < 0:
            continue
        if k >= m or q <= 0.0:
            total += math.exp(lp)
        elif q < 1.0:
            total += math.exp(lp) * float(np.exp(_log_binom_pmf(np.arange(k + 1), m, q, logf)).sum())
    return min(1.0, total)


def binomial_pvalue(drop: FloatArray, eps: float, delta: float, *, grid: int = 24) -> float:
    """p-value of "expected drop > eps" for drops in {-1, 0, 1} (see the module doc): ``gamma`` plus
    the largest ``P(W - B <= observed)`` at ``grid`` discordant shares from ``eps`` to ``s_u``."""
    n = len(drop)
    if n == 0:
        return 1.0
    worse = int(np.count_nonzero(drop > 0.5))
    better = int(np.count_nonzero(drop < -0.5))
    gamma = delta / 5
    s_u = min(1.0, binom_upper(worse + better, n, gamma))
    if s_u <= eps:  # even if every discordant record were lost the drop would be <= eps
        return gamma
    worst = max(
        net_cdf(worse - better, n, (s + eps) / 2, (s - eps) / 2) for s in np.linspace(eps, s_u, grid).tolist()
    )
    return min(1.0, gamma + worst)


def betting_pvalue(drop: FloatArray, eps: float, *, seed: int = 0) -> float:
    """p-value of "expected drop >= eps" for drops in [-1, 1]: 1 / the bettor's best capital."""
    x = np.asarray(drop, dtype=np.float64)[np.random.default_rng(seed).permutation(len(drop))]
    cap = 0.75 / (1.0 - eps) if eps < 1 else 0.75
    log_k, best = 0.0, 0.0
    mean, var, t = 0.0, 0.25, 1.0  # a prior of one pseudo-record with mean 0 and variance 1/4
    for v in x.tolist():
        gap = eps - mean
        lam = min(cap, max(0.0, gap / (var + gap * gap)))
        log_k += math.log1p(lam * (eps - v))
        best = max(best, log_k)
        t += 1.0
        delta_m = v - mean
        mean += delta_m / t
        var += (delta_m * (v - mean) - var) / t
    return float(min(1.0, math.exp(-best)))


def is_binary(*arrays: FloatArray) -> bool:
    return all(bool(np.all((a == 0.0) | (a == 1.0))) for a in arrays)


def pvalue(setting_q: FloatArray, ref_q: FloatArray, eps: float, delta: float, *, seed: int = 0) -> float:
    """The p-value of "the setting's expected drop against the reference exceeds ``eps``"."""
    drop = np.asarray(ref_q, dtype=np.float64) - np.asarray(setting_q, dtype=np.float64)
    if is_binary(setting_q, ref_q):
        return binomial_pvalue(drop, eps, delta)
    return betting_pvalue(drop, eps, seed=seed)


def method_of(*arrays: FloatArray) -> Method:
    """The p-value the labels allow: binomial for 0/1 labels, betting otherwise."""
    return "binomial" if is_binary(*arrays) else "betting"


def best_case_pvalue(n: int, eps: float, delta: float, method: Method) -> float:
    """The p-value of a setting that agrees with the reference on all ``n`` calibration records:
    the smallest any setting can get (a disagreement only adds evidence of a drop or costs power)."""
    zero = np.zeros(n)
    return binomial_pvalue(zero, eps, delta) if method == "binomial" else betting_pvalue(zero, eps)


def smallest_provable(n: int, delta: float, method: Method) -> float:
    """The smallest maximum drop that ``n`` calibration records can prove at risk ``delta``."""
    if n < 1 or best_case_pvalue(n, 1.0 - 1e-9, delta, method) > delta:
        return 1.0
    lo, hi = 0.0, 1.0 - 1e-9
    for _ in range(40):
        mid = (lo + hi) / 2
        if best_case_pvalue(n, mid, delta, method) <= delta:
            hi = mid
        else:
            lo = mid
    return hi


def records_needed(eps: float, delta: float, method: Method, limit: int = 100_000) -> int | None:
    """The fewest calibration records that can prove a maximum drop ``eps`` at risk ``delta``
    (None: more than ``limit``, or never, as for ``eps = 0``)."""
    if eps <= 0 or best_case_pvalue(limit, eps, delta, method) > delta:
        return None
    lo, hi = 0, 1  # the p-value falls with n: double, then halve the gap
    while best_case_pvalue(hi, eps, delta, method) > delta:
        lo, hi = hi, min(2 * hi, limit)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if best_case_pvalue(mid, eps, delta, method) <= delta:
            hi = mid
        else:
            lo = mid
    return hi


@dataclass(frozen=True)
class Tested:
    """One setting of the fixed sequence: its position, calibration drop and p-value."""

    index: int
    drop: float
    pvalue: float
    rejected: bool


def fixed_sequence(
    items: Iterable[int], test: Callable[[int], tuple[float, float]], delta: float
) -> list[Tested]:
    """Test ``items`` in order (``test(i)`` gives (calibration drop, p-value)); stop after the first
    hypothesis not rejected at level ``delta``. Every rejected one is valid, all together with
    probability at least ``1 - delta``."""
    out: list[Tested] = []
    for i in items:
        drop, p = test(i)
        ok = p <= delta
        out.append(Tested(i, drop, p, ok))
        if not ok:
            break
    return out


__all__ = [
    "Method",
    "Tested",
    "best_case_pvalue",
    "betting_pvalue",
    "binom_cdf",
    "binom_upper",
    "binomial_pvalue",
    "fixed_sequence",
    "is_binary",
    "method_of",
    "net_cdf",
    "pvalue",
    "records_needed",
    "smallest_provable",
]
