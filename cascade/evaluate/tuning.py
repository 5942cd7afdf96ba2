"""What the tuner aims at and what it returns: :class:`Objective`, :class:`Setting`,
:class:`Guarantee`, :class:`Boundary` and :class:`Tuning`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from cascade.errors import ConfigurationError
from cascade.evaluate.candidates import Candidate
from cascade.evaluate.data import BoolArray, EvalSet
from cascade.evaluate.simulate import ReplayContext, TierArrays, score_tier
from cascade.policy.schema import Policy, TierSpec

Target = float | Literal["best"]


@dataclass(frozen=True)
class Objective:
    """``cost_cap`` (USD per query): maximise quality under it; ``target``: minimise cost while
    reaching it (``"best"`` = the best single model's quality). ``confidence``: the margin in
    standard errors on the training part. ``tolerance``: with a target, a quality this much under
    it still reaches it (``"best"``: paired against the best model, margin included)."""

    cost_cap: float | None = None
    target: Target | None = None
    confidence: float = 1.0
    max_drop: float | None = None
    risk: float = 0.05
    calibration: float | None = None  # None: :func:`_calibration_share`
    tolerance: float = 0.0

    def __post_init__(self) -> None:
        given = sum(x is not None for x in (self.cost_cap, self.target, self.max_drop))
        if given != 1:
            raise ConfigurationError(
                "give exactly one objective: a cost cap, a target quality or a maximum drop"
            )
        if self.cost_cap is not None and not (math.isfinite(self.cost_cap) and self.cost_cap > 0):
            raise ConfigurationError(f"the cost cap must be a positive number of USD (got {self.cost_cap:g})")
        if isinstance(self.target, float | int) and not 0 <= self.target <= 1:
            raise ConfigurationError(f"the target quality must be between 0 and 1 (got {self.target:g})")
        if self.max_drop is not None and not 0 <= self.max_drop < 1:
            raise ConfigurationError(f"the maximum drop must be in [0, 1) (got {self.max_drop:g})")
        if not 0 < self.risk < 1:
            raise ConfigurationError(f"the risk must be between 0 and 1 (got {self.risk:g})")
        if self.calibration is not None and not 0 < self.calibration < 1:
            raise ConfigurationError(
                f"the calibration share must be between 0 and 1 (got {self.calibration:g})"
            )
        if not 0 <= self.tolerance < 1 or (self.tolerance and self.target is None):
            raise ConfigurationError(
                f"the tolerance must be in [0, 1) and goes with a target quality (got {self.tolerance:g})"
            )
        if not (math.isfinite(self.confidence) and self.confidence >= 0):
            raise ConfigurationError(f"the confidence margin must be >= 0 (got {self.confidence:g})")


@dataclass(frozen=True)
class Setting:
    """One cascade: candidate indices (the last one answers without scorer) and thresholds."""

    tiers: tuple[int, ...]
    thresholds: tuple[float, ...]
    quality: float
    cost: float


@dataclass(frozen=True)
class Guarantee:
    """What ``--max-drop``/``--risk`` established (see :mod:`cascade.evaluate.risk`): the chosen
    setting's expected quality drop against ``reference`` is at most ``max_drop`` with probability
    at least ``1 - risk``, from ``calibration`` records the search never saw."""

    max_drop: float
    risk: float
    reference: str
    method: str
    calibration: int
    search: int
    tested: int
    rejected: int
    pvalue: float
    calibration_drop: float
    fallback: bool = False
    smallest: float = math.nan  # the smallest drop the calibration records can prove at this risk
    needed: int | None = None  # the calibration records the asked drop needs (None: too many)
    infeasible: bool = False  # too few records: nothing was searched

    def feasibility(self) -> str:
        """What the calibration size allows, said before the search."""
        need = f"at least {self.needed:,}" if self.needed is not None else "more than 100,000"
        return (
            f"{self.calibration} calibration records can prove an expected drop vs {self.reference} of"
            f" {self.smallest:.4g} at best at risk {self.risk:g} ({self.method} p-values, a setting that"
            f" never disagrees with it); a maximum drop of {self.max_drop:g} needs {need} records"
        )

    def sentence(self) -> str:
        if self.infeasible:
            return (
                f"infeasible: {self.feasibility()}. Nothing was searched: give more labelled records, a"
                f" larger --calibration share, a larger --max-drop or a larger --risk"
            )
        if self.fallback:
            return (
                f"no setting cheaper than {self.reference} passed the risk test"
                f" (max drop {self.max_drop:g},"
                f" risk {self.risk:g}, {self.calibration} calibration records;"
                f" first p-value {self.pvalue:.3g}):"
                f" {self.reference} alone, which loses nothing by definition"
            )
        return (
            f"expected quality drop vs {self.reference} <= {self.max_drop:g} with probability"
            f" >= {1 - self.risk:g} (Learn-then-Test, {self.method} p-values, fixed sequence;"
            f" {self.calibration} calibration records, {self.search} search records)"
        )


@dataclass(frozen=True)
class Boundary:
    """A randomised boundary on the chosen setting's tier ``pos`` (:mod:`cascade.scorers.boundary`):
    scores in ``[below, above)`` are accepted for a seeded share ``p`` of requests; the tier's
    threshold is ``above``. Used under a cost cap when the deterministic choice leaves budget unused."""

    pos: int
    below: float
    above: float
    p: float
    seed: int
    quality: float
    cost: float
    note: str = ""

    def apply(self, arrays: list[TierArrays], prompts: Sequence[str]) -> list[TierArrays]:
        """The arrays as the boundary scorer makes them (the same coin per prompt as live runs)."""
        from cascade.scorers.boundary import coin

        t = arrays[self.pos]
        u = np.array([coin(self.seed, p) for p in prompts])
        band = (t.score >= self.below) & (t.score < self.above) & (u < self.p)
        out = list(arrays)
        out[self.pos] = replace(t, score=np.where(band, self.above, t.score), threshold=self.above)
        return out


@dataclass
class Tuning:
    """What :func:`tune` found."""

    candidates: list[Candidate]
    evalset: EvalSet
    test: BoolArray
    choice: Setting | None
    reference: str
    target_quality: float | None
    frontier: list[Setting]
    settings_tried: int
    notes: list[str] = field(default_factory=list)
    ctx: ReplayContext | None = None
    skeleton: Policy | None = None
    unmargined: Setting | None = None
    split: dict[str, Any] = field(default_factory=dict)
    guarantee: Guarantee | None = None
    boundary: Boundary | None = None
    _complete: set[int] = field(default_factory=set)

    @property
    def train(self) -> BoolArray:
        return ~self.test

    def ensure(self, s: Setting) -> None:
        """Score the held-out rows of the setting's tiers (the search only scored the training rows)."""
        if self.ctx is None:
            return
        for pos, idx in enumerate(s.tiers):
            c = self.candidates[idx]
            last = pos == len(s.tiers) - 1
            key = -1 - idx if last else idx
            if key in self._complete:
                continue
            self._complete.add(key)
            records = self.evalset.records
            if last:
                assert c.bare is not None
                bare_spec = c.spec.model_copy(update={"scorer": None, "threshold": None})
                full = score_tier(bare_spec, records, self.ctx, rows=self.test, into=c.bare)
                for other_idx, other in enumerate(self.candidates):
                    if other.bare is c.bare:
                        other.bare = full
                        self._complete.add(-1 - other_idx)
            else:
                assert c.scored is not None
                c.scored = score_tier(c.spec, records, self.ctx, rows=self.test, into=c.scored)

    def arrays(self, s: Setting, rows: BoolArray) -> list[TierArrays]:
        if (rows & self.test).any():
            self.ensure(s)
        out: list[TierArrays] = []
        for pos, idx in enumerate(s.tiers):
            c = self.candidates[idx]
            t = c.bare if pos == len(s.tiers) - 1 else c.scored
            assert t is not None
            out.append(t.take(rows))
        return out

    def thresholds(self, s: Setting) -> list[float | None]:
        return [*s.thresholds, None]

    def policy_tiers(self, s: Setting) -> list[TierSpec]:
        return [self.candidates[i].spec for i in s.tiers]
