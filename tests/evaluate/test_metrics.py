"""The field's metrics on points with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cascade.evaluate.metrics import (
    aiq,
    best_mix_aiq,
    bootstrap,
    bootstrap_weights,
    cost_at_quality,
    gap_metrics,
    oracle,
    upper_hull,
    wmean,
)


def test_upper_hull_drops_dominated_and_concave_points() -> None:
    cost = np.array([1.0, 2.0, 3.0, 4.0, 2.5])
    quality = np.array([0.5, 0.55, 0.9, 0.8, 0.6])
    xs, ys = upper_hull(cost, quality)
    # (2, .55) and (2.5, .6) lie under the chord from (1, .5) to (3, .9); (4, .8) is dominated
    assert xs.tolist() == [1.0, 3.0]
    assert ys.tolist() == [0.5, 0.9]


def test_aiq_of_a_point_and_a_mix() -> None:
    # one model at the cheap end: its quality over the whole range
    assert aiq(np.array([0.0]), np.array([0.6]), 0.0, 1.0) == pytest.approx(0.6, abs=1e-3)
    # one model at the middle: nothing below it
    assert aiq(np.array([0.5]), np.array([0.8]), 0.0, 1.0) == pytest.approx(0.4, abs=1e-3)
    # a random mix of both: the chord from (0, .6) to (.5, .8), then flat
    mix = aiq(np.array([0.0, 0.5]), np.array([0.6, 0.8]), 0.0, 1.0)
    assert mix == pytest.approx(0.5 * 0.7 + 0.5 * 0.8, abs=1e-3)
    best, pair = best_mix_aiq(np.array([0.0, 0.5, 1.0]), np.array([0.6, 0.8, 0.81]), 0.0, 1.0)
    assert pair == (0, 1) and best == pytest.approx(0.75, abs=1e-3)


def test_aiq_of_a_single_point_is_exact_and_read_by_one_rule() -> None:
    # issue 20: a policy that is the range's costliest model alone reads exactly 0.0, a point inside
    # the range q * (hi - c) / (hi - lo), one at or below lo its quality: no grid artefact
    assert aiq(np.array([1.0]), np.array([0.9]), 0.0, 1.0) == 0.0
    assert aiq(np.array([0.5]), np.array([0.8]), 0.0, 1.0) == pytest.approx(0.4, abs=1e-12)
    assert aiq(np.array([0.123]), np.array([0.8]), 0.0, 1.0) == pytest.approx(0.8 * 0.877, abs=1e-12)
    assert aiq(np.array([-1.0]), np.array([0.7]), 0.0, 1.0) == pytest.approx(0.7, abs=1e-12)
    # a point is the special case of a curve: adding a dominated point changes nothing
    two = aiq(np.array([0.123, 0.5]), np.array([0.8, 0.7]), 0.0, 1.0)
    assert two == aiq(np.array([0.123]), np.array([0.8]), 0.0, 1.0)
    # a mix, exactly: the chord from (0.2, 0.6) to (0.6, 0.8), flat after
    mix = aiq(np.array([0.2, 0.6]), np.array([0.6, 0.8]), 0.0, 1.0)
    assert mix == pytest.approx(0.4 * 0.7 + 0.4 * 0.8, abs=1e-12)


def test_gap_metrics() -> None:
    # a perfect router recovers the whole gap with 20% strong calls
    share = np.array([0.0, 0.1, 0.2, 0.5, 1.0])
    quality = np.array([0.6, 0.7, 0.8, 0.8, 0.8])
    g = gap_metrics(share, quality, 0.6, 0.8)
    assert g.cpt50 == pytest.approx(0.1)
    assert g.cpt80 == pytest.approx(0.2)
    assert g.apgr == pytest.approx(1 - 0.5 * 0.2, abs=1e-9)
    # a random router: PGR equals the share of strong calls
    s = np.linspace(0, 1, 11)
    r = gap_metrics(s, 0.6 + 0.2 * s, 0.6, 0.8)
    assert r.apgr == pytest.approx(0.5)
    assert gap_metrics(s, s, 0.8, 0.8).cpt50 is None


def test_cost_at_quality_and_oracle() -> None:
    assert cost_at_quality(np.array([3.0, 1.0, 2.0]), np.array([0.9, 0.5, 0.9]), 0.9) == 2.0
    assert cost_at_quality(np.array([1.0]), np.array([0.5]), 0.9) is None
    q = np.array([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    c = np.array([[1.0, 5.0], [1.0, 5.0], [1.0, 5.0]])
    oq, oc = oracle(q, c)
    assert oq.tolist() == [1.0, 1.0, 0.0]
    assert oc.tolist() == [1.0, 5.0, 1.0]


def test_bootstrap_interval_covers_the_mean() -> None:
    x = np.random.default_rng(0).random(400)
    w = bootstrap_weights(len(x), 300, seed=1)
    assert np.allclose(w.sum(axis=1), 1.0)
    iv = bootstrap(lambda ww: float(wmean(x, ww)), w)
    assert iv.low < x.mean() < iv.high
    assert iv.high - iv.low == pytest.approx(2 * 1.96 * x.std() / math.sqrt(len(x)), rel=0.25)
