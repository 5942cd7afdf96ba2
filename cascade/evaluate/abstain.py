"""Tuning ``on_unverified: abstain``: the last tier's threshold with a guarantee on selective risk.

A threshold ``t`` answers the records whose last-tier score is ``>= t`` and abstains on the rest.
Its *selective risk* is the error rate among the answered records; its *coverage* the share
answered. :func:`tune_abstain` picks the lowest threshold (the widest coverage) whose selective
risk is at most ``target``, with probability at least ``1 - delta`` (Learn-then-Test):

* the null hypothesis for ``t`` is "selective risk > target". Given how many calibration records
  ``t`` answers, their errors are independent draws at the selective risk, so the exact binomial
  tail :func:`cascade.evaluate.risk.binom_cdf` of the errors seen is a valid p-value;
* the grid of thresholds is fixed (every hundredth of [0, 1]); the *fit* part of the training
  records orders it: from the threshold with the lowest Clopper-Pearson upper bound on the
  selective risk there, downwards (wider coverage), leaving out thresholds whose fit-part error is
  above the target; the *calibration* part tests it in that order with
  :func:`cascade.evaluate.risk.fixed_sequence`, which stops at the first threshold not rejected.
  The order never sees the calibration records, so every rejected threshold is valid together.

Nothing here looks at held-out records: report those with :func:`selective` on them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cascade.evaluate.data import FloatArray
from cascade.evaluate.risk import Tested, binom_cdf, binom_upper, fixed_sequence
from cascade.evaluate.simulate import TierArrays, run

GRID = tuple(round(i / 100, 2) for i in range(101))


@dataclass(frozen=True)
class Selective:
    """What a threshold does on some records: share answered, error rate among them."""

    threshold: float
    coverage: float
    risk: float  # nan when nothing is answered
    answered: int
    errors: int


@dataclass(frozen=True)
class AbstainTuning:
    """The chosen abstain threshold (None: no threshold proven; abstain on everything or relax
    the target), the calibration figures behind it, and the tested sequence."""

    target: float
    delta: float
    threshold: float | None
    calibration: Selective | None
    tested: tuple[Tested, ...]
    calibration_records: int = 0

    def sentence(self) -> str:
        """The guarantee (or why there is none), for the written policy and the terminal."""
        if self.threshold is None or self.calibration is None:
            first = self.tested[0] if self.tested else None
            why = (
                "no threshold kept the error within the target on the fit part"
                if first is None
                else f"the first threshold tested, {GRID[first.index]:g}, has calibration error"
                f" {first.drop:.3f} (p-value {first.pvalue:.3g})"
            )
            return (
                f"infeasible: no abstain threshold is proven to keep the error among answered requests"
                f" <= {self.target:g} with probability >= {1 - self.delta:g} ({why}): proving it needs at"
                f" least {needed(self.target, self.delta)} answered calibration records with no error"
                f" ({self.calibration_records} calibration records here) and a last-tier score that"
                f" separates right from wrong answers; give more labelled records, or a larger"
                f" --abstain-error or --risk"
            )
        c = self.calibration
        return (
            f"error among answered requests <= {self.target:g} with probability >= {1 - self.delta:g}"
            f" (Learn-then-Test, exact binomial p-values, fixed sequence; abstain threshold"
            f" {self.threshold:g}: {c.answered} of {self.calibration_records} calibration records"
            f" answered, {c.errors} wrong)"
        )


def selective(scores: FloatArray, correct: FloatArray, threshold: float) -> Selective:
    """Coverage and selective risk of ``threshold`` on these records (``correct``: 1 right, 0 wrong)."""
    answered = np.asarray(scores, dtype=np.float64) >= threshold
    n = int(answered.sum())
    errors = int(np.count_nonzero(np.asarray(correct, dtype=np.float64)[answered] < 0.5))
    coverage = n / len(answered) if len(answered) else 0.0
    return Selective(threshold, coverage, errors / n if n else float("nan"), n, errors)


def selective_pvalue(errors: int, answered: int, target: float) -> float:
    """p-value of "selective risk > target": ``errors`` or fewer of ``answered`` at that risk."""
    return binom_cdf(errors, answered, target) if answered else 1.0


def tune_abstain(
    scores: FloatArray,
    correct: FloatArray,
    target: float,
    delta: float = 0.05,
    *,
    seed: int = 0,
    fit_fraction: float = 0.5,
) -> AbstainTuning:
    """The lowest grid threshold proven to keep the selective risk within ``target`` (see the module).

    ``scores``, ``correct``: the last tier's score and 0/1 correctness on the *training* records
    only; they are split (seeded) into a fit part that orders the grid and a calibration part.
    """
    s = np.asarray(scores, dtype=np.float64)
    c = np.asarray(correct, dtype=np.float64)
    order = np.random.default_rng(seed).permutation(len(s))
    cut = round(len(s) * fit_fraction)
    fit, cal = order[:cut], order[cut:]

    on_fit = [selective(s[fit], c[fit], t) for t in GRID]
    # from the threshold with the lowest upper bound on the fit part down to wider coverage, while
    # the fit part's error stays within the target (higher thresholds only answer less)
    within = [i for i, r in enumerate(on_fit) if r.answered and r.risk <= target]
    bound = {i: binom_upper(on_fit[i].errors, on_fit[i].answered, delta) for i in within}
    sequence: list[int] = []
    if within:
        start = min(within, key=lambda i: (bound[i], -GRID[i]))
        sequence = [i for i in range(start, -1, -1) if i in within]

    def check(i: int) -> tuple[float, float]:
        r = selective(s[cal], c[cal], GRID[i])
        return r.risk, selective_pvalue(r.errors, r.answered, target)

    tested = fixed_sequence(sequence, check, delta)
    passed = [GRID[t.index] for t in tested if t.rejected]
    if not passed:
        return AbstainTuning(target, delta, None, None, tuple(tested), len(cal))
    best = min(passed)
    return AbstainTuning(target, delta, best, selective(s[cal], c[cal], best), tuple(tested), len(cal))


def needed(target: float, delta: float) -> int:
    """The fewest answered calibration records that can prove ``target`` at risk ``delta``: all of
    them right, ``(1 - target) ** n < delta``."""
    if not 0 < target < 1 or not 0 < delta < 1:
        raise ValueError("target and delta must be between 0 and 1")
    return math.floor(math.log(delta) / math.log1p(-target)) + 1


def cascade_scores(tiers: Sequence[TierArrays]) -> tuple[FloatArray, FloatArray]:
    """Per record, the score the abstain threshold sees and whether the answer is right, for a
    cascade whose last tier's threshold is the abstain threshold: a record an earlier tier accepts
    (at its own threshold) is answered whatever the last threshold (score 2, above the grid); one
    that reaches the last tier has that tier's score (-1 where it gave none: never answered) and
    its answer's quality (below 0.5 is an error)."""
    last = tiers[-1]
    early = run(tiers, [*(t.threshold if t.has_scorer else None for t in tiers[:-1]), math.inf])
    before = early.accepted & (early.answered < len(tiers) - 1)
    own = np.where(last.ok & ~last.scorer_error & ~np.isnan(last.score), last.score, -1.0)
    scores = np.where(before, 2.0, own)
    correct = np.where(before, early.quality, np.nan_to_num(last.quality))
    return scores, (correct >= 0.5).astype(np.float64)


def coverage_curve(scores: FloatArray, correct: FloatArray) -> list[Selective]:
    """Coverage against selective risk at every grid threshold (for reports)."""
    return [selective(scores, correct, t) for t in GRID]


__all__ = [
    "GRID",
    "AbstainTuning",
    "Selective",
    "cascade_scores",
    "coverage_curve",
    "needed",
    "selective",
    "selective_pvalue",
    "tune_abstain",
]
