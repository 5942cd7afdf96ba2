"""Policies: the YAML schema and its loader."""

from cascade.policy.loader import load, loads, validate
from cascade.policy.schema import Policy, ScorerSpec, TierSpec

__all__ = ["Policy", "ScorerSpec", "TierSpec", "load", "loads", "validate"]
