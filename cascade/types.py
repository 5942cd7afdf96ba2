"""Plain value types shared by every part of cascade.

Everything here is a frozen dataclass with no behaviour beyond small conveniences, so that
providers, scorers, ledgers and the engine can exchange data without depending on each other.
Money is always a :class:`decimal.Decimal` amount of US dollars (exact, never a float).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from decimal import Decimal
from typing import Any, Literal

from cascade.money import ZERO as ZERO
from cascade.money import show as show

Role = Literal["system", "user", "assistant", "tool"]
UsageSource = Literal["reported", "estimated", "clamped"]
"""Where a completion's usage came from: ``reported`` by the provider; ``estimated`` from the request
and the returned text (the provider reported none, or nonsense); ``clamped`` to the reserved worst
case (the provider reported more than the request could produce)."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call requested by a model."""

    name: str
    arguments: Mapping[str, Any]
    id: str = ""


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message."""

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts. ``input_tokens`` excludes cached-read and cache-creation tokens."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_creation_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
            self.cache_creation_tokens + other.cache_creation_tokens,
        )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cached_input_tokens + self.cache_creation_tokens


@dataclass(frozen=True, slots=True)
class Sample:
    """One sampled answer from a model.

    ``answer`` is a final answer already extracted by the source (recorded outcomes carry one);
    ``quality`` is a recorded correctness label (replay only, used by offline evaluation and never
    by scorers). ``logprobs`` are per-token log probabilities when the provider returns them;
    ``top_logprobs`` the alternatives at each position (token -> logprob), when asked for.
    """

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    logprobs: tuple[float, ...] | None = None
    top_logprobs: tuple[Mapping[str, float], ...] | None = None
    finish_reason: str | None = None
    answer: str | None = None
    quality: float | None = None
    variant: str | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    """What a provider returns for one call (possibly with several samples).

    ``cost`` is set when the provider knows the billed amount (a recorded cost); otherwise the
    engine prices ``usage`` with the tier's price. ``usage_source`` says whether ``usage`` is what
    the provider reported, an estimate (it reported none) or clamped to the worst case.
    """

    samples: tuple[Sample, ...]
    usage: Usage
    model: str
    cost: Decimal | None = None
    request_id: str | None = None
    latency_s: float = 0.0
    raw: Mapping[str, Any] = field(default_factory=dict)
    usage_source: UsageSource = "reported"
    failed_calls: int = 0
    """Calls merged into this completion that failed (their samples are missing)."""
    cut_off_calls: int = 0
    """Of the failed calls, those cut off in flight: maybe billed, so charged at their worst case."""


@dataclass(frozen=True, slots=True)
class Score:
    """A scorer's verdict on a completion.

    ``value`` is in [0, 1]; higher means more confident the answer is good. ``chosen`` is the index
    of the sample the cascade should return (self-consistency picks a majority sample). ``cost`` and
    ``usage`` are what the scorer itself spent (a judge call, extra samples).
    """

    value: float
    chosen: int = 0
    cost: Decimal = ZERO
    usage: Usage = Usage()
    detail: Mapping[str, Any] = field(default_factory=dict)


Decision = Literal["accepted", "escalated", "rejected", "stopped", "failed", "skipped", "cancelled"]
"""accepted: answer returned; escalated: passed to the next tier (low score or error);
rejected: the last tier scored below its threshold; stopped: the budget refused the call;
failed: the last tier errored; skipped: the tier's prompt-only estimate was below its skip
threshold, so it was not called; cancelled: a hedge's backup call, not needed (the tier before
was accepted), cancelled and charged what it may have cost."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """One tier's part in a run: what was called, how it scored and what was decided."""

    tier: str
    model: str
    provider: str
    decision: Decision
    reason: str
    samples: int = 0
    score: float | None = None
    threshold: float | None = None
    usage: Usage = Usage()
    cost: Decimal = ZERO
    scorer_cost: Decimal = ZERO
    latency_s: float = 0.0
    retries: int = 0
    error: str | None = None
    answer: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    score_detail: Mapping[str, Any] = field(default_factory=dict)
    usage_source: UsageSource = "reported"
    reused_samples: int = 0  # samples (the tier's and its scorer's) bought earlier in the run, not paid again
    charged: str | None = None  # why failed calls were charged (billed usage, or cut off in flight)
    hedge: str | None = None  # what the tier's hedge did, or (a backup's call) when it started

    @property
    def total_cost(self) -> Decimal:
        return self.cost + self.scorer_cost

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (money as decimal strings), with ``total_cost``."""
        d = _flat(self)
        d["total_cost"] = str(self.total_cost)
        return d


_NAMES: dict[type, tuple[str, ...]] = {}  # a dataclass's field names (fields() is slow)
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _names(cls: type) -> tuple[str, ...]:
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


def _jsonable(v: Any) -> Any:
    """``v`` JSON-ready: dataclasses as dicts, tuples as lists, Decimals as strings. Like
    ``asdict`` and recursion, without its deep copies (a result is reported on every call)."""
    t = type(v)
    if t in _SCALARS:
        return v
    if t is Decimal:
        return str(v)
    if t is tuple or t is list:
        return [_jsonable(x) for x in v]
    if t is dict:
        return {k: _jsonable(x) for k, x in v.items()}
    if t in _NAMES:  # a dataclass seen before (Usage, ToolCall...): no ABC checks
        return _flat(v)
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, Mapping):
        return {k: _jsonable(x) for k, x in v.items()}
    if is_dataclass(v) and not isinstance(v, type):
        return _flat(v)
    return v


def _flat(obj: Any) -> dict[str, Any]:
    """A dataclass's fields as a JSON-ready dict (scalar values taken as they are)."""
    scalars = _SCALARS
    d = {}
    for n in _names(type(obj)):
        v = getattr(obj, n)
        d[n] = v if type(v) in scalars else _jsonable(v)
    return d


