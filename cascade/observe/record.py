"""One outcome-log row: a run's attempts in the recorded-outcomes format (``cascade-outcomes/1``).

A row is what ``cascade eval`` and ``cascade tune`` read (``id``, ``prompt``, ``responses``: model ->
samples with ``answer``, ``quality``, tokens and ``cost_usd``) plus a ``cascade`` block with what
happened live: the policy, each tier's decision, score, cost and latency, the session, whether the
row was shadow-sampled. Without ``include_text`` no prompt or answer text is stored: the prompt is a
stable SHA-256 (so rows of the same prompt still group) and texts are replaced by their lengths.

Sample costs: ``cost_usd`` is each sample's share of what the call that bought it was billed (a
call of ``n`` samples billed with the prompt once splits its cost evenly); ``input_tokens`` is that
call's prompt tokens on every sample. A sample reused within the run (bought by an earlier tier or
voter) is recorded at what it cost when bought, not at the $0 of its reuse, so tuning sees each
model's real price; the ``cascade`` block's costs stay what the run paid.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from cascade.engine.actions import Tier
from cascade.engine.reuse import Bought
from cascade.protocols import KeyedScorer
from cascade.request import Request
from cascade.types import ZERO, Completion, Sample, Score, Usage

FORMAT = "cascade-outcomes/1"


@dataclass(slots=True)
class TierOutcome:
    """What one tier did for a request: its completion, score, cost, latency (live or shadow)."""

    tier: Tier
    completion: Completion | None = None
    score: Score | None = None
    error: str | None = None
    latency_s: float = 0.0
    shadow: bool = False
    decision: str = ""
    reason: str = ""
    cost: Decimal = ZERO
    scorer_cost: Decimal = ZERO


@dataclass(slots=True)
class Row:
    """A run being recorded (live outcomes first; shadow outcomes added in the background)."""

    request: Request
    policy: str
    tiers: dict[str, TierOutcome] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    session: str | None = None
    pinned: str | None = None
    answered: str | None = None  # the tier whose answer was returned (None: none, or an abstention)
    abstained: dict[str, str] | None = None  # an abstention: {"tier": whose answer it withheld, "why"}
    accepted: bool = False
    reason: str = ""
    error: str | None = None
    latency_s: float = 0.0
    shadow: bool = False
    shadow_skipped: str | None = None
    uncalled: dict[str, tuple[str, str]] = field(default_factory=dict)  # tier -> (decision, reason)


def prompt_hash(request: Request) -> str:
    """A stable digest of every message (role and content) and the tools."""
    h = hashlib.sha256()
    for m in request.messages:
        h.update(m.role.encode())
        h.update(b"\0")
        h.update(m.content.encode("utf-8", "surrogatepass"))
        h.update(b"\1")
    for t in request.tools:
        h.update(repr(sorted(t.items())).encode())
    return h.hexdigest()


def answer_of(tier: Tier, sample: Sample, fallback: Any = None) -> str | None:
    """The sample's comparable answer: the tier's scorer's extractor (``key``), else a recorded
    answer, else the extractor of another scorer of the policy (``fallback``), else none."""
    for scorer in (tier.scorer, fallback):
        if isinstance(scorer, KeyedScorer):
            try:
                value = scorer.key(sample)
            except Exception:  # a user extractor failed: the row keeps no answer, the run goes on
                value = None
            return None if value is None else str(value)
    return sample.answer


def _plain(value: Decimal) -> str:
    """Exact money text without exponent or trailing zeros (at most 15 decimals)."""
    text = format(value.quantize(Decimal("1e-15")).normalize(), "f")
    return text


def _prompt_tokens(u: Usage) -> int:
    return u.input_tokens + u.cached_input_tokens + u.cache_creation_tokens


def _bought(t: TierOutcome, c: Completion) -> list[tuple[int, int, Decimal]]:
    """(input tokens, output tokens, cost) of each sample as it was bought.

    A sample reused from earlier in the run (``raw["bought"]``, see :mod:`cascade.engine.reuse`)
    cost nothing again, but it had a price when it was bought: tuning needs that, not $0.
    """
    n = max(1, len(c.samples))
    bought = c.raw.get("bought")
    if (
        isinstance(bought, tuple)
        and len(bought) == len(c.samples)
        and all(isinstance(b, Bought) for b in bought)
    ):
        out = []
        for b in bought:
            k = max(1, b.k)
            cost = b.cost if b.cost is not None else t.tier.price.cost(b.usage)
            extra = 1 if b.index < b.usage.output_tokens % k else 0
            out.append((_prompt_tokens(b.usage), b.usage.output_tokens // k + extra, cost / k))
        return out
    cost = c.cost if c.cost is not None else t.tier.price.cost(c.usage)  # this call's, not failed tries'
    u = c.usage
    return [
        (_prompt_tokens(u), u.output_tokens // n + (1 if i < u.output_tokens % n else 0), cost / n)
        for i in range(n)
    ]


def _samples(t: TierOutcome, include_text: bool, fallback: Any) -> list[dict[str, Any]]:
    c = t.completion
    if c is None:
        return []
    costs = _bought(t, c)
    out = []
    for i, s in enumerate(c.samples):
        prompt_tokens, output_tokens, cost = costs[i]
        d: dict[str, Any] = {
            "answer": answer_of(t.tier, s, fallback),
            "quality": None,
            "input_tokens": prompt_tokens,
            "output_tokens": output_tokens,
            "cost_usd": _plain(cost),
        }
        if include_text:
            d["text"] = s.text
        else:
            d["text"] = None
            d["text_chars"] = len(s.text)
        if s.tool_calls:
            d["tool_calls"] = [tc.name for tc in s.tool_calls]
        if s.variant is not None:
            d["variant"] = s.variant
        if s.quality is not None:  # a replayed answer's recorded label (offline runs only)
            d["recorded_quality"] = s.quality
        out.append(d)
    return out


def render(
    row: Row, include_text: bool, tiers: tuple[Tier, ...], policy_id: str | None = None
) -> dict[str, Any]:
    """The JSON-ready row; ``policy_id`` is the policy's :meth:`~cascade.policy.Policy.identity`."""
    fallback = next((t.scorer for t in tiers if isinstance(t.scorer, KeyedScorer)), None)
    digest = prompt_hash(row.request)
    rid = row.request.metadata.get("id")
    responses: dict[str, list[dict[str, Any]]] = {}
    trace: dict[str, Any] = {}
    for tier in tiers:  # policy order, so the last tier is the strongest
        t = row.tiers.get(tier.name)
        if t is None:
            if tier.name in row.uncalled:  # stopped by the budget, or skipped by a session pin
                decision, reason = row.uncalled[tier.name]
                trace[tier.name] = {"model": tier.provider.model, "decision": decision, "reason": reason}
                trace[tier.name]["called"] = False
            continue
        model = tier.provider.model
        key = model if model not in responses else f"{model}@{tier.name}"
        samples = _samples(t, include_text, fallback)
        if samples:
            responses[key] = samples
        trace[tier.name] = {
            "model": key,
            "decision": t.decision,
            "reason": t.reason,
            "score": t.score.value if t.score is not None else None,
            "chosen": t.score.chosen if t.score is not None else 0,
            "threshold": tier.threshold,
            "cost": str(t.cost),
            "scorer_cost": str(t.scorer_cost),
            "latency_s": round(t.latency_s, 6),
            "shadow": t.shadow,
            **({"error": t.error} if t.error else {}),
        }
    live = sum((t.cost + t.scorer_cost for t in row.tiers.values() if not t.shadow), ZERO)
    shadow = sum((t.cost + t.scorer_cost for t in row.tiers.values() if t.shadow), ZERO)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "ts": datetime.fromtimestamp(row.started, UTC).isoformat(timespec="milliseconds"),
        "policy": row.policy,
        **({"policy_id": policy_id} if policy_id else {}),
        "strongest": tiers[-1].name if tiers else None,
        "tiers": trace,
        "answered": row.answered,
        "accepted": row.accepted,
        "reason": row.reason,
        "cost": str(live),
        "shadow_cost": str(shadow),
        "latency_s": round(row.latency_s, 6),
        "shadow": row.shadow,
        "prompt_sha256": digest,
        "prompt_chars": row.request.chars,
    }
    if rid is not None:
        meta["request_id"] = str(rid)
    for k in ("abstained", "session", "pinned", "error", "shadow_skipped"):
        if getattr(row, k) is not None:
            meta[k] = getattr(row, k)
    return {
        "id": f"{digest[:12]}-{int(row.started * 1e6):x}-{id(row) & 0xFFFFFF:06x}",
        "prompt": row.request.prompt if include_text else f"sha256:{digest}",
        "reference": None,
        "split": "shadow" if row.shadow else "live",
        "responses": responses,
        "cascade": meta,
    }


def card(policy: str, tiers: tuple[Tier, ...]) -> dict[str, Any]:
    """A ``.card.json`` for a log file: the policy's models and their prices."""
    models: dict[str, Mapping[str, Any]] = {}
    for t in tiers:
        models.setdefault(
            t.provider.model,
            {
                "input_usd_per_mtok": str(t.price.input),
                "output_usd_per_mtok": str(t.price.output),
                "tier": t.name,
            },
        )
    return {
        "name": f"{policy}-outcome-log",
        "task": f"live traffic of policy {policy!r}",
        "quality": "unlabelled (fill with `cascade label`)",
        "cost": "recorded (each sample's share of the billed call)",
        "source": "cascade outcome log",
        "tiers": [t.name for t in tiers],
        "models": models,
    }


__all__ = ["FORMAT", "Row", "TierOutcome", "answer_of", "card", "prompt_hash", "render"]
