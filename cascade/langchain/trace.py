"""The decision trace put in ``response_metadata["cascade"]``, and :func:`explain`."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from langchain_core.messages import (
    BaseMessage,
)

from cascade.types import (
    CascadeResult,
    show,
)


def trace(result: CascadeResult) -> dict[str, Any]:
    """The decision trace put in ``response_metadata["cascade"]``: :meth:`CascadeResult.to_dict`."""
    return result.to_dict()


def explain(message: BaseMessage) -> str:
    """A readable account of the decisions behind a cascade answer (from its trace): the text of
    :meth:`CascadeResult.explain` (skips, reused samples, tokens, costs, latency), each tier
    shown with its model only (``[model]``, not ``[provider:model]``)."""
    t = message.response_metadata.get("cascade")
    if not isinstance(t, dict):
        return "not a cascade answer (no response_metadata['cascade'])"
    lines = [f"policy {t['policy']!r}: {t['reason']} at tier {t['tier']!r} ({t['model']})"]
    for i, a in enumerate(t["attempts"], 1):
        parts = [f"  {i}. {a['tier']} [{a['model']}] {a['decision']}: {a['reason']}"]
        if a.get("score") is not None and not str(a["reason"]).startswith("score"):
            parts.append(f"score {a['score']:.3f}")
        if a["decision"] not in ("stopped", "skipped"):
            reused = f" ({a['reused_samples']} reused)" if a.get("reused_samples") else ""
            parts.append(f"samples {a['samples']}{reused}")
            usage = a.get("usage") or {}
            tokens = f"tokens {usage.get('input_tokens', 0)}+{usage.get('output_tokens', 0)}"
            source = a.get("usage_source", "reported")
            parts.append(tokens + (f" ({source})" if source != "reported" else ""))
            scorer_cost = Decimal(str(a.get("scorer_cost") or 0))
            cost = f"cost ${show(Decimal(str(a['cost'])))}"
            parts.append(cost + (f" + scorer ${show(scorer_cost)}" if scorer_cost else ""))
            parts.append(f"{float(a.get('latency_s') or 0.0) * 1000:.0f} ms")
        if a.get("retries"):
            parts.append(f"retries {a['retries']}")
        if a.get("error"):
            parts.append(f"error: {a['error']}")
        lines.append(" | ".join(parts))
    lines.append(f"  total: ${show(Decimal(t['cost']))}, {float(t.get('latency_s') or 0.0) * 1000:.0f} ms")
    return "\n".join(lines)