@dataclass(frozen=True, slots=True)
class CascadeResult:
    """The outcome of one cascade run.

    ``accepted`` is true when a tier's answer cleared its threshold (or the last tier answered with
    no scorer); ``reason`` says why the run ended: ``accepted``, ``budget`` (the next tier could not be
    afforded), ``exhausted`` (every tier ran, none was accepted), ``abstained`` (none was accepted and
    the policy says ``on_unverified: abstain``: ``answer`` is empty, ``abstention`` says why, and
    ``cost`` and ``attempts`` hold everything spent).
    """

    answer: str
    tier: str
    model: str
    accepted: bool
    reason: str
    attempts: tuple[Attempt, ...]
    tool_calls: tuple[ToolCall, ...] = ()
    policy: str = ""
    latency_s: float = 0.0
    sample: Sample | None = field(default=None, compare=False)
    abstention: str | None = None  # why the run abstained (``reason == "abstained"``), else None

    @property
    def abstained(self) -> bool:
        """True when the run returned no answer rather than an unverified one (``on_unverified: abstain``)."""
        return self.abstention is not None

    @property
    def cost(self) -> Decimal:
        return sum((a.total_cost for a in self.attempts), ZERO)

    @property
    def usage(self) -> Usage:
        return sum((a.usage for a in self.attempts), Usage())

    @property
    def hedge_cost(self) -> Decimal:
        """What hedging added: the cancelled backup calls (a backup that answered was needed anyway)."""
        return sum((a.total_cost for a in self.attempts if a.decision == "cancelled"), ZERO)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (money as decimal strings)."""
        d: dict[str, Any] = {}
        for name in _names(CascadeResult):
            if name == "attempts":
                d[name] = [a.to_dict() for a in self.attempts]
            elif name != "sample":
                d[name] = _jsonable(getattr(self, name))
        d["cost"] = str(self.cost)
        d["usage"] = _flat(self.usage)
        d["abstained"] = self.abstention is not None
        return d

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def explain(self) -> str:
        """A human-readable account of every decision (money exact, in USD)."""
        lines = [f"policy {self.policy!r}: {self.reason} at tier {self.tier!r} ({self.model})"]
        if self.abstention is not None:
            lines[0] = f"policy {self.policy!r}: abstained: {self.abstention}"
        for i, a in enumerate(self.attempts, 1):
            parts = [f"  {i}. {a.tier} [{a.provider}:{a.model}] {a.decision}: {a.reason}"]
            if a.score is not None and not a.reason.startswith("score"):
                parts.append(f"score {a.score:.3f}")
            if a.decision not in ("stopped", "skipped"):
                reused = f" ({a.reused_samples} reused)" if a.reused_samples else ""
                parts.append(f"samples {a.samples}{reused}")
                tokens = f"tokens {a.usage.input_tokens}+{a.usage.output_tokens}"
                parts.append(tokens + (f" ({a.usage_source})" if a.usage_source != "reported" else ""))
                cost = f"cost ${show(a.cost)}" + (f" ({a.charged})" if a.charged else "")
                parts.append(cost + (f" + scorer ${show(a.scorer_cost)}" if a.scorer_cost else ""))
                parts.append(f"{a.latency_s * 1000:.0f} ms")
            if a.retries:
                parts.append(f"retries {a.retries}")
            if a.error:
                parts.append(f"error: {a.error}")
            if a.hedge:
                parts.append(f"hedge: {a.hedge}")
            lines.append(" | ".join(parts))
        hedge = f" (hedge ${show(self.hedge_cost)})" if self.hedge_cost else ""
        lines.append(f"  total: ${show(self.cost)}{hedge}, {self.latency_s * 1000:.0f} ms")
        return "\n".join(lines)
