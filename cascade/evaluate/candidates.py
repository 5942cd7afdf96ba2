"""The tiers a tuner may use (:class:`Candidate`) and the helpers that build them, shared by
:mod:`cascade.evaluate.tune` and :mod:`cascade.learn.learned` (kept apart so neither imports
the other)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from cascade.evaluate.simulate import TierArrays
from cascade.policy import loader
from cascade.policy.schema import TierSpec


@dataclass
class Candidate:
    """A tier the tuner may use: its raw YAML (written back as is), the validated spec, and its
    simulated arrays with the scorer (``scored``; None when it has none) and without (``bare``:
    one sample, what it costs as the last tier)."""

    name: str
    raw: dict[str, Any]
    spec: TierSpec
    scored: TierArrays | None = None
    bare: TierArrays | None = None
    partners: tuple[str, ...] = ()


def slug(model: str) -> str:
    """A tier name from a model name (the characters a tier name allows)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", model).strip("-")[:60] or "tier"


def validate_tier(raw: dict[str, Any]) -> TierSpec:
    """One raw tier checked as the policy loader checks it."""
    pol = loader.validate({"name": "candidate", "tiers": [raw]}, source="<candidate>")
    return pol.tiers[0]


__all__ = ["Candidate", "slug", "validate_tier"]
