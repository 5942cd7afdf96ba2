"""cascade: cut the cost of LLM applications without cutting their quality.

A prompt goes through tiers of models, cheapest first; after each tier a scorer decides whether
to accept the answer or escalate. Policies are YAML files; see ``cascade.load``.
"""

from __future__ import annotations

import os
from typing import Any

from cascade.budget import Budget, Cap
from cascade.engine import Cascade, Tier
from cascade.engine.latency import HedgeAfter
from cascade.errors import (
    AbstainedError,
    AllTiersFailedError,
    BudgetExceededError,
    CascadeError,
    CascadeExhaustedError,
    ConfigurationError,
    InvalidRequestError,
    InvalidResponseError,
    LedgerError,
    LedgerUnavailableError,
    PermanentProviderError,
    PolicyError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    ScorerError,
    TransientProviderError,
)
from cascade.money import Price
from cascade.request import Request
from cascade.retry import RetryPolicy
from cascade.types import Attempt, CascadeResult, Completion, Message, Sample, Score, ToolCall, Usage

__version__ = "0.1.0"


def load(policy: str | os.PathLike[str], **overrides: Any) -> Cascade:
    """Load a policy file and build its :class:`Cascade`."""
    return Cascade.from_policy(policy, **overrides)


__all__ = [
    "AbstainedError",
    "AllTiersFailedError",
    "Attempt",
    "Budget",
    "BudgetExceededError",
    "Cap",
    "Cascade",
    "CascadeError",
    "CascadeExhaustedError",
    "CascadeResult",
    "Completion",
    "ConfigurationError",
    "HedgeAfter",
    "InvalidRequestError",
    "InvalidResponseError",
    "LedgerError",
    "LedgerUnavailableError",
    "Message",
    "PermanentProviderError",
    "PolicyError",
    "Price",
    "ProviderError",
    "ProviderTimeoutError",
    "RateLimitError",
    "Request",
    "RetryPolicy",
    "Sample",
    "Score",
    "ScorerError",
    "Tier",
    "ToolCall",
    "TransientProviderError",
    "Usage",
    "__version__",
    "load",
]
