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

* **binomial** (every label is 0 or 1): the paired drop is -1, 0 or +1. With ``d`` discordant
  records of which ``k`` the setting gets wrong, ``s`` the share of discordant records and ``pi``
  the share of those the setting loses, the drop is ``s * (2 pi - 1)``. A Clopper-Pearson upper
  bound ``s_u`` on ``s`` (at level ``delta/2``) turns "drop > eps" into ``pi > 1/2 + eps/(2 s_u)``,
  which an exact binomial test on ``k`` of ``d`` rejects; the p-value is ``delta/2 + p_binomial``.
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


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) <= k)."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    i = np.arange(k + 1, dtype=np.float64)
    logf = np.r_[0.0, np.cumsum(np.log(np.arange(1, n + 1, dtype=np.float64)))]  # log(j!)
    logc = logf[n] - logf[: k + 1] - logf[n - k - 1 : n + 1][::-1][: k + 1]
    logp = logc + i * math.log(p) + (n - i) * math.log1p(-p)
    top = float(logp.max())
    return float(min(1.0, math.exp(top) * float(np.exp(logp - top).sum())))


def binom_upper(k: int, n: int, alpha: float) -> float:
    """Clopper-Pearson upper confidence bound on a binomial share, level ``1 - alpha``."""
    if n == 0 or k >= n:
        return 1.0
    lo, hi = k / n, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if binom_cdf(k, n, mid) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


def binomial_pvalue(drop: FloatArray, eps: float, delta: float) -> float:
    """p-value of "expected drop > eps" for drops in {-1, 0, 1} (see the module doc)."""
    n = len(drop)
    if n == 0:
        return 1.0
    worse = int(np.count_nonzero(drop > 0.5))
    better = int(np.count_nonzero(drop < -0.5))
    d = worse + better
    half = delta / 2
    s_u = binom_upper(d, n, half)
    if s_u <= eps:  # even if every discordant record were lost the drop would be <= eps
        return half
    pi0 = 0.5 + eps / (2 * s_u)
    if pi0 >= 1.0:
        return half
    return min(1.0, half + binom_cdf(worse, d, pi0))


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
    "pvalue",
    "records_needed",
    "smallest_provable",
]
